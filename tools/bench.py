"""Benchmarks: our path and the raw baseline, side by side in one run, with ratios.

No timed assertions anywhere: these print figures for a person (or a nightly job) to
compare, because wall-clock limits fail randomly on loaded CI machines.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from harness import run, timing
from harness.components import linux, ovmf, pipeline, registry
from harness.components.pipeline import builder_image
from harness.components.trees import prepare_tree
from harness.components.workspace import Workspace
from harness.config import PATCHES, Config
from harness.errors import PrerequisiteError
from harness.host import containers
from harness.upstream import patchset

if TYPE_CHECKING:
    from harness.boots.prepare import Machine, Target
    from harness.boots.scenarios import Scenario

ROOT = Path(__file__).resolve().parent.parent
#: bookworm's split 4 MiB build: VARS then CODE is exactly the 4 MiB combined image
#: Debian ships as OVMF.fd from trixie on.
OVMF_4M_PARTS = (Path("/usr/share/OVMF/OVMF_VARS_4M.fd"), Path("/usr/share/OVMF/OVMF_CODE_4M.fd"))


def four_mib_image(bench_dir: Path) -> Path:
    """Assemble (once) the 4 MiB OVMF image the inspect benchmark reads."""
    target = bench_dir / "OVMF-4M.fd"
    if not target.exists():
        missing = [p for p in OVMF_4M_PARTS if not p.exists()]
        if missing:
            raise PrerequisiteError(
                f"{missing[0]} is missing.", hint="apt-get install ovmf (or ./inv doctor --fix)"
            )
        bench_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(b"".join(p.read_bytes() for p in OVMF_4M_PARTS))
        tmp.replace(target)
    return target


def _time(argv: list[str], check: bool = True) -> float:
    start = time.perf_counter()
    run.run(argv, capture=True, cwd=ROOT, check=check)
    took = time.perf_counter() - start
    return took


def inspect(cfg: Config, runs: int = 10) -> str:
    """Time ``./inv inspect --json`` and ``python -m`` of the same, against ``python -c pass``.

    The commands are interleaved so that machine noise hits all of them alike.
    """
    image = four_mib_image(cfg.layout.bench)
    commands = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "python: import + describe": [
            sys.executable,
            "-c",
            "import json,sys; from pathlib import Path; "
            "from harness.inspection import describe; "
            f"json.dump(describe(Path({str(image)!r})), sys.stdout)",
        ],
        "./inv inspect --json": [str(ROOT / "inv"), "inspect", "--json", str(image)],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(_time(argv))
    floor = statistics.median(times["python -c pass (floor)"])
    lines = [f"inspect --json on {image} ({image.stat().st_size} bytes), {runs} runs each"]
    lines.append(f"{'command':30} {'median':>9} {'min':>9} {'x floor':>8}")
    for name, samples in times.items():
        med = statistics.median(samples)
        lines.append(
            f"{name:30} {med * 1000:7.0f}ms {min(samples) * 1000:7.0f}ms {med / floor:8.1f}"
        )
    return "\n".join(lines)


# The same steps the GRUB and OVMF builds run (GRUB's unit test included), typed by hand
# into one container: the baseline the harness's overhead is measured against.
RAW_BUILD = r"""
set -eu
export HOME=/tmp
cd /grub && ./autogen.sh >/dev/null 2>&1
mkdir -p /tmp/grub-build && cd /tmp/grub-build
/grub/configure --with-platform=efi --target=x86_64 --prefix=/opt/grub --disable-werror >/dev/null
make -j"$(nproc)" >/dev/null 2>&1 && make install >/dev/null
make efisecret_unit_test >/dev/null 2>&1 && ./efisecret_unit_test >/dev/null
export PATH=/opt/grub/bin:$PATH
cd /edk2 && make -C BaseTools/Source/C -j"$(nproc)" >/dev/null 2>&1
set +u; . ./edksetup.sh >/dev/null; set -u
build -a X64 -t GCC5 -b RELEASE -n "$(nproc)" -p OvmfPkg/AmdSev/AmdSevX64.dsc >/dev/null 2>&1
test -s Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd
"""


def _touch_grub_cfg_series(ws_root: Path, patches: Path) -> Path:
    """A copy of patches/ with one more OVMF patch that changes only grub.cfg."""
    copy = ws_root / "patches-touched"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(patches, copy)
    src = ws_root / "work" / "ovmf" / "src"
    cfg = src / "OvmfPkg" / "AmdSev" / "Grub" / "grub.cfg"
    cfg.write_bytes(
        cfg.read_bytes().replace(
            b'echo "Entering grub config"\r\n', b'echo "Entering grub config (bench)"\r\n'
        )
    )
    patchset.git(src, "commit", "-qam", "OvmfPkg/AmdSev: bench: touch grub.cfg")
    name = patchset.git(src, "format-patch", "-1", "-o", str(copy / "ovmf")).strip()
    patchset.git(src, "reset", "-q", "--hard", "HEAD~1")
    with open(copy / "ovmf" / "series", "a") as series:
        series.write(Path(name).name + "\n")
    return copy


def build(cfg: Config, keep: bool = False, runs: int = 1) -> str:
    """Cold build-ovmf next to the raw commands, *runs* times (alternating which goes
    first, so a machine that speeds up or slows down hits both alike), then the warm
    rerun and a grub.cfg-only rebuild.

    Runs in ``<workspace>/bench/build`` (downloads shared with the workspace's); the raw
    baseline runs the same steps by hand in the same builder image on clean clones of
    the same patched trees.
    """
    root = cfg.layout.bench / "build"
    lines = [
        "build-ovmf benchmark (GRUB 2.14 + edk2 2025.02 AmdSevX64 RELEASE, 2 cores)",
        f"{'run':44} {'raw s':>8} {'cold s':>8} {'ratio':>8}",
    ]
    ratios: list[float] = []
    details: list[str] = []
    for n in range(runs):
        raw_first = n % 2 == 1
        ws = _bench_workspace(cfg, root)
        builder = builder_image(ovmf.SPEC.builder, ws)
        raw = _raw_build(ws, builder.tag, keep) if raw_first else 0.0
        start = time.perf_counter()
        with timing.recording() as stages:
            ovmf.build_ovmf(ws)
        cold = time.perf_counter() - start
        raw = raw if raw_first else _raw_build(ws, builder.tag, keep)
        ratios.append(cold / raw)
        order = "raw first" if raw_first else "ours first"
        lines.append(f"{f'run {n + 1} ({order})':44} {raw:8.1f} {cold:8.1f} {cold / raw:8.3f}")
        if n == 0:
            details = [*_warm_and_touched(cfg, ws, root, cold), "", *stage_table(stages, cold, raw)]
    lines.append(
        f"{'cold / raw (target <= 1.05): median, worst':44} "
        f"{statistics.median(ratios):8.3f} {max(ratios):8.3f}"
    )
    return "\n".join([*lines, "", *details])


def _bench_workspace(cfg: Config, root: Path) -> Workspace:
    """An empty workspace under *root* with a cache of its own (a cold build must build),
    whose downloads are still the machine's."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "cache").mkdir(parents=True)
    shared = cfg.layout.downloads
    shared.mkdir(parents=True, exist_ok=True)
    (root / "cache" / "downloads").symlink_to(shared)
    return Workspace(root, base=cfg.base, cache_root=root / "cache")


def _raw_build(ws: Workspace, builder: str, keep: bool) -> float:
    """The raw baseline: the patched trees cloned, then the build commands typed by hand
    in one container. Before a cold build (raw first) the workspace's trees are removed
    again, so the cold build starts from the archives as always."""
    raw_dir = ws.root / "raw"
    shutil.rmtree(raw_dir, ignore_errors=True)
    cold_next = not (ws.layout.work("ovmf") / "src").is_dir()
    with ws.locked():
        for name, component in (("grub", "grub"), ("edk2", "ovmf")):
            prepare_tree(ws.component(component), ws, builder)
            run.run(
                ["git", "clone", "-q", str(ws.layout.work(component) / "src"), str(raw_dir / name)]
            )
    if cold_next:
        shutil.rmtree(ws.root / "work", ignore_errors=True)
    start = time.perf_counter()
    containers.run_logged(
        builder,
        ["bash", "-c", RAW_BUILD],
        mounts=[
            containers.Mount(raw_dir / "grub", "/grub"),
            containers.Mount(raw_dir / "edk2", "/edk2"),
        ],
        log_path=ws.root / "raw.log",
        what="raw baseline build",
    )
    took = time.perf_counter() - start
    if not keep:
        shutil.rmtree(raw_dir, ignore_errors=True)
    return took


def _warm_and_touched(cfg: Config, ws: Workspace, root: Path, cold: float) -> list[str]:
    start = time.perf_counter()
    assert ovmf.build_ovmf(ws).cached
    warm = time.perf_counter() - start
    touched = Workspace(
        root, _touch_grub_cfg_series(root, PATCHES), base=cfg.base, cache_root=root / "cache"
    )
    start = time.perf_counter()
    ovmf.build_ovmf(touched)
    touch = time.perf_counter() - start
    return [
        f"{'warm rerun, from cache (target <= 3 s)':44} {warm:8.1f}",
        f"{'grub.cfg touched (target <= 0.15 x cold)':44} {touch:8.1f} {touch / cold:8.2f}",
    ]


def stage_table(stages: timing.StageTimes, wall: float, raw: float) -> list[str]:
    """Each stage of the cold build: its seconds, its share of the cold build's wall
    time, and the same against the raw baseline. The stages run one after the other and
    "the rest" (the wall time no stage covers) add up to the wall time; those that ran
    alongside them in a worker thread are marked and overlap the others."""

    def row(name: str, sec: float) -> str:
        label = f"{name} (alongside)" if name in stages.alongside else name
        return f"{label:44} {sec:8.1f} {sec / wall:8.1%} {sec / raw:8.3f}"

    return [
        f"{'stage of the cold build':44} {'seconds':>8} {'share':>8} {'x raw':>8}",
        *(row(name, sec) for name, sec in stages.seconds.items()),
        row("the rest (cache lookups, keys, threads)", wall - stages.in_line),
    ]


#: The kernel build by hand: the same fragment onto allnoconfig, the same make.
RAW_KERNEL = r"""
set -eu
printf '%s\n' "$FRAGMENT" > /tmp/guest.config
make -s -C /src O=/tmp/build ARCH=x86_64 KCONFIG_ALLCONFIG=/tmp/guest.config allnoconfig
make -s -C /tmp/build ARCH=x86_64 -j"$(nproc)" bzImage
test -s /tmp/build/arch/x86/boot/bzImage
"""
#: A one-symbol change of the configuration, for the incremental rebuild.
KERNEL_TOUCH = "CONFIG_CRYPTO_CBC=y\n"


def kernel(cfg: Config, keep: bool = False) -> str:
    """Cold build-kernel next to the same build typed by hand (one container, ``make``
    on a clean clone of the same tree, raw second), then the warm rerun and the rebuild
    after a one-symbol change of guest.config (kbuild recompiles what it touches)."""
    root = cfg.layout.bench / "kernel"
    ws = _bench_workspace(cfg, root)
    builder = builder_image(linux.SPEC.builder, ws)
    start = time.perf_counter()
    with timing.recording() as stages:
        cold_build = pipeline.build(linux.SPEC, ws)
    cold = time.perf_counter() - start
    raw_dir = root / "raw"
    run.run(["git", "clone", "-q", str(ws.layout.work("linux") / "src"), str(raw_dir)])
    start = time.perf_counter()
    containers.run_logged(
        builder.tag,
        ["bash", "-c", RAW_KERNEL],
        mounts=[containers.Mount(raw_dir, "/src")],
        env={"FRAGMENT": linux.fragment_text(ws.component("linux"))},
        log_path=root / "raw.log",
        what="raw kernel build",
    )
    raw = time.perf_counter() - start
    if not keep:
        shutil.rmtree(raw_dir, ignore_errors=True)
    start = time.perf_counter()
    assert pipeline.build(linux.SPEC, ws).cached
    warm = time.perf_counter() - start
    touched_patches = root / "patches-touched"
    shutil.copytree(PATCHES, touched_patches)
    with open(touched_patches / "linux" / linux.FRAGMENT_NAME, "a") as fragment:
        fragment.write(KERNEL_TOUCH)
    start = time.perf_counter()
    touched = pipeline.build(
        linux.SPEC, Workspace(root, touched_patches, base=cfg.base, cache_root=root / "cache")
    )
    touch = time.perf_counter() - start
    assert touched.manifest.output.fragment["CONFIG_CRYPTO_CBC"] == "y"
    release = cold_build.manifest.output.release
    return "\n".join(
        [
            f"build-kernel benchmark (Linux {release}, guest.config onto allnoconfig, 2 cores)",
            f"{'':44} {'raw s':>8} {'ours s':>8} {'ratio':>8}",
            f"{'cold build':44} {raw:8.1f} {cold:8.1f} {cold / raw:8.3f}",
            f"{'warm rerun, from cache':44} {'':8} {warm:8.1f}",
            f"{'guest.config: one symbol more':44} {'':8} {touch:8.1f} {touch / cold:8.2f}",
            "",
            *stage_table(stages, cold, raw),
        ]
    )


def _bare_boot(
    argv: list[str],
    passphrase: str | None,
    timeout: float = 120,
    marker: str = r"HARNESS-BOOTED token=\w+",
) -> float:
    """The same QEMU command with nothing of ours around it: raw pexpect to the marker."""
    import pexpect

    start = time.perf_counter()
    child = pexpect.spawn(
        argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=timeout
    )
    try:
        if passphrase is not None:
            child.expect("Enter passphrase for")
            child.sendline(passphrase)
        child.expect(marker)
        return time.perf_counter() - start
    finally:
        child.close(force=True)


def _bare_scenario(
    scn: Scenario,
    target: Target,
    machine: Machine,
    bench_dir: Path,
    marker: str = r"HARNESS-BOOTED token=\w+",
) -> float:
    """The launch *scn* prepares (the owner's secret injected or not), driven bare."""
    from harness.boots.prepare import prepared

    with prepared(scn, target, machine, bench_dir / "bare") as launch:
        typed = target.passphrase.typed() if scn.expects_prompt else None
        return _bare_boot(launch.cfg.argv(), typed, 600, marker)


def to_marker(stages: Mapping[str, float]) -> float:
    """Seconds from QEMU's start to the boot marker in one boot of ours: what a bare
    driver of that same boot would have taken (it stops at the marker)."""
    from harness.boots import phases

    names = [name for name, _ in phases.LANDMARKS]
    guest = names[: names.index(phases.MARKER_STAGE) + 1]
    if phases.MARKER_STAGE not in stages:
        raise PrerequisiteError("the boot showed no marker to time the guest by")
    return sum(stages.get(name, 0.0) for name in guest)


def boot(cfg: Config, runs: int = 1) -> str:
    """Scenario wall time next to a bare QEMU run to the same marker, on images with our
    kernel (whose judging reads the secret page after the power-off) and, for
    passwordless on LUKS1, with Debian's; the matrix with and without xdist; the image
    build time."""
    from harness.boots import matrix, phases, scenarios
    from harness.boots.prepare import Firmware, Machine, Target
    from harness.boots.runner import run_scenario
    from harness.guest import image, imagemeta, rootfs

    ws = Workspace.of(cfg)
    bench_dir = cfg.layout.bench
    kernel = linux.guest_kernel(pipeline.build(linux.SPEC, ws))
    built = ovmf.build_ovmf(ws)
    firmware = Firmware(ovmf.firmware(built), built.manifest.launch_digest)
    machine = Machine.of(cfg)
    builder = builder_image(registry.TOOLS_BUILDER, ws)
    lines = [
        "boot benchmark (TCG unless the probe found KVM working)",
        "ratio: ours / the bare run of a separate boot; same: ours / the same boot's own",
        "QEMU start to marker (TCG moves a boot's guest time by up to 10% from one boot",
        "to the next, more than our overhead; 'same' compares within one boot)",
        f"{'what':44} {'ours s':>8} {'bare s':>8} {'ratio':>6} {'worst':>6} "
        f"{'same':>6} {'worst':>6}",
    ]
    for warm in (None, kernel):  # the downloads of both flavours, before anything is timed
        image.build_image(
            "minimal",
            imagemeta.LuksVariant.LUKS1,
            bench_dir / "img-warmup",
            cfg.layout.image_cache,
            builder.tag,
            kernel=warm,
        )
    cases: list[tuple[imagemeta.LuksVariant, rootfs.BuiltKernel | None, tuple[str, ...]]] = [
        (v, kernel, ("passwordless", "no-secret")) for v in imagemeta.LuksVariant
    ]
    cases.append((imagemeta.LuksVariant.LUKS1, None, ("passwordless",)))
    for variant, guest, names in cases:
        flavour = "debian kernel" if guest is None else "our kernel"
        start = time.perf_counter()
        img = image.build_image(
            "minimal",
            variant,
            bench_dir / f"img-{variant}-{flavour.split()[0]}",
            cfg.layout.image_cache,
            builder.tag,
            kernel=guest,
        )
        lines.append(
            f"{f'build-image {variant.value}, {flavour} (target <= 10 s)':44} "
            f"{time.perf_counter() - start:8.1f}"
        )
        target = Target.of(firmware, img)
        for name in names:
            scn = scenarios.SCENARIOS[name]
            ours = []
            bare = []
            same = []
            stages: dict[str, list[float]] = {}
            for _ in range(runs):
                res = run_scenario(scn, target, machine, bench_dir / "boot" / f"{name}-{variant}")
                if not res.passed:
                    raise PrerequisiteError(f"{name} failed during the benchmark: {res.detail}")
                ours.append(res.seconds)
                same.append(res.seconds / to_marker(res.phases))
                for stage, seconds in res.phases.items():
                    stages.setdefault(stage, []).append(seconds)
                bare.append(_bare_scenario(scn, target, machine, bench_dir))
            o, b = statistics.median(ours), statistics.median(bare)
            worst = max(x / y for x, y in zip(ours, bare, strict=True))
            label = f"{name} {variant.value}{', debian kernel' if guest is None else ''}"
            lines.append(
                f"{label + ' (target <= 1.10)':44} {o:8.1f} {b:8.1f} {o / b:6.2f} {worst:6.2f} "
                f"{statistics.median(same):6.2f} {max(same):6.2f}"
            )
            # Where ours went, each stage's median (the bare run stops at the marker,
            # so it has no preparation, judging or QEMU's exit).
            medians = {stage: statistics.median(v) for stage, v in stages.items()}
            lines.append(f"  ours by stage, median s: {phases.render(medians)}")
    for jobs in (0, 2):
        start = time.perf_counter()
        run.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/integration/test_boot.py",
                "-k",
                "test_scenario",
                *(["-n", str(jobs), "--dist", "load", "--maxschedchunk", "1"] if jobs else []),
            ],
            cwd=ROOT,
        )
        lines.append(
            f"{f'matrix of {len(matrix.MATRIX)} boots, -n {jobs}':44} "
            f"{time.perf_counter() - start:8.1f}"
        )
    return "\n".join(lines)


