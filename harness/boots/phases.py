"""Where a boot's seconds go: the owner's preparation, then the guest's stages as its
console shows them, then reading the stopped guest and closing.

Each stage ends at a landmark, the first line of the next stage; a landmark the boot
did not show (no prompt, a Debian image's own wording) merges its stage into the next.
The times come from when the console read each line (:class:`harness.host.console.ReadTimes`).
"""

from __future__ import annotations

from collections.abc import Mapping

#: (the stage that ends there, the landmark's pattern), in the order a boot shows them.
LANDMARKS: tuple[tuple[str, str], ...] = (
    ("firmware", r"BdsDxe: starting"),
    ("GRUB", r"Attempting to decrypt master key|Enter passphrase for"),
    ("key derivation", r'Slot "?\d+"? opened'),  # LUKS2 quotes the slot's number
    ("GRUB to the kernel", r"harness: loading the kernel"),
    (
        "kernel",
        r"harness: the kernel unlocked|harness: the Debian kernel runs|"
        r"Begin: Running /scripts/local-premount",
    ),
    ("initramfs and root", r"HARNESS-BOOTED|login:"),
    ("power-off", r"reboot: Power down"),
)
#: The stage that ends at the boot marker: from QEMU's start to there is the guest's
#: part of a boot that a bare driver, stopping at the marker, would time too.
MARKER_STAGE = "initramfs and root"


def split(
    prepare: float, landmarks: Mapping[str, float], guest_done: float, total: float
) -> dict[str, float]:
    """The stages' seconds, in order: *prepare* (before QEMU started), the stages to each
    of *landmarks* (seconds after QEMU started), what came after the last one until the
    guest was read and gone (*guest_done*, after QEMU started), and closing to *total*
    (the whole boot)."""
    stages = {"preparation": prepare}
    last = 0.0
    for name, _ in LANDMARKS:
        if name in landmarks and landmarks[name] >= last:
            stages[name] = landmarks[name] - last
            last = landmarks[name]
    stages["judging, to QEMU's exit"] = max(guest_done - last, 0.0)
    stages["after QEMU"] = max(total - prepare - guest_done, 0.0)
    return stages


def render(stages: Mapping[str, float]) -> str:
    """One line: each stage and its seconds."""
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in stages.items())
