"""A simulated SEV secure element, for hosts without SEV.

This is a FAKE of a protocol layer that cannot exist on a non-SEV host: it stands in
for AMD's PSP. It does what the PSP does with the bytes (hash what is launched, produce
LAUNCH_MEASURE with a fresh nonce, check and decrypt LAUNCH_SECRET) but provides none
of its isolation: the keys live in this process. Everything the guest owner does
against it is the real code path used with real SEV.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from harness.errors import ConfigError
from harness.sev.measure import (
    MNONCE_SIZE,
    LaunchMeasure,
    PlatformInfo,
    kernel_hashes_table,
    measurement,
)
from harness.sev.packet import LaunchSecret, TransportKeys, open_packet


@dataclass
class SimulatedSecureElement:
    """One simulated launch: update data, measure, then accept one secret.

    Usage::

        psp = SimulatedSecureElement(keys, platform)
        psp.launch_update_data(firmware)
        measure = psp.launch_measure()
        table = psp.launch_secret(packet)   # raises VerificationError on a bad MAC
    """

    keys: TransportKeys
    platform: PlatformInfo
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)
    _measure: LaunchMeasure | None = field(default=None, repr=False)

    def launch_update_data(self, data: bytes) -> None:
        """Measure *data* into the launch digest (firmware, then any hash table)."""
        if self._measure is not None:
            raise ConfigError("The launch was already measured; no more data can be added.")
        self._digest.update(data)

    def launch_update_kernel_hashes(
        self, kernel: bytes, initrd: bytes | None, cmdline: str | None
    ) -> bytes:
        """Measure the kernel-hashes table QEMU would write; returns the table."""
        table = kernel_hashes_table(kernel, initrd, cmdline)
        self.launch_update_data(table)
        return table

    def launch_measure(self, mnonce: bytes | None = None) -> LaunchMeasure:
        """Finish the digest and return MEASUREMENT || MNONCE (a fresh nonce by default)."""
        if self._measure is None:
            nonce = os.urandom(MNONCE_SIZE) if mnonce is None else mnonce
            digest = self._digest.digest()
            self._measure = LaunchMeasure(
                measurement(self.keys.tik, self.platform, digest, nonce), nonce
            )
        return self._measure

    def launch_secret(self, packet: LaunchSecret) -> bytes:
        """Check the packet's MAC against this launch's measurement and decrypt it.

        Raises:
            ConfigError: called before launch_measure.
            VerificationError: the MAC does not verify.
        """
        if self._measure is None:
            raise ConfigError("LAUNCH_SECRET needs LAUNCH_MEASURE first.")
        return open_packet(packet, self.keys, self._measure.measurement)
