"""Nights in a row, for real: the build (cached), a slice of the boot matrix, the reports
read back (the HTML page by headless Chromium), the comparison with the previous night, a
regression, and a night the machine could not complete.

The whole matrix boots once per test run, in tests/integration/test_boot.py; the nights
here check what is built on top of boots (reports, history, change detection, exit
codes) on a slice of three cases: one passwordless, one fallback, one hostile. The night
with the Debian variant is judged in tests/integration/test_debian_image.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness.boots import matrix, scenarios
from harness.components import registry
from harness.config import QemuChoice, resolve
from harness.flows import nightly
from harness.guest.imagemeta import LuksVariant
from tests.conftest import ROOT, tools_builder, workspace

pytestmark = [
    pytest.mark.docker,
    pytest.mark.qemu,
    pytest.mark.tools,
    pytest.mark.slow,
    # A night may start with the cold builds of out/ (or wait for another worker's):
    # OVMF and the guest kernel, and on upstream head both again at other versions.
    pytest.mark.timeout(3600),
]
OUT = ROOT / "out"
PINNED = resolve(workspace=str(OUT))
#: The nights' slice of the matrix: one passwordless case, one fallback, one hostile.
FEW_CASES = tuple(
    (name, LuksVariant.LUKS1) for name in ("passwordless", "no-secret", "foreign-disk")
)
BOOT_CASES = [matrix.case_id(n, v) for n, v in FEW_CASES]
SLICE = [arg for case in BOOT_CASES for arg in ("--case", case)]
SCHEMA = json.loads((ROOT / "harness" / "flows" / "nightly.schema.json").read_text())


def results_of(report: Path) -> dict[str, Any]:
    """The report's results.json, checked against the published schema."""
    data: dict[str, Any] = json.loads((report / "results.json").read_text())
    jsonschema.validate(data, SCHEMA)
    return data


def inv_nightly(report: Path, history: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "inv"), "nightly", "--out", str(report), "--history", str(history), *more],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )


class PageReader(HTMLParser):
    """What a browser made of the page: the summary text, the case rows, the links."""

    def __init__(self) -> None:
        super().__init__()
        self.summary = ""
        self.rows: list[str] = []
        self.links: list[str] = []
        self._in_summary = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "p" and a.get("id") == "summary":
            self._in_summary = True
        if tag == "tr" and a.get("class") in ("passed", "failed", "skipped"):
            self.rows.append(str(a["class"]))
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_summary = False

    def handle_data(self, data: str) -> None:
        if self._in_summary:
            self.summary += data


def read_in_chromium(page: Path) -> PageReader:
    """Load the page in headless Chromium and parse the DOM it built."""
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",  # we run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    reader = PageReader()
    reader.feed(proc.stdout)
    return reader


