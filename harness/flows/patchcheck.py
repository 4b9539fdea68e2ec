"""``./inv patches.check``: is a series ready to send upstream?

The checks a maintainer would run, in the order a patch author fixes things: each
patch carries the author's Signed-off-by (DCO) and a sane subject; the series applies
without fuzz on the base; upstream's own style checker passes (edk2's PatchCheck.py,
QEMU's checkpatch.pl, and for GRUB, which has none, ``git show --check`` plus the
conventions of its developer manual); the commit checks of upstream's own CI, where
the tree has them (GRUB master's GitLab job that wants a Signed-off-by on every
commit); the component's own unit tests pass (GRUB's native tests, built and run
inside the GRUB build, so ``--quick`` runs that build too); then the component builds
and the boot matrix passes. A failing check stops the stages after it, so a broken
series fails in seconds.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from harness import run
from harness.boots import arm64, matrix
from harness.boots.prepare import Firmware, Machine
from harness.boots.result import Result
from harness.components import grub as grub_build
from harness.components import linux, ovmf, registry
from harness.components import qemu as qemu_build
from harness.components.pipeline import Built, Request, Role, Spec, build, builder_image
from harness.components.trees import follow_upstream, prepare_tree
from harness.components.workspace import Component, Workspace
from harness.config import Config, Upstream, resolve
from harness.errors import (
    BuildRefused,
    CommandError,
    ConfigError,
    InputError,
    PatchError,
)
from harness.host import qemu
from harness.records import Fields
from harness.upstream import patchset, sources, style
from harness.upstream.patchset import Applied, Patch
from harness.verdict import Verdict

log = logging.getLogger(__name__)


#: Format of a check line's JSON; ``check.schema.json`` beside this module describes it.
CHECK_SCHEMA = "harness-check/1"
#: The verdicts a check line can have (a check that cannot run raises instead).
CHECK_VERDICTS = (Verdict.PASSED, Verdict.FAILED, Verdict.SKIPPED)


@dataclass(frozen=True)
class Check:
    """One line of the report: a check, what it looked at, and the verdict."""

    name: str
    subject: str
    outcome: Verdict
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome.failed

    def line(self) -> str:
        text = f"{self.outcome.short:4}  {self.name:<13} {self.subject}"
        return f"{text}: {self.reason}" if self.reason else text

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": CHECK_SCHEMA,
            "name": self.name,
            "subject": self.subject,
            "outcome": self.outcome.value,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "check") -> Check:
        """Raises: InputError: a field is missing or wrong (the message names it)."""
        f = Fields(data, where)
        if (schema := f.text("schema")) != CHECK_SCHEMA:
            raise InputError(f"{where}: schema {schema!r} is not {CHECK_SCHEMA}.")
        return cls(
            f.text("name"),
            f.text("subject"),
            f.choice("outcome", Verdict, CHECK_VERDICTS),
            f.text("reason", ""),
        )


#: edk2 and QEMU both ask for subjects of at most 72 characters; GRUB follows suit.
SUBJECT_MAX = 72
#: "area: Summary" (QEMU, GRUB) or "Package/Module: Summary" (edk2).
SUBJECT_FORM = re.compile(r"^[\w./+-]+(?:, ?[\w./+-]+)*: \S")
TRAILER = re.compile(r"^Signed-off-by: (.+?) <([^>]+)>\s*$", re.MULTILINE)


def _message(patch: Patch) -> tuple[str, str]:
    """(author e-mail, commit message body) of a format-patch file."""
    msg = email.message_from_bytes(patch.path.read_bytes(), policy=email.policy.default)
    author = email.utils.parseaddr(str(msg.get("From", "")))[1]
    payload = msg.get_payload(decode=True)
    body = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
    return author, body.split("\n---\n", 1)[0]


def check_signoff(patch: Patch) -> Check:
    """DCO: the author certifies the patch with a Signed-off-by in their own name."""
    author, body = _message(patch)
    emails = [m.group(2).strip().lower() for m in TRAILER.finditer(body)]
    name = patch.path.name
    if not emails:
        return Check("signed-off-by", name, Verdict.FAILED, "no Signed-off-by line (DCO)")
    if author.lower() not in emails:
        return Check(
            "signed-off-by",
            name,
            Verdict.FAILED,
            f"no Signed-off-by from the author <{author}> (found {', '.join(emails)})",
        )
    return Check("signed-off-by", name, Verdict.PASSED)


def check_subject(patch: Patch) -> Check:
    subject, name = patch.subject, patch.path.name
    problems = []
    if not subject:
        problems.append("the subject is empty")
    elif len(subject) > SUBJECT_MAX:
        problems.append(f"the subject has {len(subject)} characters (at most {SUBJECT_MAX})")
    if subject.endswith("."):
        problems.append("the subject ends with a full stop")
    if re.match(r"^(fixup!|squash!|amend!|WIP\b)", subject, re.IGNORECASE):
        problems.append("a fixup or work-in-progress commit")
    elif subject and not SUBJECT_FORM.match(subject):
        problems.append("the subject does not start with the area it changes ('area: Summary')")
    if problems:
        return Check("subject", name, Verdict.FAILED, "; ".join(problems))
    return Check("subject", name, Verdict.PASSED, repr(subject))


def check_style(spec: Spec[Any], tree: Path, applied: Applied) -> Check:
    """*spec*'s upstream style checker on one applied patch."""
    problems = spec.style.check(tree, applied)
    name = applied.patch.path.name
    if problems:
        return Check("style", name, Verdict.FAILED, f"{spec.style.name}: " + "; ".join(problems))
    return Check("style", name, Verdict.PASSED, spec.style.name)


