"""`./inv sev.chain` and `./inv sev.session`, run as a user runs them.

The sessions `sev.session` writes are opened by the simulated element
(harness.sev.simplatform), which shares no code with the owner's session module.
"""

from __future__ import annotations

import base64
import shutil
import stat
from pathlib import Path

import pytest

from harness.errors import VerificationError
from harness.sev.simplatform import SimulatedPlatform, shared_platform
from tests.conftest import ROOT
from tests.integration.test_sev_cli import assert_clean_error, inv

pytestmark = pytest.mark.tools

NAPLES = ROOT / "tests" / "data" / "sev-naples"
FILES = ("godh.cert", "session.bin", "godh.b64", "session.b64", "tmp_tk.bin")


def test_the_naples_chain_verifies_when_allowed() -> None:
    proc = inv("sev.chain", "--certs", str(NAPLES), "--allow-naples")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "generation: naples"
    assert "ARK (naples) self-signed: ok" in lines
    assert any(line.startswith("PDH signed by PEK") for line in lines)


def test_boot_takes_the_chain_options_for_hardware_launches_only(tmp_path: Path) -> None:
    message = assert_clean_error(inv("boot", "--allow-naples"), 2)
    assert "SEV hardware" in message and "simulated" in message
    pinned = NAPLES / "cek.cert"
    assert "SEV hardware" in assert_clean_error(inv("boot", "--cek", str(pinned)), 2)
    missing = tmp_path / "cek.cert"
    assert str(missing) in assert_clean_error(
        inv("boot", "--launch", "sev", "--cek", str(missing)), 2
    )


def test_a_naples_chain_is_refused_by_default(tmp_path: Path) -> None:
    message = assert_clean_error(inv("sev.chain", "--certs", str(NAPLES)), 1)
    assert "Naples root" in message and "proves nothing" in message
    proc = inv("sev.session", "--certs", str(NAPLES), "--policy", "1", "--out", str(tmp_path / "o"))
    assert "Naples root" in assert_clean_error(proc, 1)
    assert not (tmp_path / "o").exists()


def test_a_tampered_chain_fails_naming_the_link(tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    shutil.copytree(NAPLES, chain)
    pek = bytearray((chain / "pek.cert").read_bytes())
    pek[0x414 + 8 + 5] ^= 0x01  # inside the first signature's R
    (chain / "pek.cert").write_bytes(bytes(pek))
    message = assert_clean_error(inv("sev.chain", "--certs", str(chain)), 1)
    assert "The PEK's signature by the OCA does not verify" in message


def test_another_generation_is_refused(tmp_path: Path) -> None:
    message = assert_clean_error(
        inv("sev.chain", "--certs", str(NAPLES), "--generation", "milan"), 1
    )
    assert "Milan" in message


def _session(tmp_path: Path, platform: SimulatedPlatform, policy: str) -> Path:
    pdh = tmp_path / "pdh.cert"
    pdh.write_bytes(platform.pdh.serialize())
    out = tmp_path / "session"
    proc = inv(
        "sev.session", "--pdh", str(pdh), "--trust-pdh", "--policy", policy, "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "trust" in proc.stdout.lower()
    return out


def test_a_session_for_the_simulated_pdh_is_accepted_and_carries_its_keys(
    tmp_path: Path,
) -> None:
    platform = shared_platform()
    out = _session(tmp_path, platform, "0x1")
    for name in FILES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    assert base64.b64decode((out / "godh.b64").read_text()) == (out / "godh.cert").read_bytes()
    assert base64.b64decode((out / "session.b64").read_text()) == (out / "session.bin").read_bytes()
    psp = platform.launch_start(
        (out / "godh.cert").read_bytes(), (out / "session.bin").read_bytes(), 0x1
    )
    # The element unwrapped the same TEK/TIK as tmp_tk.bin holds: its measurement is
    # the HMAC under that TIK (checked by the owner's sev.verify).
    psp.launch_update_data(b"\0" * 4096)
    measure = psp.launch_measure()
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\0" * 4096)
    tik = tmp_path / "tik.bin"
    tik.write_bytes((out / "tmp_tk.bin").read_bytes()[16:])
    proc = inv(
        "sev.verify", "--firmware", str(firmware), "--raw", "--launch-measure", measure,
        "--tik", str(tik), "--api-major", str(platform.api_major),
        "--api-minor", str(platform.api_minor), "--build", str(platform.build),
        "--policy", "0x1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(VerificationError, match="policy MAC"):
        platform.launch_start(
            (out / "godh.cert").read_bytes(), (out / "session.bin").read_bytes(), 0x3
        )


def test_a_session_for_another_pdh_is_refused(tmp_path: Path) -> None:
    out = _session(tmp_path, SimulatedPlatform.generate(), "0x1")
    with pytest.raises(VerificationError, match="LAUNCH_START"):
        shared_platform().launch_start(
            (out / "godh.cert").read_bytes(), (out / "session.bin").read_bytes(), 0x1
        )


def test_a_lone_pdh_needs_trust(tmp_path: Path) -> None:
    pdh = tmp_path / "pdh.cert"
    pdh.write_bytes(shared_platform().pdh.serialize())
    proc = inv("sev.session", "--pdh", str(pdh), "--policy", "1", "--out", str(tmp_path / "o"))
    assert_clean_error(proc, 2)
    assert not (tmp_path / "o").exists()


def test_a_broken_chain_makes_no_session(tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    shutil.copytree(NAPLES, chain)
    cek = bytearray((chain / "cek.cert").read_bytes())
    cek[0x10] ^= 0x80  # its public key
    (chain / "cek.cert").write_bytes(bytes(cek))
    proc = inv("sev.session", "--certs", str(chain), "--policy", "1", "--out", str(tmp_path / "o"))
    assert "CEK" in assert_clean_error(proc, 1)
    assert not (tmp_path / "o").exists()
