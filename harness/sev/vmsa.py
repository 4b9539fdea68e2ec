"""The initial vCPU state (VMSA) an SEV-ES or SNP guest launches with, as QEMU/KVM set it.

An SEV-ES guest's registers live in an encrypted VMSA page per vCPU; LAUNCH_UPDATE_VMSA
measures each page, so the launch digest depends on the vCPU count and on exactly what
the hypervisor put in the page. The boot CPU starts at the reset vector (CS base
0xffff0000, IP 0xfff0); the application processors start where the firmware's SEV-ES
reset block says (``CS base = EIP & 0xffff0000``, ``IP = EIP & 0xffff``).

What QEMU and KVM put there (QEMU ``target/i386/cpu.c`` x86_cpu_reset and
``target/i386/sev.c``, KVM ``arch/x86/kvm/svm/sev.c`` sev_es_sync_vmsa): real-mode
segments, CR0 0x10 (ET), CR4 0x40 (MCE, set by KVM), EFER 0x1000 (SVME, set by KVM),
RFLAGS 0x2, DR6 0xffff0ff0, DR7 0x400, G_PAT 0x0007040600070406, XCR0 0x1, RDX the
CPUID signature (family/model/stepping) and SEV_FEATURES. KVM_SEV_INIT2 also sets the
x87/SSE reset state (MXCSR 0x1f80, FCW 0x037f) that the older KVM_SEV_INIT left zero.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError, FirmwareFormatError, InputError

PAGE_SIZE = 4096
#: The boot CPU's first instruction: CS base 0xffff0000, IP 0xfff0.
RESET_VECTOR_EIP = 0xFFFFFFF0


class Vmm(enum.StrEnum):
    """The hypervisor whose initial register state is modelled."""

    QEMU = "qemu"


class VmsaModel(enum.StrEnum):
    """How KVM was asked to set up the guest, which decides the FPU reset state."""

    #: KVM_SEV_INIT / KVM_SEV_ES_INIT: MXCSR and the x87 control word left 0.
    LEGACY = "legacy"
    #: KVM_SEV_INIT2 (Linux 6.10+, QEMU 9.1+; always for SNP): the architectural reset.
    INIT2 = "init2"

    @property
    def mxcsr(self) -> int:
        return 0x1F80 if self is VmsaModel.INIT2 else 0

    @property
    def x87_fcw(self) -> int:
        return 0x037F if self is VmsaModel.INIT2 else 0


class SevFeatures(enum.IntFlag):
    """``SEV_FEATURES`` (VMSA offset 0x3b0, AMD APM vol. 2 table 15-36), the bits used."""

    SNP_ACTIVE = 1 << 0
    DEBUG_SWAP = 1 << 5


@dataclass(frozen=True)
class CpuSignature:
    """CPUID Fn0000_0001_EAX (AMD CPUID specification, publication 25481)::

    bits  3:0   Stepping
    bits  7:4   BaseModel      (model & 0xf)
    bits 11:8   BaseFamily     (family, or 0xf when family > 0xf)
    bits 19:16  ExtModel       (model >> 4)
    bits 27:20  ExtFamily      (family - 0xf when family > 0xf)
    """

    family: int
    model: int
    stepping: int

    def __post_init__(self) -> None:
        for name, top in (("family", 0xF + 0xFF), ("model", 0xFF), ("stepping", 0xF)):
            value = getattr(self, name)
            if not 0 <= value <= top:
                raise ConfigError(f"The vCPU {name} must be 0-{top}, not {value}.")

    @property
    def value(self) -> int:
        base_family = min(self.family, 0xF)
        ext_family = self.family - 0xF if self.family > 0xF else 0
        return (
            ext_family << 20
            | (self.model >> 4) << 16
            | base_family << 8
            | (self.model & 0xF) << 4
            | self.stepping
        )

    @classmethod
    def parse(cls, value: int) -> CpuSignature:
        """Split a signature into family, model and stepping.

        Raises:
            ConfigError: it sets bits outside the fields above (or a BaseFamily below 0xf
                with an ExtFamily, which no CPU reports).
        """
        if value & ~0x0FFF0FFF:
            raise ConfigError(f"The vCPU signature {value:#x} sets bits outside 0x0fff0fff.")
        base_family, ext_family = value >> 8 & 0xF, value >> 20 & 0xFF
        if ext_family and base_family != 0xF:
            raise ConfigError(
                f"The vCPU signature {value:#x} has an extended family with base family "
                f"{base_family:#x}; only base family 0xf carries one."
            )
        return cls(
            base_family + ext_family, (value >> 16 & 0xF) << 4 | value >> 4 & 0xF, value & 0xF
        )


_EPYC = CpuSignature(23, 1, 2)
_ROME = CpuSignature(23, 49, 0)
_MILAN = CpuSignature(25, 1, 1)
_GENOA = CpuSignature(25, 17, 0)
_TURIN = CpuSignature(26, 0, 0)

#: QEMU's AMD EPYC models (``builtin_x86_defs`` in target/i386/cpu.c). A versioned
#: model (``-vN``) changes features and the model-id string, never family, model or
#: stepping, so every version has its base model's signature.
QEMU_CPU_TYPES: dict[str, CpuSignature] = {
    "EPYC": _EPYC,
    "EPYC-IBPB": _EPYC,
    **{f"EPYC-v{n}": _EPYC for n in range(1, 6)},
    "EPYC-Rome": _ROME,
    **{f"EPYC-Rome-v{n}": _ROME for n in range(1, 6)},
    "EPYC-Milan": _MILAN,
    **{f"EPYC-Milan-v{n}": _MILAN for n in range(1, 4)},
    "EPYC-Genoa": _GENOA,
    **{f"EPYC-Genoa-v{n}": _GENOA for n in range(1, 3)},
    "EPYC-Turin": _TURIN,
    "EPYC-Turin-v1": _TURIN,
}
DEFAULT_CPU_TYPE = "EPYC-v4"


def cpu_type(name: str) -> CpuSignature:
    """The signature of a QEMU CPU model, by name (case-insensitive).

    Raises:
        ConfigError: not one of :data:`QEMU_CPU_TYPES`.
    """
    for known, sig in QEMU_CPU_TYPES.items():
        if known.lower() == name.lower():
            return sig
    raise ConfigError(
        f"Unknown vCPU type {name!r}.",
        hint="one of " + ", ".join(QEMU_CPU_TYPES) + ", or give --vcpu-sig",
    )


@dataclass(frozen=True)
class VmcbSegment:
    """``struct vmcb_seg { u16 selector; u16 attrib; u32 limit; u64 base; }``."""

    selector: int
    attrib: int
    limit: int
    base: int

    FORMAT = struct.Struct("<HHIQ")


#: The VMSA fields QEMU/KVM set, at their offsets in the save area (AMD APM vol. 2
#: table B-4 "VMSA layout, state save area for SEV-ES"; Linux ``struct
#: sev_es_save_area``).
SEGMENT_OFFSETS: dict[str, int] = {
    name: i * VmcbSegment.FORMAT.size
    for i, name in enumerate(("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr"))
}
U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
U16 = struct.Struct("<H")
REGISTER_OFFSETS: dict[str, tuple[int, struct.Struct]] = {
    "efer": (0x0D0, U64),
    "cr4": (0x148, U64),
    "cr0": (0x158, U64),
    "dr7": (0x160, U64),
    "dr6": (0x168, U64),
    "rflags": (0x170, U64),
    "rip": (0x178, U64),
    "g_pat": (0x268, U64),
    "rdx": (0x310, U64),
    "sev_features": (0x3B0, U64),
    "xcr0": (0x3E8, U64),
    "mxcsr": (0x408, U32),
    "x87_fcw": (0x410, U16),
}


@dataclass(frozen=True)
class SevEsSaveArea:
    """``struct sev_es_save_area`` (one 4096-byte VMSA page), the fields a fresh vCPU
    has set; every other byte is zero.

    Segment attributes are in the VMCB's packed form (type, S, DPL, P in bits 0-7).
    """

    es: VmcbSegment
    cs: VmcbSegment
    ss: VmcbSegment
    ds: VmcbSegment
    fs: VmcbSegment
    gs: VmcbSegment
    gdtr: VmcbSegment
    ldtr: VmcbSegment
    idtr: VmcbSegment
    tr: VmcbSegment
    efer: int
    cr4: int
    cr0: int
    dr7: int
    dr6: int
    rflags: int
    rip: int
    g_pat: int
    rdx: int
    sev_features: int
    xcr0: int
    mxcsr: int
    x87_fcw: int

    def serialize(self) -> bytes:
        page = bytearray(PAGE_SIZE)
        for name, at in SEGMENT_OFFSETS.items():
            seg: VmcbSegment = getattr(self, name)
            VmcbSegment.FORMAT.pack_into(page, at, seg.selector, seg.attrib, seg.limit, seg.base)
        for name, (at, fmt) in REGISTER_OFFSETS.items():
            fmt.pack_into(page, at, getattr(self, name))
        return bytes(page)

    @classmethod
    def parse(cls, page: bytes) -> SevEsSaveArea:
        """Read a VMSA page such as sevctl's ``vmsa build`` writes.

        Raises:
            InputError: not 4096 bytes, or a byte outside the modelled fields is set
                (a VMSA this model could not reproduce).
        """
        if len(page) != PAGE_SIZE:
            raise InputError(f"A VMSA page is {PAGE_SIZE} bytes; this one is {len(page)}.")
        values: dict[str, Any] = {
            name: VmcbSegment(*VmcbSegment.FORMAT.unpack_from(page, at))
            for name, at in SEGMENT_OFFSETS.items()
        }
        for name, (at, fmt) in REGISTER_OFFSETS.items():
            values[name] = int(fmt.unpack_from(page, at)[0])
        area = cls(**values)
        rebuilt = area.serialize()
        if rebuilt != page:
            at = next(i for i in range(PAGE_SIZE) if rebuilt[i] != page[i])
            raise InputError(f"The VMSA sets byte {at:#x}, outside the fields QEMU/KVM initialise.")
        return area


def _real_mode_segment(attrib: int, base: int = 0, selector: int = 0) -> VmcbSegment:
    return VmcbSegment(selector, attrib, 0xFFFF, base)


#: Data segment: present, writable, accessed (0x93); code: present, readable,
#: accessed (0x9b); LDT (0x82); busy 32-bit TSS (0x8b).
DATA_ATTRIB, CODE_ATTRIB, LDT_ATTRIB, TSS_ATTRIB = 0x93, 0x9B, 0x82, 0x8B
#: PAT reset value (AMD APM vol. 2 section A.3): WB, WT, UC-, UC repeated.
PAT_RESET = 0x0007040600070406
#: KVM's KVM_MAX_VCPUS on x86 (4096 since Linux 5.15); QEMU's q35 allows fewer.
MAX_VCPUS = 4096


@dataclass(frozen=True)
class VcpuConfig:
    """Everything about the vCPUs that the VMSA digest depends on.

    Attributes:
        count: how many vCPUs (-smp); each adds one VMSA page.
        signature: their CPUID family/model/stepping (RDX at reset).
        type_name: the QEMU model it came from, for display (None for a raw signature).
        vmm: whose reset state is modelled.
        model: KVM_SEV_INIT (legacy) or KVM_SEV_INIT2.
        debug_swap: KVM set SEV_FEATURES.DebugSwap (kvm_amd debug_swap, or QEMU's
            sev-guest/sev-snp-guest debug-swap property with INIT2).
    """

    count: int = 1
    signature: CpuSignature = QEMU_CPU_TYPES[DEFAULT_CPU_TYPE]
    type_name: str | None = DEFAULT_CPU_TYPE
    vmm: Vmm = Vmm.QEMU
    model: VmsaModel = VmsaModel.LEGACY
    debug_swap: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_VCPUS:
            raise ConfigError(f"The vCPU count must be 1-{MAX_VCPUS}, not {self.count}.")

    def sev_features(self, snp: bool) -> SevFeatures:
        features = SevFeatures(0)
        if snp:
            features |= SevFeatures.SNP_ACTIVE
        if self.debug_swap:
            features |= SevFeatures.DEBUG_SWAP
        return features

    def describe(self, snp: bool = False) -> str:
        """One line naming what the VMSAs were built from, as the digest task prints it."""
        cpu = f"{self.type_name} " if self.type_name else ""
        plural = "s" if self.count > 1 else ""
        return (
            f"{self.count} vCPU{plural} {cpu}(signature {self.signature.value:#x}), "
            f"{self.vmm.value} VMSA {self.model.value} "
            f"(MXCSR {self.model.mxcsr:#x}, FCW {self.model.x87_fcw:#x}), "
            f"sev_features {int(self.sev_features(snp)):#x}"
            f"{' (DebugSwap)' if self.debug_swap else ''}"
        )


def save_area(eip: int, vcpus: VcpuConfig, snp: bool) -> SevEsSaveArea:
    """The VMSA of a vCPU that starts at *eip* (reset vector or AP reset address)."""
    return SevEsSaveArea(
        es=_real_mode_segment(DATA_ATTRIB),
        cs=_real_mode_segment(CODE_ATTRIB, base=eip & 0xFFFF0000, selector=0xF000),
        ss=_real_mode_segment(DATA_ATTRIB),
        ds=_real_mode_segment(DATA_ATTRIB),
        fs=_real_mode_segment(DATA_ATTRIB),
        gs=_real_mode_segment(DATA_ATTRIB),
        gdtr=_real_mode_segment(0),
        ldtr=_real_mode_segment(LDT_ATTRIB),
        idtr=_real_mode_segment(0),
        tr=_real_mode_segment(TSS_ATTRIB),
        efer=0x1000,
        cr4=0x40,
        cr0=0x10,
        dr7=0x400,
        dr6=0xFFFF0FF0,
        rflags=0x2,
        rip=eip & 0xFFFF,
        g_pat=PAT_RESET,
        rdx=vcpus.signature.value,
        sev_features=int(vcpus.sev_features(snp)),
        xcr0=0x1,
        mxcsr=vcpus.model.mxcsr,
        x87_fcw=vcpus.model.x87_fcw,
    )


def vmsa_pages(ap_eip: int | None, vcpus: VcpuConfig, snp: bool = False) -> Iterator[bytes]:
    """The VMSA pages in launch order: the boot CPU's, then one per AP.

    Args:
        ap_eip: the firmware's SEV-ES reset address; None when it has no reset block.

    Raises:
        FirmwareFormatError: more than one vCPU but no AP reset address.
    """
    if vcpus.count > 1 and ap_eip is None:
        raise FirmwareFormatError(
            f"This firmware has no SEV-ES reset block, so only one vCPU can start under "
            f"SEV-ES or SNP, not {vcpus.count}."
        )
    yield save_area(RESET_VECTOR_EIP, vcpus, snp).serialize()
    if vcpus.count > 1 and ap_eip is not None:
        ap = save_area(ap_eip, vcpus, snp).serialize()
        for _ in range(vcpus.count - 1):
            yield ap
