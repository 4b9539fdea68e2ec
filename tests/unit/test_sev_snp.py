"""The SNP launch digest, cross-checked against ``sev-snp-measure --mode snp``.

sev-snp-measure's QEMU model sets SEV_FEATURES to its --guest-features (0x1, SNPActive,
by default; 0x21 adds DebugSwap) and builds KVM_SEV_INIT2 VMSAs.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from sevsnpmeasure import guest
from sevsnpmeasure.gctx import GCTX
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vcpu_types import CPU_SIGS

from harness.errors import ConfigError, FirmwareFormatError
from harness.firmware import guids
from harness.sev.snp import (
    VMSA_GPA,
    ZERO_DIGEST,
    LaunchUpdate,
    PageInfo,
    PageType,
    extend,
    launch_updates,
    snp_launch_digest,
)
from harness.sev.vmsa import VcpuConfig, VmsaModel, cpu_type
from tests.conftest import DATA

TAIL_2022 = DATA / "amdsev-tail.bin"
TAIL_2025 = DATA / "amdsev-2025.02-tail.bin"
KERNEL = b"fake vmlinuz\n"
INITRD = b"fake initrd\n"
CMDLINE = "foo bar baz fake kernel=cmdline"
CASES = [(1, "EPYC-v4"), (2, "EPYC-Milan"), (4, "EPYC-Genoa"), (16, "EPYC-Rome"), (64, "EPYC")]


@functools.cache
def image(path: Path) -> bytes:
    return path.read_bytes()


def snp_vcpus(count: int, name: str, debug_swap: bool = False) -> VcpuConfig:
    return VcpuConfig(count, cpu_type(name), name, model=VmsaModel.INIT2, debug_swap=debug_swap)


def theirs(path: Path, count: int, name: str, features: int = 0x1, files: tuple = ()) -> bytes:  # type: ignore[type-arg]
    kernel, initrd, append = files or (None, None, None)
    return bytes(
        guest.calc_launch_digest(
            SevMode.SEV_SNP, count, CPU_SIGS[name], str(path), kernel, initrd, append, features
        )
    )


@pytest.fixture(scope="module")
def kernel_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    root = tmp_path_factory.mktemp("kernel")
    (root / "vmlinuz").write_bytes(KERNEL)
    (root / "initrd").write_bytes(INITRD)
    return str(root / "vmlinuz"), str(root / "initrd"), CMDLINE


def test_page_info_layout() -> None:
    """SNP ABI PAGE_INFO: 0x70 bytes, LENGTH at 0x60, PAGE_TYPE 0x62, GPA at 0x68."""
    raw = PageInfo(b"\x11" * 48, b"\x22" * 48, PageType.CPUID, 0x80E000).serialize()
    assert len(raw) == 0x70
    assert raw[:96] == b"\x11" * 48 + b"\x22" * 48
    assert struct.unpack_from("<HBBBBBBQ", raw, 0x60) == (0x70, 6, 0, 0, 0, 0, 0, 0x80E000)


def test_extend_is_sev_snp_measures_page_chain() -> None:
    page = bytes(range(256)) * 16
    gctx = GCTX()
    gctx.update_normal_pages(0xFFE00000, page)
    gctx.update_zero_pages(0x800000, 0x2000)
    gctx.update_secrets_page(0x80D000)
    gctx.update_cpuid_page(0x80E000)
    gctx.update_vmsa_page(page)
    ours = ZERO_DIGEST
    for update in (
        LaunchUpdate(PageType.NORMAL, 0xFFE00000, hashlib.sha384(page).digest()),
        LaunchUpdate(PageType.ZERO, 0x800000),
        LaunchUpdate(PageType.ZERO, 0x801000),
        LaunchUpdate(PageType.SECRETS, 0x80D000),
        LaunchUpdate(PageType.CPUID, 0x80E000),
        LaunchUpdate(PageType.VMSA, VMSA_GPA, hashlib.sha384(page).digest()),
    ):
        ours = extend(ours, update)
    assert ours == gctx.ld()


@pytest.mark.parametrize(("count", "name"), CASES)
def test_debian_ovmf(debian_ovmf: Path, count: int, name: str) -> None:
    assert snp_launch_digest(image(debian_ovmf), snp_vcpus(count, name)) == theirs(
        debian_ovmf, count, name
    )


@pytest.mark.parametrize(("count", "name"), CASES)
@pytest.mark.parametrize("path", [TAIL_2022, TAIL_2025], ids=["2022.11", "2025.02"])
def test_amdsev_tails(path: Path, count: int, name: str) -> None:
    digest = snp_launch_digest(image(path), snp_vcpus(count, name))
    assert len(digest) == 48
    assert digest == theirs(path, count, name)
    swapped = snp_launch_digest(image(path), snp_vcpus(count, name, debug_swap=True))
    assert swapped == theirs(path, count, name, features=0x21) != digest


@pytest.mark.parametrize(("count", "name"), CASES[:3])
def test_amdsev_2025_with_kernel(count: int, name: str, kernel_files: tuple[str, str, str]) -> None:
    ours = snp_launch_digest(image(TAIL_2025), snp_vcpus(count, name), KERNEL, INITRD, CMDLINE)
    assert ours == theirs(TAIL_2025, count, name, files=kernel_files)
    assert ours != snp_launch_digest(image(TAIL_2025), snp_vcpus(count, name))


def test_launch_order_and_page_types() -> None:
    updates = list(launch_updates(image(TAIL_2025), snp_vcpus(3, "EPYC-v4")))
    assert updates[0] == replace(updates[0], page_type=PageType.NORMAL, gpa=0xFFFFF000)
    types = [u.page_type for u in updates[1:]]
    # ASEV order: SEC_MEM 9 + 3 pages, secrets, CPUID, SVSM CAA, SEC_MEM 15, hashes (zero).
    assert (
        types
        == [PageType.ZERO] * 12
        + [PageType.SECRETS, PageType.CPUID]
        + [PageType.ZERO] * 17
        + [PageType.VMSA] * 3
    )
    assert {u.gpa for u in updates[-3:]} == {VMSA_GPA}


def test_a_flipped_firmware_byte_changes_the_digest() -> None:
    firmware = bytearray(image(TAIL_2025))
    before = snp_launch_digest(bytes(firmware), snp_vcpus(1, "EPYC-v4"))
    firmware[0x10] ^= 1
    assert snp_launch_digest(bytes(firmware), snp_vcpus(1, "EPYC-v4")) != before


def test_kernel_needs_an_snp_kernel_hashes_section() -> None:
    with pytest.raises(FirmwareFormatError, match="no SNP_KERNEL_HASHES section"):
        snp_launch_digest(image(TAIL_2022), snp_vcpus(1, "EPYC-v4"), KERNEL)


def test_legacy_vmsa_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="KVM_SEV_INIT2"):
        snp_launch_digest(image(TAIL_2025), VcpuConfig())


def test_initrd_without_kernel_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a kernel"):
        snp_launch_digest(image(TAIL_2025), snp_vcpus(1, "EPYC"), initrd=INITRD)


def _set_first_section(image_bytes: bytes, gpa: int, size: int, stype: int) -> bytes:
    data = bytearray(image_bytes)
    at = data.rfind(b"ASEV") + 16
    struct.pack_into("<III", data, at, gpa, size, stype)
    return bytes(data)


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ((0x800000, 0x9000, 0x7), "unknown type 0x7"),
        ((0x800800, 0x1000, 0x1), "not whole pages"),
        ((0x800000, 0x0, 0x1), "not whole pages"),
    ],
)
def test_bad_metadata_sections(section: tuple[int, int, int], words: str) -> None:
    with pytest.raises(FirmwareFormatError, match=words):
        snp_launch_digest(_set_first_section(image(TAIL_2025), *section), snp_vcpus(1, "EPYC"))


def test_firmware_without_metadata_or_whole_pages() -> None:
    data = bytearray(image(TAIL_2025))
    meta_entry = data.rfind(guids.SEV_METADATA_OFFSET.bytes_le)
    data[meta_entry] ^= 0xFF  # the entry is still there, under an unknown GUID
    with pytest.raises(FirmwareFormatError, match="no SEV metadata"):
        snp_launch_digest(bytes(data), snp_vcpus(1, "EPYC"))
    with pytest.raises(FirmwareFormatError, match="whole number of 4 KiB pages"):
        snp_launch_digest(image(TAIL_2025)[1:], snp_vcpus(1, "EPYC"))
