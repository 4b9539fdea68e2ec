"""A launch on SEV hardware, on this host, which has none: real QEMU, real refusals.

The owner's side of the hardware launch is tested against the fake QMP peer
(tests/unit/test_boot_launch.py); here QEMU itself is asked, so the sentences the user
sees are QEMU's real answers on a host without SEV.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness.config import LaunchKind
from harness.errors import PrerequisiteError
from harness.host import qemu
from harness.host.sev import HostSev, SevGuestObject, platform_capabilities
from tests.integration.test_sev_cli import assert_clean_error, inv

pytestmark = pytest.mark.qemu
NO_SEV = not HostSev.probe().support(LaunchKind.SEV).available


@pytest.mark.skipif(not NO_SEV, reason="this host has SEV: the refusal cannot be shown")
def test_boot_launch_sev_exits_3_before_starting_anything(tmp_path: Path) -> None:
    proc = inv("boot", "--launch", "sev", "--workspace", str(tmp_path / "ws"))
    message = assert_clean_error(proc, 3)
    assert "cannot launch an SEV guest" in message
    assert not (tmp_path / "ws").exists(), "something was started or written"
    proc = inv("boot", "--launch", "sev-es", "--workspace", str(tmp_path / "ws"))
    assert "cannot launch an SEV-ES guest" in assert_clean_error(proc, 3)
    proc = inv("nightly", "--launch", "sev", "--workspace", str(tmp_path / "ws"))
    assert "cannot launch an SEV guest" in assert_clean_error(proc, 3)
    assert not (tmp_path / "ws").exists(), "the nightly started before its check"


@pytest.mark.skipif(not NO_SEV, reason="this host has SEV")
def test_qemu_refuses_a_sev_guest_and_the_harness_says_so_in_one_sentence(
    tmp_path: Path,
) -> None:
    """QEMU started with a sev-guest object, past the doctor's check, as a host with a
    broken SEV set-up would: its refusal becomes the exit-3 sentence."""
    for name in ("godh.b64", "session.b64"):
        (tmp_path / name).write_text("AAAA")
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 20))
    accel = qemu.working_accelerator(tmp_path / "cache", qemu.DEBIAN_OVMF)
    with tempfile.TemporaryDirectory(prefix="qmp-") as sockets:
        cfg = qemu.LaunchConfig(
            firmware=qemu.DEBIAN_OVMF,
            disk=disk,
            accel=accel,
            qmp=Path(sockets) / "qmp.sock",
            sev=SevGuestObject(0x1, tmp_path / "godh.b64", tmp_path / "session.b64", 51, 1),
        )
        assert "-S" in cfg.argv() and "confidential-guest-support=sev0" in " ".join(cfg.argv())
        with pytest.raises(PrerequisiteError) as err, qemu.running(cfg, tmp_path / "c.log"):
            pytest.fail("QEMU launched an SEV guest on a host without SEV")
    assert err.value.message.startswith("QEMU refused to launch the SEV guest")
    assert err.value.exit_code == 3
    assert "\n" not in err.value.message


def test_qemu_reports_no_platform_certificates() -> None:
    """query-sev-capabilities on a real QEMU here: no SEV in KVM, exit 3."""
    if not NO_SEV:
        pytest.skip("this host has SEV")
    with pytest.raises(PrerequisiteError, match="QEMU has no SEV on this host"):
        platform_capabilities(qemu.SYSTEM.command())
