"""The ordinary path of the seed's second post: no SEV, no secret, no firmware of ours.

An image of the Debian recipe carries its own GRUB on its EFI system partition
(``grub-install --removable``), so Debian's own OVMF boots it like any cloud image:
Debian's GRUB asks for the disk passphrase once, the initramfs unlocks the root again
with its key file, and the system reaches its login prompt. This proves the image is an
ordinary encrypted image first; the confidential path only takes the prompt away.
"""

from __future__ import annotations

import secrets as random
import shutil
import tempfile
import time
from pathlib import Path

from harness.boots import verdicts
from harness.boots.prepare import Machine
from harness.boots.result import Result
from harness.boots.scenarios import LOGIN_TIMEOUT, REFUSAL_TIMEOUT
from harness.boots.verdicts import Ending, Play
from harness.errors import ConfigError, GuestVerdict
from harness.guest import proof
from harness.guest.imagemeta import Image, Ready
from harness.host import qemu
from harness.passphrase import Passphrase
from harness.verdict import Verdict

#: Debian 12's GRUB 2.06 says this under OVMF before "Booting in blind mode" and boots
#: on: the image's own GRUB, harmless, and the only error its path prints.
DISTRIBUTION_GRUB_ERRORS = (r"no suitable video mode found",)
#: The name its results carry, beside the scenarios'.
NAME = "ordinary"
#: One prompt, Debian's GRUB's; the right passphrase; the login prompt; no other prompt.
PLAY = Play(
    Ending.BOOTS,
    typed=(True,),
    marker=verdicts.LOGIN,
    never=(verdicts.INITRAMFS_PROMPT,),
)


def require_own_bootloader(img: Image) -> None:
    """Raises: ConfigError: *img* has no bootloader of its own (not the Debian recipe)."""
    if img.metadata.ready is not Ready.LOGIN:
        raise ConfigError(
            f"The {img.metadata.recipe} image has no bootloader of its own; the ordinary "
            "path boots images of the debian recipe.",
            hint="./inv build-image --recipe debian",
        )


def run_ordinary(
    img: Image,
    machine: Machine,
    workdir: Path,
    firmware: Path = qemu.DEBIAN_OVMF,
) -> Result:
    """Boot *img* on *machine* under *firmware* (Debian's OVMF), type its passphrase
    once, judge. The boot to the login prompt may take LOGIN_TIMEOUT.

    Raises:
        ConfigError: the image has no bootloader of its own (not the Debian recipe).
    """
    require_own_bootloader(img)
    workdir.mkdir(parents=True, exist_ok=True)
    transcript = workdir / "console.log"
    passphrase = Passphrase.read(img.passphrase_file)
    owner_proof = proof.Proof(proof.fresh_nonce(), proof.read_key(img.disk.parent), proof.FW_CFG)
    wrong = Passphrase(("wrong-" + random.token_urlsafe(12)).encode())
    sockets = Path(tempfile.mkdtemp(prefix="harness-qmp-"))
    started = time.monotonic()
    try:
        cfg = qemu.LaunchConfig(
            firmware=firmware,
            disk=img.disk,
            accel=machine.accel,
            qmp=sockets / "qmp.sock",
            emulator=machine.emulator,
            disk_format=img.metadata.disk_format.value,
            fw_cfg=((proof.FW_CFG_NAME, owner_proof.nonce),),
        )
        try:
            with qemu.running(
                cfg, transcript, (passphrase.value, wrong.value), DISTRIBUTION_GRUB_ERRORS
            ) as guest:
                proved = verdicts.play(
                    PLAY,
                    guest.console,
                    token=img.token,
                    passphrase=passphrase,
                    wrong=wrong,
                    host_typed=None,
                    timeout=max(machine.timeout, LOGIN_TIMEOUT),
                    exit_timeout=REFUSAL_TIMEOUT,
                    proof=owner_proof,
                )
            passed, detail = (
                True,
                f"{firmware.name}: one prompt from the image's own GRUB, then the login "
                f"prompt; {proved}",
            )
        except GuestVerdict as err:
            passed, detail = False, str(err)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return Result(
        NAME,
        img.variant.value,
        Verdict.of(passed),
        detail,
        time.monotonic() - started,
        transcript,
    )
