"""Where a test run's time went, by kind of test, from pytest's JUnit XML.

``.ci/run`` prints this after its own phases. The figures are worker-seconds (two
workers run side by side, so they add up to about twice the wall time), and each test's
includes its fixtures: a cold build counts in the group of the test that first needed it.
Standard library only, so it also reports on a run whose virtualenv is gone.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

#: Test modules by group; a module not named here is "other".
GROUPS = {
    "builds": (
        "test_build",
        "test_first_run",
        "test_qemu_build",
        "test_kernel_build",
        "test_sources",
        "test_grub_memdisk",
    ),
    "boots": (
        "test_boot",
        "test_passphrase_boot",
        "test_luks_kdf",
        "test_sev_launch",
        "test_sev_vmsa_built",
    ),
    "nightly": ("test_nightly", "test_debian_image"),
    "patch checks": ("test_patches",),
}
ORDER = ("unit", *GROUPS, "other")


def group_of(classname: str) -> str:
    """The group of a test by its JUnit classname (``tests.integration.test_boot``...)."""
    parts = classname.split(".")
    if len(parts) > 1 and parts[1] == "unit":
        return "unit"
    module = next((p for p in parts if p.startswith("test_")), "")
    return next((g for g, modules in GROUPS.items() if module in modules), "other")


def phases(junit: Path) -> tuple[dict[str, float], Counter[str]]:
    """Seconds and test counts by group.

    Raises:
        ValueError: *junit* is not JUnit XML with test cases.
    """
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{junit} is not XML ({err})") from err
    seconds: defaultdict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for case in root.iter("testcase"):
        group = group_of(case.get("classname", ""))
        seconds[group] += float(case.get("time") or 0)
        count[group] += 1
    if not count:
        raise ValueError(f"{junit} holds no test cases")
    return dict(seconds), count


def render(seconds: Mapping[str, float], count: Counter[str]) -> str:
    lines = ["--- tests by kind (worker-seconds, fixtures included)"]
    for group in ORDER:
        if count[group]:
            lines.append(f"{group:<13} {seconds.get(group, 0):7.0f} s  {count[group]:5d} tests")
    lines.append(f"{'all':<13} {sum(seconds.values()):7.0f} s  {sum(count.values()):5d} tests")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: suite_times.py JUNIT_XML", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(render(*phases(Path(argv[0]))))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
