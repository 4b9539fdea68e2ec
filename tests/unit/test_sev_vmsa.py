"""SEV-ES VMSAs and launch digests, cross-checked against sev-snp-measure.

sev-snp-measure 0.0.13 builds QEMU's VMSAs the KVM_SEV_INIT2 way (MXCSR 0x1f80, FCW
0x037f), so the cross-checks use the ``init2`` model; the ``legacy`` model is checked
against sevctl's VMSA pages in test_sev_sevctl.py. Firmware reads are cached: the same
images are digested for many vCPU counts and types.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from sevsnpmeasure import guest
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vcpu_types import CPU_SIGS, cpu_sig
from sevsnpmeasure.vmsa import VMSA

from harness.errors import ConfigError, FirmwareFormatError, InputError
from harness.firmware import guids
from harness.sev.measure import ap_reset_eip, launch_digest, seves_launch_digest
from harness.sev.owner import vcpu_config
from harness.sev.policy import LaunchMode
from harness.sev.vmsa import (
    PAGE_SIZE,
    QEMU_CPU_TYPES,
    CpuSignature,
    SevEsSaveArea,
    VcpuConfig,
    VmsaModel,
    cpu_type,
    save_area,
    vmsa_pages,
)
from tests.conftest import DATA

AMDSEV_TAILS = {
    "amdsev-2022.11": DATA / "amdsev-tail.bin",
    "amdsev-2025.02": DATA / "amdsev-2025.02-tail.bin",
}
COUNTS = [1, 2, 4, 16, 64]
TYPES = ["EPYC-v4", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa"]
KERNEL = b"fake vmlinuz\n"
INITRD = b"fake initrd\n"
CMDLINE = "foo bar baz fake kernel=cmdline"


@functools.cache
def image(path: Path) -> bytes:
    return path.read_bytes()


def init2(count: int, name: str) -> VcpuConfig:
    return VcpuConfig(count, cpu_type(name), name, model=VmsaModel.INIT2)


@pytest.fixture(scope="module")
def kernel_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """sev-snp-measure reads the kernel and initrd from files."""
    root = tmp_path_factory.mktemp("kernel")
    (root / "vmlinuz").write_bytes(KERNEL)
    (root / "initrd").write_bytes(INITRD)
    return str(root / "vmlinuz"), str(root / "initrd")


# --- CPU signatures --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CPU_SIGS))
def test_every_type_sev_snp_measure_knows_has_its_signature(name: str) -> None:
    assert cpu_type(name).value == CPU_SIGS[name]


@pytest.mark.parametrize(
    ("family", "model", "stepping", "value"),
    [(23, 1, 2, 0x800F12), (23, 49, 0, 0x830F10), (25, 1, 1, 0xA00F11), (25, 17, 0, 0xA10F10),
     (26, 0, 0, 0xB00F00), (6, 0x55, 7, 0x50657), (15, 0xFF, 0xF, 0xF0FFF)],
)  # fmt: skip
def test_signature_known_answers(family: int, model: int, stepping: int, value: int) -> None:
    sig = CpuSignature(family, model, stepping)
    assert sig.value == value == cpu_sig(family, model, stepping)
    assert CpuSignature.parse(value) == sig


def test_type_names_are_case_insensitive_and_versions_share_the_signature() -> None:
    assert cpu_type("epyc-milan-v3") == cpu_type("EPYC-Milan") == CpuSignature(25, 1, 1)
    assert {QEMU_CPU_TYPES[f"EPYC-Rome-v{n}"] for n in range(1, 6)} == {CpuSignature(23, 49, 0)}
    with pytest.raises(ConfigError, match="Unknown vCPU type 'EPYC-Naples'"):
        cpu_type("EPYC-Naples")


@pytest.mark.parametrize(
    ("value", "words"), [(0x10A00F11, "outside 0x0fff0fff"), (0x100611, "extended family")]
)
def test_impossible_signatures(value: int, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        CpuSignature.parse(value)


@pytest.mark.parametrize(
    ("fields", "words"),
    [((0x10F, 0, 0), "family"), ((25, 256, 0), "model"), ((25, 1, 16), "stepping")],
)
def test_fields_out_of_range(fields: tuple[int, int, int], words: str) -> None:
    with pytest.raises(ConfigError, match=f"vCPU {words} must be"):
        CpuSignature(*fields)


# --- the save area ---------------------------------------------------------------------


@pytest.mark.parametrize("eip", [0xFFFFFFF0, 0x80B004])
@pytest.mark.parametrize("name", ["EPYC", "EPYC-Genoa"])
def test_save_area_is_sev_snp_measures_for_qemu(eip: int, name: str) -> None:
    ours = save_area(eip, init2(1, name), snp=False).serialize()
    assert ours == bytes(VMSA.build_save_area(eip, 0, CPU_SIGS[name]))
    ours_snp = save_area(eip, replace(init2(1, name), debug_swap=True), snp=True).serialize()
    assert ours_snp == bytes(VMSA.build_save_area(eip, 0x21, CPU_SIGS[name]))


def test_models_and_debug_swap_change_only_their_fields() -> None:
    base = save_area(0x80B004, VcpuConfig(), snp=False)
    assert (base.mxcsr, base.x87_fcw, base.sev_features) == (0, 0, 0)
    assert base.rip == 0xB004 and base.cs.base == 0x800000 and base.cs.selector == 0xF000
    swapped = save_area(0x80B004, VcpuConfig(debug_swap=True), snp=False)
    assert swapped == replace(base, sev_features=0x20)
    modern = save_area(0x80B004, VcpuConfig(model=VmsaModel.INIT2), snp=False)
    assert modern == replace(base, mxcsr=0x1F80, x87_fcw=0x037F)
    page = modern.serialize()
    assert struct.unpack_from("<IHHH", page, 0x408) == (0x1F80, 0, 0, 0x037F)


def test_parse_round_trips_and_refuses_what_it_cannot_model() -> None:
    page = save_area(0xFFFFFFF0, VcpuConfig(), snp=False).serialize()
    assert len(page) == PAGE_SIZE
    assert SevEsSaveArea.parse(page).serialize() == page
    with pytest.raises(InputError, match="4096 bytes; this one is 4095"):
        SevEsSaveArea.parse(page[:-1])
    stray = bytearray(page)
    stray[0x320] = 1  # RBX's reserved neighbour: nothing QEMU/KVM sets
    with pytest.raises(InputError, match="sets byte 0x320"):
        SevEsSaveArea.parse(bytes(stray))


def test_pages_boot_cpu_first_then_identical_aps() -> None:
    pages = list(vmsa_pages(0x80B004, VcpuConfig(count=3)))
    assert len(pages) == 3 and pages[1] == pages[2] != pages[0]
    assert SevEsSaveArea.parse(pages[0]).rip == 0xFFF0


def test_more_than_one_vcpu_needs_a_reset_block() -> None:
    assert len(list(vmsa_pages(None, VcpuConfig()))) == 1
    with pytest.raises(FirmwareFormatError, match="no SEV-ES reset block"):
        list(vmsa_pages(None, VcpuConfig(count=2)))


# --- SEV-ES digests against sev-snp-measure ---------------------------------------------


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("name", TYPES)
def test_seves_digest_on_debian_ovmf(debian_ovmf: Path, name: str, count: int) -> None:
    ours = seves_launch_digest(image(debian_ovmf), init2(count, name))
    theirs = guest.calc_launch_digest(
        SevMode.SEV_ES, count, CPU_SIGS[name], str(debian_ovmf), None, None, None, 0
    )
    assert ours == theirs


@pytest.mark.parametrize("kernel", [False, True], ids=["firmware", "kernel"])
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("tail", sorted(AMDSEV_TAILS))
def test_seves_digest_on_amdsev(
    tail: str, name: str, count: int, kernel: bool, kernel_files: tuple[str, str]
) -> None:
    path = AMDSEV_TAILS[tail]
    blobs = (KERNEL, INITRD, CMDLINE) if kernel else (None, None, None)
    files = (*kernel_files, CMDLINE) if kernel else (None, None, None)
    ours = seves_launch_digest(image(path), init2(count, name), *blobs)
    theirs = guest.calc_launch_digest(SevMode.SEV_ES, count, CPU_SIGS[name], str(path), *files, 0)
    assert ours == theirs


def test_seves_digest_is_the_sev_input_then_the_vmsas() -> None:
    firmware = image(AMDSEV_TAILS["amdsev-2025.02"])
    vcpus = VcpuConfig(count=2)
    pages = b"".join(vmsa_pages(ap_reset_eip(firmware), vcpus))
    assert seves_launch_digest(firmware, vcpus) == hashlib.sha256(firmware + pages).digest()
    assert seves_launch_digest(firmware, vcpus) != launch_digest(firmware)


def test_a_flipped_byte_or_another_vcpu_changes_the_digest() -> None:
    firmware = image(AMDSEV_TAILS["amdsev-2025.02"])
    base = seves_launch_digest(firmware, VcpuConfig(count=4))
    flipped = bytearray(firmware)
    flipped[0x100] ^= 1
    others = [
        seves_launch_digest(bytes(flipped), VcpuConfig(count=4)),
        seves_launch_digest(firmware, VcpuConfig(count=5)),
        seves_launch_digest(firmware, VcpuConfig(count=4, debug_swap=True)),
        seves_launch_digest(firmware, VcpuConfig(count=4, model=VmsaModel.INIT2)),
        seves_launch_digest(firmware, VcpuConfig(count=4, signature=cpu_type("EPYC-Rome"))),
    ]
    assert len({base, *others}) == 1 + len(others)


def test_another_ap_reset_address_changes_the_digest() -> None:
    firmware = bytearray(image(AMDSEV_TAILS["amdsev-2025.02"]))
    eip_at = firmware.rfind(guids.SEV_ES_RESET_BLOCK.bytes_le) - 2 - 4
    assert struct.unpack_from("<I", firmware, eip_at)[0] == 0x80B004
    before = seves_launch_digest(bytes(firmware), VcpuConfig(count=2))
    struct.pack_into("<I", firmware, eip_at, 0x80C004)
    assert ap_reset_eip(bytes(firmware)) == 0x80C004
    assert seves_launch_digest(bytes(firmware), VcpuConfig(count=2)) != before


def test_seves_needs_an_ovmf_image() -> None:
    with pytest.raises(FirmwareFormatError, match="no reset-vector GUID table"):
        seves_launch_digest(bytes(PAGE_SIZE), VcpuConfig())


# --- the --vcpu* options -----------------------------------------------------------------


def test_vcpu_defaults_per_mode() -> None:
    es = vcpu_config(LaunchMode.SEV_ES)
    assert es == VcpuConfig(1, CpuSignature(23, 1, 2), "EPYC-v4", model=VmsaModel.LEGACY)
    assert vcpu_config(LaunchMode.SNP).model is VmsaModel.INIT2
    assert vcpu_config(LaunchMode.SNP, vmsa_model="LEGACY").model is VmsaModel.LEGACY


def test_vcpu_three_ways() -> None:
    by_type = vcpu_config(LaunchMode.SEV_ES, 4, type_name="EPYC-Milan")
    by_sig = vcpu_config(LaunchMode.SEV_ES, 4, signature="0xa00f11")
    by_fms = vcpu_config(LaunchMode.SEV_ES, 4, family="25", model="1", stepping="0x1")
    assert by_type.signature == by_sig.signature == by_fms.signature
    assert by_type.type_name == "EPYC-Milan" and by_sig.type_name is None
    assert "4 vCPUs EPYC-Milan (signature 0xa00f11)" in by_type.describe()
    assert "4 vCPUs (signature 0xa00f11)" in by_sig.describe()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"type_name": "EPYC", "signature": "0x800f12"}, "--vcpu-type and --vcpu-sig were both"),
        ({"signature": "0x800f12", "stepping": "2"}, "--vcpu-sig and --vcpu-family/"),
        ({"type_name": "EPYC", "family": "23"}, "--vcpu-type and --vcpu-family/"),
        ({"family": "23", "stepping": "2"}, "needs --vcpu-model too"),
        ({"signature": "twelve"}, "vCPU signature 'twelve' is not a number"),
        ({"vmsa_model": "kvm"}, "'kvm' is not legacy or init2"),
        ({"count": 0}, "count must be 1-4096"),
        ({"debug_swap": True, "no_debug_swap": True}, "contradict each other"),
    ],
)
def test_conflicting_vcpu_options_are_one_config_error(
    options: dict[str, str | int | bool], words: str
) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        vcpu_config(LaunchMode.SEV_ES, **options)  # type: ignore[arg-type]
