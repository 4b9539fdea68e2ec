"""The guest owner's whole launch flow, against the simulated element or SEV hardware.

chain -> session -> LAUNCH_START -> measure -> verify -> secret::

    host hands over the platform's certificate chain; the owner verifies it up to a
    root it trusts (AMD's, or the simulated platform's when told it is simulated)
    owner makes a one-time GODH key and the session for its policy (TEK/TIK wrapped)
    host launches with the GODH certificate, the session and *its* policy
    the platform measures the firmware; the owner checks the measurement (which binds
    the platform's version, build and policy) against the expected digest
    only then the owner builds LAUNCH_SECRET for this launch; the platform decrypts it
    into the guest's secret page

A hostile host can play each step (:class:`Attack`); every refusal is a note, and the
guest then boots without a secret (GRUB prompts).
"""

from __future__ import annotations

import enum
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError, VerificationError
from harness.host.sev import SevMonitor, SevState
from harness.sev.chain import DEFAULT_TRUST, PlatformChain, PlatformTrust, Roots, verify_chain
from harness.sev.measure import (
    STRICT,
    LaunchMeasure,
    PlatformInfo,
    ap_reset_eip,
    verify_measurement,
)
from harness.sev.packet import build_packet
from harness.sev.policy import PolicyFlag
from harness.sev.session import Session, start_session
from harness.sev.simplatform import SimulatedPlatform, shared_platform
from harness.sev.simulated import SimulatedSecureElement
from harness.sev.vmsa import VcpuConfig, vmsa_pages

#: What the owner asks for: no debugging.
OWNER_POLICY = int(PolicyFlag.NODBG)
#: The words of each refusal, which the scenario that plays it expects in its notes.
REFUSED_CHAIN = "guest owner refused the platform's certificate chain"
REFUSED_LAUNCH_START = "the platform refused LAUNCH_START"
REFUSED_MEASUREMENT = "guest owner refused: the launch measurement does not match"
REFUSED_REPLAY = "the platform refused the replayed LAUNCH_SECRET"


class Attack(enum.StrEnum):
    """What the hostile host does to the launch itself."""

    NONE = "none"
    #: Relaunch with the recorded GODH and session, inject the recorded packet.
    REPLAY = "replay"
    #: Launch with a policy other than the one the session's policy MAC covers.
    WRONG_POLICY = "wrong-policy"
    #: Hand the owner another platform's chain (one the owner was not told to trust).
    FOREIGN_PDH = "foreign-pdh"


def host_policy(attack: Attack, owner: int = OWNER_POLICY) -> int:
    """The policy the host launches with: the owner's, or the same made debuggable."""
    return owner & ~int(PolicyFlag.NODBG) if attack is Attack.WRONG_POLICY else owner


@dataclass(frozen=True)
class Owner:
    """The guest owner of one launch: the digest it expects and whom it trusts.

    Attributes:
        roots: the roots a platform chain must reach.
        trust: Naples allowed or not, the pinned chip.
        policy: the policy the owner's session covers; a launch reporting another
            one is refused even if its measurement verifies.
    """

    digest: bytes
    roots: Roots
    policy: int = OWNER_POLICY
    trust: PlatformTrust = DEFAULT_TRUST

    def open_session(self, chain: PlatformChain) -> Session:
        """Verify the host's chain, then make a one-time session for its PDH.

        Raises:
            VerificationError: the chain does not reach a trusted root, ends at Naples
                without ``trust.allow_naples``, or has another CEK than ``trust.cek``.
        """
        verified = verify_chain(
            chain, self.roots, allow_naples=self.trust.allow_naples, cek=self.trust.cek
        )
        return start_session(verified.pdh, self.policy)

    def verify(self, session: Session, platform: PlatformInfo, measure: str) -> bytes:
        """Check the launch the platform reports; return its measurement.

        Raises:
            VerificationError: another policy than the owner's, refused by the rules,
                or a measurement that does not match.
        """
        if platform.policy != self.policy:
            raise VerificationError(
                f"The platform launched with policy {platform.policy:#x}, not the "
                f"owner's {self.policy:#x}."
            )
        parsed = LaunchMeasure.from_base64(measure)
        verify_measurement(session.keys.tik, platform, self.digest, parsed, STRICT)
        return parsed.measurement


def simulated_roots(platform: SimulatedPlatform) -> Roots:
    """The simulated platform's own ARK and ASK, trusted because the owner was told
    that the platform is simulated (never AMD's roots and these together)."""
    return Roots.of("simulated", platform.chain.ark.serialize(), platform.chain.ask.serialize())


