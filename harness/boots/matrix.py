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
from harness.config import LaunchKind
from harness.errors import ConfigError
from harness.guest import image
from harness.guest.image import Image, LuksVariant
from harness.host import qemu
from harness.passphrase import Passphrase

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
class Firmware:
    """The firmware under test and the launch digest the guest owner expects of it."""

    path: Path
    digest: bytes


@dataclass(frozen=True)
class Images:
    """The owner's images, one per (recipe, LUKS variant) the cases need, and the
    hostile host's own disk."""

    owner: dict[tuple[str, LuksVariant], Image]
    host: Image

    def for_case(self, name: str, variant: LuksVariant) -> Image:
        return self.owner[(scenarios.SCENARIOS[name].recipe, variant)]

    def host_disk(self) -> scenarios.HostDisk:
        return scenarios.HostDisk(
            self.host.disk,
            Passphrase.read(self.host.passphrase_file),
            self.host.disk.parent / image.HOST_BOOT,
        )


def build_images(
    dest: Path,
    cache: Path,
    builder: str,
    cases: tuple[tuple[str, LuksVariant], ...] = MATRIX,
    kernel: image.BuiltKernel | None = None,
) -> Images:
    """Fresh images (new passphrases and tokens) for *cases* in ``dest/<recipe>-<variant>``,
    booting *kernel* (None: Debian's), and the host's disk in ``dest/host-disk`` (whose
    kernel never runs: Debian's)."""
    needed = sorted({(scenarios.SCENARIOS[name].recipe, variant) for name, variant in cases})
    owner = {
        (recipe, v): image.build_image(
            recipe, v, dest / f"{recipe}-{v.value}", cache, builder, kernel=kernel
        )
        for recipe, v in needed
    }
    host = image.build_image(HOST_RECIPE, HOST_VARIANT, dest / HOST_RECIPE, cache, builder)
    return Images(owner, host)


def run_matrix(
    firmware: Firmware,
    images: Images,
    accel: qemu.Accel,
    workdir: Path,
    *,
    jobs: int = 2,
    emulator: qemu.Qemu = qemu.SYSTEM,
    on_result: Callable[[scenarios.Result], None] | None = None,
    cases: tuple[tuple[str, LuksVariant], ...] = MATRIX,
    kind: LaunchKind = LaunchKind.SIMULATED,
) -> list[scenarios.Result]:
    """Run *cases* (every case of the matrix by default) with *emulator*, *jobs* boots at
    a time; results in the order of *cases*.

    Transcripts are ``workdir/<scenario>-<variant>/console.log``.
    """

    def one(case: tuple[str, LuksVariant]) -> scenarios.Result:
        name, variant = case
        img = images.for_case(name, variant)
        scenario = scenarios.SCENARIOS[name]
        result = scenarios.run_scenario(
            scenario,
            firmware=firmware.path,
            expected_digest=firmware.digest,
            disk=img.disk,
            passphrase=Passphrase.read(img.passphrase_file),
            token=img.token,
            variant=variant.value,
            workdir=workdir / case_id(name, variant),
            accel=accel,
            emulator=emulator,
            host_disk=images.host_disk() if scenario.needs_host_disk else None,
            kind=kind,
            guest_kernel=img.guest_kernel,
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
    accel: qemu.Accel,
    workdir: Path,
    *,
    jobs: int = 2,
    emulator: qemu.Qemu = qemu.SYSTEM,
    on_result: Callable[[scenarios.Result], None] | None = None,
    kind: LaunchKind = LaunchKind.SIMULATED,
    host_disk: scenarios.HostDisk | None = None,
) -> list[scenarios.Result]:
    """The Debian variant's boots (:data:`DEBIAN_CASES`) of *img*: the owner's and the
    hostile host's under *firmware* (*host_disk* is the host's own, for search-hijack),
    then the ordinary path under Debian's OVMF. Results carry the variant
    ``debian-<luks>``, their seconds the boot to the login prompt."""
    variant = debian_variant(img.variant)

    def one(name: str) -> scenarios.Result:
        where = workdir / case_id(name, variant)
        if name == ordinary.NAME:
            result = ordinary.run_ordinary(img, where, accel, emulator)
        else:
            scenario = scenarios.SCENARIOS[name]
            result = scenarios.run_scenario(
                scenario,
                firmware=firmware.path,
                expected_digest=firmware.digest,
                disk=img.disk,
                passphrase=Passphrase.read(img.passphrase_file),
                token=img.token,
                variant=variant,
                workdir=where,
                accel=accel,
                emulator=emulator,
                host_disk=host_disk if scenario.needs_host_disk else None,
                kind=kind,
                guest_kernel=img.guest_kernel,
                ready=img.metadata.ready,
                disk_format=img.metadata.disk_format,
            )
        result = dataclasses.replace(result, variant=variant)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, DEBIAN_CASES))
