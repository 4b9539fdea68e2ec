"""The guest owner's side of LAUNCH_START: its Diffie-Hellman certificate and the session.

AMD SEV API (publication 55766) LAUNCH_START and "Key derivation"; the same steps in
virtee's ``sev`` crate (``src/session/``) and sev-tool (``build_session_buffer``)::

    Z          = ECDH(GODH private key, PDH public key): the shared point's x-coordinate,
                 48 bytes big-endian (what OpenSSL's derive returns)
    MASTER     = KDF(Z, "sev-master-secret", NONCE)
    KEK        = KDF(MASTER, "sev-kek", "")
    KIK        = KDF(MASTER, "sev-kik", "")
    WRAP_TK    = AES-128-CTR(KEK, counter block WRAP_IV, TEK || TIK)
    WRAP_MAC   = HMAC-SHA256(KIK, WRAP_TK)
    POLICY_MAC = HMAC-SHA256(TIK, POLICY u32le)

KDF is NIST SP 800-108's counter mode with HMAC-SHA256 and a 128-bit output::

    K(i) = HMAC-SHA256(key, i u32le || label || 0x00 || context || 128 u32le)

The owner sends its GODH certificate and the session buffer; the secure element does
the same ECDH with the PDH's private key, checks WRAP_MAC, unwraps TEK and TIK, and
checks POLICY_MAC against the policy the host asked for. The GODH private key is
needed for nothing after Z, so it is never kept or written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.errors import ConfigError, InputError
from harness.files import read_input, write_private
from harness.sev.certs import ECDH, Algo, SevCertificate, Usage
from harness.sev.chain import Roots, VerifiedChain, verify_directory
from harness.sev.packet import KEY_SIZE, TransportKeys
from harness.sev.policy import GuestPolicy

SESSION_BUFFER = struct.Struct("<16s32s16s32s32s")
NONCE_SIZE = 16
IV_SIZE = 16
MASTER_LABEL = b"sev-master-secret"
KEK_LABEL = b"sev-kek"
KIK_LABEL = b"sev-kik"
#: What ``write_session`` writes into its directory, all 0600.
GODH_FILE = "godh.cert"
SESSION_FILE = "session.bin"
GODH_B64_FILE = "godh.b64"
SESSION_B64_FILE = "session.b64"
TIKTEK_FILE = "tmp_tk.bin"


@dataclass(frozen=True)
class SessionBuffer:
    """LAUNCH_START's session data (sev-tool ``sev_session_buf``, 128 bytes)::

    typedef struct sev_session_buf {
        uint8_t nonce[16]; uint8_t wrap_tk[32]; uint8_t wrap_iv[16];
        uint8_t wrap_mac[32]; uint8_t policy_mac[32];
    } sev_session_buf;
    """

    nonce: bytes
    wrap_tk: bytes
    wrap_iv: bytes
    wrap_mac: bytes
    policy_mac: bytes

    @classmethod
    def parse(cls, data: bytes) -> SessionBuffer:
        """Raises: InputError: not 128 bytes."""
        if len(data) != SESSION_BUFFER.size:
            raise InputError(
                f"A LAUNCH_START session buffer is {SESSION_BUFFER.size} bytes; this one is "
                f"{len(data)}."
            )
        return cls(*SESSION_BUFFER.unpack(data))

    def serialize(self) -> bytes:
        return SESSION_BUFFER.pack(
            self.nonce, self.wrap_tk, self.wrap_iv, self.wrap_mac, self.policy_mac
        )


def kdf(key: bytes, label: bytes, context: bytes = b"", size: int = KEY_SIZE) -> bytes:
    """NIST SP 800-108 counter-mode KDF with HMAC-SHA256, as the SEV API uses it."""
    out = b""
    for i in range(1, -(-size // hashlib.sha256().digest_size) + 1):
        message = struct.pack("<I", i) + label + b"\0" + context + struct.pack("<I", size * 8)
        out += hmac.digest(key, message, "sha256")
    return out[:size]


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def session_buffer(
    z: bytes, keys: TransportKeys, policy: int, nonce: bytes, iv: bytes
) -> SessionBuffer:
    """Wrap TEK and TIK for the secure element that shares *z*, and MAC the policy."""
    master = kdf(z, MASTER_LABEL, nonce)
    kek, kik = kdf(master, KEK_LABEL), kdf(master, KIK_LABEL)
    wrap_tk = _aes_ctr(kek, iv, keys.tek + keys.tik)
    wrap_mac = hmac.digest(kik, wrap_tk, "sha256")
    policy_mac = hmac.digest(keys.tik, struct.pack("<I", policy), "sha256")
    return SessionBuffer(nonce, wrap_tk, iv, wrap_mac, policy_mac)


def pdh_key(pdh: SevCertificate, source: str = "The PDH certificate") -> ec.EllipticCurvePublicKey:
    """The PDH's ECDH P-384 public key.

    Raises:
        InputError: not a PDH certificate, not an ECDH key, or not a P-384 point.
    """
    if pdh.usage != Usage.PDH or pdh.algo not in ECDH:
        raise InputError(
            f"{source} has key usage {pdh.usage:#x} and algorithm "
            f"{pdh.algo:#x}; a PDH is usage {Usage.PDH:#x}, ECDH ({Algo.ECDH_SHA256:#x})."
        )
    try:
        return pdh.public_key()
    except ValueError as err:
        raise InputError(f"{source} holds no usable key: {err}.") from err


@dataclass(frozen=True)
class Session:
    """What LAUNCH_START takes from the owner, and the transport keys it keeps.

    Attributes:
        godh_cert: the owner's unsigned GODH certificate (0x824 bytes).
        blob: the serialized session buffer (128 bytes).
        keys: the TEK and TIK wrapped in *blob*; LAUNCH_MEASURE and LAUNCH_SECRET use them.
        policy: the guest policy *blob* MACs.
    """

    godh_cert: bytes
    blob: bytes
    keys: TransportKeys
    policy: int

    def __repr__(self) -> str:  # the blob is harmless, the keys are not
        return f"Session(policy={self.policy:#x}, keys=<redacted>)"


def start_session(
    pdh: SevCertificate,
    policy: int,
    *,
    nonce: bytes | None = None,
    iv: bytes | None = None,
    keys: TransportKeys | None = None,
    godh_private: ec.EllipticCurvePrivateKey | None = None,
) -> Session:
    """Open a session to the platform whose PDH is *pdh*, with fresh keys and nonces.

    Args:
        nonce, iv, keys, godh_private: fixed values for known-answer tests only.

    Raises:
        InputError: a PDH that is not an ECDH P-384 key, a policy beyond 32 bits, or a
            nonce or IV that is not 16 bytes.
    """
    peer = pdh_key(pdh)
    if not 0 <= policy <= 0xFFFFFFFF:
        raise InputError(f"The policy must fit in 32 bits, not {policy:#x}.")
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    iv = os.urandom(IV_SIZE) if iv is None else iv
    if len(nonce) != NONCE_SIZE or len(iv) != IV_SIZE:
        raise InputError("The session nonce and wrap IV are 16 bytes each.")
    keys = TransportKeys.generate() if keys is None else keys
    private = ec.generate_private_key(ec.SECP384R1()) if godh_private is None else godh_private
    godh = SevCertificate.with_public_key(private.public_key(), Usage.PDH, Algo.ECDH_SHA256)
    z = private.exchange(ec.ECDH(), peer)
    blob = session_buffer(z, keys, policy, nonce, iv).serialize()
    return Session(godh.serialize(), blob, keys, policy)


def write_session(session: Session, out: Path) -> tuple[Path, ...]:
    """Write the session into directory *out* (created if missing), 0600, all or nothing.

    ``godh.cert`` and ``session.bin`` raw, ``godh.b64`` and ``session.b64`` as QEMU's
    ``sev-guest`` ``dh-cert-file`` and ``session-file`` take them, ``tmp_tk.bin`` the TEK
    then the TIK (sev-tool's layout, which ``sev.secret --tiktek`` reads).

    Raises:
        InputError: *out* is a file, or cannot be written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"Cannot create the session directory {out}: {err.strerror}.") from err
    files = {
        out / GODH_FILE: session.godh_cert,
        out / SESSION_FILE: session.blob,
        out / GODH_B64_FILE: base64.b64encode(session.godh_cert),
        out / SESSION_B64_FILE: base64.b64encode(session.blob),
        out / TIKTEK_FILE: session.keys.tek + session.keys.tik,
    }
    write_private(files)
    return tuple(files)