def image(cfg: Config, runs: int = 1) -> str:
    """The Debian recipe: build-image with the packages cached, stage by stage, beside a
    bare mmdebstrap of the same packages in the same builder; then the boots to the login
    prompt (passwordless, no-secret, the ordinary path) beside the same QEMU command
    driven bare to the same login prompt."""
    from harness.boots import ordinary, scenarios
    from harness.boots.prepare import Firmware, Machine, Target
    from harness.boots.runner import run_scenario
    from harness.guest import debian, imagemeta
    from harness.host import containers, qemu

    ws = Workspace.of(cfg)
    bench_dir = cfg.layout.bench / "debian"
    kernel = linux.guest_kernel(pipeline.build(linux.SPEC, ws))
    built = ovmf.build_ovmf(ws)
    firmware = Firmware(ovmf.firmware(built), built.manifest.launch_digest)
    machine = Machine.of(cfg)
    tools = builder_image(registry.TOOLS_BUILDER, ws)
    debian_builder = builder_image(registry.DEBIAN_IMAGE_BUILDER, ws)
    recipe = debian.DebianRecipe.load("debian")
    assert recipe is not None
    lines = [
        "Debian image benchmark (TCG unless the probe found KVM working)",
        f"{'what':52} {'ours s':>8} {'bare s':>8} {'ratio':>6}",
    ]
    img = None
    for attempt in ("first build (packages as cached before)", "packages cached"):
        stages: dict[str, float] = {}
        start = time.perf_counter()
        img = debian.build(
            recipe,
            imagemeta.LuksVariant.LUKS1,
            bench_dir / "image",
            debian.DebianOptions(),
            cache=cfg.layout.image_cache,
            builder=debian_builder.tag,
            tools_builder=tools.tag,
            kernel=kernel,
            timings=stages,
        )
        total = time.perf_counter() - start
        detail = ", ".join(f"{k} {v:.0f}" for k, v in stages.items())
        lines.append(f"{f'build-image --recipe debian, {attempt}':52} {total:8.1f}")
        lines.append(f"{'  stages: ' + detail:52}")
    assert img is not None
    # The root alone, as one would type it: mmdebstrap with the same packages and the
    # same .deb cache, into a directory, nothing configured, no filesystem image.
    debs = cfg.layout.image_cache / "debian-trixie-debs"
    script = (
        f"mmdebstrap --mode=root --variant=minbase --include={','.join(recipe.packages)} "
        "--skip=essential/unlink --setup-hook='mkdir -p \"$1\"/var/cache/apt/archives' "
        "--setup-hook='sync-in /cache /var/cache/apt/archives' "
        f"trixie /tmp/root {recipe.mirror} >/dev/null 2>&1"
    )
    start = time.perf_counter()
    containers.run_logged(
        debian_builder.tag,
        ["bash", "-c", script],
        mounts=[containers.Mount(debs, "/cache", read_only=True)],
        log_path=bench_dir / "bare-mmdebstrap.log",
        as_root=True,
        what="bare mmdebstrap",
    )
    bare_root = time.perf_counter() - start
    lines.append(f"{'  root stage beside bare mmdebstrap':52} {stages['root']:8.1f} "
                 f"{bare_root:8.1f} {stages['root'] / bare_root:6.2f}")  # fmt: skip
    target = Target.of(firmware, img)
    meta = img.metadata
    for name in ("passwordless", "no-secret", ordinary.NAME):
        ours, bare = [], []
        for _ in range(runs):
            where = bench_dir / "boot" / name
            if name == ordinary.NAME:
                res = ordinary.run_ordinary(img, machine, where)
            else:
                res = run_scenario(scenarios.SCENARIOS[name], target, machine, where)
            if not res.passed:
                raise PrerequisiteError(f"{name} failed during the benchmark: {res.detail}")
            ours.append(res.seconds)
            if name == ordinary.NAME:
                cfg_bare = qemu.LaunchConfig(
                    firmware=qemu.DEBIAN_OVMF,
                    disk=img.disk,
                    accel=machine.accel,
                    qmp=bench_dir / "bare.qmp",
                    disk_format=meta.disk_format.value,
                )
                bare.append(_bare_boot(cfg_bare.argv(), target.passphrase.typed(), 600, "login: "))
            else:
                scn = scenarios.SCENARIOS[name]
                bare.append(_bare_scenario(scn, target, machine, bench_dir, "login: "))
        o, b = statistics.median(ours), statistics.median(bare)
        lines.append(f"{f'{name} to the login prompt (target <= 1.15)':52} {o:8.1f} {b:8.1f} "
                     f"{o / b:6.2f}")  # fmt: skip
    size = img.disk.stat().st_size / 2**30
    lines.append(f"image: {size:.2f} GiB raw, {meta.kernel}, Debian {meta.suite}")
    return "\n".join(lines)


