"""Passphrase files with every line ending, and bytes that are not UTF-8, boot passwordless.

Each image is locked by build-image with what :class:`Passphrase` reads from the file,
and the guest owner injects what it reads from the same file: if the two ever differ,
GRUB's efisecret protector fails and the passwordless boot falls back to the prompt,
which the scenario counts as a failure. Needs the firmware of ``./inv build-ovmf``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import run
from harness.boots import scenarios
from harness.boots.prepare import Firmware, Machine, Target
from harness.boots.runner import run_scenario
from harness.components import ovmf
from harness.errors import InputError
from harness.guest.image import build_image, image_passphrase
from harness.guest.imagemeta import LuksVariant
from harness.host import qemu
from harness.passphrase import Passphrase
from tests.conftest import IMAGE_CACHE, ROOT, tools_builder

pytestmark = [pytest.mark.docker, pytest.mark.qemu, pytest.mark.tools, pytest.mark.slow]
OUT = ROOT / "out"

#: name -> (file contents, the passphrase it holds, GRUB's prompt can type it)
FILES: dict[str, tuple[bytes, bytes, bool]] = {
    "lf": (b"correct horse LF\n", b"correct horse LF", True),
    "crlf": (b"correct horse CRLF\r\n", b"correct horse CRLF", True),
    "not-utf8": (b"\xff\xfebattery \xc3( staple\n", b"\xff\xfebattery \xc3( staple", False),
}


def test_two_line_ends_are_refused_before_anything_is_built(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(b"correct horse\n\n")
    with pytest.raises(InputError, match="ends in a line break"):
        image_passphrase(path)


@pytest.mark.parametrize("name", sorted(FILES))
def test_passwordless_boot_from_a_passphrase_file(
    name: str, firmware: ovmf.OvmfBuild, accel: qemu.Accel, tmp_path: Path
) -> None:
    contents, held, typable = FILES[name]
    source = tmp_path / "passphrase.txt"
    source.write_bytes(contents)
    passphrase = image_passphrase(source, secret_only=not typable)
    assert passphrase.value == held
    builder = tools_builder()
    img = build_image(
        "minimal", LuksVariant.LUKS1, tmp_path / "img", IMAGE_CACHE, builder.tag,
        passphrase,
    )  # fmt: skip
    # The file the image keeps is cryptsetup's key file, byte for byte.
    assert img.passphrase_file.read_bytes() == held
    part = tmp_path / "part.luks"
    with open(img.disk, "rb") as disk:
        disk.seek(img.metadata.partition_start)
        part.write_bytes(disk.read())
    # cryptsetup takes a key file whole: the user's file, line end and all, is not the key.
    raw = run.run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file", str(source), str(part)],
        check=False,
    )
    assert raw.returncode != 0
    run.run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file", str(img.passphrase_file),
         str(part)]
    )  # fmt: skip
    names = ["passwordless", "no-secret"] if typable else ["passwordless"]
    for scenario in names:
        # The user's own file, line end and all: the harness must strip it as build-image did.
        target = Target(
            Firmware(ovmf.firmware(firmware), firmware.manifest.launch_digest),
            img,
            Passphrase.read(source),
        )
        result = run_scenario(
            scenarios.SCENARIOS[scenario], target, Machine(accel), tmp_path / "boot" / scenario
        )
        assert result.passed, result.detail
        transcript = result.transcript.read_bytes()
        assert held not in transcript
        if scenario == "passwordless":
            assert b"Enter passphrase" not in transcript
