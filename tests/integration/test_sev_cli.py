"""The `./inv sev.*` tasks, run as a user runs them (subprocess, no shell).

Digests are compared with the sev-snp-measure CLI; measurements come from the simulated
secure element; secret packets are opened again with the harness's own packet code.
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from uuid import UUID

import pytest

from harness.firmware import guids
from harness.sev.measure import LaunchMeasure, PlatformInfo
from harness.sev.packet import LaunchSecret, TransportKeys, open_packet
from harness.sev.secret import SecretTable, disk_passphrase_entry
from harness.sev.simulated import SimulatedSecureElement

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parents[2]
INV = ROOT / "inv"
SSM = ROOT / ".venv" / "bin" / "sev-snp-measure"
TAIL = "tests/data/amdsev-tail.bin"

TEK = bytes.fromhex("52a869b79ab9c13bb6a92b0561619cb3")
TIK = bytes.fromhex("c6d5a9956133050912b24bbe5c372686")
KEYS = TransportKeys(tek=TEK, tik=TIK)
PLATFORM = PlatformInfo(1, 40, 40, 3)
PLATFORM_ARGS = ["--api-major", "1", "--api-minor", "40", "--build", "40", "--policy", "0x3"]
NONCE = bytes.fromhex("c313fab511c216b1505b1b2ea9903c40")
KERNEL = b"fake vmlinuz\n"
INITRD = b"fake initrd\n"
CMDLINE = "foo bar baz fake kernel=cmdline"
PASSPHRASE = "Tr0ub4dor-zebra-PASSPHRASE-7731"
#: The padded one-entry table: 20 + 20 + 31 + 1 = 72 bytes, padded to 80.
TABLE_SIZE = len(SecretTable((disk_passphrase_entry(PASSPHRASE.encode()),)).serialize())
#: The launch measurement the secret packets are bound to (only its first 32 bytes count).
MEASURE_B64 = LaunchMeasure(bytes(range(32)), NONCE).to_base64()
GUID_A = UUID("11111111-2222-3333-4444-555555555555")
GUID_B = UUID("736869e5-aaaa-4973-92ec-06879ce3da0b")


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DEBUG"}
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def inv(*args: str) -> subprocess.CompletedProcess[str]:
    return run([str(INV), *args])


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """Exit *code*, nothing on stdout, one `error:` sentence (plus an optional hint)."""
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines, "no error message"
    assert lines[0].startswith("error: ")
    assert all(line.startswith("  hint: ") for line in lines[1:]), proc.stderr
    assert len(lines) <= 2
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- sev.keys ------------------------------------------------------------------------


def test_keys_writes_a_private_32_byte_file(tmp_path: Path) -> None:
    out = tmp_path / "tmp_tk.bin"
    proc = inv("sev.keys", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    assert mode(out) == 0o600
    blob = out.read_bytes()
    assert len(blob) == 32
    assert blob.hex() not in proc.stdout + proc.stderr
    keys = TransportKeys.from_tiktek(blob)
    assert keys.tek != keys.tik
    again = tmp_path / "again.bin"
    assert inv("sev.keys", "--out", str(again)).returncode == 0
    assert again.read_bytes() != blob


def test_keys_into_a_missing_directory_is_an_input_error(tmp_path: Path) -> None:
    assert_clean_error(inv("sev.keys", "--out", str(tmp_path / "no" / "k.bin")), 2)
    assert list(tmp_path.iterdir()) == []


# --- sev.digest ----------------------------------------------------------------------

DIGEST_CASES: dict[str, list[str]] = {
    "firmware": [],
    "kernel": ["--kernel", "K"],
    "kernel-initrd": ["--kernel", "K", "--initrd", "I"],
    "kernel-append": ["--kernel", "K", "--append", CMDLINE],
    "kernel-initrd-append": ["--kernel", "K", "--initrd", "I", "--append", CMDLINE],
}


@pytest.mark.parametrize("case", sorted(DIGEST_CASES))
def test_digest_matches_sev_snp_measure(tmp_path: Path, case: str) -> None:
    (tmp_path / "vmlinuz").write_bytes(KERNEL)
    (tmp_path / "initrd.img").write_bytes(INITRD)
    files = {"K": str(tmp_path / "vmlinuz"), "I": str(tmp_path / "initrd.img")}
    extra = [files.get(arg, arg) for arg in DIGEST_CASES[case]]
    ours = inv("sev.digest", "--firmware", TAIL, *extra)
    theirs = run([str(SSM), "--mode", "sev", "--ovmf", TAIL, *extra])
    assert ours.returncode == 0, ours.stderr
    assert theirs.returncode == 0, theirs.stderr
    digest = ours.stdout.strip()
    assert len(bytes.fromhex(digest)) == 32
    assert digest == theirs.stdout.strip()


def test_digest_kernel_changes_the_result(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(KERNEL)
    plain = inv("sev.digest", "--firmware", TAIL)
    with_kernel = inv("sev.digest", "--firmware", TAIL, "--kernel", str(tmp_path / "vmlinuz"))
    assert plain.returncode == with_kernel.returncode == 0
    assert plain.stdout != with_kernel.stdout


def test_digest_with_kernel_on_debian_ovmf_fails_like_sev_snp_measure(
    tmp_path: Path, debian_ovmf: Path
) -> None:
    (tmp_path / "vmlinuz").write_bytes(KERNEL)
    kernel = str(tmp_path / "vmlinuz")
    first = assert_clean_error(
        inv("sev.digest", "--firmware", str(debian_ovmf), "--kernel", kernel), 2
    )
    assert "hash table block" in first
    theirs = run([str(SSM), "--mode", "sev", "--ovmf", str(debian_ovmf), "--kernel", kernel])
    assert theirs.returncode == 1


def test_digest_initrd_without_kernel_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "initrd.img").write_bytes(INITRD)
    assert_clean_error(
        inv("sev.digest", "--firmware", TAIL, "--initrd", str(tmp_path / "initrd.img")), 2
    )


# --- sev.verify ----------------------------------------------------------------------


def simulated_measure(
    firmware: bytes, kernel: bool = False, platform: PlatformInfo = PLATFORM
) -> str:
    psp = SimulatedSecureElement(KEYS, platform)
    psp.launch_update_data(firmware)
    if kernel:
        psp.launch_update_kernel_hashes(KERNEL, INITRD, CMDLINE)
    return psp.launch_measure(mnonce=NONCE)


@pytest.fixture
def tik_file(tmp_path: Path) -> Path:
    path = tmp_path / "tik.bin"
    path.write_bytes(TIK)
    return path


def verify(firmware: str, measure: str, tik: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return inv(
        "sev.verify",
        "--firmware", firmware,
        "--launch-measure", measure,
        "--tik", str(tik),
        *PLATFORM_ARGS,
        *extra,
    )  # fmt: skip


def test_verify_refuses_a_policy_that_allows_what_the_owner_forbids(
    amdsev_tail: bytes, tik_file: Path
) -> None:
    """Policy 0x3 (NODBG|NOKS) verifies, but the owner requires NOSEND: no migration."""
    measure = simulated_measure(amdsev_tail)
    assert verify(TAIL, measure, tik_file, "--require", "NOKS").returncode == 0
    proc = verify(TAIL, measure, tik_file, "--require", "NOKS,NOSEND")
    message = assert_clean_error(proc, 1)
    assert "lacks NOSEND (bit 3)" in message and "migrating" in message
    assert_clean_error(verify(TAIL, measure, tik_file, "--require", "NOPE"), 2)


def test_verify_accepts_a_simulated_measurement(amdsev_tail: bytes, tik_file: Path) -> None:
    proc = verify(TAIL, simulated_measure(amdsev_tail), tik_file)
    assert proc.returncode == 0, proc.stderr
    digest = inv("sev.digest", "--firmware", TAIL).stdout.strip()
    assert proc.stdout.splitlines()[0] == f"measurement verified: launch digest {digest}"
    assert proc.stdout.splitlines()[1] == "policy 0x3 (NODBG|NOKS, API >= 0.0)"


def test_verify_with_kernel(tmp_path: Path, amdsev_tail: bytes, tik_file: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(KERNEL)
    (tmp_path / "initrd.img").write_bytes(INITRD)
    kernel_args = ["--kernel", str(tmp_path / "vmlinuz"), "--initrd", str(tmp_path / "initrd.img")]
    measure = simulated_measure(amdsev_tail, kernel=True)
    ok = verify(TAIL, measure, tik_file, *kernel_args, "--append", CMDLINE)
    assert ok.returncode == 0, ok.stderr
    assert_clean_error(verify(TAIL, measure, tik_file, *kernel_args, "--append", "quiet"), 1)


def test_verify_refuses_a_firmware_that_differs_by_one_byte(
    tmp_path: Path, amdsev_tail: bytes, tik_file: Path
) -> None:
    changed = bytearray(amdsev_tail)
    changed[0x200] ^= 0x01
    (tmp_path / "changed.bin").write_bytes(bytes(changed))
    proc = verify(str(tmp_path / "changed.bin"), simulated_measure(amdsev_tail), tik_file)
    first = assert_clean_error(proc, 1)
    assert "does not match" in first


def test_verify_refuses_another_policy(amdsev_tail: bytes, tik_file: Path) -> None:
    measure = simulated_measure(amdsev_tail)
    args = [a if a != "0x3" else "0x1" for a in PLATFORM_ARGS]
    proc = inv(
        "sev.verify", "--firmware", TAIL, "--launch-measure", measure, "--tik", str(tik_file), *args
    )
    assert_clean_error(proc, 1)


def test_verify_bad_launch_measure_is_an_input_error(tik_file: Path) -> None:
    assert_clean_error(verify(TAIL, "not-base64!", tik_file), 2)
    short = base64.b64encode(bytes(32)).decode()
    assert_clean_error(verify(TAIL, short, tik_file), 2)


def test_verify_refuses_a_debuggable_guest_unless_allowed(
    amdsev_tail: bytes, tik_file: Path
) -> None:
    debuggable = PlatformInfo(1, 40, 40, 0x2)  # NOKS without NODBG
    measure = simulated_measure(amdsev_tail, platform=debuggable)
    args = ["--firmware", TAIL, "--launch-measure", measure, "--tik", str(tik_file)]
    platform = ["--api-major", "1", "--api-minor", "40", "--build", "40", "--policy", "0x2"]
    first = assert_clean_error(inv("sev.verify", *args, *platform), 1)
    assert "lacks bit 0 (NODBG)" in first
    ok = inv("sev.verify", *args, *platform, "--allow-debug")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("policy", "words"), [("0x41", "reserved bit 6"), ("0x8001", "reserved bit 15")]
)
def test_verify_refuses_reserved_bits(
    amdsev_tail: bytes, tik_file: Path, policy: str, words: str
) -> None:
    args = [a if a != "0x3" else policy for a in PLATFORM_ARGS]
    proc = inv(
        "sev.verify", "--firmware", TAIL, "--launch-measure", simulated_measure(amdsev_tail),
        "--tik", str(tik_file), *args, "--allow-debug",
    )  # fmt: skip
    assert words in assert_clean_error(proc, 2)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--min-api", "1.41"], "SEV API 1.40, older than the required 1.41"),
        (["--min-api", "2.0"], "older than the required 2.0"),
        (["--min-build", "41"], "build 40 is older than the required 41"),
    ],
)
def test_verify_refuses_an_older_platform(
    amdsev_tail: bytes, tik_file: Path, extra: list[str], words: str
) -> None:
    measure = simulated_measure(amdsev_tail)
    assert words in assert_clean_error(verify(TAIL, measure, tik_file, *extra), 1)
    ok = verify(TAIL, measure, tik_file, "--min-api", "1.40", "--min-build", "40")
    assert ok.returncode == 0, ok.stderr


def test_verify_bad_min_api_is_an_input_error(amdsev_tail: bytes, tik_file: Path) -> None:
    measure = simulated_measure(amdsev_tail)
    assert "MAJOR.MINOR" in assert_clean_error(verify(TAIL, measure, tik_file, "--min-api", "1"), 2)


def test_digest_and_verify_refuse_a_file_that_is_not_ovmf(tmp_path: Path, tik_file: Path) -> None:
    text = tmp_path / "hostname"
    text.write_bytes(b"myhost\n")
    first = assert_clean_error(inv("sev.digest", "--firmware", str(text)), 2)
    assert first == f"error: {text} is not an OVMF image: it has no reset-vector GUID table."
    raw = inv("sev.digest", "--firmware", str(text), "--raw")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.strip() == hashlib.sha256(b"myhost\n").hexdigest()
    measure = simulated_measure(b"myhost\n")
    assert "not an OVMF image" in assert_clean_error(verify(str(text), measure, tik_file), 2)
    ok = verify(str(text), measure, tik_file, "--raw")
    assert ok.returncode == 0, ok.stderr


# --- sev.secret ----------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Key files and a passphrase file (with the newline an editor adds)."""
    files = {
        "tek": tmp_path / "tek.bin",
        "tik": tmp_path / "tik.bin",
        "tiktek": tmp_path / "tmp_tk.bin",
        "passphrase": tmp_path / "passphrase.txt",
    }
    files["tek"].write_bytes(TEK)
    files["tik"].write_bytes(TIK)
    files["tiktek"].write_bytes(TEK + TIK)
    files["passphrase"].write_text(PASSPHRASE + "\n")
    return files


