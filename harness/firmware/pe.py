"""PE32+ checks for EFI applications and the module list of a GRUB core image.

The PE parsing is pefile's; what we add is the judgement of what a usable x86_64 EFI
application looks like, and the layout of GRUB's ``mods`` section
(``include/grub/kernel.h``, ``util/mkimage.c``)::

    struct grub_module_info64 { grub_uint32_t magic;  /* "mimg" */
                                grub_uint32_t padding;
                                grub_uint64_t offset; /* first module header */
                                grub_uint64_t size; }; /* info + all modules */
    struct grub_module_header { grub_uint32_t type; grub_uint32_t size; /* incl. header */ };

Each module header starts on an 8-byte boundary.
"""

from __future__ import annotations

import enum
import itertools
import struct
from dataclasses import dataclass

import pefile

from harness.errors import FirmwareFormatError

IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_SUBSYSTEM_EFI_APPLICATION = 10

MODULE_INFO64 = struct.Struct("<IIQQ")
MODULE_HEADER = struct.Struct("<II")
GRUB_MODULE_MAGIC = 0x676D696D  # "mimg"


class GrubModuleType(enum.IntEnum):
    """``enum grub_module_header_types`` values that every GRUB release agrees on.

    Numbers from 4 up changed between 2.12 (PUBKEY, DTB, ...) and 2.14 (GPG_PUBKEY,
    X509_PUBKEY, ...), and distributions renumber them, so they are shown as numbers.
    """

    ELF = 0
    MEMDISK = 1
    CONFIG = 2
    PREFIX = 3


@dataclass(frozen=True)
class GrubModule:
    """One object in GRUB's module area. ``name`` is the ELF ``.modname`` for modules,
    or a short description of other objects (the embedded prefix, a config file)."""

    type: int
    size: int
    name: str

    @property
    def type_name(self) -> str:
        try:
            return GrubModuleType(self.type).name
        except ValueError:
            return f"type {self.type}"


@dataclass(frozen=True)
class PeSection:
    name: str
    virtual_address: int
    virtual_size: int
    raw_offset: int
    raw_size: int


@dataclass(frozen=True)
class PeInfo:
    """What we learnt from a PE image and what is wrong with it.

    Attributes:
        problems: sentences naming each failed check; empty when the image is a sane
            x86_64 EFI application.
        grub_modules: the module list when the image is a GRUB core image, else None.
    """

    size: int
    machine: int
    subsystem: int
    entry_point: int
    size_of_image: int
    sections: tuple[PeSection, ...]
    problems: tuple[str, ...]
    grub_modules: tuple[GrubModule, ...] | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def is_grub(self) -> bool:
        return self.grub_modules is not None


def inspect_pe(data: bytes) -> PeInfo:
    """Parse *data* as a PE image and check it is a sane x86_64 EFI application.

    Raises:
        FirmwareFormatError: pefile cannot parse it at all.
    """
    # Check the signatures first: pefile runs a full gc.collect() whenever it gives
    # up (and on close), which costs milliseconds per call in a busy process.
    if len(data) < 0x40 or data[:2] != b"MZ":
        raise FirmwareFormatError("Not a PE image: no MZ header.")
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    if data[e_lfanew : e_lfanew + 4] != b"PE\0\0":
        raise FirmwareFormatError("Not a PE image: no PE signature where the MZ header points.")
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as err:
        raise FirmwareFormatError(f"Not a PE image: {err.value}.") from err
    # Built from bytes, the PE holds no file or mapping: nothing to close.
    return _describe(pe, data)


def _describe(pe: pefile.PE, data: bytes) -> PeInfo:
    sections = tuple(
        PeSection(
            name=s.Name.rstrip(b"\0").decode("ascii", errors="replace"),
            virtual_address=s.VirtualAddress,
            virtual_size=s.Misc_VirtualSize,
            raw_offset=s.PointerToRawData,
            raw_size=s.SizeOfRawData,
        )
        for s in pe.sections
    )
    opt = pe.OPTIONAL_HEADER
    problems: list[str] = []
    if pe.FILE_HEADER.Machine != IMAGE_FILE_MACHINE_AMD64:
        problems.append(f"machine is {pe.FILE_HEADER.Machine:#06x}, not AMD64 (0x8664)")
    if opt.Subsystem != IMAGE_SUBSYSTEM_EFI_APPLICATION:
        problems.append(f"subsystem is {opt.Subsystem}, not EFI application (10)")
    problems.extend(_section_problems(sections, len(data), opt.SizeOfImage))
    if not any(
        s.virtual_address <= opt.AddressOfEntryPoint < s.virtual_address + s.virtual_size
        for s in sections
    ):
        problems.append(f"entry point {opt.AddressOfEntryPoint:#x} lies in no section")
    mods = next((s for s in sections if s.name == "mods"), None)
    modules = None
    if mods is not None and mods.raw_offset + mods.raw_size <= len(data):
        raw = data[mods.raw_offset : mods.raw_offset + min(mods.raw_size, mods.virtual_size)]
        modules = grub_modules(raw)
    return PeInfo(
        size=len(data),
        machine=pe.FILE_HEADER.Machine,
        subsystem=opt.Subsystem,
        entry_point=opt.AddressOfEntryPoint,
        size_of_image=opt.SizeOfImage,
        sections=sections,
        problems=tuple(problems),
        grub_modules=modules,
    )


