"""``inspect``: everything the harness can tell about a firmware image, as JSON or text.

The JSON layout is ``harness-inspect/1``, documented in ``docs/inspect-json.md`` and
checked against ``inspect.schema.json`` by the tests. Numbers are plain integers.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from harness.errors import FirmwareFormatError
from harness.firmware import guids
from harness.firmware.fv import FfsFile, FirmwareVolume, find_volumes, read_firmware
from harness.firmware.grub import GrubLocation, find_grub
from harness.firmware.guidtable import (
    GuidTable,
    GuidTableEntry,
    MemoryBlock,
    parse_guid_table,
    parse_sev_metadata,
    parse_tdx_metadata,
)
from harness.sev.measure import launch_digest, seves_launch_digest
from harness.sev.snp import snp_launch_digest
from harness.sev.vmsa import VcpuConfig, VmsaModel

SCHEMA = "harness-inspect/1"
Json = dict[str, Any]
#: The vCPUs inspect assumes for the SEV-ES and SNP digests: one EPYC-v4, the VMSA
#: model each mode gets by default (``./inv sev.digest`` takes others).
SEVES_VCPUS = VcpuConfig()
SNP_VCPUS = VcpuConfig(model=VmsaModel.INIT2)


def describe(path: Path) -> Json:
    """Inspect the firmware at *path*.

    Raises:
        InputError: the file cannot be read, or is not a firmware image.
        FirmwareFormatError: a structure inside it is malformed.
    """
    image = read_firmware(path)
    table = parse_guid_table(image)
    volumes = find_volumes(image)
    if table is None and not volumes:
        raise FirmwareFormatError(
            f"{path} is not a firmware image: it has neither a firmware volume nor an OVMF "
            "reset-vector GUID table."
        )
    grub = find_grub(volumes)
    return {
        "schema": SCHEMA,
        "path": str(path),
        "size": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
        "sev_launch_digest": launch_digest(image).hex(),
        "sev_es_reset_eip": None if table is None else table.sev_es_reset_eip,
        "seves_launch_digest": _vmsa_digest_json(image, table, SEVES_VCPUS, snp=False),
        "snp_launch_digest": _vmsa_digest_json(image, table, SNP_VCPUS, snp=True),
        "guid_table": None if table is None else _table_json(image, table),
        "secret_area": _block_json(table.secret_block if table else None),
        "hash_table_area": _block_json(table.hash_table_block if table else None),
        "volumes": [_volume_json(v) for v in volumes],
        "grub": None if grub is None else _grub_json(grub),
    }


def _vmsa_digest_json(
    image: bytes, table: GuidTable | None, vcpus: VcpuConfig, snp: bool
) -> Json | None:
    """The SEV-ES or SNP digest for *vcpus*, or None when the image cannot launch so
    (no GUID table; for SNP no SEV metadata or not whole pages)."""
    if table is None:
        return None
    if not snp:
        digest = seves_launch_digest(image, vcpus)
    elif parse_sev_metadata(image, table) is None:
        return None
    else:
        try:
            digest = snp_launch_digest(image, vcpus)
        except FirmwareFormatError:  # metadata SNP cannot launch (odd sizes, unknown types)
            return None
    return {
        "digest": digest.hex(),
        "vcpus": vcpus.count,
        "vcpu_type": vcpus.type_name,
        "vcpu_signature": vcpus.signature.value,
        "vmsa_model": vcpus.model.value,
        "sev_features": int(vcpus.sev_features(snp)),
    }


def _block_json(block: MemoryBlock | None) -> Json | None:
    if block is None or not block.present:
        return None
    return {"gpa": block.base, "size": block.size}


def _entry_json(entry: GuidTableEntry) -> Json:
    decoded: Json | None = None
    if entry.guid in (guids.SEV_SECRET_BLOCK, guids.SEV_HASH_TABLE_BLOCK):
        block = MemoryBlock.parse(entry.data, guids.NAMES[entry.guid])
        decoded = {"base": block.base, "size": block.size}
    elif entry.guid == guids.SEV_ES_RESET_BLOCK and len(entry.data) >= 4:
        value = struct.unpack_from("<I", entry.data)[0]
        decoded = {"ip": value & 0xFFFF, "cs_base": value & 0xFFFF0000}
    elif (
        entry.guid
        in (guids.SEV_METADATA_OFFSET, guids.TDX_METADATA_OFFSET, guids.IGVM_METADATA_OFFSET)
        and len(entry.data) >= 4
    ):
        decoded = {"offset_from_end": struct.unpack_from("<I", entry.data)[0]}
    return {
        "guid": str(entry.guid),
        "name": entry.name,
        "offset": entry.offset,
        "data": entry.data.hex(),
        "decoded": decoded,
    }


def _table_json(image: bytes, table: GuidTable) -> Json:
    sev = parse_sev_metadata(image, table)
    tdx = parse_tdx_metadata(image, table)
    return {
        "offset": table.offset,
        "length": table.length,
        "entries": [_entry_json(e) for e in table],
        "sev_metadata": None
        if sev is None
        else {
            "offset": sev.offset,
            "version": sev.version,
            "sections": [
                {"gpa": s.gpa, "size": s.size, "type": s.type, "type_name": s.type_name}
                for s in sev.sections
            ],
        },
        "tdx_metadata": None
        if tdx is None
        else {
            "offset": tdx.offset,
            "version": tdx.version,
            "sections": [
                {
                    "gpa": s.gpa,
                    "size": s.size,
                    "data_offset": s.data_offset,
                    "raw_size": s.raw_size,
                    "type": s.type,
                    "type_name": s.type_name,
                    "attributes": s.attributes,
                }
                for s in tdx.sections
            ],
        },
    }


def _file_json(ffs: FfsFile) -> Json:
    notes = [s.note for s in ffs.walk_sections() if s.note]
    return {
        "guid": str(ffs.guid),
        "type": ffs.type,
        "type_name": ffs.type_name,
        "name": ffs.ui_name,
        "offset": ffs.offset,
        "size": ffs.size,
        "sections": [s.type_name for s in ffs.walk_sections()],
        "notes": notes,
        "volumes": [_volume_json(v) for v in ffs.volumes],
    }


def _volume_json(fv: FirmwareVolume) -> Json:
    return {
        "offset": fv.offset,
        "length": fv.length,
        "filesystem": str(fv.filesystem),
        "filesystem_name": guids.name_of(fv.filesystem),
        "name": None if fv.name is None else str(fv.name),
        "files": [_file_json(f) for f in fv.files],
    }


def _grub_json(grub: GrubLocation) -> Json:
    pe = grub.pe
    return {
        "file_offset": grub.file.offset,
        "volume_offset": grub.volume.offset,
        "pe": {
            "size": pe.size,
            "sha256": grub.pe_sha256,
            "machine": pe.machine,
            "subsystem": pe.subsystem,
            "entry_point": pe.entry_point,
            "size_of_image": pe.size_of_image,
            "sections": [
                {
                    "name": s.name,
                    "virtual_address": s.virtual_address,
                    "virtual_size": s.virtual_size,
                    "raw_offset": s.raw_offset,
                    "raw_size": s.raw_size,
                }
                for s in pe.sections
            ],
            "ok": pe.ok,
            "problems": list(pe.problems),
        },
        "modules": None
        if pe.grub_modules is None
        else [
            {"type": m.type, "type_name": m.type_name, "name": m.name, "size": m.size}
            for m in pe.grub_modules
        ],
    }


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def render_text(report: Json) -> str:
    """The human-readable form of a :func:`describe` report."""
    out = [
        f"Firmware {report['path']}",
        f"  size               {report['size']} bytes ({_mib(report['size'])})",
        f"  sha256             {report['sha256']}",
        f"  SEV launch digest  {report['sev_launch_digest']}  (firmware only, no kernel hashes)",
    ]
    out += _vmsa_text(report)
    secret = report["secret_area"]
    if secret is None:
        out.append(
            "  secret area        none: this firmware reserves no SEV secret block, so an "
            "injected secret has nowhere to go"
        )
    else:
        out.append(f"  secret area        GPA {secret['gpa']:#x}, {secret['size']:#x} bytes")
    hashes = report["hash_table_area"]
    out.append(
        "  kernel hashes      none (no measured direct boot)"
        if hashes is None
        else f"  kernel hashes      GPA {hashes['gpa']:#x}, {hashes['size']:#x} bytes"
    )
    out += _table_text(report["guid_table"])
    out.append("")
    out.append("Firmware volumes")
    for fv in report["volumes"]:
        out += _volume_text(fv, 1)
    out.append("")
    out += _grub_text(report["grub"])
    return "\n".join(out) + "\n"


def _vmsa_text(report: Json) -> list[str]:
    eip = report["sev_es_reset_eip"]
    out = [
        "  SEV-ES AP reset    none: no SEV-ES reset block, one vCPU at most"
        if eip is None
        else f"  SEV-ES AP reset    EIP {eip:#x} "
        f"(CS base {eip & 0xFFFF0000:#x}, IP {eip & 0xFFFF:#06x})"
    ]
    for key, label in (
        ("seves_launch_digest", "SEV-ES digest"),
        ("snp_launch_digest", "SNP digest"),
    ):
        found = report[key]
        if found is None:
            out.append(f"  {label:18} none: not an image that launches this way")
            continue
        plural = "s" if found["vcpus"] > 1 else ""
        out.append(f"  {label:18} {found['digest']}")
        out.append(
            f"  {'':18} ({found['vcpus']} vCPU{plural} {found['vcpu_type']}, VMSA "
            f"{found['vmsa_model']}, sev_features {found['sev_features']:#x}, no kernel hashes)"
        )
    return out


def _table_text(table: Json | None) -> list[str]:
    if table is None:
        return ["", "Reset-vector GUID table: none"]
    out = ["", f"Reset-vector GUID table ({table['length']} bytes at {table['offset']:#x})"]
    for e in table["entries"]:
        d = e["decoded"]
        if d is None:
            detail = f"data {e['data'] or '(empty)'}"
        elif "base" in d:
            detail = (
                f"base {d['base']:#x} size {d['size']:#x}"
                if d["size"]
                else "base 0 size 0 (not reserved)"
            )
        elif "ip" in d:
            detail = f"IP {d['ip']:#06x}, CS base {d['cs_base']:#x}"
        else:
            detail = f"offset from end {d['offset_from_end']:#x}"
        out.append(f"  {e['guid']}  {e['name'] or 'unknown':24} {detail}")
    for key, label in (
        ("sev_metadata", "SEV metadata (ASEV)"),
        ("tdx_metadata", "TDX metadata (TDVF)"),
    ):
        meta = table[key]
        if meta is None:
            continue
        out.append(f"  {label} v{meta['version']} at {meta['offset']:#x}:")
        for s in meta["sections"]:
            out.append(f"    GPA {s['gpa']:#010x} size {s['size']:#08x}  {s['type_name']}")
    return out


def _volume_text(fv: Json, depth: int) -> list[str]:
    pad = "  " * depth
    kind = fv["filesystem_name"] or fv["filesystem"]
    out = [
        f"{pad}FV at {fv['offset']:#x}, {fv['length']:#x} bytes, {kind}, {len(fv['files'])} files"
    ]
    for f in fv["files"]:
        if f["type_name"] == "FFS_PAD":
            continue
        name = f" {f['name']}" if f["name"] else ""
        notes = "".join(f"  [{n}]" for n in f["notes"])
        out.append(f"{pad}  {f['guid']}  {f['type_name']:22}{name}{notes}")
        for inner in f["volumes"]:
            out += _volume_text(inner, depth + 2)
    return out


def _grub_text(grub: Json | None) -> list[str]:
    if grub is None:
        return [f"GRUB: not present (no file {guids.GRUB_FILE})"]
    pe = grub["pe"]
    verdict = (
        "a sane x86_64 EFI application" if pe["ok"] else "NOT usable: " + "; ".join(pe["problems"])
    )
    out = [
        f"GRUB: file at {grub['file_offset']:#x} of the FV at {grub['volume_offset']:#x}",
        f"  PE32 {pe['size']} bytes, sha256 {pe['sha256']}, {verdict}",
        "  sections " + ", ".join(s["name"] for s in pe["sections"]),
    ]
    if grub["modules"] is not None:
        names = [m["name"] for m in grub["modules"] if m["type_name"] == "ELF"]
        others = [
            f"{m['type_name']}: {m['name']}" for m in grub["modules"] if m["type_name"] != "ELF"
        ]
        out.append(f"  {len(names)} modules: " + " ".join(names))
        out += [f"  {o}" for o in others]
    return out
