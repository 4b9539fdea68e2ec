"""Launch digests and measurements: sevctl / sev crate known answers, sev-snp-measure.

M1 is virtee/sevctl ``tests/measurementbuild.rs`` (commit 5b1450a); the verify vector is
virtee/sev ``src/session/mod.rs`` (commit 01ab36f). The launch digest is cross-checked
against sev-snp-measure's own implementation, which reads the firmware from a file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from sevsnpmeasure import guest
from sevsnpmeasure.sev_hashes import SevHashes

from harness.errors import ConfigError, FirmwareFormatError, InputError, VerificationError
from harness.firmware import guids
from harness.firmware.guidtable import parse_guid_table
from harness.sev.measure import (
    LaunchMeasure,
    PlatformInfo,
    kernel_hashes_table,
    launch_digest,
    measurement,
    verify_measurement,
)
from harness.sev.owner import parse_int
from harness.sev.policy import LaunchRules

# sevctl measurement build, vector M1 (--launch-digest).
M_TIK = bytes.fromhex("3569cf61a32a602b87185ac6e0f55913")
M_NONCE = bytes.fromhex("c313fab511c216b1505b1b2ea9903c40")
M_NONCE_B64 = "wxP6tRHCFrFQWxsuqZA8QA=="
M1_DIGEST = bytes.fromhex("c64bd101fc9a4a2ce0a27c408d9200911f139a895469b04a40a6fa2890830d23")
M1_DIGEST_B64 = "xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM="
M1_DATA = bytes.fromhex(
    "0401282803000000c64bd101fc9a4a2ce0a27c408d9200911f139a895469b04a40a6fa2890830d23"
    "c313fab511c216b1505b1b2ea9903c40"
)
M1_OUT = bytes.fromhex(
    "96cc1bc56c48f60724c9ad7a250bdd16da5898d3b86fede29c03e9aac828048e"
    "c313fab511c216b1505b1b2ea9903c40"
)
M1_OUT_B64 = "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA"

# sev crate Session::verify unit test.
SEV_TIK = bytes.fromhex("66320db73158a35a255d051758e95ed4")
SEV_DIGEST = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
SEV_MNONCE = bytes.fromhex("4fbe0bedbad6c86ae8f68971d103e554")
SEV_MEASURE = bytes.fromhex("6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea")
SEV_PLATFORM = PlatformInfo(0x00, 0x12, 0x0F, 0)
#: The sev crate's vector launches with policy 0 (debuggable).
DEBUG_OK = LaunchRules(allow_debug=True)

# sevctl's fake kernel, initrd and command line, and the table sevctl.md derives for them.
FAKE_KERNEL = b"fake vmlinuz\n"
FAKE_INITRD = b"fake initrd\n"
FAKE_CMDLINE = "foo bar baz fake kernel=cmdline"
KERNEL_TABLE = bytes.fromhex(
    "06d63894224fc94cb479a793d411fd21a800d82dd09720bd944caa78e7714d36ab2a32003e8a0b8c"
    "83c8eb5a34c6d0b9db3f36ae619b384db601c643af6456106a43dffd31f7ba442f3ad74b9af141e2"
    "9169781d320076fa1a19324945ce9b1ee17f211ca5b55cbb74d0368eecce53932a1fddc8e8cb3794"
    "e74dd2ab7f42b835d5b172d2045b3200af609b31eca2942fc46ed7209c7704771cfc2c91750ff4cb"
    "899be39b371b4e480000000000000000"
)


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


# --- measurement known answers ------------------------------------------------------


def test_sevctl_m1_measurement() -> None:
    platform = PlatformInfo(
        parse_int("0x01", "API major version"),
        parse_int("40", "API minor version"),
        parse_int("40", "build id"),
        parse_int("0x03", "policy"),
    )
    assert platform == PlatformInfo(1, 40, 40, 3)
    assert base64.b64decode(M1_DIGEST_B64) == M1_DIGEST
    assert base64.b64decode(M_NONCE_B64) == M_NONCE
    mac = measurement(M_TIK, platform, M1_DIGEST, M_NONCE)
    assert mac + M_NONCE == M1_OUT
    assert mac == hmac.new(M_TIK, M1_DATA, hashlib.sha256).digest()
    assert LaunchMeasure(mac, M_NONCE).to_base64() == M1_OUT_B64


def test_sevctl_m1_verifies_and_decodes() -> None:
    measure = LaunchMeasure.from_base64(M1_OUT_B64)
    assert measure == LaunchMeasure(M1_OUT[:32], M_NONCE)
    verify_measurement(M_TIK, PlatformInfo(1, 40, 40, 3), M1_DIGEST, measure)


def test_sev_crate_verify_vector() -> None:
    assert hashlib.sha256(b"").digest() == SEV_DIGEST
    assert measurement(SEV_TIK, SEV_PLATFORM, SEV_DIGEST, SEV_MNONCE) == SEV_MEASURE
    measure = LaunchMeasure(SEV_MEASURE, SEV_MNONCE)
    verify_measurement(SEV_TIK, SEV_PLATFORM, SEV_DIGEST, measure, DEBUG_OK)
    # Its policy is 0: a debuggable guest, which the owner refuses unless told otherwise.
    with pytest.raises(VerificationError, match="NODBG"):
        verify_measurement(SEV_TIK, SEV_PLATFORM, SEV_DIGEST, measure)


Case = tuple[bytes, PlatformInfo, bytes, LaunchMeasure]


def sev_case(
    tik: bytes = SEV_TIK,
    platform: PlatformInfo = SEV_PLATFORM,
    digest: bytes = SEV_DIGEST,
    measure: bytes = SEV_MEASURE,
    nonce: bytes = SEV_MNONCE,
) -> Case:
    """The sev crate's verify inputs, with one of them changed."""
    return tik, platform, digest, LaunchMeasure(measure, nonce)


