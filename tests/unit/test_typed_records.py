"""The typed stage outputs: each dumps JSON its schema accepts, loads back equal, and
refuses a broken field with one sentence (an InputError), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness.boots.result import Result
from harness.errors import InputError
from harness.flows.patchcheck import Check
from harness.flows.results import (
    CaseResult,
    Changes,
    ComponentInputs,
    FirmwareBuilt,
    HostInfo,
    LinkKind,
    Night,
    PatchInput,
    Published,
    Suite,
)
from harness.guest import imagemeta
from harness.guest.imagemeta import PARTITION_START, GuestKernel, ImageMetadata, LuksVariant
from harness.records import load_json
from harness.verdict import Verdict
from tests.conftest import ROOT


def schema(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "harness" / relative).read_text())
    return data


META = ImageMetadata(
    variant=LuksVariant.LUKS2_ARGON2ID,
    token="0123456789abcdef",
    recipe="minimal",
    luks_format=tuple(LuksVariant.LUKS2_ARGON2ID.format_args),
    payload_offset=16 * 1024 * 1024,
    partition_start=PARTITION_START,
    disk_sha256="ab" * 32,
    kernel="vmlinuz-6.1.0-40-cloud-amd64",
)
RESULT = Result(
    "passwordless", "luks1", Verdict.PASSED, "as expected", 5.25, Path("/b/console.log"), ("n",)
)
CHECK = Check("subject", "0001-x.patch", Verdict.FAILED, "the subject ends with a full stop")
NIGHT = Night(
    started="2026-11-27T01:00:00Z",
    finished="2026-11-27T02:00:00Z",
    upstream="pinned",
    verdict=Verdict.FAILED,
    infrastructure_error=None,
    host=HostInfo("QEMU emulator version 7.2.0 (system)", "tcg", "6.1.0"),
    components={
        "grub": ComponentInputs(
            "2.14", "Debian", "g.tar.xz", "aa" * 32, (PatchInput("0001-x.patch", "bb" * 32),)
        )
    },
    firmware=FirmwareBuilt("cc" * 32, "dd" * 32, "ee" * 32, True, "manifest.json"),
    cases=(
        CaseResult(Suite.SERIES, "grub: series applies", Verdict.PASSED, 0.1, "1 patch"),
        CaseResult(
            Suite.BOOT,
            "passwordless-luks1",
            Verdict.FAILED,
            5.0,
            "no boot",
            "kernel panic",
            {LinkKind.TRANSCRIPT: "transcripts/passwordless-luks1.log"},
        ),
        CaseResult(Suite.BUILD, "ovmf", Verdict.SKIPPED, 0, "no GRUB"),
    ),
    timings={"build": 1.0, "boots": 5.0, "reporting": 0.012},
    notes=("a note",),
)
PUBLISHED = Published(
    NIGHT,
    Changes(
        "2026-11-26T01:00:00Z",
        newly_failing=["boot/passwordless-luks1"],
        digest=("ff" * 32, "dd" * 32),
        upstream={"grub": ("2.12", "2.14")},
        series={"grub": "added 0001-x.patch"},
    ),
)


def test_verdict_predicates() -> None:
    assert Verdict.PASSED.ok and not Verdict.SKIPPED.ok
    assert Verdict.FAILED.failed and Verdict.ERROR.failed and not Verdict.SKIPPED.failed
    assert Verdict.of(True) is Verdict.PASSED and Verdict.of(False) is Verdict.FAILED
    assert [v.short for v in Verdict] == ["PASS", "FAIL", "SKIP", "ERROR"]
    assert Verdict("passed") is Verdict.PASSED


def test_image_json_round_trips_and_validates(tmp_path: Path) -> None:
    META.dump(tmp_path / "image.json")
    data = json.loads((tmp_path / "image.json").read_text())
    jsonschema.validate(data, schema("guest/image.schema.json"))
    assert ImageMetadata.load(tmp_path / "image.json") == META
    img = imagemeta.load(tmp_path)
    assert (img.disk, img.token, img.variant) == (tmp_path / "disk.img", META.token, META.variant)


def test_image_json_keeps_its_bytes(tmp_path: Path) -> None:
    """The keys and their order of the image.json build_image has always written."""
    before = {
        "schema": "harness-image/1",
        "recipe": "minimal",
        "luks": "luks2-argon2id",
        "luks_format": LuksVariant.LUKS2_ARGON2ID.format_args,
        "payload_offset": 16 * 1024 * 1024,
        "partition_start": PARTITION_START,
        "token": "0123456789abcdef",
        "disk_sha256": "ab" * 32,
        "kernel": "vmlinuz-6.1.0-40-cloud-amd64",
        "guest_kernel": "debian",  # added by the built kernel
        "ready": "marker",  # these two by the Debian recipe
        "disk_format": "raw",
    }
    META.dump(tmp_path / "image.json")
    assert (tmp_path / "image.json").read_text() == json.dumps(before, indent=2) + "\n"


def test_an_early_image_json_still_loads() -> None:
    """Before image.json named its recipe and kernel."""
    meta = ImageMetadata.from_json({"luks": "luks1", "token": "abc"})
    assert meta.recipe == "minimal" and meta.kernel is None
    assert meta.guest_kernel is GuestKernel.DEBIAN
    assert meta.partition_start == PARTITION_START
    jsonschema.validate(meta.to_json(), schema("guest/image.schema.json"))


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"luks": "luks3", "token": "abc"}, "'luks' is 'luks3', not one of luks1, "),
        ({"luks": "luks1"}, "'token' is missing"),
        ({"luks": "luks1", "token": "abc", "payload_offset": "1M"}, "'payload_offset' must be"),
        ({"luks": "luks1", "token": "abc", "schema": "harness-image/9"}, "is not harness-image/1"),
        (["luks1"], "expected a JSON object, found list"),
    ],
)
def test_a_broken_image_json_is_one_sentence(broken: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ImageMetadata.from_json(broken)


def test_a_missing_or_garbled_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_json(tmp_path / "results.json")
    (tmp_path / "image.json").write_text("{not json")
    with pytest.raises(InputError, match="does not hold JSON"):
        ImageMetadata.load(tmp_path / "image.json")


def test_boot_result_round_trips_and_validates() -> None:
    data = RESULT.to_json()
    jsonschema.validate(data, schema("boots/result.schema.json"))
    assert Result.from_json(json.loads(json.dumps(data))) == RESULT
    assert RESULT.passed


def test_check_round_trips_and_validates() -> None:
    data = CHECK.to_json()
    jsonschema.validate(data, schema("flows/check.schema.json"))
    assert Check.from_json(json.loads(json.dumps(data))) == CHECK
    assert CHECK.failed
    assert CHECK.line() == "FAIL  subject       0001-x.patch: the subject ends with a full stop"
    assert Check("build", "grub", Verdict.SKIPPED, "--quick").line().startswith("SKIP  build ")


@pytest.mark.parametrize("word", ["pass", "maybe", "error"])
def test_an_unknown_verdict_is_refused_by_name(word: str) -> None:
    """Each record accepts only the verdicts it can have, and says which."""
    with pytest.raises(InputError, match=f"'outcome' is '{word}', not one of passed, failed"):
        Result.from_json({**RESULT.to_json(), "outcome": word})
    with pytest.raises(InputError, match=f"'outcome' is '{word}', not one of passed, failed"):
        Check.from_json({**CHECK.to_json(), "outcome": word})
    broken = PUBLISHED.to_json()
    broken["cases"][1]["outcome"] = word
    with pytest.raises(InputError, match=rf"results.json: cases\[1\]: 'outcome' is '{word}'"):
        Published.from_json(broken)


def test_results_json_round_trips_and_validates() -> None:
    data = json.loads(json.dumps(PUBLISHED.to_json()))
    jsonschema.validate(data, schema("flows/nightly.schema.json"))
    assert data["verdict"] == "fail" and data["changes_lines"] == PUBLISHED.changes.lines()
    assert Published.from_json(data) == PUBLISHED


def test_a_night_that_could_not_complete_round_trips() -> None:
    night = Night(
        "2026-11-27T01:00:00Z",
        "2026-11-27T01:00:05Z",
        "head",
        Verdict.ERROR,
        "Docker is not running.",
        HostInfo(),
        {},
        None,
        (),
        {},
    )
    data = json.loads(json.dumps(Published(night, Changes(None)).to_json()))
    jsonschema.validate(data, schema("flows/nightly.schema.json"))
    assert data["verdict"] == "infrastructure" and data["host"] == {}
    assert Night.from_json(data) == night


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("verdict", "passed", "'verdict' is 'passed', not one of pass, fail, infrastructure"),
        ("schema", "harness-nightly/0", "schema 'harness-nightly/0' is not harness-nightly/1"),
        ("cases", {}, "'cases' must be a list of objects"),
        ("timings", {"build": "slow"}, "timings.build must be a number"),
    ],
)
def test_a_broken_results_json_is_one_sentence(key: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Published.from_json({**PUBLISHED.to_json(), key: value})


def test_a_broken_case_link_is_refused() -> None:
    data = PUBLISHED.to_json()
    data["cases"][1]["links"] = {"screenshot": "x.png"}
    with pytest.raises(InputError, match="unknown kind 'screenshot'"):
        Night.from_json(data)


def test_the_nightly_schema_names_every_component_of_the_registry() -> None:
    """A component the registry gains is in results.json's components the first night
    (by its source: GRUB's arm64 build is GRUB's pin and series)."""
    from harness.components import registry

    names = schema("flows/nightly.schema.json")["properties"]["components"]["propertyNames"]
    assert set(names["enum"]) == {s.source_name for s in registry.COMPONENTS}
