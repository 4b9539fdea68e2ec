"""The EFI secret table: layout, Linux efi_secret parsing rules, and fuzzing."""

from __future__ import annotations

import struct
from uuid import UUID

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError, SecretFormatError
from harness.firmware import guids
from harness.sev.secret import (
    DEFAULT_SECRET_AREA,
    LINUX_MAX_ENTRIES,
    NULL_GUID,
    SecretEntry,
    SecretTable,
    disk_passphrase_entry,
)

HEADER_GUID = guids.EFI_SECRET_TABLE_HEADER.bytes_le
GUID_A = UUID("11111111-2222-3333-4444-555555555555")
GUID_B = UUID("736869e5-aaaa-4973-92ec-06879ce3da0b")


def raw_table(length: int, *entries: tuple[bytes, int, bytes], pad_to: int = 0) -> bytes:
    """Hand-build an area: header with *length*, then (guid, len, data) entries, zero pad."""
    out = HEADER_GUID + struct.pack("<I", length)
    for guid, elen, data in entries:
        out += guid + struct.pack("<I", elen) + data
    return out + bytes(max(0, pad_to - len(out)))


# --- layout --------------------------------------------------------------------------


def test_serialize_layout() -> None:
    table = SecretTable((SecretEntry(GUID_A, b"hello"),))
    out = table.serialize()
    assert out == raw_table(45, (GUID_A.bytes_le, 25, b"hello"), pad_to=48)
    assert len(out) == 48
    assert table.length == 45


@pytest.mark.parametrize("size", range(0, 40))
def test_padding_is_align_up_and_header_len_excludes_it(size: int) -> None:
    table = SecretTable((SecretEntry(GUID_A, b"x" * size),))
    out = table.serialize()
    unpadded = 20 + 20 + size
    assert struct.unpack_from("<I", out, 16) == (unpadded,)
    assert len(out) == (unpadded + 15) // 16 * 16  # no extra block when aligned
    assert out[unpadded:] == bytes(len(out) - unpadded)


def test_sevctl_size_property() -> None:
    """sevctl's secretbuild test: 16343- and 16344-byte secrets both give 16384 bytes."""
    guid = UUID("23058844-597b-42fb-8259-a0f5d9d495af")
    for size in (16343, 16344):
        assert len(SecretTable((SecretEntry(guid, b"." * size),)).serialize()) == 16384


def test_empty_table() -> None:
    out = SecretTable(()).serialize()
    assert out == raw_table(20, pad_to=32)
    assert SecretTable.parse(out) == SecretTable(())


def test_round_trip_keeps_order_and_deleted_entries() -> None:
    table = SecretTable(
        (
            disk_passphrase_entry(b"correct horse"),
            SecretEntry(NULL_GUID, bytes(7)),
            SecretEntry(GUID_A, b""),
            SecretEntry(NULL_GUID, b"gone"),
            SecretEntry(GUID_B, bytes(range(256))),
        )
    )
    parsed = SecretTable.parse(table.serialize())
    assert parsed == table
    assert [e.deleted for e in parsed.entries] == [False, True, False, True, False]
    assert [e.guid for e in parsed.live] == [guids.DISK_PASSPHRASE_ENTRY, GUID_A, GUID_B]
    assert parsed.get(GUID_B) == SecretEntry(GUID_B, bytes(range(256)))
    assert parsed.get(UUID(int=5)) is None


def test_parse_ignores_bytes_after_header_len() -> None:
    area = SecretTable((SecretEntry(GUID_A, b"abc"),)).serialize() + b"\xff" * 3000
    assert SecretTable.parse(area).entries == (SecretEntry(GUID_A, b"abc"),)


def test_parse_ignores_a_tail_shorter_than_an_entry_header() -> None:
    """Linux walks while bytes_left >= sizeof(entry); a shorter tail is ignored."""
    area = raw_table(20 + 25 + 19, (GUID_A.bytes_le, 25, b"hello"), pad_to=80)
    assert SecretTable.parse(area).entries == (SecretEntry(GUID_A, b"hello"),)


def test_parse_stops_at_linux_entry_limit() -> None:
    many = tuple(SecretEntry(UUID(int=i + 1), bytes([i])) for i in range(LINUX_MAX_ENTRIES + 6))
    raw = [(e.guid.bytes_le, e.length, e.data) for e in many]  # serialize() refuses > 64
    parsed = SecretTable.parse(raw_table(20 + sum(e.length for e in many), *raw))
    assert parsed.entries == many[:LINUX_MAX_ENTRIES]


