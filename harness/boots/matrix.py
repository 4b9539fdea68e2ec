"""The boot matrix: every scenario that matters, on fresh images of every LUKS variant.

passwordless, no-secret and wrong-secret run for each LUKS variant (the key derivation
is where GRUB's unlock path differs); refusal, secret-wiped, secret-removed,
tampered-firmware, the launch attacks and the hostile host's scenarios (foreign-disk,
search-hijack, reset-replay, owner-disk-missing, keyslot-broken, console-keys,
broken-kernel, stalled-menu, impostor, and one planted-NAME per malformed secret page)
on LUKS1.
The images boot our kernel, so Linux judges every case that boots. The same matrix
serves the test suite, ``./inv nightly`` and ``./inv patches.check``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.boots import ordinary, scenarios
from harness.boots.prepare import Firmware, HostDisk, Machine, Target
from harness.boots.result import Result
from harness.boots.runner import run_scenario
from harness.errors import ConfigError
from harness.guest import image, rootfs
from harness.guest.imagemeta import Image, LuksVariant

log = logging.getLogger(__name__)

MATRIX: tuple[tuple[str, LuksVariant], ...] = (
    *(
        (name, variant)
        for name in ("passwordless", "no-secret", "wrong-secret")
        for variant in LuksVariant
    ),
    *(
        (name, LuksVariant.LUKS1)
        for name in (
            "refusal",
            "secret-wiped",
            "secret-removed",
            "tampered-firmware",
            "replayed-secret",
            "wrong-policy",
            "foreign-pdh",
            "foreign-disk",
            "search-hijack",
            "reset-replay",
            "owner-disk-missing",
            "keyslot-broken",
            "impostor",
            "console-keys",
            "broken-kernel",
            "stalled-menu",
            *(name for name in scenarios.SCENARIOS if name.startswith("planted-")),
        )
    ),
)
#: The Debian variant (images/debian): the distribution's own image on LUKS1 (which
#: Debian's GRUB opens as well, for the ordinary path), judged to its login prompt.
DEBIAN_RECIPE = "debian"
DEBIAN_LUKS = LuksVariant.LUKS1
DEBIAN_CASES = ("passwordless", "no-secret", "broken-keyslot", "search-hijack", ordinary.NAME)
#: The recipe of the hostile host's own disk, and its LUKS variant.
HOST_RECIPE = "host-disk"
HOST_VARIANT = LuksVariant.LUKS1


def case_id(name: str, variant: str) -> str:
    return f"{name}-{variant}"


def slice_of(ids: Sequence[str]) -> tuple[tuple[str, LuksVariant], ...]:
    """The cases of the matrix *ids* name (``passwordless-luks1``, ...), in the
    matrix's order; all of them when *ids* is empty.

    Raises:
        ConfigError: an id that is no case of the matrix.
    """
    if not ids:
        return MATRIX
    known = {case_id(name, variant): (name, variant) for name, variant in MATRIX}
    if unknown := [i for i in ids if i not in known]:
        raise ConfigError(
            f"--case {unknown[0]} is not a case of the boot matrix; its cases are "
            f"{', '.join(known)}."
        )
    return tuple(case for case in MATRIX if case_id(*case) in ids)


def debian_variant(variant: LuksVariant) -> str:
    """The variant the Debian image's results carry (``debian-luks1``)."""
    return f"{DEBIAN_RECIPE}-{variant.value}"


@dataclass(frozen=True)
class Images:
    """The owner's images, one per (recipe, LUKS variant) the cases need, and the
    hostile host's own disk."""

    owner: dict[tuple[str, LuksVariant], Image]
    host: Image

    def for_case(self, name: str, variant: LuksVariant) -> Image:
        return self.owner[(scenarios.SCENARIOS[name].recipe, variant)]

    def host_disk(self) -> HostDisk:
        return HostDisk.of(self.host)


def build_images(
    dest: Path,
    cache: Path,
    builder: str,
    cases: tuple[tuple[str, LuksVariant], ...] = MATRIX,
    kernel: rootfs.BuiltKernel | None = None,
) -> Images:
    """Fresh images (new passphrases and tokens) for *cases* in ``dest/<recipe>-<variant>``,
    booting *kernel* (None: Debian's), and the host's disk in ``dest/host-disk`` (whose
    kernel never runs: Debian's)."""
    needed = sorted({(scenarios.SCENARIOS[name].recipe, variant) for name, variant in cases})

    def one(recipe: str, variant: LuksVariant) -> Image:
        guest = None if recipe == HOST_RECIPE else kernel
        where = dest / (HOST_RECIPE if recipe == HOST_RECIPE else f"{recipe}-{variant.value}")
        return image.build_image(recipe, variant, where, cache, builder, kernel=guest)

    # Two at a time: much of a build is cryptsetup, mkfs and the disk, which leave a core.
    every = [*needed, (HOST_RECIPE, HOST_VARIANT)]
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(lambda case: one(*case), every))
    return Images(dict(zip(needed, built[:-1], strict=True)), built[-1])


def run_matrix(
    firmware: Firmware,
    images: Images,
    machine: Machine,
    workdir: Path,
    *,
    jobs: int = 2,
    on_result: Callable[[Result], None] | None = None,
    cases: tuple[tuple[str, LuksVariant], ...] = MATRIX,
) -> list[Result]:
    """Run *cases* (every case of the matrix by default) on *machine*, *jobs* boots at
    a time; results in the order of *cases*.

    Transcripts are ``workdir/<scenario>-<variant>/console.log``.
    """

    def one(case: tuple[str, LuksVariant]) -> Result:
        name, variant = case
        scenario = scenarios.SCENARIOS[name]
        result = run_scenario(
            scenario,
            Target.of(firmware, images.for_case(name, variant)),
            machine,
            workdir / case_id(name, variant),
            images.host_disk() if scenario.needs_host_disk else None,
        )
        log.debug("%s %s in %.1f s", result.outcome.short, case_id(*case), result.seconds)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, cases))


def run_debian(
    firmware: Firmware,
    img: Image,
    machine: Machine,
    workdir: Path,
    *,
    jobs: int = 2,
    on_result: Callable[[Result], None] | None = None,
    host_disk: HostDisk | None = None,
) -> list[Result]:
    """The Debian variant's boots (:data:`DEBIAN_CASES`) of *img*: the owner's and the
    hostile host's under *firmware* (*host_disk* is the host's own, for search-hijack),
    then the ordinary path under Debian's OVMF. Results carry the variant
    ``debian-<luks>``, their seconds the boot to the login prompt."""
    variant = debian_variant(img.variant)
    target = Target.of(firmware, img)

    def one(name: str) -> Result:
        where = workdir / case_id(name, variant)
        if name == ordinary.NAME:
            result = ordinary.run_ordinary(img, machine, where)
        else:
            scenario = scenarios.SCENARIOS[name]
            result = run_scenario(
                scenario,
                target,
                machine,
                where,
                host_disk if scenario.needs_host_disk else None,
            )
        result = dataclasses.replace(result, variant=variant)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, DEBIAN_CASES))
