"""The owner's whole launch flow: chain -> session -> LAUNCH_START -> measure -> secret.

The platform is the simulated element (harness.sev.simplatform, written apart from the
owner's code); on the hardware path it sits behind tests.fakeqmp, the stand-in for QEMU
on an SEV host, and the owner talks to it with qemu.qmp over a real socket.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.boots import launch
from harness.boots.launch import Attack, Owner
from harness.errors import InputError, VerificationError
from harness.host.sev import SevMonitor
from harness.sev.certs import SevCertificate
from harness.sev.chain import PlatformChain, PlatformTrust, Roots
from harness.sev.measure import launch_digest, seves_launch_digest
from harness.sev.session import start_session
from harness.sev.simplatform import SimulatedPlatform, shared_platform
from harness.sev.simulated import SimulatedSecureElement
from harness.sev.vmsa import VcpuConfig, cpu_type
from tests.conftest import DATA
from tests.fakeqmp import FakeSevQemu, Peer

pytestmark = pytest.mark.unit

FIRMWARE = bytes(range(256)) * 64
TABLE = bytes(range(48))


def _chain(platform: SimulatedPlatform) -> PlatformChain:
    with tempfile.TemporaryDirectory() as where:
        platform.export(Path(where))
        return PlatformChain.load(where)


def test_the_owner_flow_delivers_the_table() -> None:
    notes: list[str] = []
    page = launch.simulated_launch(FIRMWARE, launch_digest(FIRMWARE), TABLE, Attack.NONE, notes)
    assert page == TABLE and notes == []


@pytest.mark.parametrize(
    ("attack", "note"),
    [
        (Attack.REPLAY, launch.REFUSED_REPLAY),
        (Attack.WRONG_POLICY, launch.REFUSED_LAUNCH_START),
        (Attack.FOREIGN_PDH, launch.REFUSED_CHAIN),
    ],
)
def test_each_attack_is_refused_where_it_should_be(attack: Attack, note: str) -> None:
    notes: list[str] = []
    page = launch.simulated_launch(FIRMWARE, launch_digest(FIRMWARE), TABLE, attack, notes)
    assert page is None
    assert len(notes) == 1 and notes[0].startswith(note), notes


def test_a_tampered_firmware_gets_nothing() -> None:
    notes: list[str] = []
    tampered = FIRMWARE[:-1] + b"\x00"
    assert (
        launch.simulated_launch(tampered, launch_digest(FIRMWARE), TABLE, Attack.NONE, notes)
        is None
    )
    assert notes[0].startswith(launch.REFUSED_MEASUREMENT)


def test_the_owner_trusts_no_platform_it_was_not_told_of() -> None:
    """AMD's roots do not reach the simulated chain; another platform's roots neither."""
    platform = shared_platform()
    with pytest.raises(VerificationError):
        Owner(b"\0" * 32, Roots.amd()).open_session(_chain(platform))
    other = SimulatedPlatform.generate()
    with pytest.raises(VerificationError):
        Owner(b"\0" * 32, launch.simulated_roots(other)).open_session(_chain(platform))
    session = Owner(b"\0" * 32, launch.simulated_roots(platform)).open_session(_chain(platform))
    assert platform.launch_start(session.godh_cert, session.blob, launch.OWNER_POLICY)


def test_the_owners_launch_refuses_naples_unless_told_and_keeps_the_pinned_chip() -> None:
    """The hardware launch's owner (./inv boot --launch sev) applies --allow-naples and
    --cek as sev.chain does: the real Naples chain in tests/data."""
    chain = PlatformChain.load(DATA / "sev-naples")
    with pytest.raises(VerificationError, match="proves nothing"):
        Owner(b"\0" * 32, Roots.amd()).open_session(chain)
    allowed = PlatformTrust(allow_naples=True)
    assert Owner(b"\0" * 32, Roots.amd(), trust=allowed).open_session(chain).godh_cert
    other = bytearray(chain.cek.serialize())
    other[0x10 + 8] ^= 0x01  # another chip's public key
    pinned = PlatformTrust(allow_naples=True, cek=SevCertificate.parse(bytes(other), "x"))
    with pytest.raises(VerificationError, match="not the chip pinned with --cek"):
        Owner(b"\0" * 32, Roots.amd(), trust=pinned).open_session(chain)


def test_a_session_for_another_pdh_is_refused_by_the_element() -> None:
    other = SimulatedPlatform.generate()
    session = start_session(_chain(other).pdh, launch.OWNER_POLICY)
    with pytest.raises(VerificationError, match="LAUNCH_START"):
        shared_platform().launch_start(session.godh_cert, session.blob, launch.OWNER_POLICY)


def test_the_owner_refuses_a_policy_it_did_not_ask_for() -> None:
    platform = shared_platform()
    owner = Owner(launch_digest(FIRMWARE), launch.simulated_roots(platform), policy=0x1)
    session = owner.open_session(_chain(platform))
    psp = platform.launch_start(session.godh_cert, session.blob, 0x1)
    psp.launch_update_data(FIRMWARE)
    from harness.sev.measure import PlatformInfo

    report = PlatformInfo(platform.api_major, platform.api_minor, platform.build, 0x3)
    with pytest.raises(VerificationError, match="policy 0x3, not the owner's 0x1"):
        owner.verify(session, report, psp.launch_measure())


class ElementBehindQemu:
    """The fake QEMU's platform: the simulated element of one launch."""

    def __init__(self, psp: SimulatedSecureElement) -> None:
        self.psp = psp
        self.page: bytes | None = None

    def measure(self) -> str:
        return self.psp.launch_measure()

    def inject(self, header: bytes, payload: bytes, gpa: int | None) -> str | None:
        try:
            self.page = self.psp.launch_secret(header, payload)
        except VerificationError as err:
            return f"SEV: failed to inject secret ret=-5 fw_error=11 ({err.message})"
        return None


