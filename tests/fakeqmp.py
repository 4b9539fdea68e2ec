"""A QMP peer that answers the SEV launch commands as QEMU on an SEV host does.

FAKE: it stands in for QEMU on AMD SEV hardware, which is not here. It speaks the
real wire protocol over a unix socket (greeting, ``qmp_capabilities``, one JSON
object per line), so the harness's client is qemu.qmp's own, unchanged. The replies
follow QEMU's QAPI schema (``qapi/misc-target.json``: SevInfo, SevLaunchMeasureInfo,
SevCapability, sev-inject-launch-secret) and, for the error replies, the words QEMU
7.2 printed on this host when asked without SEV (``KVM not enabled``, ``SEV is not
enabled in KVM``, ``SEV launch measurement is not available``, ``SEV not enabled for
guest``). What the platform answers comes from a *backend*: a script, or the
simulated secure element.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "fake-sev-host"},
        "capabilities": ["oob"],
    }
}


class Backend(Protocol):
    """The platform behind the peer: what it measured and what it accepts."""

    def measure(self) -> str: ...

    def inject(self, header: bytes, payload: bytes, gpa: int | None) -> str | None:
        """None when accepted, else QEMU's error description."""
        ...


@dataclass
class Script:
    """A backend with fixed answers, for the error replies."""

    measurement: str = ""
    refusal: str | None = None
    injected: list[tuple[bytes, bytes, int | None]] = field(default_factory=list)

    def measure(self) -> str:
        return self.measurement

    def inject(self, header: bytes, payload: bytes, gpa: int | None) -> str | None:
        self.injected.append((header, payload, gpa))
        return self.refusal


@dataclass
class FakeSevQemu:
    """The QMP side of a paused SEV guest.

    Attributes:
        sev: the host has SEV (else the no-SEV error replies, as QEMU gives them).
        state: the SevState ``query-sev`` reports; ``cont`` moves it to running.
        calls: every command received, in order, with its arguments.
    """

    backend: Backend
    sev: bool = True
    policy: int = 0x1
    api: tuple[int, int] = (1, 55)
    build: int = 21
    state: str = "launch-secret"
    pdh: bytes = b"\x01" * 0x824
    cert_chain: bytes = b"\x02" * (3 * 0x824)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((name, args))
        if name in self.overrides:
            return self.overrides[name]
        handler: Callable[[dict[str, Any]], dict[str, Any]] | None = {
            "qmp_capabilities": lambda a: {"return": {}},
            "query-sev": self._query_sev,
            "query-sev-capabilities": self._capabilities,
            "query-sev-launch-measure": self._measure,
            "sev-inject-launch-secret": self._inject,
            "cont": self._cont,
            "quit": lambda a: {"return": {}},
        }.get(name)
        if handler is None:
            return _error(f"The command {name} has not been found", "CommandNotFound")
        return handler(args)

    def _query_sev(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.sev:
            return {
                "return": {
                    "enabled": False, "api-minor": 0, "handle": 0, "state": "uninit",
                    "api-major": 0, "build-id": 0, "policy": 0,
                }
            }  # fmt: skip
        return {
            "return": {
                "enabled": True, "api-major": self.api[0], "api-minor": self.api[1],
                "build-id": self.build, "policy": self.policy, "state": self.state,
                "handle": 1, "sev-type": "sev",
            }
        }  # fmt: skip

    def _capabilities(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.sev:
            return _error("SEV is not enabled in KVM")
        return {
            "return": {
                "pdh": base64.b64encode(self.pdh).decode(),
                "cert-chain": base64.b64encode(self.cert_chain).decode(),
                "cpu0-id": base64.b64encode(b"\x00" * 64).decode(),
                "cbitpos": 51,
                "reduced-phys-bits": 1,
            }
        }

    def _measure(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.sev or self.state != "launch-secret":
            return _error("SEV launch measurement is not available")
        return {"return": {"data": self.backend.measure()}}

    def _inject(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.sev:
            return _error("SEV not enabled for guest")
        if self.state != "launch-secret":
            return _error("SEV: Not in correct state. (current state launch-update)")
        header = base64.b64decode(args["packet-header"])
        payload = base64.b64decode(args["secret"])
        refusal = self.backend.inject(header, payload, args.get("gpa"))
        if refusal is not None:
            return _error(refusal)
        return {"return": {}}

    def _cont(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.state == "launch-secret":
            self.state = "running"
        return {"return": {}}


def _error(desc: str, cls: str = "GenericError") -> dict[str, Any]:
    return {"error": {"class": cls, "desc": desc}}


class Peer:
    """Serve *qemu* on a unix socket at *path*, one client, in a thread."""

    def __init__(self, qemu: FakeSevQemu, path: Path) -> None:
        self.qemu = qemu
        self.path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        decoder = json.JSONDecoder()
        with conn:
            conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
            pending = ""
            while chunk := conn.recv(65536):
                # QMP is a stream of JSON objects; a client need not end one with a newline.
                pending += chunk.decode()
                while pending.strip():
                    try:
                        msg, used = decoder.raw_decode(pending.lstrip())
                    except json.JSONDecodeError:
                        break
                    pending = pending.lstrip()[used:]
                    reply = self.qemu.handle(msg["execute"], msg.get("arguments", {}))
                    if "id" in msg:
                        reply = {**reply, "id": msg["id"]}
                    conn.sendall(json.dumps(reply).encode() + b"\r\n")
                    if msg["execute"] == "quit":
                        return

    def close(self) -> None:
        self._server.close()
        self._thread.join(timeout=5)
