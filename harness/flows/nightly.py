"""``./inv nightly``: build, boot the whole matrix, report, and compare with last night.

Stages, each a set of JUnit test cases: "series" (each component's series applies on
its base), "build" (GRUB, then OVMF with it; from the build cache when nothing changed),
"boot" (every case of the boot matrix on fresh images), and the Debian variant: "image"
(a Debian image of images/debian, built rootless) and its boots to the login prompt
(passwordless and no-secret under the firmware, the ordinary path under Debian's OVMF;
``--no-debian`` leaves it out). Reports land in the output
directory, which is replaced as a whole at the end, so a reader never sees half a
report; the run's results.json is also kept in the history directory, and the report
says what changed since the previous complete run there.

Exit status: 0 every case passed; 1 a case failed (the report says which ones are new
since the previous run); 2 the run could not complete (Docker, a download, QEMU
missing), so a scheduler can tell a broken product from a broken machine.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import run
from harness.boots import matrix, scenarios
from harness.boots.prepare import Firmware, HostDisk, Machine
from harness.boots.result import Result
from harness.components import linux, ovmf, registry
from harness.components import qemu as qemu_build
from harness.components.pipeline import (
    MANIFEST,
    Built,
    Request,
    Role,
    Spec,
    build,
    builder_image,
    plan,
)
from harness.components.trees import prepare_tree
from harness.components.workspace import Workspace
from harness.config import Config, QemuChoice
from harness.errors import (
    BuildRefused,
    CommandError,
    ConfigError,
    HarnessError,
    InfrastructureError,
    InputError,
    PatchError,
    VerificationError,
)
from harness.flows import builds, report
from harness.flows.results import (
    CaseResult,
    ComponentInputs,
    FirmwareBuilt,
    HostInfo,
    LinkKind,
    Night,
    PatchInput,
    Published,
    Suite,
    night_verdict,
)
from harness.guest import debian
from harness.guest.imagemeta import Kdf, LuksVariant
from harness.guest.rootfs import BuiltKernel
from harness.host import containers, doctor, qemu
from harness.host.sev import HostSev
from harness.records import load_json
from harness.verdict import Verdict

log = logging.getLogger(__name__)

#: The night's images and boot directories, in the workspace.
RUN_DIR = "nightly"
#: Lines of a console transcript or build log a failing case carries in JUnit.
TAIL_LINES = 30
EXIT_OK, EXIT_FAILED, EXIT_INFRASTRUCTURE = 0, 1, 2


@dataclass
class Run:
    """One night, as it goes: the cases so far and where things are."""

    out: Path  # staging directory of the report
    started: str
    upstream: str
    emulator: str  # "system" or "built"
    cases: list[CaseResult] = field(default_factory=list)
    components: dict[str, ComponentInputs] = field(default_factory=dict)
    firmware: FirmwareBuilt | None = None
    host: HostInfo = field(default_factory=HostInfo)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def case(
        self,
        suite: Suite,
        name: str,
        outcome: Verdict,
        seconds: float,
        detail: str,
        output: str = "",
        links: dict[LinkKind, str] | None = None,
    ) -> None:
        self.cases.append(
            CaseResult(suite, name, outcome, round(seconds, 1), detail, output, links or {})
        )
        # Boots were reported live by the matrix as they finished.
        level = logging.DEBUG if suite is Suite.BOOT else logging.INFO
        log.log(level, "%-7s %s: %s", outcome.upper(), f"{suite}/{name}", detail)

    def keep(self, source: Path, relative: str) -> str | None:
        """Copy *source* into the report as *relative*; the link, or None if absent."""
        if not source.is_file():
            return None
        dest = self.out / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
        return relative


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(path: Path) -> str:
    try:
        return run.tail(path.read_text(errors="replace"), TAIL_LINES)
    except FileNotFoundError:
        return ""


def nightly(
    cfg: Config,
    out: Path | None = None,
    history: Path | None = None,
    jobs: int = 2,
    workspace: Workspace | None = None,
    cases: tuple[tuple[str, LuksVariant], ...] = matrix.MATRIX,
    debian: bool = True,
) -> int:
    """Run the night; returns the exit status (see the module docstring).

    *cfg* says pinned or head, and which QEMU boots (``built`` adds QEMU's pin, series
    and build to the night). The report goes to *out* and the history to *history*
    (default: the workspace's); *workspace* (default: the configuration's) holds the
    builds. *cases* are the boots of the night: the whole matrix unless a caller (a
    test of the night's plumbing) asks for fewer; *debian* adds the Debian variant.

    Raises:
        ConfigError: *out* is a directory that is not a report.
        PrerequisiteError: *cfg* launches on SEV hardware and the host has none.
    """
    HostSev.probe().require(cfg.launch)  # before anything starts: exit 3 without SEV
    out = out or cfg.layout.report
    history = history or cfg.layout.history
    if out.exists() and any(out.iterdir()) and not (out / "results.json").exists():
        raise ConfigError(f"{out} is not empty and holds no nightly report; pick another --out.")
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    night = Run(staging, _now(), cfg.upstream, cfg.qemu)
    try:
        _run(night, cfg, jobs, workspace, cases, debian)
    except InfrastructureError as err:
        night.error = err.message
        log.error("the run could not complete: %s", err.message)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    started = time.monotonic()
    try:
        results = _publish(night, out, history, started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(report.summary(results.night))
    for line in results.changes.lines():
        print(f"  {line}")
    print(f"  report: {out / 'index.html'}")
    if night.error:
        return EXIT_INFRASTRUCTURE
    return EXIT_FAILED if results.night.count(Verdict.FAILED) else EXIT_OK


def _run(
    night: Run,
    cfg: Config,
    jobs: int,
    workspace: Workspace | None,
    cases: tuple[tuple[str, LuksVariant], ...],
    debian: bool,
) -> None:
    tools_needed: tuple[str, ...] = ("docker", "qemu", "git", "cryptsetup", "sfdisk", "e2fsprogs")
    if debian:
        tools_needed += ("mtools", "qemu-img", "ovmf")
    doctor.require(tools_needed, docker_engine=True)
    specs = registry.for_boots(cfg.qemu)
    ws = builds.workspace(cfg, tuple(s.name for s in specs), night.notes.append, workspace)
    tools = builder_image(registry.TOOLS_BUILDER, ws)
    # One night at a time per workspace: the boots share its image and run directories.
    with ws.locked():
        _night(night, cfg, ws, tools, specs, jobs, cases, debian)


def _night(
    night: Run,
    cfg: Config,
    ws: Workspace,
    tools: containers.BuilderImage,
    specs: tuple[Spec[Any], ...],
    jobs: int,
    cases: tuple[tuple[str, LuksVariant], ...],
    debian: bool,
) -> None:
    t0 = time.monotonic()
    applies: dict[str, bool] = {}
    for spec in specs:  # a build of another's source shares that one's "series applies"
        applies[spec.name] = applies[spec.source] if spec.source else _series(night, ws, spec)
    built: dict[str, Built[Any]] = {}
    for spec in specs:
        _build_stage(night, ws, spec, applies, built)
    night.timings["build"] = time.monotonic() - t0
    fw = built.get(ovmf.SPEC.name)
    emulator: qemu.Qemu | None = qemu.SYSTEM
    if cfg.qemu is QemuChoice.BUILT:
        emulator = qemu_build.emulator(built["qemu"]) if "qemu" in built else None
    kernel = built.get(linux.SPEC.name)
    if fw is None or emulator is None or kernel is None:
        why = (
            "no firmware was built"
            if fw is None
            else "no QEMU was built"
            if emulator is None
            else "no guest kernel was built"
        )
        for name, variant in cases:
            night.case(Suite.BOOT, matrix.case_id(name, variant), Verdict.SKIPPED, 0, why)
        if debian:
            _skip_debian(night, why)
        return
    manifest: ovmf.OvmfManifest = fw.manifest
    night.firmware = FirmwareBuilt(
        sha256=manifest.output.sha256,
        sev_launch_digest=manifest.output.sev_launch_digest,
        cache_key=manifest.cache_key,
        cached=fw.cached,
        manifest="manifest.json",
    )
    firmware = Firmware(ovmf.firmware(fw), manifest.launch_digest)
    t1 = time.monotonic()
    machine = Machine.of(cfg, emulator)
    night.host = HostInfo(
        qemu=f"{emulator.version()} ({night.emulator})",
        accelerator=str(machine.accel),
        kernel=os.uname().release,
    )
    work = ws.layout.runs / RUN_DIR  # not under the report directory, which is replaced whole
    try:
        images = matrix.build_images(
            work / "images",
            ws.layout.image_cache,
            tools.tag,
            cases,
            kernel=linux.guest_kernel(kernel),
        )
    except HarnessError as err:
        raise InfrastructureError(f"The guest images could not be built: {err.message}") from err
    night.timings["images"] = time.monotonic() - t1
    t2 = time.monotonic()

    def booted(r: Result) -> None:  # progress, as each boot ends
        case = matrix.case_id(r.scenario, r.variant)
        log.info("%-7s boot/%s in %.1f s", r.outcome.upper(), case, r.seconds)

    playable = cases
    if cfg.launch.hardware:
        playable = tuple(c for c in cases if not scenarios.SCENARIOS[c[0]].simulated_only)
        for name, variant in cases:
            if reason := scenarios.SCENARIOS[name].simulated_only:
                night.case(Suite.BOOT, matrix.case_id(name, variant), Verdict.SKIPPED, 0, reason)
    results = matrix.run_matrix(
        firmware, images, machine, work / "boot", jobs=jobs, on_result=booted, cases=playable
    )
    for result in results:
        _boot_case(night, result)
    night.timings["boots"] = time.monotonic() - t2
    if debian:
        t3 = time.monotonic()
        _debian_stage(night, ws, tools, linux.guest_kernel(kernel), firmware, machine,
                      work, jobs, booted, images.host_disk())  # fmt: skip
        night.timings["debian"] = time.monotonic() - t3


def _boot_case(night: Run, result: Result) -> None:
    case = matrix.case_id(result.scenario, result.variant)
    link = night.keep(result.transcript, f"transcripts/{case}.log")
    night.case(
        Suite.BOOT,
        case,
        result.outcome,
        result.seconds,
        result.detail,
        "" if result.passed else _tail(result.transcript),
        {LinkKind.TRANSCRIPT: link} if link else {},
    )


#: The Debian image's case in the "image" suite.
DEBIAN_IMAGE_CASE = matrix.debian_variant(matrix.DEBIAN_LUKS)


def _skip_debian(night: Run, why: str) -> None:
    night.case(Suite.IMAGE, DEBIAN_IMAGE_CASE, Verdict.SKIPPED, 0, why)
    for name in matrix.DEBIAN_CASES:
        case = matrix.case_id(name, DEBIAN_IMAGE_CASE)
        night.case(Suite.BOOT, case, Verdict.SKIPPED, 0, why)


def _debian_stage(
    night: Run,
    ws: Workspace,
    tools: containers.BuilderImage,
    kernel: BuiltKernel,
    firmware: Firmware,
    machine: Machine,
    work: Path,
    jobs: int,
    booted: Callable[[Result], None],
    host_disk: HostDisk,
) -> None:
    """The Debian variant: the image (a verdict: the assembly in the guest may fail),
    then its boots to the login prompt (*host_disk* is the host's, for search-hijack)."""
    recipe = debian.DebianRecipe.load(matrix.DEBIAN_RECIPE)
    assert recipe is not None, "images/debian is part of the harness"
    dest = work / "images" / DEBIAN_IMAGE_CASE
    started = time.monotonic()
    try:
        img = debian.build(
            recipe,
            matrix.DEBIAN_LUKS,
            dest,
            # A test image: GRUB derives the key in seconds under TCG (--kdf test).
            debian.DebianOptions(kdf=Kdf.TEST),
            cache=ws.layout.image_cache,
            builder=builder_image(registry.DEBIAN_IMAGE_BUILDER, ws).tag,
            tools_builder=tools.tag,
            kernel=kernel,
        )
    except VerificationError as err:
        # The assembly ran in our kernel and failed there: the product's failure.
        log_path = dest / f"{debian.FAILED_PREFIX}{debian.ASSEMBLY_LOG}"
        link = night.keep(log_path, f"logs/{DEBIAN_IMAGE_CASE}-assembly.log")
        night.case(Suite.IMAGE, DEBIAN_IMAGE_CASE, Verdict.FAILED, time.monotonic() - started,
                   err.message, _tail(log_path), {LinkKind.LOG: link} if link else {})  # fmt: skip
        for name in matrix.DEBIAN_CASES:
            case = matrix.case_id(name, DEBIAN_IMAGE_CASE)
            night.case(Suite.BOOT, case, Verdict.SKIPPED, 0, "the Debian image was not built")
        return
    except HarnessError as err:
        raise InfrastructureError(f"The Debian image could not be built: {err.message}") from err
    link = night.keep(dest / debian.ASSEMBLY_LOG, f"logs/{DEBIAN_IMAGE_CASE}-assembly.log")
    size = img.disk.stat().st_size / 2**30
    night.case(
        Suite.IMAGE,
        DEBIAN_IMAGE_CASE,
        Verdict.PASSED,
        time.monotonic() - started,
        f"Debian {img.metadata.suite}, {img.metadata.kernel}, {size:.1f} GiB",
        links={LinkKind.LOG: link} if link else {},
    )
    for result in matrix.run_debian(
        firmware, img, machine, work / "boot", jobs=jobs, on_result=booted, host_disk=host_disk
    ):
        _boot_case(night, result)


def _series(night: Run, ws: Workspace, spec: Spec[Any]) -> bool:
    """The "series applies" case of *spec*'s component. When the machine's build cache
    holds the build of exactly these inputs (the pin's bytes and the series' among them),
    that build applied the series and the tree is not unpacked again for it; otherwise
    the series is applied to the pinned tree here."""
    comp = ws.component(spec.name)
    pin = comp.pin
    night.components[comp.name] = ComponentInputs(
        version=pin.version,
        source=next((r.describe() for r in pin.routes), ""),
        archive=pin.archive,
        sha256=pin.sha256,
        patches=tuple(PatchInput(p.path.name, p.sha256) for p in comp.patches),
    )
    started = time.monotonic()
    what = f"{len(comp.patches)} patch(es) on {pin.name} {pin.version}"
    builder = builder_image(spec.builder, ws)
    entry = plan(spec, ws, builder, Request()).entry_name
    if (ws.layout.builds / entry / MANIFEST).is_file():
        took = time.monotonic() - started
        detail = f"{what} (applied by the cached build {entry})"
        night.case(Suite.SERIES, f"{comp.name}: series applies", Verdict.PASSED, took, detail)
        return True
    try:
        prepare_tree(comp, ws, builder.tag)  # applies the series (at once if already applied)
    except PatchError as err:
        night.case(Suite.SERIES, f"{comp.name}: series applies", Verdict.FAILED, 0, err.message)
        return False
    took = time.monotonic() - started
    night.case(Suite.SERIES, f"{comp.name}: series applies", Verdict.PASSED, took, what)
    return True


def _build_stage(
    night: Run,
    ws: Workspace,
    spec: Spec[Any],
    applies: dict[str, bool],
    built: dict[str, Built[Any]],
) -> None:
    """The "build" case of *spec*: skipped when its series does not apply or what it
    is built with was not built; *built* gets the finished build."""
    pin = ws.component(spec.source_name).pin
    if not applies[spec.name]:
        why = f"the {pin.name} series does not apply"
        night.case(Suite.BUILD, spec.name, Verdict.SKIPPED, 0, why)
        return
    missing = next((d.name for d in spec.depends if d.name not in built), None)
    if missing is not None:
        why = f"no {missing} to build {spec.name} with"
        night.case(Suite.BUILD, spec.name, Verdict.SKIPPED, 0, why)
        return
    started = time.monotonic()
    try:
        result = build(spec, ws)
    except (CommandError, BuildRefused) as err:
        link = night.keep(
            ws.layout.log(spec.name), REPORT_PATHS[LinkKind.LOG].format(name=spec.name)
        )
        night.case(Suite.BUILD, spec.name, Verdict.FAILED, time.monotonic() - started,
                   err.message, _tail(ws.layout.log(spec.name)),
                   {LinkKind.LOG: link} if link else {})  # fmt: skip
        return
    files = {LinkKind.LOG: result.log}
    if spec.role is Role.FIRMWARE:
        files[LinkKind.MANIFEST] = result.entry / MANIFEST
    links = {
        kind: link
        for kind, path in files.items()
        if (link := night.keep(path, REPORT_PATHS[kind].format(name=spec.name)))
    }
    took = time.monotonic() - started
    detail = "from the build cache" if result.cached else f"built in {took:.0f} s"
    if spec.role is Role.OTHER_ARCH:  # what it is built for: its own unit tests
        ran = getattr(result.manifest.output, "unit_tests", {})
        detail += "; " + ", ".join(f"{t} {v}" for t, v in ran.items()) if ran else ""
    night.case(Suite.BUILD, spec.name, Verdict.PASSED, took, detail, links=links)
    built[spec.name] = result


#: Where a build's files go in the report.
REPORT_PATHS = {LinkKind.LOG: "logs/{name}.log", LinkKind.MANIFEST: "manifest.json"}


def _previous(history: Path) -> Night | None:
    """The newest complete run in *history* (runs that could not complete don't count,
    nor files that are not a harness-nightly/1 results.json)."""
    for path in sorted(history.glob("results-*.json"), reverse=True):
        try:
            night = Night.from_json(load_json(path), str(path))
        except InputError as err:
            log.debug("not comparing with %s: %s", path, err.message)
            continue
        if night.verdict is not Verdict.ERROR:
            return night
    return None


def _publish(night: Run, out: Path, history: Path, started: float) -> Published:
    cases = tuple(night.cases)
    record = Night(
        started=night.started,
        finished=_now(),
        upstream=night.upstream,
        verdict=night_verdict(night.error, cases),
        infrastructure_error=night.error,
        host=night.host,
        components=dict(night.components),
        firmware=night.firmware,
        cases=cases,
        timings={k: round(v, 1) for k, v in night.timings.items()},
        notes=tuple(night.notes),
    )
    history.mkdir(parents=True, exist_ok=True)
    results = Published(record, report.compare(_previous(history), record))
    staging = night.out
    (staging / "junit.xml").write_bytes(report.junit(record))
    history_href = os.path.relpath(history / HISTORY_PAGE, out)
    (staging / "index.html").write_text(report.page(results, history_href))
    # Reporting times itself, so only results.json (written last) carries that figure.
    reporting = round(time.monotonic() - started, 3)
    record = dataclasses.replace(record, timings={**record.timings, "reporting": reporting})
    results = dataclasses.replace(results, night=record)
    text = json.dumps(results.to_json(), indent=2) + "\n"
    (staging / "results.json").write_text(text)
    # Named to sort by time, runs within the same second included.
    stamp = night.started.replace(":", "").replace("-", "")
    kept = history / f"results-{stamp}-{time.time_ns() % 10**9:09d}.json"
    tmp = kept.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, kept)
    _keep_history(history, kept, staging)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
    return results


#: The history view, in the history directory beside the results files it shows.
HISTORY_PAGE = "index.html"
#: What of a night the history keeps beside its results (the report's own copies).
KEPT_DIRS = ("transcripts", "logs")


def _keep_history(history: Path, kept: Path, staging: Path) -> None:
    """Keep this night's transcripts and logs in ``history/nights/<id>``, drop those of
    nights the page no longer shows, and write the history page."""
    nights = history / "nights"
    night_id = kept.stem.removeprefix("results-")
    for name in KEPT_DIRS:
        if (staging / name).is_dir():
            shutil.copytree(staging / name, nights / night_id / name, dirs_exist_ok=True)
    files = sorted(history.glob("results-*.json"), reverse=True)
    shown: list[report.Kept] = []
    for path in files:
        try:
            night = Night.from_json(load_json(path), str(path))
        except InputError as err:
            log.debug("not in the history page: %s: %s", path, err.message)
            continue
        shown.append(report.Kept(path.stem.removeprefix("results-"), night, frozenset()))
        if len(shown) == report.HISTORY_NIGHTS:
            break
    ids = {k.id for k in shown}
    if nights.is_dir():
        for stale in nights.iterdir():
            if stale.name not in ids:
                shutil.rmtree(stale, ignore_errors=True)
    shown = [
        dataclasses.replace(
            k,
            files=frozenset(
                str(p.relative_to(history)) for p in (nights / k.id).rglob("*") if p.is_file()
            ),
        )
        for k in shown
    ]
    tmp = history / f".{HISTORY_PAGE}.tmp"
    tmp.write_text(report.history_page(shown))
    os.replace(tmp, history / HISTORY_PAGE)
