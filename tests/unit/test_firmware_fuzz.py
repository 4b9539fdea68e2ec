"""Generated and mutated firmware: only harness errors may come out of the parsers.

Together with the secret-table properties this feeds well over 10,000 inputs per run.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.firmware import guids
from harness.firmware.fv import find_volumes, parse_volume
from harness.firmware.grub import find_grub
from harness.firmware.guidtable import parse_guid_table, parse_sev_metadata, parse_tdx_metadata
from harness.firmware.pe import grub_modules
from tests import fvbuild

AMDSEV_TAIL = (Path(__file__).parent.parent / "data" / "amdsev-tail.bin").read_bytes()
KNOWN = [
    guids.SEV_SECRET_BLOCK,
    guids.SEV_HASH_TABLE_BLOCK,
    guids.SEV_ES_RESET_BLOCK,
    guids.SEV_METADATA_OFFSET,
    guids.TDX_METADATA_OFFSET,
    guids.SVSM_INFO,
]
FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def inspect_all(image: bytes) -> None:
    """Everything `inspect` does with bytes; harness errors are the only allowed failure."""
    try:
        table = parse_guid_table(image)
        if table is not None:
            parse_sev_metadata(image, table)
            parse_tdx_metadata(image, table)
            table.secret_block  # noqa: B018 - decoding may raise, which is the point
            table.hash_table_block  # noqa: B018
        find_grub(find_volumes(image))
    except HarnessError:
        pass


@st.composite
def mutated_tail(draw: st.DrawFn) -> bytes:
    data = bytearray(AMDSEV_TAIL)
    # Concentrate mutations on the table, the metadata and the length fields.
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(len(data) - 0x900, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, 64))
    return bytes(data[cut:])


@st.composite
def generated_table(draw: st.DrawFn) -> bytes:
    entries = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(KNOWN), st.uuids()),
                st.binary(max_size=24),
                st.integers(0, 0xFFFF) | st.none(),
            ),
            max_size=8,
        )
    )
    body = b""
    for guid, data, length in entries:
        n = len(data) + 18 if length is None else length
        body += data + struct.pack("<H", n) + uuid.UUID(str(guid)).bytes_le
    total = draw(st.integers(0, 0xFFFF) | st.just(len(body) + 18))
    table = body + struct.pack("<H", total) + guids.OVMF_TABLE_FOOTER.bytes_le
    lead = draw(st.binary(max_size=64))
    return lead + table + bytes(0x20)


@FUZZ
@given(mutated_tail())
def test_mutated_amdsev_tails(image: bytes) -> None:
    inspect_all(image)


@FUZZ
@given(generated_table())
def test_generated_guid_tables(image: bytes) -> None:
    inspect_all(image)


GOOD_FV = fvbuild.volume(
    fvbuild.ffs_file(
        guids.GRUB_FILE,
        0x09,
        fvbuild.sections_of(
            fvbuild.lzma_section(fvbuild.section(0x10, b"MZ" + bytes(300))),
            fvbuild.ui_section("Grub"),
        ),
    )
)


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(GOOD_FV) - 1), st.integers(0, 255)), min_size=1, max_size=6
    )
)
def test_mutated_volumes(changes: list[tuple[int, int]]) -> None:
    data = bytearray(GOOD_FV)
    for at, value in changes:
        data[at] = value
    with contextlib.suppress(HarnessError):
        parse_volume(bytes(data))
    inspect_all(bytes(data))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=256))
def test_random_module_areas(tail: bytes) -> None:
    area = struct.pack("<IIQQ", 0x676D696D, 0, 24, 24 + len(tail)) + tail
    with contextlib.suppress(HarnessError):
        grub_modules(area)