WRONG: dict[str, Case] = {
    "tik": sev_case(tik=flip(SEV_TIK, 0)),
    "api-major": sev_case(platform=PlatformInfo(1, 0x12, 0x0F, 0)),
    "api-minor": sev_case(platform=PlatformInfo(0, 0x13, 0x0F, 0)),
    "build": sev_case(platform=PlatformInfo(0, 0x12, 0x0E, 0)),
    "policy": sev_case(platform=PlatformInfo(0, 0x12, 0x0F, 1)),
    "policy-high-byte": sev_case(platform=PlatformInfo(0, 0x12, 0x0F, 1 << 24)),
    "digest": sev_case(digest=flip(SEV_DIGEST, 31)),
    "nonce": sev_case(nonce=flip(SEV_MNONCE, 15)),
    "measurement": sev_case(measure=flip(SEV_MEASURE, 0)),
}


def test_unchanged_sev_case_verifies() -> None:
    verify_measurement(*sev_case(), DEBUG_OK)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_verify_refuses_any_changed_input(name: str) -> None:
    tik, platform, digest, measure = WRONG[name]
    with pytest.raises(VerificationError):
        verify_measurement(tik, platform, digest, measure, DEBUG_OK)


# --- input validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        (256, 0, 0, 0),
        (-1, 0, 0, 0),
        (0, 256, 0, 0),
        (0, 0, 256, 0),
        (0, 0, -1, 0),
        (0, 0, 0, 1 << 32),
        (0, 0, 0, -1),
    ],
)
def test_platform_info_rejects_out_of_range(fields: tuple[int, int, int, int]) -> None:
    with pytest.raises(ConfigError):
        PlatformInfo(*fields)


def test_platform_info_accepts_the_limits() -> None:
    top = PlatformInfo(255, 255, 255, 0xFFFFFFFF)
    expected = hmac.new(
        SEV_TIK, b"\x04\xff\xff\xff\xff\xff\xff\xff" + SEV_DIGEST + SEV_MNONCE, hashlib.sha256
    ).digest()
    assert measurement(SEV_TIK, top, SEV_DIGEST, SEV_MNONCE) == expected


def test_measurement_rejects_bad_sizes() -> None:
    for tik, digest, nonce in [
        (SEV_TIK[:15], SEV_DIGEST, SEV_MNONCE),
        (SEV_TIK + b"\0", SEV_DIGEST, SEV_MNONCE),
        (SEV_TIK, SEV_DIGEST[:31], SEV_MNONCE),
        (SEV_TIK, SEV_DIGEST, SEV_MNONCE[:15]),
        (SEV_TIK, SEV_DIGEST, SEV_MNONCE + b"\0"),
    ]:
        with pytest.raises(InputError):
            measurement(tik, SEV_PLATFORM, digest, nonce)


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        M1_OUT_B64[:-1] + "*",
        M1_OUT_B64[:10] + " " + M1_OUT_B64[10:],
        "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDx",
        "é" * 64,
        "-_" * 32,
    ],
)
def test_from_base64_rejects_non_base64(text: str) -> None:
    with pytest.raises(InputError):
        LaunchMeasure.from_base64(text)