def _hardware(
    firmware: bytes, expected: bytes, **qemu_says: Any
) -> tuple[ElementBehindQemu, list[str], FakeSevQemu]:
    """The owner's hardware flow against the fake QEMU with the element behind it;
    *qemu_says* overrides what QEMU reports (policy, state, ...)."""
    platform = shared_platform()
    owner = Owner(expected, launch.simulated_roots(platform))
    session = owner.open_session(_chain(platform))
    psp = platform.launch_start(session.godh_cert, session.blob, launch.OWNER_POLICY)
    psp.launch_update_data(firmware)
    backend = ElementBehindQemu(psp)
    qemu = FakeSevQemu(
        backend,
        policy=launch.OWNER_POLICY,
        api=(platform.api_major, platform.api_minor),
        build=platform.build,
    )
    for key, value in qemu_says.items():
        setattr(qemu, key, value)
    with tempfile.TemporaryDirectory(prefix="qmp-") as where:
        peer = Peer(qemu, Path(where) / "s")
        client = QEMUMonitorProtocol(str(Path(where) / "s"))
        client.connect()
        try:
            notes = launch.hardware_launch(SevMonitor(client), owner, session, TABLE, 0x810000)
        finally:
            client.close()
            peer.close()
    return backend, notes, qemu


def test_the_hardware_flow_over_qmp() -> None:
    backend, notes, qemu = _hardware(FIRMWARE, launch_digest(FIRMWARE))
    assert notes == [] and backend.page == TABLE
    names = [name for name, _ in qemu.calls]
    assert names == [
        "qmp_capabilities",
        "query-sev",
        "query-sev-launch-measure",
        "sev-inject-launch-secret",
        "cont",
    ]
    assert qemu.calls[3][1]["gpa"] == 0x810000
    assert qemu.state == "running"


def test_the_hardware_flow_injects_nothing_into_a_launch_that_does_not_verify() -> None:
    backend, notes, qemu = _hardware(FIRMWARE[:-1] + b"\x01", launch_digest(FIRMWARE))
    assert backend.page is None
    assert notes[0].startswith(launch.REFUSED_MEASUREMENT)
    assert "sev-inject-launch-secret" not in [name for name, _ in qemu.calls]
    assert qemu.calls[-1][0] == "cont"


TAIL = (Path(__file__).resolve().parents[1] / "data" / "amdsev-2025.02-tail.bin").read_bytes()
ES_VCPUS = VcpuConfig(2, cpu_type("EPYC"), "EPYC")


def test_an_sev_es_launch_measures_the_vmsas() -> None:
    """The owner expects firmware then two VMSAs; the element measured what the host
    loaded. With the plain SEV digest the same launch is refused: the VMSAs count."""
    notes: list[str] = []
    expected = seves_launch_digest(TAIL, ES_VCPUS)
    assert launch.simulated_launch(TAIL, expected, TABLE, Attack.NONE, notes, ES_VCPUS) == TABLE
    assert notes == [f"SEV-ES: {ES_VCPUS.describe(snp=False)}"]
    notes = []
    plain = launch_digest(TAIL)
    assert launch.simulated_launch(TAIL, plain, TABLE, Attack.NONE, notes, ES_VCPUS) is None
    assert notes[-1].startswith(launch.REFUSED_MEASUREMENT)


def test_an_sev_es_launch_keeps_es_in_the_policy_the_host_must_use() -> None:
    notes: list[str] = []
    expected = seves_launch_digest(TAIL, ES_VCPUS)
    page = launch.simulated_launch(TAIL, expected, TABLE, Attack.WRONG_POLICY, notes, ES_VCPUS)
    assert page is None and "policy 0x4" in notes[-1]


@pytest.mark.parametrize(
    ("qemu_says", "note"),
    [
        ({"policy": 0x0}, "policy 0x0, not the owner's 0x1"),
        ({"state": "launch-update"}, "not waiting for a secret"),
        ({"sev": False}, "SEV off"),
        ({"overrides": {"query-sev-launch-measure": {"return": {"data": "bm90IDQ4"}}}}, "48"),
    ],
)
def test_the_hardware_flow_gives_nothing_to_a_launch_it_cannot_trust(
    qemu_says: dict[str, Any], note: str
) -> None:
    """QEMU reports another policy, a launch not waiting for a secret, no SEV, or a
    malformed measurement: nothing is injected, the guest is continued, the reason noted."""
    backend, notes, qemu = _hardware(FIRMWARE, launch_digest(FIRMWARE), **qemu_says)
    assert backend.page is None
    assert "sev-inject-launch-secret" not in [name for name, _ in qemu.calls]
    assert qemu.calls[-1][0] == "cont"
    assert len(notes) == 1 and note in notes[0], notes


def test_the_sev_es_digest_comes_from_the_manifests_firmware() -> None:
    """The owner's SEV-ES digest is made from the firmware file only once that file is
    shown to be the build the manifest records, never from what the host launches."""
    from harness.boots.prepare import _owner_digest

    vcpus = VcpuConfig(2, cpu_type("EPYC"), "EPYC")
    assert _owner_digest(TAIL, launch_digest(TAIL), None) == launch_digest(TAIL)
    assert _owner_digest(TAIL, launch_digest(TAIL), vcpus) == seves_launch_digest(TAIL, vcpus)
    with pytest.raises(InputError, match="not the build its manifest records"):
        _owner_digest(TAIL, launch_digest(FIRMWARE), vcpus)