def test_parse_stops_after_64_live_entries() -> None:
    """Linux stops walking there, so a corrupt 65th entry is never looked at."""
    live = [(UUID(int=i + 1).bytes_le, 20, b"") for i in range(LINUX_MAX_ENTRIES)]
    area = raw_table(20 + 20 * (LINUX_MAX_ENTRIES + 1), *live, (GUID_A.bytes_le, 3, b""))
    parsed = SecretTable.parse(area)
    assert parsed.entries == tuple(SecretEntry(UUID(int=i + 1), b"") for i in range(64))


def test_deleted_entries_do_not_count_towards_the_linux_limit() -> None:
    """Linux: ``s->fs_files[i++] = dent`` sits inside ``if (guid != NULL_GUID)``."""
    many = (SecretEntry(NULL_GUID, b""),) * LINUX_MAX_ENTRIES + (SecretEntry(GUID_A, b"x"),)
    parsed = SecretTable.parse(SecretTable(many).serialize())
    assert parsed.live == (SecretEntry(GUID_A, b"x"),)


# --- parse errors (Linux efi_secret rules) --------------------------------------------

GOOD = raw_table(45, (GUID_A.bytes_le, 25, b"hello"), pad_to=48)

BAD_AREAS: dict[str, bytes] = {
    "empty": b"",
    "shorter-than-header": GOOD[:19],
    "zero-area": bytes(DEFAULT_SECRET_AREA),
    "erased-area": b"\xff" * 64,
    "bad-header-guid": bytes([GOOD[0] ^ 1]) + GOOD[1:],
    "header-guid-last-byte": GOOD[:15] + bytes([GOOD[15] ^ 0x80]) + GOOD[16:],
    "entry-guid-as-header": GUID_A.bytes_le + GOOD[16:],
    "len-0": raw_table(0, pad_to=48),
    "len-19": raw_table(19, pad_to=48),
    "len-past-area": raw_table(49, (GUID_A.bytes_le, 25, b"hello"), pad_to=48),
    "len-huge": raw_table(0xFFFFFFFF, pad_to=48),
    "entry-len-0": raw_table(45, (GUID_A.bytes_le, 0, b"hello"), pad_to=48),
    "entry-len-19": raw_table(45, (GUID_A.bytes_le, 19, b"hello"), pad_to=48),
    "entry-len-past-table": raw_table(45, (GUID_A.bytes_le, 26, b"hello"), pad_to=48),
    "entry-len-huge": raw_table(45, (GUID_A.bytes_le, 0xFFFFFFFF, b"hello"), pad_to=48),
    "second-entry-past-table": raw_table(
        70, (GUID_A.bytes_le, 25, b"hello"), (GUID_B.bytes_le, 26, b"world"), pad_to=80
    ),
    "deleted-entry-corrupt": raw_table(45, (bytes(16), 3, b"hello"), pad_to=48),
}


@pytest.mark.parametrize("name", sorted(BAD_AREAS))
def test_parse_rejects(name: str) -> None:
    with pytest.raises(SecretFormatError):
        SecretTable.parse(BAD_AREAS[name])


def test_parse_boundaries_are_accepted() -> None:
    assert SecretTable.parse(GOOD).entries == (SecretEntry(GUID_A, b"hello"),)
    # len == header size: an empty table; len == area size: allowed.
    assert SecretTable.parse(raw_table(20)).entries == ()
    assert SecretTable.parse(GOOD[:45]).entries == (SecretEntry(GUID_A, b"hello"),)
    # An entry of exactly 20 bytes has no data.
    assert SecretTable.parse(raw_table(40, (GUID_A.bytes_le, 20, b""))).entries == (
        SecretEntry(GUID_A, b""),
    )


# --- serialize refusals --------------------------------------------------------------


def test_table_bigger_than_the_secret_area_is_refused() -> None:
    fits = SecretTable((SecretEntry(GUID_A, bytes(DEFAULT_SECRET_AREA - 40)),))
    assert len(fits.serialize(area_size=DEFAULT_SECRET_AREA)) == DEFAULT_SECRET_AREA
    too_big = SecretTable((SecretEntry(GUID_A, bytes(DEFAULT_SECRET_AREA - 39)),))
    assert len(too_big.serialize()) == DEFAULT_SECRET_AREA + 16
    with pytest.raises(SecretFormatError, match="3072-byte secret block"):
        too_big.serialize(area_size=DEFAULT_SECRET_AREA)
    with pytest.raises(SecretFormatError):
        SecretTable((SecretEntry(GUID_A, bytes(4000)),)).serialize(area_size=0xC00)