def secret(
    tmp_path: Path,
    keys: list[str],
    *extra: str,
    measure: str = MEASURE_B64,
    check: tuple[str, ...] = ("--no-verify",),
) -> subprocess.CompletedProcess[str]:
    """sev.secret; without *check* (the verification options) it runs with --no-verify."""
    proc = inv(
        "sev.secret",
        "--launch-measure", measure,
        "--passphrase-file", str(tmp_path / "passphrase.txt"),
        "--header-out", str(tmp_path / "out" / "header.bin"),
        "--secret-out", str(tmp_path / "out" / "secret.bin"),
        *keys,
        *check,
        *extra,
    )  # fmt: skip
    assert PASSPHRASE not in proc.stdout + proc.stderr
    return proc


def opened(
    tmp_path: Path, as_base64: bool = False, measurement: bytes = bytes(range(32))
) -> SecretTable:
    header_path, secret_path = tmp_path / "out" / "header.bin", tmp_path / "out" / "secret.bin"
    assert mode(header_path) == 0o600
    assert mode(secret_path) == 0o600
    header, payload = header_path.read_bytes(), secret_path.read_bytes()
    if as_base64:
        header = base64.b64decode(header, validate=True)
        payload = base64.b64decode(payload, validate=True)
    assert len(header) == 52
    plain = open_packet(LaunchSecret.parse(header, payload), KEYS, measurement)
    return SecretTable.parse(plain)