def nightly(cfg: Config, jobs: int = 2) -> str:
    """A warm ``./inv nightly`` end to end (nothing changed upstream) next to the bare
    boot matrix with the same firmware, images and parallelism; the share of each stage."""
    import json

    from harness.boots import matrix
    from harness.boots.prepare import Firmware, Machine

    bench_dir = cfg.layout.bench
    report, history = bench_dir / "nightly", bench_dir / "nightly-history"
    argv = [str(ROOT / "inv"), "nightly", "--out", str(report), "--history", str(history)]
    argv += ["--workspace", str(cfg.workspace)]
    argv += ["--jobs", str(jobs)]
    # Warm-up: the build cache and the image packages are filled by this run.
    run.run(argv, capture=True, cwd=ROOT, check=False)
    took = _time(argv, check=False)
    results = json.loads((report / "results.json").read_text())
    timings = results["timings"]
    if results["verdict"] != "pass":
        raise PrerequisiteError(f"The nightly did not pass ({results['verdict']}); see {report}.")

    ws = Workspace.of(cfg)
    built = ovmf.build_ovmf(ws)
    firmware = Firmware(ovmf.firmware(built), built.manifest.launch_digest)
    machine = Machine.of(cfg)
    builder = builder_image(registry.TOOLS_BUILDER, ws)
    images = matrix.build_images(bench_dir / "matrix-images", cfg.layout.image_cache, builder.tag)
    start = time.perf_counter()
    bare = matrix.run_matrix(firmware, images, machine, bench_dir / "matrix-boot", jobs=jobs)
    bare_s = time.perf_counter() - start
    if not all(r.passed for r in bare):
        raise PrerequisiteError("The bare matrix failed during the benchmark.")

    staged = sum(timings.get(k, 0.0) for k in ("build", "images", "boots", "reporting"))
    rows = [
        ("build (series + cached builds)", timings.get("build", 0.0)),
        ("guest images", timings.get("images", 0.0)),
        ("boot matrix", timings.get("boots", 0.0)),
        ("reporting (target < 2 s)", timings.get("reporting", 0.0)),
        ("start-up, host checks, the rest", took - staged),
    ]
    lines = [
        f"warm nightly, {len(bare)} boots, {jobs} at a time",
        f"{'stage':36} {'seconds':>8} {'share':>6}",
        *(f"{name:36} {sec:8.3f} {sec / took:6.1%}" for name, sec in rows),
        f"{'total ./inv nightly':36} {took:8.2f}",
        f"{'bare matrix, same boots (baseline)':36} {bare_s:8.2f}",
        f"{'ratio nightly / bare matrix':36} {took / bare_s:8.2f}",
    ]
    return "\n".join(lines)