# -- the whole check -------------------------------------------------------------

#: Where the boot stage builds its images and keeps its transcripts.
RUN_DIR = "patches-check"


def run_checks(
    component: str,
    ws: Workspace,
    *,
    cfg: Config | None = None,
    local_tree: Path | None = None,
    quick: bool = False,
    jobs: int = 2,
    report: Callable[[Check], None] = lambda c: None,
) -> list[Check]:
    """Every check for *component*'s series on *ws*'s base (pinned, or moved by
    ``ws.upstream``) or on *local_tree*; *report* sees each check as it finishes.

    Raises:
        ConfigError: no such component, or a broken series file.
        InfrastructureError: the machine could not run a check (Docker, a download).
    """
    cfg = cfg or resolve()
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        report(check)

    spec = registry.get(component)
    if spec.source:
        raise ConfigError(
            f"{component} is {spec.source} built for another architecture and has no series "
            f"of its own: check {spec.source} (which builds {component} too)."
        )
    comp = ws.component(component)
    for patch in comp.patches:
        add(check_signoff(patch))
        add(check_subject(patch))
    # One check at a time per workspace: its tree, builds and boot directories are shared.
    with ws.locked():
        builder = builder_image(spec.builder, ws)
        _series_checks(spec, comp, ws, builder.tag, local_tree, add)
        blocked = next((c for c in checks if c.failed), None)
        if spec.unit_tests:
            if blocked:
                why = f"{blocked.subject} failed {blocked.name}"
                for name in spec.unit_tests:
                    add(Check("unit-test", name, Verdict.SKIPPED, why))
            else:
                _unit_tests(spec, ws, local_tree, add)
            blocked = next((c for c in checks if c.failed), None)
        firmware = None
        if blocked or quick:
            why = f"{blocked.subject} failed {blocked.name}" if blocked else "--quick"
            add(Check("build", component, Verdict.SKIPPED, why))
            add(Check("boot", component, Verdict.SKIPPED, why))
        else:
            firmware = _build_and_boot(cfg, spec, ws, local_tree, jobs, add)
        save_report(ws, comp, local_tree, checks, firmware)
    return checks


#: The last ``patches.check`` of a component in a workspace: what the merge request's
#: description reports (``patches.export --merge-request``).
REPORT = "report.json"
REPORT_SCHEMA = "harness-patches-check/1"


def save_report(
    ws: Workspace,
    comp: Component,
    local_tree: Path | None,
    checks: list[Check],
    firmware: Firmware | None,
) -> Path:
    """Write the checks of *comp*'s series, with the base and series they ran on and the
    firmware the boots ran (None when nothing booted)."""
    path = ws.layout.runs / RUN_DIR / comp.name / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "schema": REPORT_SCHEMA,
        "base": f"{comp.pin.name} {comp.pin.version}",
        "commit": comp.pin.commit,
        "local_tree": str(local_tree) if local_tree else None,
        "series": [{"file": p.path.name, "sha256": p.sha256} for p in comp.patches],
        "firmware": None
        if firmware is None
        else {"sha256": sources.sha256_file(firmware.path), "launch_digest": firmware.digest.hex()},
        "checks": [c.to_json() for c in checks],
    }
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


