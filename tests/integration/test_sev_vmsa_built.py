"""SEV-ES and SNP digests of our own AmdSevX64 build, cross-checked with sev-snp-measure.

The unit tests only have the 4 KiB tail of such a build; this runs on the whole image
the main workspace's ``./inv build-ovmf`` makes (served from the build cache).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sevsnpmeasure import guest
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vcpu_types import CPU_SIGS

from harness.components import ovmf
from harness.sev.measure import seves_launch_digest
from harness.sev.snp import snp_launch_digest
from harness.sev.vmsa import VcpuConfig, VmsaModel, cpu_type

pytestmark = [pytest.mark.docker, pytest.mark.slow]
KERNEL = b"fake vmlinuz\n"
CMDLINE = "console=ttyS0"
CASES = [(1, "EPYC-v4"), (4, "EPYC-Milan"), (64, "EPYC-Genoa")]


@pytest.fixture(scope="module")
def image(firmware: ovmf.OvmfBuild) -> Path:
    return ovmf.firmware(firmware)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("kernel") / "vmlinuz"
    path.write_bytes(KERNEL)
    return str(path)


@pytest.mark.parametrize("with_kernel", [False, True], ids=["firmware", "kernel"])
@pytest.mark.parametrize(("count", "name"), CASES)
def test_built_firmware_matches_sev_snp_measure(
    image: Path, kernel: str, count: int, name: str, with_kernel: bool
) -> None:
    data = image.read_bytes()
    vcpus = VcpuConfig(count, cpu_type(name), name, model=VmsaModel.INIT2)
    ours_args = (KERNEL, None, CMDLINE) if with_kernel else (None, None, None)
    their_args = (kernel, None, CMDLINE) if with_kernel else (None, None, None)
    sig = CPU_SIGS[name]
    assert seves_launch_digest(data, vcpus, *ours_args) == guest.calc_launch_digest(
        SevMode.SEV_ES, count, sig, str(image), *their_args, 0
    )
    assert snp_launch_digest(data, vcpus, *ours_args) == guest.calc_launch_digest(
        SevMode.SEV_SNP, count, sig, str(image), *their_args, 1
    )