@pytest.mark.parametrize("size", [0, 1, 32, 47, 49, 64])
def test_from_base64_rejects_wrong_length(size: int) -> None:
    with pytest.raises(InputError, match=f"decodes to {size} bytes"):
        LaunchMeasure.from_base64(base64.b64encode(bytes(size)).decode())


def test_from_base64_accepts_surrounding_whitespace() -> None:
    assert LaunchMeasure.from_base64(f"  {M1_OUT_B64}\n").mnonce == M_NONCE


# --- kernel hashes table -------------------------------------------------------------


def test_kernel_hashes_table_matches_sevctl() -> None:
    table = kernel_hashes_table(FAKE_KERNEL, FAKE_INITRD, FAKE_CMDLINE)
    assert table == KERNEL_TABLE
    assert len(table) == 176
    assert struct.unpack_from("<H", table, 16) == (168,)


def _ssm_table(tmp_path: Path, kernel: bytes, initrd: bytes | None, append: str | None) -> bytes:
    (tmp_path / "k").write_bytes(kernel)
    initrd_path = None
    if initrd is not None:
        (tmp_path / "i").write_bytes(initrd)
        initrd_path = str(tmp_path / "i")
    return bytes(SevHashes(str(tmp_path / "k"), initrd_path, append).construct_table())


@pytest.mark.parametrize(
    ("initrd", "cmdline"),
    [
        (FAKE_INITRD, FAKE_CMDLINE),
        (None, None),
        (None, FAKE_CMDLINE),
        (FAKE_INITRD, None),
        (b"", ""),
        (b"\0" * 100, "console=ttyS0 root=/dev/vda1 \u00e9\u4e2d"),
    ],
)
def test_kernel_hashes_table_matches_sev_snp_measure(
    tmp_path: Path, initrd: bytes | None, cmdline: str | None
) -> None:
    ours = kernel_hashes_table(FAKE_KERNEL, initrd, cmdline)
    assert ours == _ssm_table(tmp_path, FAKE_KERNEL, initrd, cmdline)


def test_missing_initrd_and_cmdline_hash_as_empty() -> None:
    table = kernel_hashes_table(FAKE_KERNEL, None, None)
    assert table == kernel_hashes_table(FAKE_KERNEL, b"", "")
    assert hashlib.sha256(b"\0").digest() in table  # cmdline: just the NUL
    assert hashlib.sha256(b"").digest() in table  # initrd: empty
    assert table != kernel_hashes_table(FAKE_KERNEL, b"\0", "")


# --- launch digest vs sev-snp-measure ---------------------------------------------------

#: (kernel, initrd, append) for the cross-check; None means "not given".
DIGEST_CASES: dict[str, tuple[bytes | None, bytes | None, str | None]] = {
    "firmware-only": (None, None, None),
    "kernel": (FAKE_KERNEL, None, None),
    "kernel-initrd": (FAKE_KERNEL, FAKE_INITRD, None),
    "kernel-append": (FAKE_KERNEL, None, FAKE_CMDLINE),
    "kernel-initrd-append": (FAKE_KERNEL, FAKE_INITRD, FAKE_CMDLINE),
    "kernel-empty-append": (FAKE_KERNEL, FAKE_INITRD, ""),
    "empty-kernel": (b"", None, None),
    "utf8-append": (FAKE_KERNEL, FAKE_INITRD, "quiet \u00e9l\u00e8ve=\u4e2d"),
}


def _ssm_digest(
    tmp_path: Path,
    firmware: bytes,
    kernel: bytes | None,
    initrd: bytes | None,
    append: str | None,
) -> bytes:
    paths: dict[str, str | None] = {}
    for name, data in (("ovmf.fd", firmware), ("vmlinuz", kernel), ("initrd.img", initrd)):
        if data is None:
            paths[name] = None
        else:
            (tmp_path / name).write_bytes(data)
            paths[name] = str(tmp_path / name)
    digest = guest.sev_calc_launch_digest(
        paths["ovmf.fd"], paths["vmlinuz"], paths["initrd.img"], append
    )
    assert isinstance(digest, bytes)
    return digest