@pytest.mark.long
def test_nights_in_a_row(tmp_path: Path) -> None:
    report, history = tmp_path / "report", tmp_path / "history"

    # The Debian variant has a night of its own (test_debian_image.py).
    first = inv_nightly(report, history, "--no-debian", *SLICE)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert "first run: nothing to compare with" in first.stdout

    suites = ET.parse(report / "junit.xml").getroot()
    cases = {(c.get("classname"), c.get("name")) for c in suites.iter("testcase")}
    expected = {
        ("nightly.series", "grub: series applies"),
        ("nightly.series", "ovmf: series applies"),
        ("nightly.series", "linux: series applies"),
    }
    expected |= {("nightly.build", n) for n in ("grub", "grub-arm64", "ovmf", "linux")}
    expected |= {("nightly.boot", case) for case in BOOT_CASES}
    assert cases == expected
    assert suites.get("failures") == "0" and suites.get("skipped") == "0"

    results = results_of(report)
    manifest = json.loads((OUT / "ovmf" / "manifest.json").read_text())
    assert results["verdict"] == "pass"
    assert results["firmware"]["sev_launch_digest"] == manifest["output"]["sev_launch_digest"]
    assert results["components"]["grub"]["version"] == "2.14"
    assert set(results["timings"]) == {"build", "images", "boots", "reporting"}

    page = read_in_chromium(report / "index.html")
    assert page.summary == f"PASS: {len(expected)} passed, 0 failed, 0 skipped"
    assert page.rows == ["passed"] * len(expected)
    for href in page.links:
        assert (report / href).is_file(), f"the page links to {href}, which is missing"
    assert {f"transcripts/{c}.log" for c in BOOT_CASES} <= set(page.links)

    # Nothing secret in the report or the history.
    secrets = [
        p.read_bytes() for p in (OUT / "runs" / nightly.RUN_DIR / "images").glob("*/passphrase")
    ]
    # The night's working files stay out of the default report directory.
    assert not (OUT / "nightly").exists() or (OUT / "nightly" / "results.json").exists()
    # One image per (recipe, LUKS variant) the slice boots, and the host's own disk.
    assert len(secrets) == len({(scenarios.SCENARIOS[n].recipe, v) for n, v in FEW_CASES}) + 1
    keys = [p.read_bytes() for p in (OUT / "runs" / nightly.RUN_DIR / "images").glob("*/proof.key")]
    assert len(keys) == len(secrets)
    for path in [*report.rglob("*"), *history.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data for s in secrets), f"a passphrase is in {path}"
            assert not any(k in data for k in keys), f"a proof key is in {path}"

    second = inv_nightly(report, history, "--no-debian", *SLICE)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    assert "no change since the run of" in second.stdout
    assert results_of(report)["changes"]["none"] is True
    assert len(list(history.glob("results-*.json"))) == 2
    assert "<li>no change since the run of" in (report / "index.html").read_text()
    # The history page: both nights, each cell linking to that night's own transcript.
    grid = read_in_chromium(history / "index.html")
    assert grid.summary == f"2 of 2 nights passed; newest {results_of(report)['started']}"
    assert grid.links and all((history / href).is_file() for href in grid.links)
    assert len({href.split("/")[1] for href in grid.links}) == 2
    assert "../history/index.html" in read_in_chromium(report / "index.html").links

    # A regression: the GRUB series stops applying. Exit 1, the case is newly failing,
    # and nothing is built or booted.
    broken = tmp_path / "patches"
    shutil.copytree(ROOT / "patches", broken)
    patch = next((broken / "grub").glob("0001-*.patch"))
    patch.write_bytes(patch.read_bytes().replace(b"\n module = {\n", b"\n module = {  \n", 1))
    # The guest kernel's series still applies, so the night builds it: from the
    # machine's build cache (the same inputs), not cold again.
    ws = workspace(tmp_path / "ws", broken)
    assert (
        nightly.nightly(PINNED, report, history, workspace=ws, cases=FEW_CASES, debian=False)
        == nightly.EXIT_FAILED
    )
    results = results_of(report)
    assert results["changes"]["newly_failing"] == ["series/grub: series applies"]
    assert {c["outcome"] for c in results["cases"] if c["suite"] == "boot"} == {"skipped"}
    failure = next(ET.parse(report / "junit.xml").getroot().iter("failure"))
    assert patch.name in str(failure.get("message"))

    # A night the machine cannot complete: the pinned archive cannot be fetched.
    (broken / "grub" / "upstream.toml").write_text(
        'name = "grub"\nversion = "2.14"\narchive = "grub2_2.14.orig.tar.xz"\n'
        f'sha256 = "{"0" * 64}"\n'
        '[[source]]\nkind = "debian"\npackage = "grub2"\nversion = "2.14-999"\n'
    )
    assert (
        nightly.nightly(PINNED, report, history, workspace=ws, cases=FEW_CASES, debian=False)
        == nightly.EXIT_INFRASTRUCTURE
    )
    results = results_of(report)
    assert results["verdict"] == "infrastructure"
    assert "could not be fetched" in results["infrastructure_error"]
    # A scheduler reading JUnit sees an error, not a green suite.
    suites = ET.parse(report / "junit.xml").getroot()
    assert suites.get("errors") == "1"
    assert "could not be fetched" in next(suites.iter("error")).get("message", "")
    # ... and the next night compares with the last night that completed.
    assert (
        results["changes"]["previous"]
        == json.loads(sorted(history.glob("results-*.json"))[-2].read_text())["started"]
    )


def test_a_directory_that_is_not_a_report_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    proc = inv_nightly(tmp_path, tmp_path / "history")
    assert proc.returncode == 2
    assert "holds no nightly report" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.upstream
def test_a_night_on_upstream_head(tmp_path: Path) -> None:
    """--upstream head resolves each pin through apt and the mirror, builds and boots
    whatever that is, and says so. Upstream may break our series any night, so the
    verdict is not asserted here; that the night completes and reports what it ran is."""
    from harness.components.trees import follow_upstream
    from harness.components.workspace import Workspace

    notes: list[str] = []
    builder = tools_builder()
    names = tuple(s.name for s in registry.for_boots(QemuChoice.SYSTEM))
    moved = {p.component: p for p in follow_upstream(names, builder.tag, notes=notes)}
    report = tmp_path / "report"
    head = resolve(workspace=str(OUT), upstream="head")
    status = nightly.nightly(
        head,
        report,
        tmp_path / "history",
        workspace=Workspace(OUT),
        cases=FEW_CASES,
        debian=False,
    )
    assert status in (nightly.EXIT_OK, nightly.EXIT_FAILED)
    results = results_of(report)
    assert results["upstream"] == "head"
    for name, pin in moved.items():
        assert results["components"][name]["version"] == pin.version
        assert results["components"][name]["sha256"] == pin.sha256
    assert results["notes"] == notes
    assert [c["suite"] for c in results["cases"]].count("boot") == len(FEW_CASES)


def test_bad_options_are_one_sentence(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "inv"), "nightly", "--upstream", "sideways", "--out", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "error: --upstream must be pinned, head or master, not 'sideways'."
    )
    assert not (tmp_path / "r").exists()
    proc = subprocess.run(
        [
            str(ROOT / "inv"),
            "nightly",
            "--case",
            "passwordless-luks9",
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --case passwordless-luks9 is not a case of the boot")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "r").exists()


@pytest.mark.long
def test_a_night_with_the_built_qemu(tmp_path: Path) -> None:
    report = tmp_path / "report"
    built = resolve(workspace=str(OUT), qemu="built")
    status = nightly.nightly(built, report, tmp_path / "history", cases=FEW_CASES, debian=False)
    assert status == nightly.EXIT_OK
    results = results_of(report)
    names = {(c["suite"], c["name"]): c["outcome"] for c in results["cases"]}
    assert names[("series", "qemu: series applies")] == "passed"
    assert names[("build", "qemu")] == "passed"
    assert results["host"]["qemu"].startswith("QEMU emulator version 10.0.13 (harness)")
    assert results["host"]["qemu"].endswith("(built)")
    assert sum(1 for suite, _ in names if suite == "boot") == len(FEW_CASES)