def _series_checks(
    spec: Spec[Any],
    comp: Component,
    ws: Workspace,
    builder: str,
    local_tree: Path | None,
    add: Callable[[Check], None],
) -> None:
    """ "applies" for each patch on the base, then "style" for each one that applied."""
    tree = prepare_tree(comp, ws, builder, local_tree=local_tree, apply=False)
    base = f"{comp.pin.name} {comp.pin.version}" if local_tree is None else str(local_tree)
    applied = patchset.try_series(tree.path, list(comp.patches))
    if not applied:
        add(
            Check("applies", spec.name, Verdict.PASSED, f"empty series, nothing to apply on {base}")
        )
    for result in applied:
        if result.ok:
            add(Check("applies", result.patch.path.name, Verdict.PASSED, f"on {base}"))
        else:
            add(Check("applies", result.patch.path.name, Verdict.FAILED, result.reason))
    for result in applied:
        if result.ok:
            add(check_style(spec, tree.path, result))
    if applied and all(r.ok for r in applied):
        ci = style.grub_ci_commit_checks(tree.path, tree.base)
        if ci is not None:  # the tree carries GRUB's CI scripts (master, not 2.14)
            outcome = Verdict.FAILED if ci else Verdict.PASSED
            what = "; ".join(ci[:5]) or "every commit of the series passes it"
            add(Check("upstream-ci", style.GRUB_CI_SIGNOFF, outcome, what))


def _unit_tests(
    spec: Spec[Any], ws: Workspace, local_tree: Path | None, add: Callable[[Check], None]
) -> None:
    """One "unit-test" line per test that *spec*'s build runs. The tests run inside the
    build, so this is that build (from the cache when nothing changed; the build stage
    after it then reuses it)."""
    ran: tuple[grub_build.UnitTest, ...] = ()
    broken = ""
    trees = {spec.name: local_tree} if local_tree else {}
    try:
        ran = grub_build.ran_unit_tests(build(spec, ws, Request(trees)))
    except PatchError as err:
        broken = err.message
    except CommandError as err:  # the build ran: its log says how far the tests got
        ran = grub_build.unit_tests(ws.layout.log(spec.name).read_text(errors="replace"))
        broken = err.message
    seen = {t.name: t for t in ran}
    for name in spec.unit_tests:
        test = seen.get(name)
        if test is None:
            why = f"the build failed before it ran: {broken}" if broken else "it did not run"
            add(Check("unit-test", name, Verdict.FAILED, why))
        elif test.verdict is grub_build.UnitVerdict.ABSENT:
            add(Check("unit-test", name, Verdict.FAILED, "the tree does not define it"))
        elif test.verdict is grub_build.UnitVerdict.FAIL:
            why = "; ".join(test.failures[:3]) or f"it failed (see the {spec.name} build log)"
            add(Check("unit-test", name, Verdict.FAILED, why))
        else:
            add(Check("unit-test", name, Verdict.PASSED, f"built and run in the {spec.name} build"))


def _build_and_boot(
    cfg: Config,
    spec: Spec[Any],
    ws: Workspace,
    local_tree: Path | None,
    jobs: int,
    add: Callable[[Check], None],
) -> Firmware | None:
    """Build, then boot the matrix; the firmware booted (None when a build failed)."""
    built = _build(spec, ws, local_tree, add)
    if built is None:
        add(Check("boot", spec.name, Verdict.SKIPPED, "the build failed"))
        return None
    firmware, emulator, kernel = built
    machine = Machine.of(cfg, emulator)
    runs = ws.layout.runs / RUN_DIR / spec.name
    tools = builder_image(registry.TOOLS_BUILDER, ws)
    images = matrix.build_images(
        runs / "images", ws.layout.image_cache, tools.tag, kernel=linux.guest_kernel(kernel)
    )

    def booted(r: Result) -> None:  # reported as each boot ends
        add(Check("boot", matrix.case_id(r.scenario, r.variant), r.outcome, r.detail))

    matrix.run_matrix(firmware, images, machine, runs / "boot", jobs=jobs, on_result=booted)
    _other_architectures(spec, ws, local_tree, add)
    return firmware


