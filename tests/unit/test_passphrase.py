"""The one passphrase type: the line-end rule, refusals, redaction, bytes that are not UTF-8."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError, InputError
from harness.guest.image import image_passphrase
from harness.host import console
from harness.passphrase import Passphrase
from harness.sev.secret import disk_passphrase_entry

NOT_UTF8 = b"\xff\xfepass\xc3("  # a lone 0xff and a broken two-byte sequence


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"hunter2\n", b"hunter2"),
        (b"hunter2\r\n", b"hunter2"),
        (b"hunter2", b"hunter2"),
        (b"two words\n", b"two words"),
        (b"a\nb\n", b"a\nb"),  # only the final line end goes
        (NOT_UTF8 + b"\n", NOT_UTF8),
        (NOT_UTF8, NOT_UTF8),
    ],
)
def test_one_final_line_end_is_dropped(tmp_path: Path, data: bytes, expected: bytes) -> None:
    path = tmp_path / "pass"
    path.write_bytes(data)
    assert Passphrase.read(path).value == expected


@pytest.mark.parametrize(
    "data", [b"hunter2\n\n", b"hunter2\r\n\r\n", b"hunter2\n\r\n", b"hunter2\r", b"hunter2\r\r\n"]
)
def test_two_line_ends_are_refused_not_guessed(tmp_path: Path, data: bytes) -> None:
    """The old bug: build-image stripped them all, sev.secret one, so they disagreed."""
    path = tmp_path / "pass"
    path.write_bytes(data)
    with pytest.raises(InputError, match="ends in a line break") as info:
        Passphrase.read(path)
    assert str(path) in info.value.message


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n"])
def test_empty_is_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "pass"
    path.write_bytes(data)
    with pytest.raises(InputError, match="empty"):
        Passphrase.read(path)


def test_nul_is_refused() -> None:
    with pytest.raises(InputError, match="NUL"):
        Passphrase.parse(b"hun\0ter2\n")


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        Passphrase.read(tmp_path / "nope")


def test_raw_bytes_read_back_the_same() -> None:
    """What build-image writes (raw, cryptsetup's key file) reads back as the same passphrase."""
    for value in (b"hunter2", NOT_UTF8, b"a\nb", Passphrase.generate().value):
        assert Passphrase.parse(Passphrase(value).value).value == value


def test_repr_and_str_never_show_it() -> None:
    p = Passphrase(b"hunter2")
    for text in (repr(p), str(p), f"{p}", repr([p])):
        assert "hunter2" not in text
        assert "redacted" in text


def test_typable_is_printable_ascii() -> None:
    assert Passphrase(b"Tr0ub4dor & 3 ~").typable
    assert Passphrase(b"Tr0ub4dor & 3 ~").typed() == "Tr0ub4dor & 3 ~"
    for value in (NOT_UTF8, b"caf\xc3\xa9", b"tab\there", b"a\nb", b"del\x7f"):
        p = Passphrase(value)
        assert not p.typable
        with pytest.raises(ConfigError, match="cannot type"):
            p.typed()


def test_generated_passphrases_are_typable_and_fresh() -> None:
    a, b = Passphrase.generate(), Passphrase.generate()
    assert a.typable and b.typable and a != b


def test_image_refuses_an_untypable_passphrase_unless_secret_only(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(NOT_UTF8 + b"\n")
    with pytest.raises(ConfigError, match="cannot type"):
        image_passphrase(path)
    assert image_passphrase(path, secret_only=True).value == NOT_UTF8
    assert image_passphrase(None).typable


def test_the_injected_entry_holds_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(NOT_UTF8 + b"\r\n")
    p = Passphrase.read(path)
    assert disk_passphrase_entry(p.value).data == NOT_UTF8 + b"\0"


def _echo(tmp_path: Path, output: bytes, secrets: tuple[bytes, ...]) -> console.Console:
    script = tmp_path / "echo.py"
    script.write_text(
        f"import sys\nsys.stdout.buffer.write({output!r})\nsys.stdout.buffer.flush()\n"
    )
    return console.spawn([sys.executable, str(script)], tmp_path / "console.log", secrets)


def test_console_redacts_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    out = b"key: " + NOT_UTF8 + b" wrong: w\xe9\n\xe2\x94\x80 done\n"
    con = _echo(tmp_path, out, (NOT_UTF8, b"w\xe9"))
    try:
        con.expect("done", 20)
    finally:
        con.child.close(force=True)
    log = (tmp_path / "console.log").read_bytes()
    assert NOT_UTF8 not in log and b"pass" not in log and b"w\xe9" not in log
    assert log.count(console.REDACTED.encode()) == 2
    # The guest's own UTF-8 (a box-drawing line) still reads as itself.
    assert "\u2500 done" in log.decode("utf-8")


def test_a_passphrase_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "passphrase"
    path.write_bytes(b"correct horse\n")
    path.chmod(0o644)
    with pytest.raises(InputError) as err:
        Passphrase.read(path)
    assert "readable by group or others" in err.value.message
    path.chmod(0o600)
    assert Passphrase.read(path).value == b"correct horse"


@pytest.mark.parametrize("which", ["tek", "tik", "tiktek", "entry"])
def test_transport_keys_and_extra_secrets_others_can_read_are_refused(
    tmp_path: Path, which: str
) -> None:
    from harness.sev import owner

    files = {n: tmp_path / n for n in ("tek", "tik", "tiktek", "entry")}
    for name, path in files.items():
        path.write_bytes(bytes(32) if name == "tiktek" else bytes(16))
    files[which].chmod(0o640)
    with pytest.raises(InputError) as err:
        if which == "entry":
            owner.parse_entry(f"5f3e2f0a-4c1d-4b6e-9a57-2d8c6b1e0f34:{files['entry']}")
        elif which == "tiktek":
            owner.load_keys(None, None, str(files["tiktek"]))
        else:
            owner.load_keys(str(files["tek"]), str(files["tik"]), None)
    assert "readable by group or others" in err.value.message
