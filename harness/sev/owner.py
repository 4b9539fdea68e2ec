"""The guest owner's tasks over files: digest, verify a measurement, build a secret.

These functions take paths and option values as the ``sev`` tasks receive them and
return what the task prints; the crypto is in measure, secret and packet.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, InputError
from harness.files import read_input, write_private
from harness.firmware.guidtable import parse_guid_table
from harness.firmware.summary import read_firmware
from harness.passphrase import Passphrase
from harness.sev.measure import LaunchMeasure, PlatformInfo, launch_digest, verify_measurement
from harness.sev.packet import TransportKeys, build_packet
from harness.sev.secret import SecretEntry, SecretTable, disk_passphrase_entry


def digest(
    firmware: str, kernel: str | None = None, initrd: str | None = None, append: str | None = None
) -> bytes:
    """The expected SEV launch digest for booting *firmware* (and a measured kernel)."""
    return launch_digest(
        read_firmware(Path(firmware)),
        kernel=read_input(kernel, "kernel") if kernel else None,
        initrd=read_input(initrd, "initrd") if initrd else None,
        cmdline=append,
    )


def parse_int(text: str, what: str) -> int:
    """Accept decimal or 0x-prefixed hex, as sevctl and QMP users write them."""
    try:
        return int(text, 0)
    except ValueError as err:
        raise ConfigError(f"The {what} {text!r} is not a number.") from err


def verify(
    firmware: str,
    launch_measure: str,
    tik: str,
    platform: PlatformInfo,
    kernel: str | None = None,
    initrd: str | None = None,
    append: str | None = None,
) -> bytes:
    """Recompute the measurement for *firmware* and compare; return the digest on success.

    Raises:
        VerificationError: it does not match.
    """
    measure = LaunchMeasure.from_base64(launch_measure)
    expected = digest(firmware, kernel, initrd, append)
    verify_measurement(read_input(tik, "TIK"), platform, expected, measure)
    return expected


def load_keys(tek: str | None, tik: str | None, tiktek: str | None) -> TransportKeys:
    """Read the transport keys from --tek/--tik or from sev-tool's tmp_tk.bin."""
    if tiktek and (tek or tik):
        raise ConfigError("Give either --tiktek or --tek with --tik, not both.")
    if tiktek:
        return TransportKeys.from_tiktek(read_input(tiktek, "TIK/TEK"))
    if not (tek and tik):
        raise ConfigError("The transport keys are needed: --tek and --tik, or --tiktek.")
    return TransportKeys(tek=read_input(tek, "TEK"), tik=read_input(tik, "TIK"))


def parse_entry(spec: str) -> SecretEntry:
    """Parse ``GUID:FILE`` into an entry holding the file's bytes."""
    guid_text, sep, path = spec.partition(":")
    if not sep or not path:
        raise ConfigError(f"--entry {spec!r} is not of the form GUID:FILE.")
    try:
        guid = uuid.UUID(guid_text)
    except ValueError as err:
        raise ConfigError(f"--entry {spec!r}: {guid_text!r} is not a GUID.") from err
    if guid.int == 0:
        raise ConfigError(f"--entry {spec!r}: the all-zero GUID marks a deleted entry.")
    return SecretEntry(guid, read_input(path, f"secret entry {guid}"))


@dataclass(frozen=True)
class SecretOutput:
    header_path: Path
    secret_path: Path
    table_size: int
    entries: int


def build_secret(
    keys: TransportKeys,
    launch_measure: str,
    passphrase_file: str,
    extra_entries: Sequence[str],
    header_out: str,
    secret_out: str,
    firmware: str | None = None,
    as_base64: bool = False,
) -> SecretOutput:
    """Build, encrypt and MAC the secret table; write header and payload 0600.

    Raises:
        SecretFormatError: the table does not fit the firmware's secret block.
        FirmwareFormatError: --firmware reserves no secret block at all.
    """
    measure = LaunchMeasure.from_base64(launch_measure)
    entries = [disk_passphrase_entry(Passphrase.read(passphrase_file).value)]
    entries += [parse_entry(spec) for spec in extra_entries]
    area = None
    if firmware:
        table = parse_guid_table(read_firmware(Path(firmware)))
        block = table.secret_block if table else None
        if block is None or not block.present:
            raise InputError(
                f"{firmware} reserves no SEV secret block, so it cannot take a secret.",
                hint="build OvmfPkg/AmdSev/AmdSevX64.dsc",
            )
        area = block.size
    plain = SecretTable(tuple(entries)).serialize(area_size=area)
    packet = build_packet(plain, keys, measure.measurement)
    header, payload = packet.header, packet.payload
    if as_base64:
        header, payload = base64.b64encode(header), base64.b64encode(payload)
    out = SecretOutput(Path(header_out), Path(secret_out), len(plain), len(entries))
    if out.header_path.resolve() == out.secret_path.resolve():
        raise ConfigError("--header-out and --secret-out name the same file.")
    write_private({out.header_path: header, out.secret_path: payload})
    return out


def write_keys(path: str) -> None:
    """Write fresh transport keys in sev-tool's tmp_tk.bin layout (TEK, TIK), 0600."""
    keys = TransportKeys.generate()
    write_private({Path(path): keys.tek + keys.tik})