def _other_architectures(
    spec: Spec[Any], ws: Workspace, local_tree: Path | None, add: Callable[[Check], None]
) -> None:
    """Build *spec*'s source for the other architectures it is built for (GRUB for
    arm64): a "build" line each, a "unit-test" line per test that build ran there, and
    for GRUB's arm64 build a boot on arm64 UEFI firmware (:mod:`harness.boots.arm64`)."""
    trees = {spec.name: local_tree} if local_tree else {}
    for other in (s for s in registry.COMPONENTS if s.source == spec.name):
        checks = _other_architecture(other, ws, Request(trees))
        for check in checks:
            add(check)


def _other_architecture(other: Spec[Any], ws: Workspace, request: Request) -> list[Check]:
    checks = []
    try:
        built = build(other, ws, request)
    except (CommandError, PatchError) as err:
        checks.append(Check("build", other.name, Verdict.FAILED, err.message))
        log_file = ws.layout.log(other.name)
        ran = (
            grub_build.unit_tests(log_file.read_text(errors="replace"))
            if log_file.is_file()
            else ()
        )
    else:
        modules = len(built.manifest.output.modules)
        checks.append(Check("build", other.name, Verdict.PASSED, f"{modules} modules"))
        ran = grub_build.ran_unit_tests(built)
    for test in ran:
        subject = f"{test.name} ({other.name})"
        if test.verdict is grub_build.UnitVerdict.PASS:
            checks.append(
                Check("unit-test", subject, Verdict.PASSED, f"run in the {other.name} build")
            )
        else:
            why = "; ".join(test.failures[:3]) or test.verdict.value.lower()
            checks.append(Check("unit-test", subject, Verdict.FAILED, why))
    if other is grub_build.ARM64 and not any(c.failed for c in checks):
        # The x86_64 GRUB this check built last (for the firmware) makes the image.
        booted = arm64.boot_build(
            ws.layout.published(grub_build.SPEC.name), built, ws.layout.runs / RUN_DIR / other.name
        )
        checks.append(Check("boot", f"{other.name} on AAVMF", booted.outcome, booted.detail))
    return checks


def _build(
    spec: Spec[Any], ws: Workspace, local_tree: Path | None, add: Callable[[Check], None]
) -> tuple[Firmware, qemu.Qemu, Built[linux.KernelManifest]] | None:
    """Build what the series changes, and the firmware, emulator and guest kernel to
    boot (the system's QEMU unless the series is the emulator's; the pinned kernel
    unless the series is the kernel's); None when a build failed."""
    emulator = qemu.SYSTEM
    trees = {spec.name: local_tree} if local_tree else {}
    try:
        kernel = build(linux.SPEC, ws, Request(trees if spec.role is Role.GUEST_KERNEL else {}))
    except (CommandError, PatchError, BuildRefused) as err:
        add(Check("build", linux.SPEC.name, Verdict.FAILED, err.message))
        return None
    if spec.role is Role.GUEST_KERNEL:
        made = kernel.manifest.output
        said = f"bzImage {made.release}, EFI_SECRET={made.fragment.get('CONFIG_EFI_SECRET')}"
        add(Check("build", spec.name, Verdict.PASSED, said))
        trees = {}
    if spec.role is Role.EMULATOR:
        try:
            emulator = qemu_build.emulator(build(qemu_build.SPEC, ws, Request(trees)))
        except (CommandError, PatchError) as err:
            add(Check("build", spec.name, Verdict.FAILED, err.message))
            return None
        add(Check("build", spec.name, Verdict.PASSED, f"{emulator.version()}"))
        trees = {}
    try:
        built = build(ovmf.SPEC, ws, Request(trees))
    except (CommandError, PatchError) as err:
        add(Check("build", spec.name, Verdict.FAILED, err.message))
        return None
    out = built.manifest.output
    what = f"OVMF.fd sha256 {out.sha256[:16]}…, launch digest {out.sev_launch_digest[:16]}…"
    name = spec.name if spec.role in (Role.FIRMWARE, Role.FIRMWARE_PART) else ovmf.SPEC.name
    add(Check("build", name, Verdict.PASSED, what))
    return Firmware(ovmf.firmware(built), built.manifest.launch_digest), emulator, kernel


