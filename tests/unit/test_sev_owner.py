"""The owner's option handling: what sev.verify and sev.secret check against."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import ConfigError, FirmwareFormatError, InputError
from harness.sev import owner
from harness.sev.measure import PlatformInfo
from harness.sev.policy import LaunchMode, LaunchRules
from tests.conftest import DATA

PLATFORM = PlatformInfo(1, 55, 0, 0x1)


@pytest.mark.parametrize(
    "text", ["not json", "{}", '{"output": {}}', '{"output": {"sev_launch_digest": "zz"}}', "[]"]
)
def test_a_manifest_without_a_digest_is_an_input_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(InputError, match="sev_launch_digest"):
        owner.manifest_digest(path)


def test_manifest_digest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"output": {"sev_launch_digest": "ab" * 32}}))
    assert owner.manifest_digest(path) == bytes.fromhex("ab" * 32)


def test_expected_launch_needs_firmware_or_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--firmware or --manifest"):
        owner.expected_launch(owner.MeasuredBoot(""), None, PLATFORM, LaunchRules())
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"output": {"sev_launch_digest": "00" * 32}}))
    with pytest.raises(ConfigError, match="measured kernel needs --firmware"):
        owner.expected_launch(
            owner.MeasuredBoot("", kernel="vmlinuz"), str(manifest), PLATFORM, LaunchRules()
        )
    expected = owner.expected_launch(owner.MeasuredBoot(""), str(manifest), PLATFORM, LaunchRules())
    assert expected.digest == bytes(32)


def test_measured_boot_refuses_what_is_not_ovmf_unless_raw(tmp_path: Path) -> None:
    text = tmp_path / "hostname"
    text.write_bytes(b"myhost\n")
    with pytest.raises(FirmwareFormatError, match="not an OVMF image"):
        owner.MeasuredBoot(str(text)).digest()
    assert owner.MeasuredBoot(str(text), raw=True).digest() == hashlib.sha256(b"myhost\n").digest()
    tail = DATA / "amdsev-tail.bin"
    assert owner.MeasuredBoot(str(tail)).digest() == hashlib.sha256(tail.read_bytes()).digest()


def test_platform_info_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="--build, --policy missing"):
        owner.platform_info("1", "55", "", "")
    assert owner.platform_info("0x01", "55", "0", "0x3") == PlatformInfo(1, 55, 0, 3)


def test_launch_rules_from_options() -> None:
    assert owner.launch_rules(False, "", "") == LaunchRules()
    assert owner.launch_rules(True, "1.49", "0x10") == LaunchRules(True, (1, 49), 16)
    with pytest.raises(ConfigError, match="not a number"):
        owner.launch_rules(False, "", "new")


SEVCTL_FIRMWARE = str(
    DATA / "sevctl" / "OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
)


def test_the_policy_picks_sev_or_sev_es(tmp_path: Path) -> None:
    vcpus = owner.vcpu_config(LaunchMode.SEV_ES, 4, type_name="EPYC-Milan")
    boot = owner.MeasuredBoot(SEVCTL_FIRMWARE, vcpus=vcpus)
    plain = owner.expected_launch(boot, None, PLATFORM, LaunchRules())
    assert plain.mode is LaunchMode.SEV and plain.digest == boot.digest()
    es = owner.expected_launch(boot, None, PlatformInfo(1, 49, 6, 0x5), LaunchRules())
    assert es.mode is LaunchMode.SEV_ES and es.boot is not None
    assert es.digest == replace(boot, mode=LaunchMode.SEV_ES).digest() != plain.digest
    assert es.boot.describe().startswith("SEV-ES: 4 vCPUs EPYC-Milan (signature 0xa00f11)")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"output": {"sev_launch_digest": "00" * 32}}))
    with pytest.raises(ConfigError, match="asks for SEV-ES"):
        owner.expected_launch(boot, str(manifest), PlatformInfo(1, 49, 6, 0x5), LaunchRules())


def test_measured_boot_modes_digest_differently() -> None:
    boot = owner.MeasuredBoot(str(DATA / "amdsev-2025.02-tail.bin"))
    snp = replace(boot, mode=LaunchMode.SNP, vcpus=owner.vcpu_config(LaunchMode.SNP))
    digests = {boot.digest(), replace(boot, mode=LaunchMode.SEV_ES).digest(), snp.digest()}
    assert [len(d) for d in sorted(digests, key=len)] == [32, 32, 48]
    assert boot.describe() == ""
    assert "SNP: 1 vCPU EPYC-v4" in snp.describe() and "sev_features 0x1" in snp.describe()
