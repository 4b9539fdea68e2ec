"""Benchmarks: our path and the raw baseline, side by side in one run, with ratios.

No timed assertions anywhere: these print figures for a person (or a nightly job) to
compare, because wall-clock limits fail randomly on loaded CI machines.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from harness import run
from harness.errors import PrerequisiteError

ROOT = Path(__file__).resolve().parent.parent
#: bookworm's split 4 MiB build: VARS then CODE is exactly the 4 MiB combined image
#: Debian ships as OVMF.fd from trixie on.
OVMF_4M_PARTS = (Path("/usr/share/OVMF/OVMF_VARS_4M.fd"), Path("/usr/share/OVMF/OVMF_CODE_4M.fd"))
BENCH_DIR = ROOT / "out" / "bench"


def four_mib_image() -> Path:
    """Assemble (once) the 4 MiB OVMF image the inspect benchmark reads."""
    target = BENCH_DIR / "OVMF-4M.fd"
    if not target.exists():
        missing = [p for p in OVMF_4M_PARTS if not p.exists()]
        if missing:
            raise PrerequisiteError(
                f"{missing[0]} is missing.", hint="apt-get install ovmf (or ./inv doctor)"
            )
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(b"".join(p.read_bytes() for p in OVMF_4M_PARTS))
        tmp.replace(target)
    return target


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    run.run(argv, capture=True, cwd=ROOT)
    took = time.perf_counter() - start
    return took


def inspect(runs: int = 10) -> str:
    """Time ``./inv inspect --json`` and ``python -m`` of the same, against ``python -c pass``.

    The commands are interleaved so that machine noise hits all of them alike.
    """
    image = four_mib_image()
    commands = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "python: import + describe": [
            sys.executable,
            "-c",
            "import json,sys; from pathlib import Path; "
            "from harness.firmware.summary import describe; "
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