def _section_problems(sections: tuple[PeSection, ...], size: int, image_size: int) -> list[str]:
    problems = []
    if not sections:
        problems.append("the image has no sections")
    for s in sections:
        if s.raw_offset + s.raw_size > size:
            problems.append(f"section {s.name!r} runs past the end of the file")
        if s.virtual_address + s.virtual_size > image_size:
            problems.append(f"section {s.name!r} runs past SizeOfImage")
    spans = sorted(
        (s.virtual_address, s.virtual_address + s.virtual_size, s.name) for s in sections
    )
    for (_, end, name), (start, _, nxt) in itertools.pairwise(spans):
        if start < end:
            problems.append(f"sections {name!r} and {nxt!r} overlap in memory")
    return problems


def grub_modules(area: bytes) -> tuple[GrubModule, ...] | None:
    """Decode GRUB's module area, or return None when *area* does not start with one.

    Raises:
        FirmwareFormatError: the magic is there but the module list is corrupt.
    """
    if len(area) < MODULE_INFO64.size:
        return None
    magic, _, offset, total = MODULE_INFO64.unpack_from(area)
    if magic != GRUB_MODULE_MAGIC:
        return None
    if total > len(area) or offset < MODULE_INFO64.size:
        raise FirmwareFormatError(
            f"GRUB's module area claims {total} bytes but the mods section holds {len(area)}."
        )
    modules = []
    pos = offset
    while pos + MODULE_HEADER.size <= total:
        mtype, msize = MODULE_HEADER.unpack_from(area, pos)
        if msize < MODULE_HEADER.size or pos + msize > total:
            raise FirmwareFormatError(
                f"GRUB module header at offset {pos:#x} of the mods section has size {msize}, "
                "which does not fit the module area."
            )
        body = area[pos + MODULE_HEADER.size : pos + msize]
        modules.append(GrubModule(mtype, msize, _module_name(mtype, body)))
        # Sizes need not be multiples of 8 (public keys), but modules start 8-aligned.
        pos += (msize + 7) & ~7
    return tuple(modules)


def _module_name(mtype: int, body: bytes) -> str:
    if mtype == GrubModuleType.ELF:
        return elf_modname(body) or "(unnamed module)"
    if mtype == GrubModuleType.PREFIX:
        return body.split(b"\0", 1)[0].decode(errors="replace")
    if mtype == GrubModuleType.CONFIG:
        return f"embedded config ({len(body.rstrip(bytes(1)))} bytes)"
    return f"{len(body)} bytes"


ELF64_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
ELF64_SHDR = struct.Struct("<IIQQQQIIQQ")


def elf_modname(obj: bytes) -> str | None:
    """Return the name in an ELF64 GRUB module's ``.modname`` section, if it has one."""
    if len(obj) < ELF64_HEADER.size or obj[:4] != b"\x7fELF" or obj[4] != 2:
        return None
    fields = ELF64_HEADER.unpack_from(obj)
    shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
    if shentsize < ELF64_SHDR.size or shstrndx >= shnum or shoff + shnum * shentsize > len(obj):
        return None

    def section(index: int) -> tuple[int, bytes]:
        hdr = ELF64_SHDR.unpack_from(obj, shoff + index * shentsize)
        name, offset, size = hdr[0], hdr[4], hdr[5]
        return name, obj[offset : offset + size]

    _, strtab = section(shstrndx)
    for index in range(shnum):
        name_off, content = section(index)
        if strtab[name_off : name_off + 9] == b".modname\0":
            return content.split(b"\0", 1)[0].decode(errors="replace") or None
    return None
