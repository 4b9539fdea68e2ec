"""The guest owner's check of the platform's chain, from a trusted ARK to the PDH.

::

    ARK (self-signed, a trusted root) -> ASK -> CEK -> PEK <- OCA (self-signed)
                                                      PEK -> PDH

The PEK carries two signatures, the OCA's and the CEK's. AMD's roots of each EPYC
generation ship in ``roots/`` (see its README for where they come from); a caller may
trust another root set explicitly, such as a simulated platform's own ARK and ASK. The
PDH of a verified chain is the key the LAUNCH_START session is opened to.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, InputError, VerificationError
from harness.files import read_input
from harness.sev.certs import (
    ECDH,
    ECDSA,
    Algo,
    AmdCertificate,
    SevCertificate,
    SignatureSlot,
    Usage,
    ecdsa_verifies,
    rsa_verifies,
)

#: The platform's certificates: what a chain directory names them, and what each is.
PLATFORM_ROLES = {"pdh": Usage.PDH, "pek": Usage.PEK, "oca": Usage.OCA, "cek": Usage.CEK}
AMD_GENERATIONS = ("naples", "rome", "milan", "genoa")
#: Generations whose chip endorsement keys can be extracted from the firmware (Buhren,
#: Jacob, Krachenfels, Seifert: "Insecure Until Proven Updated: Analyzing AMD SEV's
#: Remote Attestation", CCS 2019): a chain that verifies up to their root proves nothing
#: about the platform, so the owner accepts one only when told to (--allow-naples).
EXTRACTABLE_GENERATIONS = ("naples",)


@dataclass(frozen=True)
class RootSet:
    """One generation's trusted ARK and the ASK it signs, e.g. ``naples``."""

    name: str
    ark: AmdCertificate
    ask: AmdCertificate

    @property
    def title(self) -> str:
        return self.name[:1].upper() + self.name[1:]

    @classmethod
    def parse(cls, name: str, ark: bytes, ask: bytes, where: str) -> RootSet:
        """Raises: InputError: a malformed certificate, named with *where*."""
        return cls(
            name,
            AmdCertificate.parse(ark, f"the {name} ARK ({where})"),
            AmdCertificate.parse(ask, f"the {name} ASK ({where})"),
        )


@dataclass(frozen=True)
class Roots:
    """The root sets the owner trusts: AMD's, or one it is told to trust explicitly."""

    sets: tuple[RootSet, ...]

    @classmethod
    def amd(cls) -> Roots:
        """AMD's ARK and ASK of each generation, shipped in ``harness/sev/roots/``."""
        base = importlib.resources.files("harness.sev") / "roots"
        return cls(
            tuple(
                RootSet.parse(
                    gen,
                    (base / gen / "ark.cert").read_bytes(),
                    (base / gen / "ask.cert").read_bytes(),
                    f"harness/sev/roots/{gen}",
                )
                for gen in AMD_GENERATIONS
            )
        )

    @classmethod
    def of(cls, name: str, ark: bytes, ask: bytes) -> Roots:
        """Trust this root set alone (a simulated platform's self-made ARK and ASK).

        Raises:
            InputError: a malformed ARK or ASK.
        """
        return cls((RootSet.parse(name, ark, ask, "given"),))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sets)

    def get(self, name: str) -> RootSet:
        """Raises: ConfigError: no such generation."""
        for s in self.sets:
            if s.name == name:
                return s
        raise ConfigError(
            f"There is no trusted root set {name!r}; the known ones are {', '.join(self.names)}."
        )


@dataclass(frozen=True)
class PlatformChain:
    """The chain as ``sevctl export`` / ``sevtool --export_cert_chain`` write it to a
    directory: pdh, pek, oca and cek.cert, and optionally ask.cert and ark.cert."""

    pdh: SevCertificate
    pek: SevCertificate
    oca: SevCertificate
    cek: SevCertificate
    ask: AmdCertificate | None = None
    ark: AmdCertificate | None = None

    @classmethod
    def load(cls, directory: str | Path) -> PlatformChain:
        """Raises: InputError: a missing or malformed certificate, named by its file."""
        d = Path(directory)
        if not d.is_dir():
            raise InputError(f"The certificate chain directory {d} does not exist.")
        files = {name: d / f"{name}.cert" for name in (*PLATFORM_ROLES, "ask", "ark")}
        raw = {
            n: read_input(f, f"{n.upper()} certificate")
            for n, f in files.items()
            if n in PLATFORM_ROLES or f.exists()
        }
        sev = {n: SevCertificate.parse(raw[n], str(files[n])) for n in PLATFORM_ROLES}
        amd = {n: AmdCertificate.parse(raw[n], str(files[n])) for n in ("ask", "ark") if n in raw}
        return cls(sev["pdh"], sev["pek"], sev["oca"], sev["cek"], amd.get("ask"), amd.get("ark"))


