"""`./inv inspect` end to end: real firmware, a real GRUB image, the JSON schema, bad input."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sevsnpmeasure import guest
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vcpu_types import CPU_SIGS
from sevsnpmeasure.vmsa import VMSA

from harness import run
from harness.firmware import guids
from harness.firmware.pe import inspect_pe
from harness.inspection import describe, render_text
from tests import fvbuild
from tests.conftest import ROOT
from tests.unit.test_fv import _their_files
from tests.unit.test_guidtable import make_tail

pytestmark = pytest.mark.tools
SCHEMA = json.loads((ROOT / "harness" / "inspect.schema.json").read_text())
MODULES = ["part_gpt", "fat", "ext2", "cryptodisk", "luks", "luks2", "echo"]


def inv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "inv"), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def grub_efi(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A GRUB core image from Debian's grub-mkimage and x86_64-efi modules."""
    out = tmp_path_factory.mktemp("grub") / "grub.efi"
    run.run(["grub-mkimage", "-O", "x86_64-efi", "-p", "/boot/grub", "-o", str(out), *MODULES])
    return out.read_bytes()


@pytest.fixture(scope="module")
def grub_firmware(grub_efi: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FV holding GRUB the way AmdSevX64 does: an FFS file, LZMA-compressed PE32."""
    ffs = fvbuild.ffs_file(
        guids.GRUB_FILE,
        0x09,
        fvbuild.sections_of(
            fvbuild.lzma_section(fvbuild.section(0x10, grub_efi)), fvbuild.ui_section("Grub")
        ),
    )
    path = tmp_path_factory.mktemp("fw") / "grub-fv.fd"
    path.write_bytes(fvbuild.volume(ffs))
    return path


def test_grub_pe_checks_and_modules(grub_efi: bytes) -> None:
    info = inspect_pe(grub_efi)
    assert info.ok, info.problems
    assert info.grub_modules is not None
    names = [m.name for m in info.grub_modules if m.type_name == "ELF"]
    assert set(MODULES) <= set(names)
    assert ("PREFIX", "/boot/grub") in [(m.type_name, m.name) for m in info.grub_modules]


def test_pe_problems_are_reported(grub_efi: bytes) -> None:
    data = bytearray(grub_efi)
    pe_at = struct.unpack_from("<I", data, 0x3C)[0]
    struct.pack_into("<H", data, pe_at + 4, 0x14C)  # i386
    struct.pack_into("<H", data, pe_at + 24 + 68, 3)  # console subsystem
    problems = inspect_pe(bytes(data)).problems
    assert any("machine" in p for p in problems) and any("subsystem" in p for p in problems)


def test_grub_found_in_volume(grub_firmware: Path, grub_efi: bytes) -> None:
    assert str(guids.GRUB_FILE) in _their_files(grub_firmware.read_bytes())
    report = describe(grub_firmware)
    jsonlib_valid(report)
    grub = report["grub"]
    assert grub is not None and grub["pe"]["ok"]
    assert grub["pe"]["size"] == len(grub_efi)
    assert {m["name"] for m in grub["modules"]} >= set(MODULES)
    text = inv("inspect", str(grub_firmware)).stdout
    assert "GRUB: file at" in text and "cryptodisk" in text


def jsonlib_valid(report: object) -> None:
    jsonschema.validate(report, SCHEMA)


def test_debian_ovmf_text_and_json(debian_ovmf: Path) -> None:
    text = inv("inspect", str(debian_ovmf))
    assert text.returncode == 0, text.stderr
    assert "secret area        none" in text.stdout
    assert "SEV-ES reset block" in text.stdout and "BdsDxe" in text.stdout
    assert "GRUB: not present" in text.stdout
    out = inv("inspect", "--json", str(debian_ovmf))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    jsonlib_valid(report)
    assert report["secret_area"] is None and report["grub"] is None
    assert report["sha256"] == report["sev_launch_digest"]
    assert "SEV-ES AP reset    EIP 0x80b004 (CS base 0x800000, IP 0xb004)" in text.stdout
    assert report["sev_es_reset_eip"] == 0x80B004
    _check_vmsa_digests(debian_ovmf, report, text.stdout)


def _check_vmsa_digests(path: Path, report: dict[str, Any], text: str) -> None:
    """SNP against sev-snp-measure as is; SEV-ES against sev-snp-measure's VMSA with
    MXCSR and FCW cleared (KVM_SEV_INIT, the default model)."""
    snp = report["snp_launch_digest"]
    assert snp["vmsa_model"] == "init2" and snp["sev_features"] == 1
    expected_snp = guest.calc_launch_digest(
        SevMode.SEV_SNP, 1, CPU_SIGS["EPYC-v4"], str(path), None, None, None, 0x1
    )
    assert snp["digest"] == expected_snp.hex()
    es = report["seves_launch_digest"]
    assert (es["vcpus"], es["vcpu_type"], es["vmsa_model"], es["sev_features"]) == (
        1, "EPYC-v4", "legacy", 0
    )  # fmt: skip
    assert es["vcpu_signature"] == 0x800F12
    legacy = VMSA.build_save_area(VMSA.BSP_EIP, 0, CPU_SIGS["EPYC-v4"])
    legacy.mxcsr, legacy.x87_fcw = 0, 0
    assert es["digest"] == hashlib.sha256(path.read_bytes() + bytes(legacy)).hexdigest()
    assert f"SEV-ES digest      {es['digest']}" in text
    assert f"SNP digest         {snp['digest']}" in text
    assert "(1 vCPU EPYC-v4, VMSA legacy, sev_features 0x0, no kernel hashes)" in text


def test_amdsev_fixture_json(amdsev_tail: bytes) -> None:
    out = inv("inspect", "--json", str(ROOT / "tests" / "data" / "amdsev-tail.bin"))
    report = json.loads(out.stdout)
    jsonlib_valid(report)
    assert report["secret_area"] == {"gpa": 0x80C000, "size": 0xC00}
    assert report["hash_table_area"] == {"gpa": 0x80CC00, "size": 0x400}


def test_amdsev_2025_vmsa_digests() -> None:
    path = ROOT / "tests" / "data" / "amdsev-2025.02-tail.bin"
    text = inv("inspect", str(path)).stdout
    report = json.loads(inv("inspect", "--json", str(path)).stdout)
    jsonlib_valid(report)
    _check_vmsa_digests(path, report, text)


def test_igvm_entry_is_named_and_decoded(tmp_path: Path) -> None:
    """edk2 2025's reset vector adds an IGVM metadata offset entry (OvmfPkg/igvm)."""
    image = make_tail([(guids.IGVM_METADATA_OFFSET, struct.pack("<I", 0x5C0))])
    path = tmp_path / "igvm.fd"
    path.write_bytes(image)
    report = describe(path)
    jsonlib_valid(report)
    (entry,) = report["guid_table"]["entries"]
    assert entry["name"] == "IGVM metadata offset"
    assert entry["decoded"] == {"offset_from_end": 0x5C0}
    # No SEV metadata, no reset block: one vCPU for SEV-ES, no SNP launch.
    assert report["sev_es_reset_eip"] is None and report["snp_launch_digest"] is None
    assert report["seves_launch_digest"]["vcpus"] == 1
    text = render_text(report)
    assert "SEV-ES AP reset    none" in text and "SNP digest         none" in text
    assert "IGVM metadata offset" in text


def _bad_inputs(debian_ovmf: Path, tmp: Path) -> dict[str, Path]:
    image = debian_ovmf.read_bytes()
    cases = {
        "text file": b"hello, this is not firmware\n" * 100,
        "empty": b"",
        "truncated": image[: len(image) // 3] + image[-4096:],
        "zero-length entry": _patch_entry_length(image, 0),
        "entry past table": _patch_entry_length(image, 0xFFF0),
        "footer length": image[:-0x32] + b"\xff\xff" + image[-0x30:],
    }
    paths = {}
    for name, data in cases.items():
        path = tmp / name.replace(" ", "-")
        path.write_bytes(data)
        paths[name] = path
    paths["missing"] = tmp / "does-not-exist.fd"
    paths["directory"] = tmp
    return paths


def _patch_entry_length(image: bytes, value: int) -> bytes:
    data = bytearray(image)
    struct.pack_into("<H", data, len(data) - 0x30 - 2 - 16 - 2, value)
    return bytes(data)


def test_bad_input_is_one_sentence(debian_ovmf: Path, tmp_path: Path) -> None:
    for name, path in _bad_inputs(debian_ovmf, tmp_path).items():
        for args in (["inspect", str(path)], ["inspect", "--json", str(path)]):
            out = inv(*args)
            assert out.returncode == 2, (name, out.stderr)
            assert "Traceback" not in out.stderr, name
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, out.stderr)
            assert out.stdout == "", name


def test_debug_shows_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.fd"
    junk.write_bytes(b"junk")
    out = inv("--debug", "inspect", str(junk))
    assert out.returncode != 0 and "Traceback" in out.stderr
