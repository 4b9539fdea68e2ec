"""The boot matrix: every scenario that matters, on fresh images of every LUKS variant.

passwordless, no-secret and wrong-secret run for each LUKS variant (the key derivation
is where GRUB's unlock path differs); refusal, secret-wiped and tampered-firmware on
LUKS1. The same matrix serves the test suite, ``./inv nightly`` and
``./inv patches.check``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness import image, qemu, scenarios
from harness.image import Image, LuksVariant
from harness.passphrase import Passphrase

log = logging.getLogger(__name__)

MATRIX: tuple[tuple[str, LuksVariant], ...] = (
    *(
        (name, variant)
        for name in ("passwordless", "no-secret", "wrong-secret")
        for variant in LuksVariant
    ),
    *((name, LuksVariant.LUKS1) for name in ("refusal", "secret-wiped", "tampered-firmware")),
)


def case_id(name: str, variant: str) -> str:
    return f"{name}-{variant}"


@dataclass(frozen=True)
class Firmware:
    """The firmware under test and the launch digest the guest owner expects of it."""

    path: Path
    digest: bytes


def build_images(
    dest: Path, cache: Path, builder: str, recipe: str = "minimal"
) -> dict[LuksVariant, Image]:
    """Fresh images (new passphrases and tokens) of every variant in ``dest/<variant>``."""
    return {v: image.build_image(recipe, v, dest / v.value, cache, builder) for v in LuksVariant}


def run_matrix(
    firmware: Firmware,
    images: dict[LuksVariant, Image],
    accel: qemu.Accel,
    workdir: Path,
    *,
    jobs: int = 2,
    emulator: qemu.Qemu = qemu.SYSTEM,
    on_result: Callable[[scenarios.Result], None] | None = None,
) -> list[scenarios.Result]:
    """Run every case of the matrix with *emulator*, *jobs* boots at a time; results in
    matrix order.

    Transcripts are ``workdir/<scenario>-<variant>/console.log``.
    """

    def one(case: tuple[str, LuksVariant]) -> scenarios.Result:
        name, variant = case
        img = images[variant]
        result = scenarios.run_scenario(
            scenarios.SCENARIOS[name],
            firmware=firmware.path,
            expected_digest=firmware.digest,
            disk=img.disk,
            passphrase=Passphrase.read(img.passphrase_file),
            token=img.token,
            variant=variant.value,
            workdir=workdir / case_id(name, variant),
            accel=accel,
            emulator=emulator,
        )
        log.debug(
            "%s %s in %.1f s", "PASS" if result.passed else "FAIL", case_id(*case), result.seconds
        )
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, MATRIX))
