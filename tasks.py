"""Tasks of the confidential-boot firmware harness. `./inv --list` shows them."""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.context import Context

from harness.config import DEFAULT_BASE
from harness.errors import ConfigError, PrerequisiteError
from harness.program import HarnessTask, command

if TYPE_CHECKING:
    from harness.sev.policy import LaunchMode
    from harness.sev.vmsa import VcpuConfig

#: The word each option's value shows as in --help; a task may say otherwise.
PLACEHOLDERS = {
    "append": "CMDLINE",
    "api_major": "N",
    "api_minor": "N",
    "base": "IMAGE",
    "build": "ID",
    "case": "NAME-VARIANT",
    "cek": "FILE",
    "certs": "DIR",
    "component": "NAME",
    "entry": "GUID:FILE",
    "firmware": "FILE",
    "format": "raw|qcow2",
    "from_": "DIR",
    "generation": "NAME",
    "header_out": "FILE",
    "history": "DIR",
    "image": "DIR",
    "initrd": "FILE",
    "jobs": "N",
    "k": "EXPR",
    "kdf": "standard|test",
    "keep": "N",
    "kernel": "FILE",
    "launch": "KIND",
    "launch_measure": "BASE64",
    "luks": "VARIANT",
    "m": "MARKERS",
    "manifest": "FILE",
    "max_size": "SIZE",
    "min_api": "MAJOR.MINOR",
    "min_build": "N",
    "mode": "sev|seves|snp",
    "out": "PATH",
    "packages": "A,B,C",
    "passphrase_file": "FILE",
    "pdh": "FILE",
    "policy": "POLICY",
    "qemu": "system|built",
    "range": "A..B",
    "recipe": "NAME",
    "require": "FLAGS",
    "root_password_file": "FILE",
    "runs": "N",
    "scenario": "NAME",
    "secret_out": "FILE",
    "size": "SIZE",
    "ssh_key": "FILE",
    "suite": "NAME",
    "tek": "FILE",
    "tik": "FILE",
    "tiktek": "FILE",
    "to": "DIR",
    "tree": "DIR",
    "tree_edk2": "DIR",
    "tree_grub": "DIR",
    "upstream": "pinned|head|master",
    "vcpu_family": "N",
    "vcpu_model": "N",
    "vcpu_sig": "0xSIG",
    "vcpu_stepping": "N",
    "vcpu_type": "MODEL",
    "vcpus": "N",
    "vmsa_model": "legacy|init2",
    "workspace": "DIR",
}


def task(
    placeholders: dict[str, str] | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], HarnessTask]:
    """A task of ours (harness.program.command), with :data:`PLACEHOLDERS`."""
    return command(placeholders={**PLACEHOLDERS, **(placeholders or {})}, **kwargs)


@task(
    positional=[],
    help={
        "fix": "install the missing packages with apt and start Docker (default: only "
        "report, with the command that installs them)",
        "probe": "boot OVMF under KVM and TCG to find a working accelerator",
    },
)
def doctor(c: Context, fix: bool = False, probe: bool = True) -> None:
    """Check host prerequisites (tools, Docker engine, QEMU accelerator); --fix installs
    and starts what is missing."""
    from harness.host import doctor as doctor_mod

    checks = doctor_mod.ensure(fix=fix, probe=probe)
    print(doctor_mod.render(checks))
    if any(ch.fails for ch in checks):
        raise PrerequisiteError("Some prerequisites are missing (see above).")


@task(
    positional=["firmware"],
    help={"firmware": "the firmware image (OVMF.fd)", "json": "print JSON (harness-inspect/1)"},
)
def inspect(c: Context, firmware: str, json: bool = False) -> None:
    """Describe a firmware image: GUID table, secret area, volumes, GRUB, digests."""
    from pathlib import Path

    from harness.inspection import describe, render_text

    report = describe(Path(firmware))
    sys.stdout.write(jsonlib.dumps(report, indent=2) + "\n" if json else render_text(report))


@task(
    positional=[],
    help={
        "m": "pytest marker expression, e.g. unit",
        "k": "pytest -k expression",
        "jobs": "parallel workers (pytest-xdist); 0 runs in-process",
        "upstream": "also run the night on upstream head (left out by default: its "
        "outcome depends on what Debian has today, not on this commit)",
    },
)
def test(c: Context, m: str = "", k: str = "", jobs: int = 2, upstream: bool = False) -> None:
    """Run the test suite (`-m unit` for the quick loop, without host checks).

    A night on upstream head is left out unless --upstream: what Debian's newest packages
    are today is not a property of the commit under test (`./inv nightly --upstream head`
    is the tool for it)."""
    from harness import run
    from harness.host import doctor as doctor_mod

    if m != "unit":
        print(doctor_mod.render(doctor_mod.require_all(fix=True, probe=False)), file=sys.stderr)
    argv = [sys.executable, "-m", "pytest"]
    if not m and not upstream:
        m = "not upstream"
    argv += ["-m", m] if m else []
    argv += ["-k", k] if k else []
    # One test at a time to whichever worker is free, the long ones first (tests/conftest.py):
    # xdist's default hands each worker a quarter of the suite up front, and one worker
    # then ran every cold build and night in turn while the other sat idle.
    argv += ["-n", str(jobs), "--dist", "load", "--maxschedchunk", "1"] if jobs else []
    argv += [] if m == "unit" else ["--durations=25"]  # where a cold run spends its time
    proc = run.run(argv, check=False, capture=False)
    if proc.returncode:
        from invoke.exceptions import Exit

        raise Exit(code=proc.returncode)