def rebase(
    component: str, version: str, cfg: Config, local_tree: Path | None = None
) -> list[Check]:
    """Try the release series on another upstream *version* (Debian's source package),
    or on upstream's development branch (``cfg.upstream`` master: the ``[master]``
    commit, or *local_tree* made from it), in a workspace of its own under the
    configuration's; one "applies" check per patch. Patches after one that does not
    apply are still tried, since most series are independent. What needs work on master
    is for the author to rework into ``patches/<component>/master``.

    Raises:
        ConfigError: no such component or version, or no ``[master]`` for master.
    """
    spec = registry.get(component)
    if cfg.upstream is Upstream.MASTER:
        master = sources.load_master(cfg.patches / component / "upstream.toml", component)
        if master is None:
            raise ConfigError(f"patches/{component}/upstream.toml names no [master] commit.")
        pin, where = master, f"{master.name} {master.version}"
    else:
        home = Workspace.of(cfg)
        tools = builder_image(registry.TOOLS_BUILDER, home)
        (pin,) = follow_upstream((component,), tools.tag, cfg.patches, version)
        where = f"{pin.name} {pin.version} (Debian {sources.debian_version(pin)})"
    if local_tree is not None:
        where = f"{where}, tree {local_tree}"
    root = cfg.layout.rebase / f"{component}-{pin.version.replace(' ', '-')}"
    # The release series, whatever the base: it is what is being moved.
    ws = Workspace(root, cfg.patches, upstream=(pin,), base=cfg.base, cache_root=cfg.layout.cache)
    comp = ws.component(component)
    with ws.locked():
        builder = builder_image(spec.builder, ws)
        tree = prepare_tree(comp, ws, builder.tag, local_tree=local_tree, apply=False)
        applied = patchset.try_series(tree.path, list(comp.patches), keep_going=True)
    if not applied:
        return [Check("applies", component, Verdict.PASSED, f"empty series; {where}")]
    return [
        Check("applies", r.patch.path.name, Verdict.PASSED, f"on {where}")
        if r.ok
        else Check(
            "applies", r.patch.path.name, Verdict.FAILED, f"needs work on {where}: {r.reason}"
        )
        for r in applied
    ]


def export(component: str, ws: Workspace, dest: Path) -> tuple[str, int]:
    """The series applied on the pinned base as git repository *dest*, branch
    ``harness/<component>``; returns (branch, number of commits).

    Raises:
        PatchError: the series does not apply (fix that first).
        InputError: *dest* is in the way.
    """
    comp = ws.component(component)
    branch = f"harness/{component}"
    with ws.locked():
        builder = builder_image(registry.get(component).builder, ws)
        tree = prepare_tree(comp, ws, builder.tag)
        return branch, patchset.export_series(tree.path, dest, branch)


def import_(
    component: str, ws: Workspace, repo: Path, revisions: str, series: str = ""
) -> list[Path]:
    """Replace *component*'s series with the commits *revisions* of *repo*: the release
    series, or with *series* ``master`` the one for upstream's development branch
    (``patches/<component>/master``, made when the component has none yet)."""
    release = ws.patches / component
    if not (release / "series").is_file():
        raise ConfigError(f"There is no patches/{component}/series to import into.")
    directory = release / series if series else release
    lines = (release / "series").read_text().splitlines(keepends=True)
    if (directory / "series").is_file():
        lines = (directory / "series").read_text().splitlines(keepends=True)
    elif series:
        directory.mkdir()
        lines = [ln for ln in lines if ln.startswith("# SPDX")]
        lines.append(f"# The series for upstream's {series} (upstream.toml [{series}]).\n")
    header = "".join(ln for ln in lines if ln.startswith("#"))
    return patchset.import_series(repo, revisions, directory, header)


#: The only component whose upstream takes merge requests (gitlab.freedesktop.org).
MERGE_REQUEST_COMPONENTS = ("grub",)
MERGE_REQUEST_DESCRIPTION = "merge-request.md"


def git_identity(env: dict[str, str] | None = None) -> tuple[str, str]:
    """The user's git identity (``user.name``, ``user.email``), which signs the merge
    request's commits off.

    Raises:
        InputError: git has none configured (a placeholder would be a false DCO).
    """
    found = []
    for key in ("user.name", "user.email"):
        # Outside any repository: the identity is the user's, not some clone's.
        proc = run.run(["git", "config", "--get", key], check=False, env=env, cwd=Path("/"))
        found.append(proc.stdout.decode().strip() if proc.returncode == 0 else "")
    if not all(found):
        raise InputError(
            "git has no user.name and user.email configured, and a merge request's "
            "commits carry your Signed-off-by: set them with git config --global."
        )
    return found[0], found[1]