def test_duplicate_live_guids_are_refused_but_deleted_ones_are_not() -> None:
    with pytest.raises(SecretFormatError):
        SecretTable((SecretEntry(GUID_A, b"1"), SecretEntry(GUID_A, b"2"))).serialize()
    two_deleted = SecretTable((SecretEntry(NULL_GUID, b"1"), SecretEntry(NULL_GUID, b"2")))
    assert SecretTable.parse(two_deleted.serialize()) == two_deleted


# --- disk passphrase entry ------------------------------------------------------------


@pytest.mark.parametrize("passphrase", [b"x", b"correct horse battery staple", b"\xff\xfe\n"])
def test_disk_passphrase_entry_appends_exactly_one_nul(passphrase: bytes) -> None:
    entry = disk_passphrase_entry(passphrase)
    assert entry.guid == guids.DISK_PASSPHRASE_ENTRY
    assert entry.data == passphrase + b"\0"
    assert entry.length == 20 + len(passphrase) + 1


@pytest.mark.parametrize("passphrase", [b"", b"\0", b"abc\0", b"a\0b", b"\0abc"])
def test_disk_passphrase_entry_rejects_empty_or_nul(passphrase: bytes) -> None:
    with pytest.raises(SecretFormatError):
        disk_passphrase_entry(passphrase)


# --- property tests ------------------------------------------------------------------

guid_strategy = st.one_of(
    st.just(NULL_GUID), st.uuids(), st.integers(0, 3).map(lambda i: UUID(int=i))
)
entry_strategy = st.builds(SecretEntry, guid_strategy, st.binary(max_size=80))


def _drop_live_duplicates(entries: list[SecretEntry]) -> SecretTable:
    """Keep the first entry of each live GUID; zero-GUID (deleted) entries may repeat."""
    seen: set[UUID] = set()
    kept = []
    for e in entries:
        if not e.deleted and e.guid in seen:
            continue
        seen.add(e.guid)
        kept.append(e)
    return SecretTable(tuple(kept))


tables = st.lists(entry_strategy, max_size=LINUX_MAX_ENTRIES).map(_drop_live_duplicates)


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(table=tables)
def test_property_serialize_parse_round_trip(table: SecretTable) -> None:
    out = table.serialize()
    assert len(out) % 16 == 0
    assert 0 <= len(out) - table.length < 16
    assert struct.unpack_from("<I", out, 16) == (table.length,)
    assert SecretTable.parse(out) == table
    assert SecretTable.parse(out + b"\xa5" * 17) == table


@st.composite
def mutated_areas(draw: st.DrawFn) -> bytes:
    """A valid table, then a few random byte, length-field and size mutations."""
    table = draw(tables)
    area = bytearray(table.serialize())
    area += draw(st.binary(max_size=64))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["byte", "u32", "truncate"]))
        if not area:
            break
        pos = draw(st.integers(0, len(area) - 1))
        if kind == "byte":
            area[pos] = draw(st.integers(0, 255))
        elif kind == "u32":
            value = draw(
                st.one_of(st.integers(0, 64), st.integers(0, 0xFFFFFFFF), st.sampled_from([19, 20]))
            )
            area[pos : pos + 4] = struct.pack("<I", value)[: len(area) - pos]
        else:
            del area[pos:]
    return bytes(area)


areas = st.one_of(
    st.binary(max_size=256),
    st.binary(max_size=256).map(lambda tail: HEADER_GUID + tail),
    mutated_areas(),
)


@settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(area=areas)
def test_property_parse_raises_only_secret_format_error(area: bytes) -> None:
    try:
        table = SecretTable.parse(area)
    except SecretFormatError as err:
        event("refused")
        assert isinstance(err, HarnessError)
        assert err.exit_code == 2
        return
    event(f"accepted, {min(len(table.entries), 2)}+ entries")
    # Accepted: the entries must describe bytes of the area, as Linux would walk them.
    (length,) = struct.unpack_from("<I", area, 16)
    assert 20 <= length <= len(area)
    assert len(table.live) <= LINUX_MAX_ENTRIES
    pos = 20
    for entry in table.entries:
        assert entry.guid == UUID(bytes_le=area[pos : pos + 16])
        assert struct.unpack_from("<I", area, pos + 16) == (entry.length,)
        assert entry.data == area[pos + 20 : pos + entry.length]
        pos += entry.length
    assert pos <= length
    if len(table.entries) < LINUX_MAX_ENTRIES:
        assert length - pos < 20  # the walk only stops early at the entry limit


def test_more_live_entries_than_linux_reads_are_refused() -> None:
    entries = tuple(SecretEntry(UUID(int=i + 1), b"x") for i in range(65))
    with pytest.raises(SecretFormatError, match="only the first 64"):
        SecretTable(entries).serialize()
    SecretTable(entries[:64]).serialize()