@pytest.mark.parametrize("case", sorted(DIGEST_CASES))
def test_launch_digest_matches_sev_snp_measure(
    tmp_path: Path, amdsev_tail: bytes, case: str
) -> None:
    kernel, initrd, append = DIGEST_CASES[case]
    ours = launch_digest(amdsev_tail, kernel, initrd, append)
    assert ours == _ssm_digest(tmp_path, amdsev_tail, kernel, initrd, append)
    if kernel is None:
        assert ours == hashlib.sha256(amdsev_tail).digest()
    else:
        table = kernel_hashes_table(kernel, initrd, append)
        assert ours == hashlib.sha256(amdsev_tail + table).digest()


def test_launch_digest_of_sevctl_inputs(amdsev_tail: bytes) -> None:
    digest = launch_digest(amdsev_tail, FAKE_KERNEL, FAKE_INITRD, FAKE_CMDLINE)
    assert digest == hashlib.sha256(amdsev_tail + KERNEL_TABLE).digest()
    assert digest != launch_digest(amdsev_tail)


def test_kernel_on_debian_ovmf_is_refused_by_both(tmp_path: Path, debian_ovmf: Path) -> None:
    firmware = debian_ovmf.read_bytes()
    (tmp_path / "vmlinuz").write_bytes(FAKE_KERNEL)
    with pytest.raises(FirmwareFormatError, match="no SEV hash table block"):
        launch_digest(firmware, FAKE_KERNEL)
    with pytest.raises(RuntimeError, match="doesn't support kernel"):
        guest.sev_calc_launch_digest(str(debian_ovmf), str(tmp_path / "vmlinuz"), None, None)
    # Without a kernel both measure the whole file.
    plain: bytes = guest.sev_calc_launch_digest(str(debian_ovmf), None, None, None)
    assert launch_digest(firmware) == plain == hashlib.sha256(firmware).digest()


def test_kernel_on_firmware_without_guid_table_is_refused() -> None:
    with pytest.raises(FirmwareFormatError):
        launch_digest(bytes(4096), FAKE_KERNEL)


@pytest.mark.parametrize(
    ("initrd", "cmdline"), [(FAKE_INITRD, None), (None, FAKE_CMDLINE), (None, ""), (b"", None)]
)
def test_initrd_or_cmdline_without_kernel_is_a_config_error(
    amdsev_tail: bytes, initrd: bytes | None, cmdline: str | None
) -> None:
    with pytest.raises(ConfigError):
        launch_digest(amdsev_tail, None, initrd, cmdline)


def _with_hash_block(firmware: bytes, base: int, size: int) -> bytes:
    gt = parse_guid_table(firmware)
    assert gt is not None
    entry = gt.get(guids.SEV_HASH_TABLE_BLOCK)
    assert entry is not None
    out = bytearray(firmware)
    struct.pack_into("<II", out, entry.offset, base, size)
    return bytes(out)


def test_hash_table_block_must_hold_the_padded_table(amdsev_tail: bytes) -> None:
    """QEMU refuses a block smaller than sizeof(PaddedSevHashTable) = 176 bytes."""
    exact = _with_hash_block(amdsev_tail, 0x80CC00, 176)
    assert (
        launch_digest(exact, FAKE_KERNEL)
        == hashlib.sha256(exact + kernel_hashes_table(FAKE_KERNEL, None, None)).digest()
    )
    for size in (175, 168, 1):
        with pytest.raises(FirmwareFormatError, match="does not fit"):
            launch_digest(_with_hash_block(amdsev_tail, 0x80CC00, size), FAKE_KERNEL)
    with pytest.raises(FirmwareFormatError):
        launch_digest(_with_hash_block(amdsev_tail, 0x80CC00, 0), FAKE_KERNEL)


def test_hash_table_block_at_base_zero_is_refused(tmp_path: Path, amdsev_tail: bytes) -> None:
    firmware = _with_hash_block(amdsev_tail, 0, 0x400)
    with pytest.raises(RuntimeError):  # sev-snp-measure: "doesn't support kernel"
        _ssm_digest(tmp_path, firmware, FAKE_KERNEL, None, None)
    try:
        launch_digest(firmware, FAKE_KERNEL)
    except FirmwareFormatError:
        return
    raise AssertionError("launch_digest measured a kernel QEMU would refuse to launch")