#: Host tools the builds need besides the Docker engine.
BUILD_TOOLS = ("docker", "debootstrap", "git")
#: Options that mean the same in every task that has them.
CHAIN_HELP = {
    "allow_naples": "accept a chain that ends at AMD's Naples root (refused by default: "
    "Naples chip keys can be extracted, so such a chain proves nothing)",
    "cek": "the one chip you expect: the chain's CEK must be this certificate file",
}


COMMON_HELP = {
    "workspace": "workspace root: downloads, builds, artefacts, images, runs "
    "(default out/, or $HARNESS_WORKSPACE)",
    "upstream": "pinned (default); head: the newest upstream versions Debian has; master: "
    "upstream's development branch at the commit upstream.toml's [master] names",
    "qemu": "system (qemu-system-x86_64 on PATH, the default) or built (./inv build-qemu)",
    "base": f"Docker image the builder images start FROM (default {DEFAULT_BASE})",
    "launch": "simulated (the default: the owner flow against the simulated secure "
    "element), simulated-es (the same, SEV-ES), sev or sev-es (SEV hardware; exit 3 where "
    "the host has none)",
}
BUILD_HELP = {
    "tree_edk2": "build this local edk2 tree instead of the pin",
    "tree_grub": "build this local GRUB tree instead of the pin",
    "series": "apply our patch series (default); --no-series builds the tree as it is",
    **{k: COMMON_HELP[k] for k in ("workspace", "upstream", "base")},
}


def _build_help(*names: str) -> dict[str, str]:
    return {k: BUILD_HELP[k] for k in (*names, "series", "workspace", "upstream", "base")}


def _components() -> str:
    """The components, as their data under patches/ names them (cheap: no imports)."""
    from harness.config import PATCHES

    names = sorted(p.name for p in PATCHES.iterdir() if (p / "upstream.toml").is_file())
    return ", ".join(names)


COMPONENT_HELP = f"the component: {_components()}"


@task(
    name="build",
    positional=["component"],
    help={"component": COMPONENT_HELP, "tree": "build this local tree instead of the pin",
          **_build_help()},
)  # fmt: skip
def build_any(
    c: Context,
    component: str,
    tree: str = "",
    series: bool = True,
    workspace: str = "",
    upstream: str = "",
    base: str = "",
) -> None:
    """Build any component of the registry into <workspace>/<component>."""
    _build(component, {component: tree}, series, workspace, upstream, base)


@task(positional=[], help=_build_help("tree_grub"))
def build_grub(
    c: Context,
    tree_grub: str = "",
    series: bool = True,
    workspace: str = "",
    upstream: str = "",
    base: str = "",
) -> None:
    """Build GRUB (x86_64-efi) with patches/grub into <workspace>/grub."""
    _build("grub", {"grub": tree_grub}, series, workspace, upstream, base)


@task(positional=[], help={**_build_help("tree_edk2", "tree_grub"), "debug": "DEBUG build with "
      "debug output on the serial port"})  # fmt: skip
def build_ovmf(
    c: Context,
    debug: bool = False,
    tree_edk2: str = "",
    tree_grub: str = "",
    series: bool = True,
    workspace: str = "",
    upstream: str = "",
    base: str = "",
) -> None:
    """Build the AmdSev OVMF.fd with our GRUB inside: <workspace>/ovmf/OVMF.fd + manifest.json."""
    trees = {"ovmf": tree_edk2, "grub": tree_grub}
    _build("ovmf", trees, series, workspace, upstream, base, debug=debug)


@task(positional=[], help=_build_help())
def build_qemu(
    c: Context, series: bool = True, workspace: str = "", upstream: str = "", base: str = ""
) -> None:
    """Build QEMU (x86_64-softmmu) with patches/qemu into <workspace>/qemu, for --qemu built."""
    _build("qemu", {}, series, workspace, upstream, base)


@task(positional=[], help=_build_help())
def build_kernel(
    c: Context, series: bool = True, workspace: str = "", upstream: str = "", base: str = ""
) -> None:
    """Build the guest kernel (Linux, patches/linux/guest.config) into <workspace>/linux."""
    _build("linux", {}, series, workspace, upstream, base)