@dataclass(frozen=True)
class Link:
    """One verified step: *subject* signed by *issuer* (itself when self-signed)."""

    subject: str
    issuer: str

    def __str__(self) -> str:
        if self.subject == self.issuer:
            return f"{self.subject} self-signed: ok"
        return f"{self.subject} signed by {self.issuer}: ok"


@dataclass(frozen=True)
class VerifiedChain:
    """A chain that verified up to a trusted ARK; ``pdh`` is the key to open a session to."""

    generation: str
    links: tuple[Link, ...]
    pdh: SevCertificate


def _check_role(name: str, cert: SevCertificate) -> None:
    usage = PLATFORM_ROLES[name.lower()]
    if cert.usage != usage:
        raise VerificationError(
            f"The {name} certificate has key usage {cert.usage:#x}, not the {name} usage "
            f"{usage:#x}."
        )
    allowed = ECDH if usage == Usage.PDH else ECDSA
    if cert.algo not in allowed:
        raise VerificationError(
            f"The {name} certificate has key algorithm {cert.algo:#x}; the {name} key is "
            f"{'ECDH' if usage == Usage.PDH else 'ECDSA'} P-384 "
            f"({' or '.join(f'{a:#x}' for a in allowed)})."
        )


def _check_sev_link(
    subject: str,
    cert: SevCertificate,
    issuer: str,
    usage: int,
    algo: Algo,
    verifies: Callable[[SignatureSlot], bool],
) -> Link:
    """Find *cert*'s slot for *issuer* (by usage) and check its algorithm and signature."""
    slots = [s for s in cert.sigs if s.usage == usage]
    is_not = "is not self-signed" if subject == issuer else f"is not signed by the {issuer}"
    if not slots:
        raise VerificationError(
            f"The {subject} {is_not}: it carries no signature with the {issuer}'s usage {usage:#x}."
        )
    if not any(s.algo == algo for s in slots):
        raise VerificationError(
            f"The {subject} {is_not}: that signature is marked algorithm {slots[0].algo:#x}, "
            f"where the {issuer} signs with {algo.name} ({algo:#x})."
        )
    if not any(s.algo == algo and verifies(s) for s in slots):
        what = "self-signature" if subject == issuer else f"signature by the {issuer}"
        raise VerificationError(f"The {subject}'s {what} does not verify.")
    return Link(subject, issuer)


def _by_sev_key(subject: str, cert: SevCertificate, issuer: str, key: SevCertificate) -> Link:
    return _check_sev_link(
        subject,
        cert,
        issuer,
        key.usage,
        Algo(key.algo),
        lambda s: ecdsa_verifies(key, s, cert.body),
    )


def _by_ask(cek: SevCertificate, roots: RootSet, ask: AmdCertificate) -> Link:
    issuer = f"{roots.title} ASK"
    return _check_sev_link(
        "CEK",
        cek,
        issuer,
        Usage.ASK,
        ask.sev_algo,
        lambda s: rsa_verifies(ask, s.sig, cek.body),
    )


def _check_amd(roots: RootSet, ark: AmdCertificate, ask: AmdCertificate) -> tuple[Link, Link]:
    """ARK trusted and self-signed, ASK signed by it."""
    title = roots.title
    if ark.serialize() != roots.ark.serialize():
        raise VerificationError(f"The chain's ARK is not the trusted {title} ARK.")
    if ark.usage != Usage.ARK or ark.certifying_id != ark.key_id:
        raise VerificationError(f"The {title} ARK is not a self-certifying root key.")
    if not rsa_verifies(ark, ark.signature, ark.body):
        raise VerificationError(f"The {title} ARK's self-signature does not verify.")
    if ask.usage != Usage.ASK:
        raise VerificationError(
            f"The ASK certificate has key usage {ask.usage:#x}, not the ASK usage {Usage.ASK:#x}."
        )
    if ask.certifying_id != ark.key_id:
        raise VerificationError(
            f"The ASK is not signed by the {title} ARK: it names certifying key "
            f"{ask.certifying_id.hex()}, the ARK is {ark.key_id.hex()}."
        )
    if ask.modulus_bits != ark.modulus_bits or not rsa_verifies(ark, ask.signature, ask.body):
        raise VerificationError(f"The ASK's signature by the {title} ARK does not verify.")
    return Link(f"ARK ({roots.name})", f"ARK ({roots.name})"), Link(f"ASK ({roots.name})", "ARK")


