"""sevctl's end-to-end measurement vectors, through the owner's code and the element's.

The inputs are vendored under tests/data/sevctl (see tests/data/README.md): sevctl's
trimmed AmdSev OVMF, its fake kernel and initrd, and its TIK. The expected answers are
those of sevctl's ``tests/measurementbuild.rs``: ``sevctl measurement build`` with API
1.40, build 40, policy 0x03 and a fixed nonce, printing base64(MEASUREMENT || MNONCE).
"""

from __future__ import annotations

import base64

import pytest

from harness.errors import ConfigError, VerificationError
from harness.sev.measure import (
    LaunchMeasure,
    PlatformInfo,
    launch_digest,
    measurement,
    verify_measurement,
)
from harness.sev.packet import TransportKeys
from harness.sev.simulated import SimulatedSecureElement
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
#: sevctl's SEV-ES vector: policy 0x05, API 1.49, build 6, four vCPUs with its VMSAs.
SEV_ES = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny"

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


def test_sev_es_vector_is_refused_until_vmsa_digests_exist() -> None:
    es_platform = PlatformInfo(api_major=1, api_minor=49, build=6, policy=0x05)
    measure = LaunchMeasure.from_base64(SEV_ES)
    with pytest.raises(ConfigError, match="SEV-ES needs the VMSA digest"):
        verify_measurement(tik(), es_platform, launch_digest(*inputs(False)), measure)
