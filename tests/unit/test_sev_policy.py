"""The guest policy and the owner's launch rules: what is refused, and the sentence saying why."""

from __future__ import annotations

import re

import pytest

from harness.errors import ConfigError, VerificationError
from harness.sev.measure import LaunchMeasure, PlatformInfo, measurement, verify_measurement
from harness.sev.policy import (
    GuestPolicy,
    LaunchMode,
    LaunchRules,
    PolicyFlag,
    parse_flags,
    parse_version,
)

TIK = bytes(range(16))
DIGEST = bytes(range(32))
NONCE = bytes(16)


def measured(platform: PlatformInfo) -> LaunchMeasure:
    return LaunchMeasure(measurement(TIK, platform, DIGEST, NONCE), NONCE)


def test_policy_fields_follow_the_sev_api_layout() -> None:
    policy = GuestPolicy.parse(0x3101_0033)
    assert policy.flags == PolicyFlag.NODBG | PolicyFlag.NOKS | PolicyFlag.DOMAIN | PolicyFlag.SEV
    assert (policy.api_major, policy.api_minor) == (0x01, 0x31)
    assert policy.value == 0x3101_0033
    assert [f.value for f in PolicyFlag] == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize(("value", "bits"), [(1 << 6, "bit 6"), (0x8041, "bits 6, 15")])
def test_reserved_bits_are_refused_by_number(value: int, bits: str) -> None:
    with pytest.raises(ConfigError, match=f"reserved {bits};"):
        GuestPolicy.parse(value)
    with pytest.raises(ConfigError, match="reserved"):
        LaunchRules().check(value, (1, 55), 0)


@pytest.mark.parametrize("value", [-1, 1 << 32])
def test_policy_out_of_range(value: int) -> None:
    with pytest.raises(ConfigError, match="32 bits"):
        GuestPolicy.parse(value)


@pytest.mark.parametrize("policy", [0x0, 0x2, 0x3A, 0x0130_0000])
def test_debuggable_guest_is_refused(policy: int) -> None:
    with pytest.raises(VerificationError, match=r"lacks bit 0 \(NODBG\)"):
        LaunchRules().check(policy, (1, 55), 0)
    LaunchRules(allow_debug=True).check(policy, (1, 55), 0)


def test_es_is_accepted_and_picks_the_sev_es_mode() -> None:
    LaunchRules().check(0x5, (1, 55), 0)
    with pytest.raises(VerificationError, match="NODBG"):
        LaunchRules().check(0x4, (1, 55), 0)
    assert LaunchMode.from_policy(0x5) is LaunchMode.SEV_ES
    assert LaunchMode.from_policy(0x0131_0007) is LaunchMode.SEV_ES
    assert LaunchMode.from_policy(0x3) is LaunchMode.SEV
    with pytest.raises(ConfigError, match="reserved bit 6"):
        LaunchMode.from_policy(0x45)


@pytest.mark.parametrize(
    ("text", "mode"),
    [("sev", "sev"), ("SEVES", "seves"), ("sev-es", "seves"), ("snp", "snp"), ("SEV-SNP", "snp")],
)
def test_mode_spellings(text: str, mode: str) -> None:
    assert LaunchMode.parse(text) == mode


def test_unknown_mode_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="not one of sev, seves, snp"):
        LaunchMode.parse("tdx")


def test_older_platforms_are_refused() -> None:
    rules = LaunchRules(min_api=(1, 49), min_build=6)
    rules.check(0x1, (1, 49), 6)
    rules.check(0x1, (2, 0), 0x20)
    with pytest.raises(VerificationError, match=r"SEV API 1\.48, older than the required 1\.49"):
        rules.check(0x1, (1, 48), 99)
    with pytest.raises(VerificationError, match="build 5 is older than the required 6"):
        rules.check(0x1, (1, 55), 5)


@pytest.mark.parametrize("text", ["1", "1.", ".4", "a.b", "1.4.9", "-1.2", ""])
def test_min_api_must_be_major_dot_minor(text: str) -> None:
    with pytest.raises(ConfigError, match=r"MAJOR\.MINOR"):
        parse_version(text)


def test_parse_version() -> None:
    assert parse_version("1.49") == (1, 49)


def test_verify_measurement_judges_the_policy_before_the_mac() -> None:
    debuggable = PlatformInfo(1, 55, 0, 0x2)
    measure = measured(debuggable)  # a genuine measurement of a debuggable launch
    with pytest.raises(VerificationError, match="NODBG"):
        verify_measurement(TIK, debuggable, DIGEST, measure)
    verify_measurement(TIK, debuggable, DIGEST, measure, LaunchRules(allow_debug=True))
    good = PlatformInfo(1, 55, 0, 0x1)
    verify_measurement(TIK, good, DIGEST, measured(good))
    with pytest.raises(VerificationError, match="older"):
        verify_measurement(TIK, good, DIGEST, measured(good), LaunchRules(min_build=1))


def test_policy_prints_by_bit_name() -> None:
    assert str(GuestPolicy.parse(0x5)) == "0x5 (NODBG|ES, API >= 0.0)"
    assert str(GuestPolicy.parse(0x0)) == "0x0 (none, API >= 0.0)"
    assert str(GuestPolicy.parse(0x0102000B)) == "0x102000b (NODBG|NOKS|NOSEND, API >= 2.1)"


@pytest.mark.parametrize(
    ("policy", "required", "named"),
    [
        (0x1, "NOKS", "NOKS (bit 1)"),
        (0x3, "NOKS,NOSEND", "NOSEND (bit 3)"),
        (0x3, "es", "ES (bit 2)"),
    ],
)
def test_the_owner_refuses_what_it_did_not_ask_for(policy: int, required: str, named: str) -> None:
    rules = LaunchRules(required=parse_flags(required))
    with pytest.raises(VerificationError, match=re.escape(named)):
        rules.check(policy, (1, 55), 21)


def test_required_flags_that_are_set_pass() -> None:
    LaunchRules(required=parse_flags("NOKS, nosend")).check(0xB, (1, 55), 21)
    LaunchRules(required=parse_flags("")).check(0x1, (1, 55), 21)


def test_an_unknown_flag_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="'NOPE' is no policy flag"):
        parse_flags("NOKS,nope")