def _choose(chain: PlatformChain, roots: Roots, generation: str) -> RootSet:
    """The named root set, or (auto) the one the chain's ARK, ASK or CEK points to."""
    if generation != "auto":
        return roots.get(generation)
    everyone = ", ".join(s.title for s in roots.sets)
    if chain.ark is not None:
        for s in roots.sets:
            if s.ark.serialize() == chain.ark.serialize():
                return s
        raise VerificationError(f"The chain's ARK is none of the trusted ARKs ({everyone}).")
    if chain.ask is not None:
        for s in roots.sets:
            if s.ark.key_id == chain.ask.certifying_id:
                return s
        raise VerificationError(
            f"The ASK is not signed by a trusted ARK: its certifying key "
            f"{chain.ask.certifying_id.hex()} is none of {everyone}'s."
        )
    for s in roots.sets:
        try:
            _by_ask(chain.cek, s, s.ask)
        except VerificationError:
            continue
        return s
    raise VerificationError(f"The CEK is signed by none of the trusted ASKs ({everyone}).")


def verify_chain(
    chain: PlatformChain,
    roots: Roots,
    generation: str = "auto",
    *,
    allow_naples: bool = False,
    cek: SevCertificate | None = None,
) -> VerifiedChain:
    """Verify the chain from the trusted ARK down to the PDH.

    Args:
        generation: a root set's name, or ``auto`` for the one the chain's ARK (if it
            brings one), its ASK's certifying key, or else the ASK that signs its CEK
            points to.
        allow_naples: accept a chain that ends at a root of
            :data:`EXTRACTABLE_GENERATIONS` (refused by default, once it verifies).
        cek: the one chip the owner expects: the chain's CEK must be this certificate.

    Raises:
        ConfigError: an unknown generation.
        VerificationError: a broken link, named in the sentence; a Naples chain without
            *allow_naples*; another chip than *cek*.
    """
    trusted = _choose(chain, roots, generation)
    ark = chain.ark or trusted.ark
    ask = chain.ask or trusted.ask
    links = [*_check_amd(trusted, ark, ask)]
    _check_role("CEK", chain.cek)
    links.append(_by_ask(chain.cek, trusted, ask))
    _check_role("OCA", chain.oca)
    links.append(_by_sev_key("OCA", chain.oca, "OCA", chain.oca))
    _check_role("PEK", chain.pek)
    links.append(_by_sev_key("PEK", chain.pek, "OCA", chain.oca))
    links.append(_by_sev_key("PEK", chain.pek, "CEK", chain.cek))
    _check_role("PDH", chain.pdh)
    links.append(_by_sev_key("PDH", chain.pdh, "PEK", chain.pek))
    if trusted.name in EXTRACTABLE_GENERATIONS and not allow_naples:
        raise VerificationError(
            f"The chain verifies up to AMD's {trusted.title} root, whose chip keys can be "
            "extracted (Buhren et al., CCS 2019), so it proves nothing about the platform.",
            hint="--allow-naples accepts it anyway, for a platform you trust by other means",
        )
    if cek is not None and chain.cek.serialize() != cek.serialize():
        raise VerificationError(
            "The platform's CEK is not the chip pinned with --cek: another machine answered."
        )
    return VerifiedChain(trusted.name, tuple(links), chain.pdh)


def load_cek(path: str | Path) -> SevCertificate:
    """The chip the owner pins (``--cek FILE``).

    Raises:
        InputError: the file is missing or holds no SEV certificate.
    """
    return SevCertificate.parse(read_input(path, "pinned CEK certificate"), str(path))


@dataclass(frozen=True)
class PlatformTrust:
    """What the owner accepts of a platform beyond a chain to AMD's roots: a Naples
    chain (``--allow-naples``), and the one chip it expects (``--cek``)."""

    allow_naples: bool = False
    cek: SevCertificate | None = None


#: The owner's default: a chain to AMD's current roots, any chip, never Naples.
DEFAULT_TRUST = PlatformTrust()


def verify_directory(
    directory: str | Path,
    generation: str = "auto",
    roots: Roots | None = None,
    *,
    allow_naples: bool = False,
    cek: str | Path | None = None,
) -> VerifiedChain:
    """Load a chain directory and verify it against *roots* (AMD's by default);
    *allow_naples* and *cek* (a certificate file) as for :func:`verify_chain`.

    Raises:
        InputError: a missing or malformed certificate.
        ConfigError: an unknown generation.
        VerificationError: a broken link, a refused Naples chain or another chip.
    """
    pinned = None if cek is None else load_cek(cek)
    return verify_chain(
        PlatformChain.load(directory),
        roots or Roots.amd(),
        generation,
        allow_naples=allow_naples,
        cek=pinned,
    )