def load_report(ws: Workspace, comp: Component) -> dict[str, Any]:
    """The last ``patches.check`` of *comp* in *ws*, when it checked this very series,
    passed, and booted the matrix.

    Raises:
        InputError: no such report, another series, a failed check or no boots.
    """
    path = ws.layout.runs / RUN_DIR / comp.name / REPORT
    again = f"run ./inv patches.check {comp.name} (with the same --upstream and --tree) first"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError(f"There is no patches.check report at {path}; {again}.") from None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        raise InputError(f"{path} is not a patches.check report; {again}.")
    series = [{"file": p.path.name, "sha256": p.sha256} for p in comp.patches]
    if data.get("series") != series or data.get("base") != f"{comp.pin.name} {comp.pin.version}":
        raise InputError(f"The series or its base changed since the last check; {again}.")
    checks = [Check.from_json(c, str(path)) for c in data.get("checks", [])]
    if any(c.failed for c in checks):
        raise InputError(f"The last patches.check of {comp.name} failed; fix the series first.")
    if data.get("firmware") is None or not any(
        c.name == "boot" and c.outcome is Verdict.PASSED for c in checks
    ):
        raise InputError(
            f"The last patches.check of {comp.name} booted nothing (--quick?); the "
            "description reports the boot matrix, so run it without --quick first."
        )
    return {**data, "checks": checks}


def merge_request(component: str, ws: Workspace, dest: Path, repo: Path) -> tuple[str, int, Path]:
    """The series as a merge request: a clone *dest* of upstream's repository *repo* with
    the series applied (``git am``) on the commit the pin names, on branch
    ``harness/<component>``, each commit signed off and committed by the user's git
    identity, and the description beside it; returns (branch, number of commits,
    description). The branch sits on upstream's own history, so it can be pushed to a
    fork as it is.

    Raises:
        InputError: not a component that takes merge requests, no git identity, no
            passing full ``patches.check`` of this series, *dest* in the way, or *repo*
            without the pinned commit.
        PatchError: a patch does not apply on the commit.
    """
    if component not in MERGE_REQUEST_COMPONENTS:
        raise InputError(
            f"{component}'s upstream does not take merge requests; "
            f"--merge-request is for {', '.join(MERGE_REQUEST_COMPONENTS)}."
        )
    name, email_address = git_identity()
    comp = ws.component(component)
    report = load_report(ws, comp)
    commit = comp.pin.commit
    if commit is None:
        raise InputError(f"The {component} pin names no upstream commit to base the branch on.")
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"{dest} exists and is not empty; export into a new directory.")
    run.run(["git", "clone", "--quiet", "--no-checkout", str(repo), str(dest)])
    try:
        found = run.run(
            ["git", "-C", str(dest), "cat-file", "-e", f"{commit}^{{commit}}"], check=False
        )
        if found.returncode != 0:
            raise InputError(f"{repo} does not have commit {commit}, the base the pin names.")
        branch = f"harness/{component}"
        patchset.git(dest, "checkout", "--quiet", "-b", branch, commit)
        you = {"GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email_address}
        am = ["git", "-C", str(dest), "am", "--quiet", "--signoff", "--keep-cr"]
        for patch in comp.patches:
            if run.run([*am, str(patch.path)], env=you, check=False).returncode != 0:
                raise PatchError(f"{patch.path.name} does not apply on {commit}.")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    subjects = patchset.git(dest, "log", "--reverse", "--format=%s", f"{commit}..HEAD")
    checks: list[Check] = report["checks"]
    text = _TEMPLATES.get_template("merge-request.md.j2").render(
        report=report,
        checks=checks,
        failed=sum(c.failed for c in checks),
        boots=[c for c in checks if c.name == "boot"],
        unit_tests=[c for c in checks if c.name == "unit-test"],
        commits=subjects.splitlines(),
    )
    description = dest.parent / f"{dest.name}.{MERGE_REQUEST_DESCRIPTION}"
    description.write_text(text)
    return branch, len(comp.patches), description


_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=False,  # Markdown, not HTML
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