def _build(
    component: str,
    trees: dict[str, str],
    series: bool,
    workspace: str,
    upstream: str,
    base: str,
    debug: bool = False,
) -> None:
    """What every build task does: resolve the configuration, build, say what was made.
    *trees* maps components to local trees; empty paths are not given."""
    from harness.flows import builds

    cfg = _config(workspace=workspace, upstream=upstream, base=base)
    given = {name: path for name, path in trees.items() if path}
    print(builds.render(builds.build_component(cfg, component, given, apply=series, debug=debug)))


def _scenario_names() -> list[str]:
    from harness.boots import ordinary, scenarios

    return [*scenarios.SCENARIOS, ordinary.NAME]


def _case_names() -> list[str]:
    from harness.boots import matrix

    return [matrix.case_id(*case) for case in matrix.MATRIX]


def _config(
    workspace: str = "", upstream: str = "", qemu: str = "", base: str = "", launch: str = ""
) -> Any:
    """The run's configuration, resolved once (see harness/config.py)."""
    from harness.config import resolve

    return resolve(workspace=workspace, upstream=upstream, qemu=qemu, base=base, launch=launch)


@task(
    positional=[],
    help={
        "prune": "remove entries: all but the --keep most recently used of each component, "
        "then the least recently used beyond --max-size",
        "keep": "entries kept per component when pruning (default 3)",
        "max_size": "when pruning, the most the entries may hold, e.g. 20G (default: no cap)",
    },
)
def cache(c: Context, prune: bool = False, keep: int = 3, max_size: str = "") -> None:
    """List the machine's build cache (shared by every clone; HARNESS_CACHE moves it)."""
    from harness.config import default_cache
    from harness.flows import cache as cache_mod

    root = default_cache()
    removed = None
    if prune:
        limit = cache_mod.parse_size(max_size) if max_size else None
        removed = cache_mod.prune(root / "builds", keep, limit)
    elif max_size or keep != 3:
        raise ConfigError("--keep and --max-size only mean something with --prune.")
    print(cache_mod.render(root, cache_mod.entries(root / "builds"), removed))


@task(
    placeholders={"kernel": "built|debian", "out": "DIR"},
    positional=[],
    help={
        "recipe": "image recipe under images/ (default minimal)",
        "luks": "luks1, luks2-pbkdf2 or luks2-argon2id",
        "passphrase_file": "use this passphrase (default: a generated one)",
        "out": "directory for disk.img, image.json, passphrase and proof.key (0600) "
        "(default <workspace>/images/RECIPE-LUKS)",
        "secret_only": "accept a passphrase GRUB's prompt cannot type (secret unlocks only)",
        "kernel": "built (our kernel, built or cached: it unlocks the root again with a key "
        "file and reports what efi_secret lists) or debian (the distribution's cloud kernel)",
        "suite": "debian recipe: trixie (default) or bookworm",
        "size": "debian recipe: the root filesystem's size (default 2G)",
        "packages": "debian recipe: more packages, a,b,c",
        "format": "debian recipe: raw (default) or qcow2",
        "root_password_file": "debian recipe: root's password, from a 0600 file (default: "
        "root stays locked)",
        "ssh_key": "debian recipe: an OpenSSH public key for root (adds openssh-server)",
        "workspace": COMMON_HELP["workspace"],
        "kdf": "debian recipe: the passphrase slot's KDF costs, standard (default: "
        "cryptsetup's own, benchmarked for 2 s; ship this) or test (fast under TCG)",
    },
)
def build_image(
    c: Context,
    recipe: str = "minimal",
    luks: str = "luks1",
    passphrase_file: str = "",
    out: str = "",
    secret_only: bool = False,
    kernel: str = "built",
    suite: str = "",
    size: str = "",
    packages: str = "",
    format: str = "raw",
    root_password_file: str = "",
    ssh_key: str = "",
    workspace: str = "",
    kdf: str = "standard",
) -> None:
    """Build a LUKS-encrypted guest image, rootless and without dm-crypt."""
    from pathlib import Path

    from harness.flows import builds
    from harness.guest import debian, imagemeta

    cfg = _config(workspace=workspace)
    options = debian.DebianOptions(
        suite=suite or None,
        size_mib=debian.parse_size(size) if size else None,
        packages=debian.parse_packages(packages),
        disk_format=debian.parse_format(format),
        root_password=Path(root_password_file) if root_password_file else None,
        ssh_key=Path(ssh_key) if ssh_key else None,
        kdf=imagemeta.parse_kdf(kdf),
    )
    img = builds.build_image(
        cfg,
        recipe,
        luks,
        Path(passphrase_file) if passphrase_file else None,
        out,
        secret_only,
        kernel,
        options,
    )
    print(f"{img.disk} ({luks}, {img.metadata.kernel}); passphrase in {img.passphrase_file} (0600)")