def out_dir(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


def key_args(inputs: dict[str, Path], style: str) -> list[str]:
    if style == "tiktek":
        return ["--tiktek", str(inputs["tiktek"])]
    return ["--tek", str(inputs["tek"]), "--tik", str(inputs["tik"])]


@pytest.mark.parametrize("style", ["tek-tik", "tiktek"])
def test_secret_packet_carries_the_passphrase(
    tmp_path: Path, inputs: dict[str, Path], style: str
) -> None:
    out_dir(tmp_path)
    proc = secret(tmp_path, key_args(inputs, style))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert proc.stdout == (
        f"wrote {out / 'header.bin'} and {out / 'secret.bin'} (1 entries, 80-byte table)\n"
    )
    table = opened(tmp_path)
    assert table.entries[0].guid == guids.DISK_PASSPHRASE_ENTRY
    assert table.entries[0].data == PASSPHRASE.encode() + b"\0"
    assert len(table.entries) == 1
    assert (tmp_path / "out" / "secret.bin").stat().st_size == TABLE_SIZE


def test_secret_base64_output(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out_dir(tmp_path)
    proc = secret(tmp_path, key_args(inputs, "tiktek"), "--base64")
    assert proc.returncode == 0, proc.stderr
    header_text = (tmp_path / "out" / "header.bin").read_text()
    assert len(base64.b64decode(header_text, validate=True)) == 52
    assert len(base64.b64decode((tmp_path / "out" / "secret.bin").read_text())) == TABLE_SIZE
    table = opened(tmp_path, as_base64=True)
    entry = table.get(guids.DISK_PASSPHRASE_ENTRY)
    assert entry is not None
    assert entry.data == PASSPHRASE.encode() + b"\0"


def test_secret_extra_entries(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out_dir(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"first extra secret")
    (tmp_path / "b.bin").write_bytes(bytes(range(256)))
    proc = secret(
        tmp_path,
        key_args(inputs, "tek-tik"),
        "--entry", f"{GUID_A}:{tmp_path / 'a.bin'}",
        "--entry", f"{GUID_B}:{tmp_path / 'b.bin'}",
        "--firmware", TAIL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(3 entries," in proc.stdout
    table = opened(tmp_path)
    assert [e.guid for e in table.entries] == [guids.DISK_PASSPHRASE_ENTRY, GUID_A, GUID_B]
    assert table.entries[1].data == b"first extra secret"
    assert table.entries[2].data == bytes(range(256))


def test_secret_refused_by_firmware_without_secret_block(
    tmp_path: Path, inputs: dict[str, Path], debian_ovmf: Path
) -> None:
    out = out_dir(tmp_path)
    proc = secret(tmp_path, key_args(inputs, "tek-tik"), "--firmware", str(debian_ovmf))
    first = assert_clean_error(proc, 2)
    assert "secret block" in first
    assert list(out.iterdir()) == []


def test_secret_too_big_for_the_secret_block(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out = out_dir(tmp_path)
    (tmp_path / "big.bin").write_bytes(bytes(4000))
    entry = f"{GUID_A}:{tmp_path / 'big.bin'}"
    proc = secret(tmp_path, key_args(inputs, "tek-tik"), "--entry", entry, "--firmware", TAIL)
    first = assert_clean_error(proc, 2)
    assert "3072-byte secret block" in first
    assert list(out.iterdir()) == []
    # Without --firmware nothing bounds the table, and the same entry is accepted.
    assert secret(tmp_path, key_args(inputs, "tek-tik"), "--entry", entry).returncode == 0
    assert len(opened(tmp_path).entries) == 2


def test_secret_missing_passphrase_file(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out = out_dir(tmp_path)
    inputs["passphrase"].unlink()
    first = assert_clean_error(secret(tmp_path, key_args(inputs, "tek-tik")), 2)
    assert first == f"error: The passphrase file {inputs['passphrase']} does not exist."
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "keys",
    [
        ["--tek", "TEK"],
        ["--tiktek", "TIKTEK", "--tik", "TIK"],
        ["--tek", "TIKTEK", "--tik", "TIK"],  # a 32-byte TEK
        ["--tiktek", "TEK"],  # a 16-byte tiktek
    ],
)
def test_secret_bad_keys_are_input_errors(
    tmp_path: Path, inputs: dict[str, Path], keys: list[str]
) -> None:
    out = out_dir(tmp_path)
    names = {"TEK": "tek", "TIK": "tik", "TIKTEK": "tiktek"}
    args = [str(inputs[names[a]]) if a in names else a for a in keys]
    assert_clean_error(secret(tmp_path, args), 2)
    assert list(out.iterdir()) == []


def test_secret_header_and_secret_in_one_file_is_refused(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    out = out_dir(tmp_path)
    proc = inv(
        "sev.secret",
        "--launch-measure", MEASURE_B64,
        "--passphrase-file", str(inputs["passphrase"]),
        "--header-out", str(out / "packet.bin"),
        "--secret-out", f"{out}/./packet.bin",  # the same file, spelt differently
        *key_args(inputs, "tiktek"),
        "--no-verify",
    )  # fmt: skip
    assert_clean_error(proc, 2)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "spec", ["no-colon", "not-a-guid:FILE", f"{GUID_A}:", f"{GUID_A}:MISSING", ":FILE"]
)
def test_secret_malformed_entry_is_an_input_error(
    tmp_path: Path, inputs: dict[str, Path], spec: str
) -> None:
    out = out_dir(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"x")
    spec = spec.replace("MISSING", str(tmp_path / "missing")).replace(
        "FILE", str(tmp_path / "a.bin")
    )
    assert_clean_error(secret(tmp_path, key_args(inputs, "tiktek"), "--entry", spec), 2)
    assert list(out.iterdir()) == []


# --- output paths that cannot be written ---------------------------------------------


def test_keys_onto_a_directory_is_a_clean_input_error(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    assert_clean_error(inv("sev.keys", "--out", str(tmp_path / "adir")), 2)


def test_secret_failing_late_leaves_no_header(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out = out_dir(tmp_path)
    (out / "secret.bin").mkdir()  # the payload cannot replace a directory
    proc = secret(tmp_path, key_args(inputs, "tiktek"))
    assert proc.returncode != 0
    assert sorted(p.name for p in out.iterdir()) == ["secret.bin"]


def test_help_after_a_task_writes_nothing(tmp_path: Path) -> None:
    for task in ("sev.keys", "sev.digest", "sev.secret", "sev.verify", "build-ovmf", "doctor"):
        proc = subprocess.run(
            [str(ROOT / "inv"), task, "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and "Usage:" in proc.stdout, (task, proc.stderr)
    assert list(tmp_path.iterdir()) == []


# --- sev.secret verifies the launch first --------------------------------------------


def verified_secret(
    tmp_path: Path, inputs: dict[str, Path], measure: str, *check: str
) -> subprocess.CompletedProcess[str]:
    return secret(
        tmp_path, key_args(inputs, "tek-tik"), measure=measure, check=(*check, *PLATFORM_ARGS)
    )


def test_secret_verifies_the_firmware_before_building(
    tmp_path: Path, inputs: dict[str, Path], amdsev_tail: bytes
) -> None:
    out_dir(tmp_path)
    measure = simulated_measure(amdsev_tail)
    proc = verified_secret(tmp_path, inputs, measure, "--firmware", TAIL)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    table = opened(tmp_path, measurement=LaunchMeasure.from_base64(measure).measurement)
    assert table.entries[0].data == PASSPHRASE.encode() + b"\0"


def test_secret_writes_nothing_when_the_measurement_does_not_match(
    tmp_path: Path, inputs: dict[str, Path], amdsev_tail: bytes
) -> None:
    out = out_dir(tmp_path)
    changed = bytearray(amdsev_tail)
    changed[0x200] ^= 0x01
    measure = simulated_measure(bytes(changed))  # the host launched other firmware
    first = assert_clean_error(verified_secret(tmp_path, inputs, measure, "--firmware", TAIL), 1)
    assert "does not match" in first
    assert list(out.iterdir()) == []


def test_secret_refuses_a_debuggable_launch(
    tmp_path: Path, inputs: dict[str, Path], amdsev_tail: bytes
) -> None:
    out = out_dir(tmp_path)
    measure = simulated_measure(amdsev_tail, platform=PlatformInfo(1, 40, 40, 0x2))
    proc = secret(
        tmp_path, key_args(inputs, "tek-tik"), measure=measure,
        check=("--firmware", TAIL, *[a if a != "0x3" else "0x2" for a in PLATFORM_ARGS]),
    )  # fmt: skip
    assert "NODBG" in assert_clean_error(proc, 1)
    assert list(out.iterdir()) == []


def test_secret_against_the_build_manifest(
    tmp_path: Path, inputs: dict[str, Path], amdsev_tail: bytes
) -> None:
    out = out_dir(tmp_path)
    manifest = tmp_path / "manifest.json"
    digest = hashlib.sha256(amdsev_tail).hexdigest()
    manifest.write_text(json.dumps({"output": {"sev_launch_digest": digest}}))
    measure = simulated_measure(amdsev_tail)
    ok = verified_secret(tmp_path, inputs, measure, "--manifest", str(manifest))
    assert ok.returncode == 0, ok.stderr
    for name in ("header.bin", "secret.bin"):
        (out / name).unlink()
    manifest.write_text(json.dumps({"output": {"sev_launch_digest": "00" * 32}}))
    assert_clean_error(verified_secret(tmp_path, inputs, measure, "--manifest", str(manifest)), 1)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("check", "words"),
    [
        (tuple(PLATFORM_ARGS), "give --firmware or --manifest"),
        (("--firmware", TAIL, *PLATFORM_ARGS[:-2]), "--policy missing"),
    ],
)
def test_secret_without_what_it_verifies_against_is_an_input_error(
    tmp_path: Path, inputs: dict[str, Path], check: tuple[str, ...], words: str
) -> None:
    out = out_dir(tmp_path)
    first = assert_clean_error(secret(tmp_path, key_args(inputs, "tek-tik"), check=check), 2)
    assert words in first and "--no-verify" in first
    assert list(out.iterdir()) == []


def test_secret_no_verify_warns(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out_dir(tmp_path)
    proc = secret(tmp_path, key_args(inputs, "tek-tik"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: --no-verify: the launch measurement was not checked")


# --- sevctl's end-to-end vectors through ./inv sev.verify ----------------------------

SEVCTL = "tests/data/sevctl"
SEVCTL_FIRMWARE = f"{SEVCTL}/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
SEVCTL_PLATFORM = ["--api-major", "0x01", "--api-minor", "40", "--build", "40", "--policy", "0x03"]
SEVCTL_KERNEL = [
    "--kernel", f"{SEVCTL}/vmlinuz-fake",
    "--initrd", f"{SEVCTL}/initrd-fake",
    "--append", "foo bar baz fake kernel=cmdline",
]  # fmt: skip
SEVCTL_CASES = {
    "firmware": ([], "oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA"),
    "kernel": (SEVCTL_KERNEL, "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"),
}


@functools.cache
def sevctl_tik() -> str:
    """sevctl's TIK in a 0600 copy: a key file others may read is refused, and git
    checks the vendored one out 0644. The copy lives in a private directory that is
    removed when the test process ends."""
    private = Path(tempfile.mkdtemp(prefix="sevctl-tik-"))
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    tik = private / "tik1.bin"
    tik.write_bytes(Path(SEVCTL, "tik1.bin").read_bytes())
    tik.chmod(0o600)
    return str(tik)


def sevctl_verify(measure: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return inv(
        "sev.verify", "--firmware", SEVCTL_FIRMWARE, "--launch-measure", measure,
        "--tik", sevctl_tik(), *extra,
    )  # fmt: skip


@pytest.mark.parametrize("case", sorted(SEVCTL_CASES))
def test_verify_accepts_sevctls_vectors(case: str) -> None:
    extra, measure = SEVCTL_CASES[case]
    proc = sevctl_verify(measure, *SEVCTL_PLATFORM, *extra)
    assert proc.returncode == 0, proc.stderr
    digest = inv("sev.digest", "--firmware", SEVCTL_FIRMWARE, *extra).stdout.strip()
    assert proc.stdout.splitlines()[0] == f"measurement verified: launch digest {digest}"
    # The other case's measurement does not verify these inputs.
    other = next(m for name, (_, m) in SEVCTL_CASES.items() if name != case)
    assert "does not match" in assert_clean_error(sevctl_verify(other, *SEVCTL_PLATFORM, *extra), 1)


SEVCTL_ES = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny"
SEVCTL_ES_PLATFORM = ["--api-major", "1", "--api-minor", "49", "--build", "6", "--policy", "0x05"]


def test_verify_accepts_sevctls_sev_es_vector() -> None:
    """The ES bit selects SEV-ES; sevctl's VMSAs are 4 EPYC-Milan vCPUs, KVM_SEV_INIT."""
    vcpus = ["--vcpus", "4", "--vcpu-type", "EPYC-Milan"]
    proc = sevctl_verify(SEVCTL_ES, *SEVCTL_ES_PLATFORM, *vcpus)
    assert proc.returncode == 0, proc.stderr
    digest = inv("sev.digest", "--firmware", SEVCTL_FIRMWARE, "--mode", "seves", *vcpus)
    assert digest.returncode == 0, digest.stderr
    assert proc.stdout.splitlines()[0].startswith(
        f"measurement verified: launch digest {digest.stdout.strip()}  ("
    )
    assert "SEV-ES: 4 vCPUs EPYC-Milan (signature 0xa00f11)" in proc.stdout
    assert digest.stderr.strip() == "assumed: " + proc.stdout.splitlines()[0].split("  (")[1][:-1]
    assert "VMSA legacy (MXCSR 0x0, FCW 0x0), sev_features 0x0" in proc.stdout


@pytest.mark.parametrize(
    "vcpus",
    [
        ["--vcpus", "4"],
        ["--vcpus", "2", "--vcpu-type", "EPYC-Milan"],
        ["--vcpus", "4", "--vcpu-sig", "0xa00f11", "--vmsa-model", "init2"],
        ["--vcpus", "4", "--vcpu-family", "25", "--vcpu-model", "1", "--vcpu-stepping", "1",
         "--debug-swap"],
    ],
    ids=["epyc-v4", "2-vcpus", "init2", "debug-swap"],
)  # fmt: skip
def test_sevctls_sev_es_vector_needs_its_vcpus(vcpus: list[str]) -> None:
    assert "does not match" in assert_clean_error(
        sevctl_verify(SEVCTL_ES, *SEVCTL_ES_PLATFORM, *vcpus), 1
    )


def test_the_same_vcpu_named_three_ways_verifies() -> None:
    for vcpu in (["--vcpu-sig", "0xA00F11"], ["--vcpu-family", "25", "--vcpu-model", "1",
                 "--vcpu-stepping", "1"], ["--vcpu-type", "epyc-milan-v2"]):  # fmt: skip
        proc = sevctl_verify(SEVCTL_ES, *SEVCTL_ES_PLATFORM, "--vcpus", "4", *vcpu)
        assert proc.returncode == 0, (vcpu, proc.stderr)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--vcpu-type", "EPYC", "--vcpu-sig", "0x800f12"], "--vcpu-type and --vcpu-sig"),
        (["--vcpu-family", "25", "--vcpu-model", "1"], "needs --vcpu-stepping"),
        (["--vcpu-sig", "0x10a00f11"], "outside 0x0fff0fff"),
        (["--vcpu-type", "EPYC-Bogus"], "Unknown vCPU type 'EPYC-Bogus'"),
        (["--vmsa-model", "init3"], "not legacy or init2"),
        (["--vcpus", "0"], "vCPU count must be"),
    ],
)
def test_bad_vcpu_options_are_one_sentence(extra: list[str], words: str) -> None:
    first = assert_clean_error(sevctl_verify(SEVCTL_ES, *SEVCTL_ES_PLATFORM, *extra), 2)
    assert words in first
    first = assert_clean_error(
        inv("sev.digest", "--firmware", SEVCTL_FIRMWARE, "--mode", "seves", *extra), 2
    )
    assert words in first


def test_a_manifest_cannot_verify_sev_es(tmp_path: Path, tik_file: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"output": {"sev_launch_digest": "00" * 32}}))
    proc = inv(
        "sev.secret", "--launch-measure", SEVCTL_ES, "--passphrase-file", str(manifest),
        "--header-out", str(tmp_path / "h"), "--secret-out", str(tmp_path / "s"),
        "--tek", str(tik_file), "--tik", str(tik_file), "--manifest", str(manifest),
        *SEVCTL_ES_PLATFORM,
    )  # fmt: skip
    assert "asks for SEV-ES" in assert_clean_error(proc, 2)
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize("mode", ["seves", "snp"])
def test_digest_matches_sev_snp_measure_for_vmsa_modes(tmp_path: Path, mode: str) -> None:
    """sev-snp-measure 0.0.13 models KVM_SEV_INIT2 (and SNP's guest features 0x1)."""
    (tmp_path / "vmlinuz").write_bytes(KERNEL)
    kernel = ["--kernel", str(tmp_path / "vmlinuz"), "--append", CMDLINE]
    fw = "tests/data/amdsev-2025.02-tail.bin"
    vcpus = ["--vcpus", "3", "--vcpu-type", "EPYC-Genoa"]
    ours = inv("sev.digest", "--firmware", fw, "--mode", mode, *vcpus, "--vmsa-model", "init2",
               *kernel)  # fmt: skip
    theirs = run([str(SSM), "--mode", mode, "--ovmf", fw, *vcpus, *kernel])
    assert ours.returncode == 0 and theirs.returncode == 0, (ours.stderr, theirs.stderr)
    # The digest alone on stdout, as sev-snp-measure prints it; what it assumed on stderr.
    assert ours.stdout == theirs.stdout.strip() + "\n"
    note = ours.stderr.strip()
    assert note.startswith("assumed: ")
    assert "VMSA init2 (MXCSR 0x1f80, FCW 0x37f)" in note and "EPYC-Genoa" in note
    described = json.loads(
        inv("sev.digest", "--firmware", fw, "--mode", mode, *vcpus, "--vmsa-model", "init2",
            *kernel, "--json").stdout
    )  # fmt: skip
    assert described["digest"] == theirs.stdout.strip() and described["mode"] == mode
    assert described["assumed"] == note.removeprefix("assumed: ")
    assert described["kernel"] == str(tmp_path / "vmlinuz") and described["append"] == CMDLINE


# --- the passphrase file: the same rule as build-image -------------------------------


@pytest.mark.parametrize(
    ("contents", "held"),
    [
        (b"pw-crlf\r\n", b"pw-crlf"),
        (b"pw-none", b"pw-none"),
        (b"\xff\xfe-not-utf8\n", b"\xff\xfe-not-utf8"),
    ],
)
def test_secret_injects_the_passphrase_build_image_locks_with(
    tmp_path: Path, inputs: dict[str, Path], contents: bytes, held: bytes
) -> None:
    out_dir(tmp_path)
    inputs["passphrase"].write_bytes(contents)
    proc = secret(tmp_path, key_args(inputs, "tek-tik"))
    assert proc.returncode == 0, proc.stderr
    entry = opened(tmp_path).get(guids.DISK_PASSPHRASE_ENTRY)
    assert entry is not None and entry.data == held + b"\0"


@pytest.mark.parametrize("contents", [b"pw\n\n", b"pw\r\n\r\n", b"\n", b"", b"p\0w\n"])
def test_secret_refuses_an_ambiguous_or_empty_passphrase_file(
    tmp_path: Path, inputs: dict[str, Path], contents: bytes
) -> None:
    out = out_dir(tmp_path)
    inputs["passphrase"].write_bytes(contents)
    first = assert_clean_error(secret(tmp_path, key_args(inputs, "tek-tik")), 2)
    assert str(inputs["passphrase"]) in first
    assert list(out.iterdir()) == []