@dataclass(frozen=True)
class OpenedSession:
    """What ``sev.session`` did: the chain it verified (None for a trusted lone PDH)."""

    chain: VerifiedChain | None
    policy: int
    written: tuple[Path, ...]

    def lines(self) -> list[str]:
        if self.chain is None:
            head = [
                "PDH trusted without a chain (--trust-pdh): the owner got it over a channel "
                "it trusts"
            ]
        else:
            head = [f"chain verified ({self.chain.generation}):"]
            head += [f"  {link}" for link in self.chain.links]
        head.append(f"policy {self.policy:#x}")
        return head + [f"wrote {path}" for path in self.written]


def open_session(
    certs: str | None,
    pdh: str | None,
    trust_pdh: bool,
    generation: str,
    policy: str,
    out: str,
    roots: Roots | None = None,
    *,
    allow_naples: bool = False,
    cek: str | None = None,
) -> OpenedSession:
    """Verify the chain in *certs* (or take a lone *pdh* the owner trusts), open a
    session to its PDH with *policy*, and write it into *out*. *allow_naples* and *cek*
    as for :func:`harness.sev.chain.verify_chain`.

    Raises:
        ConfigError: neither or both of --certs and --pdh, --pdh without --trust-pdh,
            or a policy that is not a number or sets reserved bits.
        VerificationError: the chain does not verify (nothing is written).
    """
    if bool(certs) == bool(pdh):
        raise ConfigError("Give the platform's chain (--certs DIR) or a lone PDH (--pdh FILE).")
    if pdh and not trust_pdh:
        raise ConfigError(
            "A lone PDH (--pdh) proves nothing about the platform; add --trust-pdh only if "
            "it came over a channel you trust, or give its chain with --certs.",
        )
    if trust_pdh and not pdh:
        raise ConfigError("--trust-pdh trusts a lone PDH given with --pdh FILE.")
    try:
        number = int(policy, 0)
    except ValueError as err:
        raise ConfigError(f"The policy {policy!r} is not a number.") from err
    value = GuestPolicy.parse(number).value
    chain = None
    if certs:
        chain = verify_directory(certs, generation, roots, allow_naples=allow_naples, cek=cek)
        key = chain.pdh
    else:
        assert pdh is not None
        key = SevCertificate.parse(read_input(pdh, "PDH"), pdh)
        pdh_key(key, f"The PDH certificate {pdh}")
    session = start_session(key, value)
    return OpenedSession(chain, value, write_session(session, Path(out)))