@task(
    choices={"scenario": lambda: _scenario_names()},
    positional=[],
    iterable=["entry"],
    help={
        "scenario": "what to play (docs/scenarios.md); ordinary: a debian-recipe image under "
        "Debian's OVMF with its passphrase typed once",
        "entry": "a secret beside the passphrase, GUID:FILE (0600; repeatable); replaces "
        "the three default ones",
        "firmware": "OVMF.fd to boot, with its manifest (default <workspace>/ovmf/OVMF.fd)",
        "image": "image directory from build-image (default <workspace>/images/minimal-luks1)",
        "interactive": "just boot with the serial console on this terminal",
        "launch": COMMON_HELP["launch"],
        "qemu": COMMON_HELP["qemu"],
        "workspace": COMMON_HELP["workspace"],
        "allow_naples": "--launch sev/sev-es: " + CHAIN_HELP["allow_naples"],
        "cek": "--launch sev/sev-es: " + CHAIN_HELP["cek"],
    },
)
def boot(
    c: Context,
    scenario: str = "passwordless",
    firmware: str = "",
    image: str = "",
    interactive: bool = False,
    launch: str = "simulated",
    qemu: str = "",
    workspace: str = "",
    entry: list[str] | None = None,
    allow_naples: bool = False,
    cek: str = "",
) -> None:
    """Boot the firmware and image in QEMU through a scenario and print the verdict."""
    from pathlib import Path

    from harness.errors import BootFailed
    from harness.flows import boot as boot_mod
    from harness.sev.chain import PlatformTrust, load_cek

    cfg = _config(workspace=workspace, qemu=qemu, launch=launch)
    fw = Path(firmware) if firmware else cfg.layout.firmware
    img = Path(image) if image else cfg.layout.image("minimal", "luks1")
    trust = PlatformTrust(allow_naples, load_cek(cek) if cek else None)
    result = boot_mod.boot(cfg, scenario, fw, img, interactive, entry or (), trust)
    if result is not None:
        print(boot_mod.render(result))
        if not result.passed:
            raise BootFailed(f"Scenario {scenario} failed.")


@task(
    choices={"case": lambda: _case_names()},
    placeholders={"out": "DIR"},
    positional=[],
    iterable=["case"],
    help={
        "case": "boot only this case of the matrix (repeatable): a slice for a quick "
        "night; default: the whole matrix",
        "out": "report directory, replaced at the end of the run (default <workspace>/nightly)",
        "history": "where every run's results.json is kept (default <workspace>/nightly-history)",
        "jobs": "boots at a time",
        "debian": "the Debian variant: build a Debian image and boot it to its login prompt "
        "(default on; --no-debian leaves it out)",
        **{k: COMMON_HELP[k] for k in ("upstream", "qemu", "workspace", "launch")},
        "qemu": "system (qemu-system-x86_64 on PATH, the default) or built: build QEMU too",
    },
)
def nightly(
    c: Context,
    out: str = "",
    upstream: str = "",
    history: str = "",
    jobs: int = 2,
    qemu: str = "",
    workspace: str = "",
    launch: str = "",
    debian: bool = True,
    case: list[str] | None = None,
) -> None:
    """Build, run the boot matrix, write JUnit/HTML/JSON reports; exit 0 pass, 1 fail, 2 infra."""
    from pathlib import Path

    from invoke.exceptions import Exit

    from harness.boots import matrix
    from harness.flows import nightly as nightly_mod

    cfg = _config(workspace=workspace, upstream=upstream, qemu=qemu, launch=launch)
    status = nightly_mod.nightly(
        cfg,
        Path(out).resolve() if out else None,
        Path(history).resolve() if history else None,
        jobs,
        cases=matrix.slice_of(case or ()),
        debian=debian,
    )
    if status:
        raise Exit(code=status)


sev = Collection("sev")

