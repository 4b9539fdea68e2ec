"""The host's side of SEV: what the host offers, QEMU's refusals, the QMP launch commands.

The QMP conversation runs over a real unix socket with qemu.qmp's client against
``tests.fakeqmp``, which stands in for QEMU on SEV hardware.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.config import LaunchKind
from harness.errors import InfrastructureError, PrerequisiteError, VerificationError
from harness.host import doctor
from harness.host.sev import HostSev, SevGuestObject, SevMonitor, start_refusal, vmsa_model
from tests.fakeqmp import FakeSevQemu, Peer, Script

pytestmark = pytest.mark.unit

EPYC_FLAGS = "flags\t\t: fpu vme de pse sme sev sev_es\n"


def _host(tmp_path: Path, flags: str, params: dict[str, str] | None, device: bool) -> HostSev:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + flags)
    parameters = tmp_path / "parameters"
    if params is not None:
        parameters.mkdir()
        for name, value in params.items():
            (parameters / name).write_text(value + "\n")
    dev = tmp_path / "sev"
    if device:
        dev.write_bytes(b"")
    return HostSev.probe(cpuinfo, parameters, dev)


def test_an_epyc_host_offers_sev_and_sev_es(tmp_path: Path) -> None:
    host = _host(tmp_path, EPYC_FLAGS, {"sev": "Y", "sev_es": "Y", "debug_swap": "N"}, True)
    assert host.support(LaunchKind.SEV).available
    assert host.support(LaunchKind.SEV_ES).available
    assert not host.snp().available
    assert not host.debug_swap
    host.require(LaunchKind.SEV_ES)


@pytest.mark.parametrize(
    ("flags", "params", "device", "reason"),
    [
        ("flags\t: fpu vme\n", {"sev": "Y"}, True, "no 'sev' flag"),
        (EPYC_FLAGS, None, True, "kvm_amd is not loaded"),
        (EPYC_FLAGS, {"sev": "N", "sev_es": "Y"}, True, "kvm_amd.sev=1"),
        (EPYC_FLAGS, {"sev": "1", "sev_es": "1"}, False, "/dev/sev does not exist"),
    ],
)
def test_each_missing_piece_is_named(
    tmp_path: Path, flags: str, params: dict[str, str] | None, device: bool, reason: str
) -> None:
    host = _host(tmp_path, flags, params, device)
    assert not host.support(LaunchKind.SEV).available
    with pytest.raises(PrerequisiteError, match="cannot launch an SEV guest") as err:
        host.require(LaunchKind.SEV)
    assert reason in err.value.message
    assert err.value.exit_code == 3
    assert host.support(LaunchKind.SIMULATED).available


def test_sev_es_needs_its_own_parameter(tmp_path: Path) -> None:
    host = _host(tmp_path, EPYC_FLAGS, {"sev": "Y", "sev_es": "N"}, True)
    assert host.support(LaunchKind.SEV).available
    assert "kvm_amd.sev_es=1" in host.support(LaunchKind.SEV_ES).reason


@pytest.mark.skipif(HostSev.probe().support(LaunchKind.SEV).available, reason="this host has SEV")
def test_this_host_has_no_sev_and_the_doctor_says_why_without_failing() -> None:
    checks = doctor.sev_checks(HostSev.probe())
    by_name = {c.name: c for c in checks}
    assert not by_name["sev"].ok and not by_name["sev"].fails
    assert by_name["sev"].detail
    assert "n/a" in doctor.render(checks)
    assert "--vmsa-model" in by_name["sev-es vmsa defaults"].detail


def test_sev_guest_object_argv() -> None:
    obj = SevGuestObject(0x5, Path("/s/godh.b64"), Path("/s/session.b64"), 51, 1)
    assert obj.argv() == [
        "-object",
        "sev-guest,id=sev0,policy=0x5,cbitpos=51,reduced-phys-bits=1,"
        "dh-cert-file=/s/godh.b64,session-file=/s/session.b64",
    ]


@pytest.mark.parametrize(
    ("output", "meaning"),
    [
        # What QEMU 7.2 printed on this host (KVM, no SEV), then under TCG.
        (
            "qemu-system-x86_64: sev_kvm_init: Failed to open /dev/sev 'No such file or "
            "directory'\nqemu-system-x86_64: failed to initialize kvm: Operation not permitted",
            "could not open /dev/sev",
        ),
        (
            "qemu-system-x86_64: sev_kvm_init: cbitpos check failed, host '0' requested '47'",
            "no C-bit position",
        ),
        (
            "qemu-system-x86_64: ../../softmmu/vl.c:2590: qemu_machine_creation_done: "
            "Assertion `machine->cgs->ready' failed.",
            "SEV needs KVM",
        ),
    ],
)
def test_qemu_refusals_become_one_sentence(output: str, meaning: str) -> None:
    err = start_refusal(output)
    assert err is not None and meaning in err.message
    assert err.message.startswith("QEMU refused to launch the SEV guest")
    assert err.exit_code == 3


def test_other_output_is_no_refusal() -> None:
    assert start_refusal("BdsDxe: loading Boot0001") is None


def test_vmsa_model_follows_qemu_and_kernel() -> None:
    assert vmsa_model("7.2.22", "6.1.0-28-amd64")[0] == "legacy"
    assert vmsa_model("9.1.0", "6.10.0")[0] == "init2"
    assert vmsa_model("9.0.2", "6.12.1")[0] == "legacy"
    assert vmsa_model("10.0.0", "6.9.12")[0] == "legacy"


@pytest.fixture
def peer_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qmp-") as d:  # short: a socket path
        yield Path(d)


def _monitor(qemu: FakeSevQemu, where: Path) -> tuple[SevMonitor, Peer, QEMUMonitorProtocol]:
    peer = Peer(qemu, where / "qmp.sock")
    client = QEMUMonitorProtocol(str(where / "qmp.sock"))
    client.connect()
    return SevMonitor(client), peer, client


def test_the_launch_conversation(peer_dir: Path) -> None:
    measure = base64.b64encode(bytes(range(48))).decode()
    script = Script(measurement=measure)
    qemu = FakeSevQemu(script, policy=0x5, build=21)
    monitor, peer, client = _monitor(qemu, peer_dir)
    try:
        caps = monitor.capabilities()
        assert (caps.cbitpos, caps.reduced_phys_bits, len(caps.cert_chain)) == (51, 1, 3 * 0x824)
        info = monitor.info()
        assert (info.enabled, info.policy, info.build_id, info.state) == (
            True,
            0x5,
            21,
            "launch-secret",
        )
        assert (info.api_major, info.api_minor) == (1, 55)
        assert monitor.launch_measure() == measure
        monitor.inject(b"H" * 52, b"S" * 64, 0x810000)
        monitor.cont()
        assert monitor.info().state == "running"
    finally:
        client.close()
        peer.close()
    assert script.injected == [(b"H" * 52, b"S" * 64, 0x810000)]
    assert [c for c, _ in qemu.calls] == [
        "qmp_capabilities",
        "query-sev-capabilities",
        "query-sev",
        "query-sev-launch-measure",
        "sev-inject-launch-secret",
        "cont",
        "query-sev",
    ]


def test_no_sev_replies_are_prerequisite_errors(peer_dir: Path) -> None:
    monitor, peer, client = _monitor(FakeSevQemu(Script(), sev=False), peer_dir)
    try:
        with pytest.raises(PrerequisiteError, match="SEV is not enabled in KVM"):
            monitor.capabilities()
        assert not monitor.info().enabled
        with pytest.raises(InfrastructureError, match="measurement is not available"):
            monitor.launch_measure()
    finally:
        client.close()
        peer.close()


def test_a_refused_injection_is_a_verification_error(peer_dir: Path) -> None:
    script = Script(measurement="x", refusal="SEV: failed to inject secret ret=-5 fw_error=11")
    monitor, peer, client = _monitor(FakeSevQemu(script), peer_dir)
    try:
        with pytest.raises(VerificationError, match=r"refused the launch secret.*fw_error=11"):
            monitor.inject(b"h" * 52, b"s" * 16, 0x810000)
    finally:
        client.close()
        peer.close()


def test_measure_before_the_launch_is_measured_fails(peer_dir: Path) -> None:
    monitor, peer, client = _monitor(FakeSevQemu(Script(), state="launch-update"), peer_dir)
    try:
        with pytest.raises(InfrastructureError, match="not available"):
            monitor.launch_measure()
    finally:
        client.close()
        peer.close()


def test_a_malformed_reply_is_an_infrastructure_error(peer_dir: Path) -> None:
    qemu = FakeSevQemu(Script(), overrides={"query-sev": {"return": {"enabled": True}}})
    monitor, peer, client = _monitor(qemu, peer_dir)
    try:
        with pytest.raises(InfrastructureError, match="api-major"):
            monitor.info()
    finally:
        client.close()
        peer.close()


def test_platform_status_layout() -> None:
    """linux/psp-sev.h's packed structs: 16 and 12 bytes, the ioctl number for 16."""
    from harness.host import sev

    assert sev.ISSUE_CMD.size == 16 and sev.PLATFORM_STATUS.size == 12
    assert (3 << 30) | (16 << 16) | (ord("S") << 8) | 0 == sev.SEV_ISSUE_CMD
    raw = bytes([1, 55, 2]) + (0).to_bytes(4, "little") + bytes([21]) + (3).to_bytes(4, "little")
    status = sev.PlatformStatus.parse(raw)
    assert (status.api_major, status.api_minor, status.build, status.guest_count) == (1, 55, 21, 3)
    assert str(status) == "SEV API 1.55, build 21"
    with pytest.raises(InfrastructureError):
        sev.PlatformStatus.parse(raw[:-1])


def test_platform_status_without_the_device(tmp_path: Path) -> None:
    from harness.host import sev

    with pytest.raises(PrerequisiteError, match="cannot be opened"):
        sev.platform_status(tmp_path / "sev")


def test_a_refused_injection_is_a_verdict_whatever_its_words(peer_dir: Path) -> None:
    """Only the probes' errors can mean 'no SEV here'; the injection's is the platform's
    refusal, and a missing measurement is no prerequisite either."""
    script = Script(measurement="x", refusal="SEV is not enabled in KVM")
    monitor, peer, client = _monitor(FakeSevQemu(script), peer_dir)
    try:
        with pytest.raises(VerificationError, match="refused the launch secret"):
            monitor.inject(b"h" * 52, b"s" * 16, 0x810000)
    finally:
        client.close()
        peer.close()