def simulated_launch(
    firmware: bytes,
    expected_digest: bytes,
    table: bytes | None,
    attack: Attack,
    notes: list[str],
    vcpus: VcpuConfig | None = None,
) -> bytes | None:
    """The owner's flow against the simulated platform; the page the guest gets, or None.

    *table* is the plaintext secret table the owner injects once the launch verifies
    (None: the owner injects nothing). The returned bytes are what the element
    decrypted, which the caller writes into the secret page. With *vcpus* the launch is
    SEV-ES: the owner's policy sets ES, *expected_digest* must be the SEV-ES digest, and
    the host hands the element one VMSA per vCPU after the firmware, as KVM does with
    LAUNCH_UPDATE_VMSA.
    """
    platform = shared_platform()
    policy = OWNER_POLICY | (int(PolicyFlag.ES) if vcpus else 0)
    if vcpus is not None:
        notes.append(f"SEV-ES: {vcpus.describe(snp=False)}")
    owner = Owner(expected_digest, simulated_roots(platform), policy)
    handed = SimulatedPlatform.generate() if attack is Attack.FOREIGN_PDH else platform
    with tempfile.TemporaryDirectory(prefix="harness-chain-") as where:
        handed.export(Path(where))
        chain = PlatformChain.load(where)
    try:
        session = owner.open_session(chain)
    except VerificationError as err:
        notes.append(f"{REFUSED_CHAIN}: {err.message}")
        return None
    policy = host_policy(attack, policy)
    try:
        psp = platform.launch_start(session.godh_cert, session.blob, policy)
    except VerificationError as err:
        notes.append(f"{REFUSED_LAUNCH_START}: {err.message}")
        return None
    _update(psp, firmware, vcpus)
    measure = psp.launch_measure()
    report = PlatformInfo(platform.api_major, platform.api_minor, platform.build, policy)
    try:
        measurement = owner.verify(session, report, measure)
    except VerificationError as err:
        notes.append(f"{REFUSED_MEASUREMENT}: {err.message}")
        return None
    if table is None:
        return None
    packet = build_packet(table, session.keys, measurement)
    if attack is Attack.REPLAY:
        # The host keeps this launch's GODH, session and packet, launches again with
        # them and injects the recorded packet: the new launch's nonce differs.
        psp = platform.launch_start(session.godh_cert, session.blob, policy)
        _update(psp, firmware, vcpus)
        psp.launch_measure()
        try:
            return psp.launch_secret(packet.header, packet.payload)
        except VerificationError as err:
            notes.append(f"{REFUSED_REPLAY}: {err.message}")
            return None
    return psp.launch_secret(packet.header, packet.payload)


def _update(psp: SimulatedSecureElement, firmware: bytes, vcpus: VcpuConfig | None) -> None:
    """What the host loads into the launch: the firmware, then (SEV-ES) the VMSAs its
    VMM sets up, here QEMU's and KVM's as harness.sev.vmsa models them."""
    psp.launch_update_data(firmware)
    if vcpus is not None:
        for page in vmsa_pages(ap_reset_eip(firmware), vcpus):
            psp.launch_update_data(page)


def hardware_launch(
    monitor: SevMonitor, owner: Owner, session: Session, table: bytes | None, gpa: int
) -> list[str]:
    """The owner's side of a launch on SEV hardware, over QMP, QEMU paused (-S).

    query-sev (state, version, build, policy) -> query-sev-launch-measure -> verify
    -> sev-inject-launch-secret at *gpa* (the secret block of the firmware the owner
    verified) -> cont. A launch that does not verify is still continued, without a
    secret: the guest then prompts, as on a simulated launch.

    Returns:
        Notes on what happened (refusals).

    Raises:
        PrerequisiteError: QEMU reports no SEV.
        VerificationError: the platform refused the injection.
        InfrastructureError: the launch is not waiting for a secret.
    """
    notes: list[str] = []
    info = monitor.info()
    if not info.enabled or info.state != SevState.LAUNCH_SECRET:
        notes.append(
            f"QEMU reports SEV {'on' if info.enabled else 'off'}, state {info.state}: the "
            "launch is not waiting for a secret, so none is given"
        )
        monitor.cont()
        return notes
    report = PlatformInfo(info.api_major, info.api_minor, info.build_id, info.policy)
    measure = monitor.launch_measure()
    try:
        measurement = owner.verify(session, report, measure)
    except (VerificationError, InputError) as err:  # InputError: QEMU's answer is malformed
        notes.append(f"{REFUSED_MEASUREMENT}: {err.message}")
        measurement = None
    if measurement is not None and table is not None:
        packet = build_packet(table, session.keys, measurement)
        monitor.inject(packet.header, packet.payload, gpa)
    monitor.cont()
    return notes