MEASURED_BOOT_HELP = {
    "firmware": "OVMF image the guest boots",
    "kernel": "measured direct-boot kernel",
    "initrd": "its initrd",
    "append": "its command line",
    "raw": "the firmware need not be an OVMF image (no reset-vector GUID table)",
}
PLATFORM_HELP = {
    "api_major": "SEV API major version the platform reports",
    "api_minor": "SEV API minor version",
    "build": "SEV firmware build id",
    "policy": "guest policy (decimal or 0x..)",
    "allow_debug": "accept a policy without NODBG (bit 0)",
    "min_api": "refuse a platform older than SEV API MAJOR.MINOR",
    "min_build": "refuse a platform firmware build below N",
    "require": "policy flags the launch must also set, e.g. NOKS,NOSEND (no key sharing, "
    "no migration)",
}
#: The options that describe the guest's vCPUs, shared by sev.digest, sev.verify and
#: sev.secret and declared here once: option -> (the parameter of
#: harness.sev.owner.vcpu_config it is, default, help). :func:`with_vcpus` hands them to
#: a task as one function of the launch mode.
VCPU_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "vcpus": ("count", 1, "number of vCPUs (SEV-ES/SNP: one VMSA each; default 1)"),
    "vcpu_type": (
        "type_name",
        "",
        "QEMU CPU model, e.g. EPYC-v4 (the default), EPYC-Milan, EPYC-Genoa",
    ),
    "vcpu_sig": ("signature", "", "raw CPUID signature instead of a type (0x...)"),
    "vcpu_family": (
        "family",
        "",
        "CPU family instead of a type (with --vcpu-model and --vcpu-stepping)",
    ),
    "vcpu_model": ("model", "", "CPU model number"),
    "vcpu_stepping": ("stepping", "", "CPU stepping"),
    "vmsa_model": (
        "vmsa_model",
        "",
        "legacy (KVM_SEV_INIT; SEV-ES default) or init2 (KVM_SEV_INIT2; SNP)",
    ),
    "debug_swap": ("debug_swap", False, "KVM set SEV_FEATURES.DebugSwap in the VMSAs"),
    "no_debug_swap": ("no_debug_swap", False, "it did not (the default, stated)"),
}
VCPU_HELP = {name: text for name, (_, _, text) in VCPU_OPTIONS.items()}


