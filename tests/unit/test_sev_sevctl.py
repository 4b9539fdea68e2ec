"""sevctl's end-to-end measurement vectors, through the owner's code and the element's.

The inputs are vendored under tests/data/sevctl (see tests/data/README.md): sevctl's
trimmed AmdSev OVMF, its fake kernel and initrd, its TIK and its two VMSA pages. The
expected answers are those of sevctl's ``tests/measurementbuild.rs``: ``sevctl
measurement build`` with API 1.40, build 40, policy 0x03 and a fixed nonce, printing
base64(MEASUREMENT || MNONCE), and its SEV-ES case; the VMSAs are those of its
``tests/vmsabuild.rs``.
"""

from __future__ import annotations

import base64
from dataclasses import fields, replace

import pytest
from sevsnpmeasure.ovmf import OVMF
from sevsnpmeasure.vcpu_types import CPU_SIGS
from sevsnpmeasure.vmsa import VMSA

from harness.errors import VerificationError
from harness.sev.measure import (
    LaunchMeasure,
    PlatformInfo,
    ap_reset_eip,
    launch_digest,
    measurement,
    seves_launch_digest,
    verify_measurement,
)
from harness.sev.packet import TransportKeys
from harness.sev.simulated import SimulatedSecureElement
from harness.sev.vmsa import SevEsSaveArea, VcpuConfig, VmsaModel, cpu_type, vmsa_pages
from tests.conftest import DATA

SEVCTL = DATA / "sevctl"
FIRMWARE = SEVCTL / "OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
CMDLINE = "foo bar baz fake kernel=cmdline"
PLATFORM = PlatformInfo(api_major=1, api_minor=40, build=40, policy=0x03)
NONCE_B64 = "wxP6tRHCFrFQWxsuqZA8QA=="
#: sevctl measurement build --firmware (no kernel).
FIRMWARE_ONLY = "oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA"
#: sevctl measurement build --firmware --kernel --initrd --cmdline.
WITH_KERNEL = "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"
#: sevctl's SEV-ES vector: policy 0x05, API 1.49, build 6, four vCPUs with the VMSAs
#: ``sevctl vmsa build`` made for family 25, model 1, stepping 1 (EPYC-Milan) under QEMU.
SEV_ES = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny"
ES_PLATFORM = PlatformInfo(api_major=1, api_minor=49, build=6, policy=0x05)
#: sevctl builds KVM_SEV_INIT's VMSAs: the legacy model.
ES_VCPUS = VcpuConfig(4, cpu_type("EPYC-Milan"), "EPYC-Milan", model=VmsaModel.LEGACY)

Inputs = tuple[bytes, bytes | None, bytes | None, str | None]


def inputs(kernel: bool) -> Inputs:
    if not kernel:
        return FIRMWARE.read_bytes(), None, None, None
    return (
        FIRMWARE.read_bytes(),
        (SEVCTL / "vmlinuz-fake").read_bytes(),
        (SEVCTL / "initrd-fake").read_bytes(),
        CMDLINE,
    )


def tik() -> bytes:
    return (SEVCTL / "tik1.bin").read_bytes()


CASES = {"firmware": (False, FIRMWARE_ONLY), "kernel": (True, WITH_KERNEL)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_owner_reproduces_sevctl(case: str) -> None:
    kernel, expected = CASES[case]
    digest = launch_digest(*inputs(kernel))
    nonce = base64.b64decode(NONCE_B64)
    ours = LaunchMeasure(measurement(tik(), PLATFORM, digest, nonce), nonce)
    assert ours.to_base64() == expected
    verify_measurement(tik(), PLATFORM, digest, LaunchMeasure.from_base64(expected))


@pytest.mark.parametrize("case", sorted(CASES))
def test_element_reproduces_sevctl(case: str) -> None:
    kernel, expected = CASES[case]
    firmware, vmlinuz, initrd, cmdline = inputs(kernel)
    psp = SimulatedSecureElement(TransportKeys(tek=bytes(16), tik=tik()), PLATFORM)
    psp.launch_update_data(firmware)
    if vmlinuz is not None:
        psp.launch_update_kernel_hashes(vmlinuz, initrd, cmdline)
    assert psp.launch_measure(mnonce=base64.b64decode(NONCE_B64)) == expected


def test_the_vectors_are_not_interchangeable() -> None:
    with_kernel = LaunchMeasure.from_base64(WITH_KERNEL)
    with pytest.raises(VerificationError):
        verify_measurement(tik(), PLATFORM, launch_digest(*inputs(False)), with_kernel)


def test_owner_reproduces_sevctls_sev_es_vector() -> None:
    digest = seves_launch_digest(FIRMWARE.read_bytes(), ES_VCPUS)
    verify_measurement(tik(), ES_PLATFORM, digest, LaunchMeasure.from_base64(SEV_ES))


def test_our_vmsas_are_sevctls_bytes() -> None:
    pages = list(vmsa_pages(ap_reset_eip(FIRMWARE.read_bytes()), ES_VCPUS))
    assert len(pages) == 4
    assert pages[0] == (SEVCTL / "vmsa0.bin").read_bytes()
    assert pages[1:] == [(SEVCTL / "vmsa1.bin").read_bytes()] * 3


@pytest.mark.parametrize(
    "vcpus",
    [
        replace(ES_VCPUS, count=3),
        replace(ES_VCPUS, model=VmsaModel.INIT2),
        replace(ES_VCPUS, debug_swap=True),
        replace(ES_VCPUS, signature=cpu_type("EPYC-Genoa")),
    ],
    ids=["3-vcpus", "init2", "debug-swap", "genoa"],
)
def test_sev_es_vector_needs_the_exact_vcpus(vcpus: VcpuConfig) -> None:
    digest = seves_launch_digest(FIRMWARE.read_bytes(), vcpus)
    with pytest.raises(VerificationError, match="does not match"):
        verify_measurement(tik(), ES_PLATFORM, digest, LaunchMeasure.from_base64(SEV_ES))


def test_sev_es_vector_is_not_the_plain_sev_digest() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        verify_measurement(
            tik(), ES_PLATFORM, launch_digest(*inputs(False)), LaunchMeasure.from_base64(SEV_ES)
        )


@pytest.mark.parametrize("index", [0, 1])
def test_sevctls_vmsa_differs_from_sev_snp_measures_only_in_mxcsr_and_fcw(index: int) -> None:
    """sevctl models KVM_SEV_INIT (MXCSR and FCW 0); sev-snp-measure 0.0.13 KVM_SEV_INIT2."""
    sevctl = SevEsSaveArea.parse((SEVCTL / f"vmsa{index}.bin").read_bytes())
    eip = VMSA.BSP_EIP if index == 0 else OVMF(str(FIRMWARE)).sev_es_reset_eip()
    theirs = SevEsSaveArea.parse(bytes(VMSA.build_save_area(eip, 0, CPU_SIGS["EPYC-Milan"])))
    differ = {
        f.name for f in fields(SevEsSaveArea) if getattr(sevctl, f.name) != getattr(theirs, f.name)
    }
    assert differ == {"mxcsr", "x87_fcw"}
    assert (sevctl.mxcsr, sevctl.x87_fcw) == (0, 0)
    assert (theirs.mxcsr, theirs.x87_fcw) == (0x1F80, 0x037F)
    assert replace(sevctl, mxcsr=0x1F80, x87_fcw=0x037F) == theirs