def with_vcpus(body: Callable[..., None]) -> Callable[..., None]:
    """*body* with the :data:`VCPU_OPTIONS` as its options, received as one argument,
    ``vcpu_config``: the launch mode -> the vCPUs they describe."""
    import functools
    import inspect  # here: the task named inspect takes the module's name

    signature = inspect.signature(body)
    own = [p for p in signature.parameters.values() if p.name != "vcpu_config"]
    shared = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=type(default).__name__
        )
        for name, (_, default, _) in VCPU_OPTIONS.items()
    ]

    @functools.wraps(body)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> None:
        given = {
            parameter: kwargs.pop(name, default)
            for name, (parameter, default, _) in VCPU_OPTIONS.items()
        }

        def vcpu_config(mode: LaunchMode) -> VcpuConfig:
            from harness.sev import owner

            return owner.vcpu_config(mode, **given)

        body(c, *args, vcpu_config=vcpu_config, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
    return wrapper


@task(
    positional=[],
    help={
        **MEASURED_BOOT_HELP,
        "mode": "sev (default), seves or snp (the SNP measurement, SHA-384)",
        "json": "print JSON: the digest, the mode, the files and the vCPUs it assumed",
        **VCPU_HELP,
    },
)
@with_vcpus
def digest(
    c: Context,
    firmware: str,
    json: bool = False,
    kernel: str = "",
    initrd: str = "",
    append: str | None = None,
    raw: bool = False,
    mode: str = "sev",
    *,
    vcpu_config: Callable[[LaunchMode], VcpuConfig],
) -> None:
    """Print the expected launch digest of a firmware (+ measured kernel), in hex alone on
    stdout (as sev-snp-measure does); for seves and snp, the vCPUs and VMSA model it
    assumed go to stderr (or all of it as --json)."""
    from harness.sev import owner
    from harness.sev.policy import LaunchMode

    launch = LaunchMode.parse(mode)
    cpus = vcpu_config(launch)
    boot = owner.MeasuredBoot(
        firmware, kernel or None, initrd or None, append, raw, mode=launch, vcpus=cpus
    )
    note, value = boot.describe(), boot.digest().hex()
    if json:
        described = {
            "digest": value,
            "mode": launch.value,
            "firmware": firmware,
            "kernel": kernel or None,
            "initrd": initrd or None,
            "append": append,
            "assumed": note or None,
        }
        print(jsonlib.dumps(described, indent=2))
        return
    print(value)
    if note:
        print(f"assumed: {note}", file=sys.stderr)


@task(
    positional=[],
    help={
        **MEASURED_BOOT_HELP,
        "firmware": "OVMF image the guest was launched with",
        "launch_measure": "base64 from QMP query-sev-launch-measure",
        "tik": "file with the 16-byte TIK",
        **PLATFORM_HELP,
        **VCPU_HELP,
    },
)
@with_vcpus
def verify(
    c: Context,
    firmware: str,
    launch_measure: str,
    tik: str,
    api_major: str,
    api_minor: str,
    build: str,
    policy: str,
    kernel: str = "",
    initrd: str = "",
    append: str | None = None,
    raw: bool = False,
    allow_debug: bool = False,
    min_api: str = "",
    min_build: str = "",
    require: str = "",
    *,
    vcpu_config: Callable[[LaunchMode], VcpuConfig],
) -> None:
    """Check a launch's policy and measurement against the firmware; exit 1 if refused.
    The policy's ES bit selects SEV-ES, whose digest covers the --vcpu* vCPUs."""
    from harness.sev import owner
    from harness.sev.policy import LaunchMode

    platform = owner.platform_info(api_major, api_minor, build, policy)
    cpus = vcpu_config(LaunchMode.SEV_ES)
    expected = owner.expected_launch(
        owner.MeasuredBoot(firmware, kernel or None, initrd or None, append, raw, vcpus=cpus),
        None,
        platform,
        owner.launch_rules(allow_debug, min_api, min_build, require),
    )
    found = owner.verify(expected, launch_measure, tik)
    note = expected.boot.describe() if expected.boot else ""
    print(f"measurement verified: launch digest {found.hex()}" + (f"  ({note})" if note else ""))
    print(f"policy {owner.policy_text(platform.policy)}")


@task(
    positional=[],
    iterable=["entry"],
    help={
        "tek": "file with the 16-byte TEK",
        "tik": "file with the 16-byte TIK",
        "tiktek": "sev-tool tmp_tk.bin (TEK then TIK)",
        "launch_measure": "base64 from QMP query-sev-launch-measure (binds the packet)",
        "passphrase_file": "file holding the disk passphrase",
        "entry": "extra secret GUID:FILE (repeatable)",
        "header_out": "where to write the 52-byte packet header (0600)",
        "secret_out": "where to write the encrypted payload (0600)",
        "base64": "write QMP-ready base64 instead of raw bytes",
        **MEASURED_BOOT_HELP,
        "firmware": "OVMF image the guest was launched with (verified; its secret block "
        "must hold the table)",
        "manifest": "verify against this build manifest's launch digest instead",
        **PLATFORM_HELP,
        "no_verify": "build the packet without checking the measurement (warns)",
        **VCPU_HELP,
    },
)
@with_vcpus
def secret(
    c: Context,
    launch_measure: str,
    passphrase_file: str,
    header_out: str,
    secret_out: str,
    tek: str = "",
    tik: str = "",
    tiktek: str = "",
    entry: list[str] | None = None,
    firmware: str = "",
    manifest: str = "",
    base64: bool = False,
    api_major: str = "",
    api_minor: str = "",
    build: str = "",
    policy: str = "",
    kernel: str = "",
    initrd: str = "",
    append: str | None = None,
    raw: bool = False,
    allow_debug: bool = False,
    min_api: str = "",
    min_build: str = "",
    require: str = "",
    no_verify: bool = False,
    *,
    vcpu_config: Callable[[LaunchMode], VcpuConfig],
) -> None:
    """Verify the launch, then build the encrypted LAUNCH_SECRET packet with the passphrase.
    The policy's ES bit selects SEV-ES, whose digest covers the --vcpu* vCPUs."""
    from harness.sev import owner
    from harness.sev.policy import LaunchMode

    keys = owner.load_keys(tek or None, tik or None, tiktek or None)
    expected = None
    if not no_verify:
        cpus = vcpu_config(LaunchMode.SEV_ES)
        expected = owner.expected_launch(
            owner.MeasuredBoot(firmware, kernel or None, initrd or None, append, raw, vcpus=cpus),
            manifest or None,
            owner.platform_info(api_major, api_minor, build, policy),
            owner.launch_rules(allow_debug, min_api, min_build, require),
        )
    out = owner.build_secret(
        keys,
        launch_measure,
        passphrase_file,
        entry or [],
        header_out,
        secret_out,
        firmware or None,
        base64,
        expected,
    )
    print(
        f"wrote {out.header_path} and {out.secret_path} "
        f"({out.entries} entries, {out.table_size}-byte table)"
    )


@task(
    placeholders={"out": "FILE"},
    positional=[],
    help={"out": "file to create (0600): TEK then TIK, 16 bytes each"},
)
def keys(c: Context, out: str) -> None:
    """Generate fresh transport keys in sev-tool's tmp_tk.bin layout (for simulated launches)."""
    from harness.sev import owner

    owner.write_keys(out)
    print(f"wrote {out}")


GENERATION_HELP = "naples, rome, milan, genoa, or auto (the one whose ASK signs the CEK)"


@task(
    positional=[],
    help={
        "certs": "directory with pdh, pek, oca, cek.cert (and optionally ask, ark.cert)",
        "generation": GENERATION_HELP,
        **CHAIN_HELP,
    },
)
def chain(
    c: Context, certs: str, generation: str = "auto", allow_naples: bool = False, cek: str = ""
) -> None:
    """Verify a platform's SEV certificate chain up to AMD's root key; exit 1 if broken."""
    from harness.sev.chain import verify_directory

    verified = verify_directory(certs, generation, allow_naples=allow_naples, cek=cek or None)
    print(f"generation: {verified.generation}")
    for link in verified.links:
        print(link)


@task(
    placeholders={"out": "DIR"},
    positional=[],
    help={
        "certs": "the platform's chain directory (verified first)",
        "generation": GENERATION_HELP,
        "pdh": "a lone PDH certificate instead of a chain (needs --trust-pdh)",
        "trust_pdh": "use --pdh without a chain: you got it over a channel you trust",
        **CHAIN_HELP,
        "policy": PLATFORM_HELP["policy"],
        "out": "directory for godh.cert/.b64, session.bin/.b64 and tmp_tk.bin (0600)",
    },
)
def session(
    c: Context,
    policy: str,
    out: str,
    certs: str = "",
    generation: str = "auto",
    pdh: str = "",
    trust_pdh: bool = False,
    allow_naples: bool = False,
    cek: str = "",
) -> None:
    """Open a LAUNCH_START session to the platform's PDH: GODH certificate, session, keys."""
    from harness.sev.session import open_session

    opened = open_session(
        certs or None,
        pdh or None,
        trust_pdh,
        generation,
        policy,
        out,
        allow_naples=allow_naples,
        cek=cek or None,
    )
    for line in opened.lines():
        print(line)


for t in (digest, verify, secret, keys, chain, session):
    sev.add_task(t)

patches = Collection("patches")


def _print_checks(checks: list[Any]) -> None:
    failed = sum(c.failed for c in checks)
    print(f"{len(checks)} checks, {failed} failed", flush=True)
    if failed:
        from harness.errors import PatchCheckFailed

        raise PatchCheckFailed(f"{failed} of {len(checks)} checks failed (see above).")


@task(
    name="check",
    positional=["component"],
    help={
        "component": COMPONENT_HELP,
        "tree": "check against this local source tree instead of the pinned upstream",
        "upstream": COMMON_HELP["upstream"],
        "quick": "stop after the series checks and GRUB's own unit tests (no boots)",
        "jobs": "boots at a time",
        "workspace": COMMON_HELP["workspace"],
    },
)
def patches_check(
    c: Context,
    component: str,
    tree: str = "",
    upstream: str = "",
    quick: bool = False,
    jobs: int = 2,
    workspace: str = "",
) -> None:
    """Does the series apply, carry Signed-off-by, pass upstream's style checker, build and boot?"""
    from pathlib import Path

    from harness.flows import builds, patchcheck

    cfg = _config(workspace=workspace, upstream=upstream)
    ws = builds.workspace(cfg, (component,), note=lambda n: print(f"note: {n}"))
    checks = patchcheck.run_checks(
        component,
        ws,
        cfg=cfg,
        local_tree=Path(tree) if tree else None,
        quick=quick,
        jobs=jobs,
        report=lambda ch: print(ch.line(), flush=True),
    )
    _print_checks(checks)


@task(
    placeholders={"to": "VERSION"},
    name="rebase",
    positional=["component"],
    help={
        "component": COMPONENT_HELP,
        "to": "upstream version, e.g. 2.12 or Debian's 2.12-9",
        "upstream": "master: try the series on upstream's development branch instead "
        "(the [master] commit of upstream.toml)",
        "tree": "a tree of that commit to try it on (with --upstream master)",
        "workspace": COMMON_HELP["workspace"],
    },
)
def patches_rebase(
    c: Context,
    component: str,
    to: str = "",
    upstream: str = "",
    tree: str = "",
    workspace: str = "",
) -> None:
    """Try the series on another upstream version and say which patches need work."""
    from pathlib import Path

    from harness.config import Upstream
    from harness.errors import InputError
    from harness.flows import patchcheck

    cfg = _config(workspace=workspace, upstream=upstream)
    master = cfg.upstream is Upstream.MASTER
    if master == bool(to):
        raise InputError("patches.rebase needs --to VERSION, or --upstream master.")
    if tree and not master:
        raise InputError("--tree goes with --upstream master.")
    checks = patchcheck.rebase(component, to, cfg, Path(tree) if tree else None)
    for ch in checks:
        print(ch.line(), flush=True)
    _print_checks(checks)


@task(
    name="export",
    positional=["component"],
    placeholders={"merge_request": "DIR", "repo": "DIR"},
    help={
        "component": COMPONENT_HELP,
        "to": "new directory for the git repository",
        "merge_request": "new directory for a merge request: a clone of --repo with the "
        "series on the pinned commit, signed off by your git identity, and its description",
        "repo": "a clone of upstream's repository holding the pinned commit (--merge-request)",
        "upstream": COMMON_HELP["upstream"],
        "workspace": COMMON_HELP["workspace"],
    },
)
def patches_export(
    c: Context,
    component: str,
    to: str = "",
    merge_request: str = "",
    repo: str = "",
    upstream: str = "",
    workspace: str = "",
) -> None:
    """Write the series as a git branch (for git send-email), or as a merge request."""
    from pathlib import Path

    from harness.errors import InputError
    from harness.flows import builds, patchcheck

    if bool(to) == bool(merge_request):
        raise InputError("patches.export needs one of --to DIR and --merge-request DIR.")
    if bool(repo) != bool(merge_request):
        raise InputError("--merge-request DIR and --repo DIR go together.")
    cfg = _config(workspace=workspace, upstream=upstream)
    ws = builds.workspace(cfg, (component,), note=lambda n: print(f"note: {n}"))
    if merge_request:
        branch, count, text = patchcheck.merge_request(
            component, ws, Path(merge_request), Path(repo)
        )
        print(f"{merge_request}: branch {branch}, {count} commit(s), signed off by you")
        print(f"  description: {text}")
        print(f"  git -C {merge_request} push YOUR-FORK {branch}")
        return
    branch, count = patchcheck.export(component, ws, Path(to))
    print(f"{to}: branch {branch}, {count} commit(s) on tag harness-base")
    print(f"  git -C {to} format-patch --cover-letter harness-base..{branch}")


@task(
    name="import",
    positional=["component"],
    help={
        "component": COMPONENT_HELP,
        "from_": "git repository holding the branch",
        "range": "commits to take, A..B",
        "upstream": "master: import into the series for upstream's development branch "
        "(patches/COMPONENT/master)",
        "workspace": COMMON_HELP["workspace"],
    },
)
def patches_import(
    c: Context, component: str, range: str, from_: str, upstream: str = "", workspace: str = ""
) -> None:
    """Replace the component's series with commits of a git branch (git format-patch)."""
    from pathlib import Path

    from harness.components.workspace import Workspace
    from harness.config import Upstream
    from harness.flows import patchcheck

    cfg = _config(workspace=workspace, upstream=upstream)
    series = "master" if cfg.upstream is Upstream.MASTER else ""
    for f in patchcheck.import_(component, Workspace.of(cfg), Path(from_), range, series):
        print(f"wrote {f}")


for t in (patches_check, patches_rebase, patches_export, patches_import):
    patches.add_task(t)

bench = Collection("bench")


@task(positional=[], name="inspect", help={"runs": "repetitions of each command"})
def bench_inspect(c: Context, runs: int = 10) -> None:
    """Time `inspect --json` on a 4 MiB image next to `python -c pass` (the floor)."""
    from tools import bench as bench_mod

    print(bench_mod.inspect(_config(), runs))


@task(
    placeholders={"component": "ovmf|linux"},
    positional=[],
    name="build",
    help={
        "keep": "keep the raw baseline's trees",
        "runs": "cold builds beside raw ones (ovmf)",
        "component": "ovmf (default) or linux (the guest kernel: cold beside raw, warm, "
        "one guest.config symbol more)",
    },
)
def bench_build(c: Context, keep: bool = False, runs: int = 3, component: str = "ovmf") -> None:
    """Cold build-ovmf (or build-kernel), warm rerun and a small rebuild next to the raw
    build commands."""
    from harness.errors import ConfigError
    from tools import bench as bench_mod

    if component == "linux":
        print(bench_mod.kernel(_config(), keep))
    elif component == "ovmf":
        print(bench_mod.build(_config(), keep, runs))
    else:
        raise ConfigError(f"bench.build --component takes ovmf or linux, not {component!r}.")


@task(positional=[], name="boot", help={"runs": "boots per scenario and variant"})
def bench_boot(c: Context, runs: int = 1) -> None:
    """Scenario time next to bare QEMU, the boot matrix with and without xdist, image builds."""
    from tools import bench as bench_mod

    print(bench_mod.boot(_config(), runs))


@task(positional=[], name="nightly", help={"jobs": "boots at a time"})
def bench_nightly(c: Context, jobs: int = 2) -> None:
    """A warm nightly end to end beside the bare boot matrix: each stage's share."""
    from tools import bench as bench_mod

    print(bench_mod.nightly(_config(), jobs))


@task(help={"runs": "boots of each kind (the median is reported)"})
def bench_image(c: Context, runs: int = 1) -> None:
    """The Debian image: build with packages cached, and boots to login beside bare QEMU."""
    from tools import bench as bench_mod

    print(bench_mod.image(_config(), runs))


bench.add_task(bench_image, name="image")
bench.add_task(bench_nightly)
bench.add_task(bench_inspect)
bench.add_task(bench_build)
bench.add_task(bench_boot)

ns = Collection(
    doctor,
    inspect,
    test,
    cache,
    build_any,
    build_grub,
    build_ovmf,
    build_qemu,
    build_kernel,
    build_image,
    boot,
    nightly,
    sev,
    patches,
    bench,
)
