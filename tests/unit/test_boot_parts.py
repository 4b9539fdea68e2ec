"""Pieces of the boot path that need no QEMU: XTS, cpio, scenarios, command lines,
and the console's pattern handling against a real child process."""

from __future__ import annotations

import contextlib
import gzip
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.boots import runner
from harness.boots.matrix import MATRIX
from harness.boots.scenarios import SCENARIOS, Scenario, Secret
from harness.boots.verdicts import Ending, Host
from harness.errors import ConfigError, GuestVerdict
from harness.guest import cpio, xts
from harness.guest.imagemeta import LuksVariant, parse_variant
from harness.guest.rootfs import initramfs
from harness.host import console, qemu
from harness.sev.malformed import malformed_tables

# NIST CAVS XTSGenAES256, tweak given as the data unit sequence number (the plain64
# IV): cryptography_vectors 50.0.2,
# ciphers/AES/XTS/tweak-dataunitseqno/XTSGenAES256.rsp, [ENCRYPT] COUNT 1 and 2.
NIST_XTS_AES256 = [
    (
        "ef010ca1a3663e32534349bc0bae62232a1573348568fb9ef41768a7674f507a"
        "727f98755397d0e0aa32f830338cc7a926c773f09e57b357cd156afbca46e1a0",
        187,
        "ed98e01770a853b49db9e6aaf88f0a41b9b56e91a5a2b11d40529254f5523e75",
        "ca20c55e8dc149687d2541de39c3df6300bb5a163c10ced3666b1357db8bd39d",
    ),
    (
        "c4e6b37e1075969d41a7601aa105dd41b18200a028da1f79f55c4d2db478c4e9"
        "8d9ed491cfe52f31ecb7cbb4891eb779e057392b3b27c19cbe9b4875c8c31c22",
        223,
        "87ede402d0561359799a41be042ced9a8e15639165ef1a4d2f6785c394d61e5f",
        "a51037198f3f9fe5d05bef52363acec40e86e3abb834180348d2e08627733e65",
    ),
]


@pytest.mark.parametrize("key, unit, plain, cipher", NIST_XTS_AES256)
def test_xts_against_nist_vectors(key: str, unit: int, plain: str, cipher: str) -> None:
    out = xts.encrypt(bytes.fromhex(key), bytes.fromhex(plain), sector_size=32, first_sector=unit)
    assert out.hex() == cipher
    assert xts.decrypt(bytes.fromhex(key), out, sector_size=32, first_sector=unit).hex() == plain


def test_xts_plain64_tweaks_count_sectors() -> None:
    key = bytes(range(64))
    data = bytes(4096)
    whole = xts.encrypt(key, data)
    assert whole[512:1024] == xts.encrypt(key, data[:512], first_sector=1)
    assert whole[:512] != whole[512:1024]  # same plaintext, different sector
    assert xts.decrypt(key, whole) == data


def test_xts_refuses_partial_sectors() -> None:
    with pytest.raises(Exception, match="sectors"):
        xts.encrypt(bytes(64), bytes(100))


def test_cpio_newc_layout() -> None:
    archive = cpio.newc([cpio.Entry("init", 0o100755, b"#!/bin/sh\n")])
    assert archive.startswith(b"070701")
    assert len(archive) % 4 == 0
    assert b"init\0" in archive and b"TRAILER!!!\0" in archive
    name_size = int(archive[94:102], 16)
    assert name_size == len(b"init\0")
    file_size = int(archive[54:62], 16)
    assert file_size == len(b"#!/bin/sh\n")


def test_initramfs_is_gzip_of_newc() -> None:
    blob = initramfs(b"\x7fELF", b"#!/bin/busybox sh\n")
    raw = gzip.decompress(blob)
    assert raw.startswith(b"070701") and b"bin/busybox\0" in raw


def _entries(archive: bytes) -> list[tuple[str, int, bytes]]:
    """A newc reader for the test: (name, mode, data) in archive order."""
    found: list[tuple[str, int, bytes]] = []
    at = 0
    while True:
        fields = [int(archive[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_at = at + 110
        name = archive[name_at : name_at + name_size - 1].decode()
        data_at = name_at + name_size + (-(110 + name_size) % 4)
        if name == "TRAILER!!!":
            return found
        found.append((name, mode, archive[data_at : data_at + size]))
        at = data_at + size + (-size % 4)


def test_initramfs_with_files_makes_each_directory_once_and_keeps_modes() -> None:
    """The built kernel's initramfs: cryptsetup's closure, crypttab and a 0400 key file."""
    extra = {
        "etc/keys/root.key": (0o100400, b"k" * 64),
        "etc/crypttab": (0o100644, b"root UUID=x /etc/keys/root.key luks\n"),
        "lib/x86_64-linux-gnu/libc.so.6": (0o100755, b"\x7fELF"),
    }
    raw = gzip.decompress(initramfs(b"\x7fELF", b"#!/bin/busybox sh\n", extra))
    names = [name for name, _, _ in _entries(raw)]
    entries = {name: (mode, data) for name, mode, data in _entries(raw)}
    assert entries["etc/keys/root.key"] == (0o100400, b"k" * 64)
    assert entries["etc"][0] == entries["etc/keys"][0] == 0o40755
    assert entries["dev/console"][0] == 0o20600 and entries["init"][0] == 0o100755
    assert len(names) == len(set(names)) and names.index("etc") < names.index("etc/keys")


def test_scenario_table_is_consistent() -> None:
    assert {
        "passwordless",
        "no-secret",
        "wrong-secret",
        "refusal",
        "secret-wiped",
        "tampered-firmware",
        "foreign-disk",
        "console-keys",
        "broken-kernel",
        "stalled-menu",
        "replayed-secret",
        "wrong-policy",
        "foreign-pdh",
        "secret-removed",
        "broken-keyslot",
        "search-hijack",
        "reset-replay",
        "owner-disk-missing",
        "keyslot-broken",
        "impostor",
    } == {name for name in SCENARIOS if not name.startswith("planted-")}
    assert {f"planted-{n}" for n, _ in malformed_tables(b"x")} == {
        name for name in SCENARIOS if name.startswith("planted-")
    }
    assert not SCENARIOS["passwordless"].expects_prompt
    assert SCENARIOS["tampered-firmware"].expects_prompt
    assert SCENARIOS["refusal"].ending is Ending.GIVES_UP
    assert SCENARIOS["broken-kernel"].ending is Ending.HALTS
    assert SCENARIOS["broken-keyslot"].ending is Ending.HALTS
    assert SCENARIOS["impostor"].ending is Ending.UNPROVEN and SCENARIOS["impostor"].expects_prompt
    assert SCENARIOS["broken-keyslot"].takes("debian")
    assert not SCENARIOS["broken-keyslot"].takes("minimal")
    assert all(name in SCENARIOS for name, _ in MATRIX)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": Secret.GOOD, "typed": (True,)},
        {"secret": Secret.NONE},
        {"secret": Secret.NONE, "typed": (True,), "check_wipe": True},
        {"secret": Secret.PLANTED, "typed": (True,)},
        {"secret": Secret.GOOD, "planted": "all-ff"},
        {"secret": Secret.NONE, "typed": (True,), "host": Host.FOREIGN_DISK},
        {"secret": Secret.NONE, "typed": (True,), "removes": True},
        {"secret": Secret.GOOD, "typed": (True,), "tamper": True, "removes": True},
        {"secret": Secret.GOOD, "ending": Ending.HALTS, "removes": True},
        {"secret": Secret.GOOD, "ending": Ending.UNPROVEN, "host": Host.IMPOSTOR},
        {"secret": Secret.NONE, "host": Host.IMPOSTOR},
        {"secret": Secret.NONE, "ending": Ending.UNPROVEN, "host": Host.FOREIGN_DISK},
        {"secret": Secret.NONE, "typed": (True,), "ending": Ending.UNPROVEN, "host": Host.IMPOSTOR},
    ],
)
def test_inconsistent_scenarios_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Scenario("x", "x", **kwargs)  # type: ignore[arg-type]


def test_variants_parse_and_carry_kdf_settings() -> None:
    assert parse_variant("luks2-argon2id") is LuksVariant.LUKS2_ARGON2ID
    assert "--pbkdf-memory" in LuksVariant.LUKS2_ARGON2ID.format_args
    with pytest.raises(ConfigError, match="not one of"):
        parse_variant("luks3")


def test_launch_command_line(tmp_path: Path) -> None:
    cfg = qemu.LaunchConfig(
        firmware=tmp_path / "OVMF.fd",
        disk=tmp_path / "disk.img",
        accel=qemu.Accel.TCG,
        qmp=tmp_path / "q.sock",
        ram="memory-backend-file,id=harness-ram,size=1024M,mem-path=/proc/1/fd/3,share=on",
        no_shutdown=True,
        fw_cfg=(("opt/org.harness/nonce", "ab" * 32),),
    )
    argv = cfg.argv()
    assert argv[argv.index("-fw_cfg") + 1] == f"name=opt/org.harness/nonce,string={'ab' * 32}"
    assert argv[argv.index("-machine") + 1] == "q35,accel=tcg,memory-backend=harness-ram"
    assert "-no-reboot" in argv and "-no-shutdown" in argv
    assert argv[argv.index("-object") + 1].startswith("memory-backend-file,id=harness-ram,")
    assert not any(a.startswith("loader") for a in argv)  # a reset would write it again
    assert f"file={tmp_path / 'disk.img'},if=virtio,format=raw,snapshot=on" in argv


def test_a_comma_in_a_fw_cfg_string_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="comma"):
        qemu.LaunchConfig(
            firmware=tmp_path / "OVMF.fd",
            disk=tmp_path / "disk.img",
            accel=qemu.Accel.TCG,
            qmp=tmp_path / "q.sock",
            fw_cfg=(("opt/x", "a,b"),),
        )


def _child(tmp_path: Path, text: str, allowed: tuple[str, ...] = ()) -> console.Console:
    script = tmp_path / "guest.py"
    script.write_text(
        f"import sys, time\nsys.stdout.write({text!r})\nsys.stdout.flush()\ntime.sleep(30)\n"
    )
    return console.spawn(
        [sys.executable, str(script)],
        tmp_path / "console.log",
        secrets=(b"hunter2",),
        allowed_errors=allowed,
    )


def test_a_wait_that_times_out_records_the_text_once(tmp_path: Path) -> None:
    """The hostile host waits a few seconds for GRUB to react to a key; a timeout leaves
    pexpect's buffer unconsumed, and the next wait's text starts with it again. The
    transcript (and the guest's report parsed from it) must hold each line once."""
    script = tmp_path / "guest.py"
    script.write_text(
        "import sys, time\n"
        "sys.stdout.write('HARNESS-SECRET one\\n'); sys.stdout.flush(); time.sleep(1.5)\n"
        "sys.stdout.write('HARNESS-SECRET two\\nHARNESS-BOOTED token=t\\n')\n"
        "sys.stdout.flush(); time.sleep(30)\n"
    )
    con = console.spawn([sys.executable, str(script)], tmp_path / "console.log")
    try:
        with pytest.raises(GuestVerdict) as info:
            con.expect_any({"marker": "HARNESS-BOOTED"}, 0.7)
        assert info.value.matched == "timeout"
        con.expect_any({"marker": "HARNESS-BOOTED"}, 20)
        text = con.text()
        assert text.count("HARNESS-SECRET one") == 1 and text.count("HARNESS-SECRET two") == 1
        con.close()
        assert con.transcript.read_text().count("HARNESS-SECRET one") == 1
    finally:
        con.child.close(force=True)


def _stops_after(said: Path, after: float) -> Callable[[], bool]:
    """QMP's SHUTDOWN, played: *after* seconds once the guest has written its last
    words (the file *said* appears then). QEMU reports the stop only after the guest's
    last write to the serial port, which it has written to the pty by then."""
    seen: list[float] = []

    def stopped() -> bool:
        if not seen and said.exists():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() >= seen[0] + after

    return stopped


@contextlib.contextmanager
def _stopping(tmp_path: Path, text: str, after: float) -> Iterator[console.Console]:
    """A guest that prints *text*, then powers off after *after* seconds while its
    program stays, as QEMU with -no-shutdown does."""
    said = tmp_path / "said"
    script = tmp_path / "guest.py"
    script.write_text(
        f"import sys, time\nsys.stdout.write({text!r})\nsys.stdout.flush()\n"
        f"open({str(said)!r}, 'w').close()\ntime.sleep(30)\n"
    )
    con = console.spawn([sys.executable, str(script)], tmp_path / "console.log")
    con.stopped = _stops_after(said, after)
    try:
        yield con
    finally:
        con.child.close(force=True)


def test_a_guest_that_stopped_ends_the_wait_as_an_exit(tmp_path: Path) -> None:
    """QEMU with -no-shutdown keeps a powered-off guest (its memory is judged after): the
    program stays, so the console learns of the end from QMP's SHUTDOWN, not from EOF.
    What the guest printed before it stopped is read and recorded once."""
    with _stopping(tmp_path, "GRUB says goodbye\n", 0.5) as con:
        started = time.monotonic()
        with pytest.raises(GuestVerdict) as info:
            con.expect_any({"marker": "HARNESS-BOOTED"}, 20)
        assert info.value.matched == "exited" and time.monotonic() - started < 5
        assert con.wait_exit(5)
        con.check_transcript()
        assert con.text().count("GRUB says goodbye") == 1
        assert con.transcript.read_text().count("GRUB says goodbye") == 1


def test_the_last_rescan_ends_when_the_guest_stopped_and_reads_its_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU keeps a powered-off guest, so the program never exits: the final rescan must
    end at the guest's stop, not wait out its whole allowance, and still judge what
    the guest printed after the last wait."""
    monkeypatch.setattr(console, "DRAIN_TIMEOUT", 30.0)
    with _stopping(tmp_path, "HARNESS-BOOTED token=t\nKernel panic - not syncing\n", 0.5) as con:
        con.expect_any({"marker": "HARNESS-BOOTED"}, 20)
        started = time.monotonic()
        with pytest.raises(GuestVerdict) as info:
            con.check_transcript()
        assert time.monotonic() - started < 10
        assert info.value.matched == "kernel panic"


def test_a_failure_line_split_across_reads_is_read_whole_though_the_guest_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the twin-disk boot showed: the initramfs's reason arrives in two reads, the
    guest powers off at once, and QEMU (-no-shutdown) reports the stop before the second
    part is read. The wait must still end on the failure, with the whole reason, and the serial
    line end may come as CR LF after a pty's own translation (CR CR LF)."""
    said = tmp_path / "said"
    script = tmp_path / "guest.py"
    script.write_text(
        "import sys, time\n"
        "sys.stdout.write('HARNESS-INITRAMFS-FAILED two devices ca'); sys.stdout.flush()\n"
        f"time.sleep(0.1); open({str(said)!r}, 'w').close(); time.sleep(0.1)\n"
        "sys.stdout.write('rry LUKS UUID=x: /dev/vda1 and /dev/vdb1\\r\\n')\n"
        "sys.stdout.write('reboot: Power down\\r\\n')\n"
        "sys.stdout.flush(); time.sleep(30)\n"
    )
    con = console.spawn([sys.executable, str(script)], tmp_path / "console.log")
    # QEMU's SHUTDOWN reaches the console before the guest's last words can be read from
    # the pty. The lag is played long (0.1 s), and the console's read after the stop
    # longer still, so that the stop is seen first whatever the scheduling: what is
    # tested is that the console reads on after it. (STOPPED_READ's own 0.05 s: nothing
    # was read later than the read that followed the report, in 24 real boots.)
    monkeypatch.setattr(console, "STOP_POLL", 0.01)
    monkeypatch.setattr(console, "STOPPED_READ", 0.5)
    con.stopped = _stops_after(said, 0.0)
    try:
        with pytest.raises(GuestVerdict) as info:
            con.expect_any({"marker": "HARNESS-BOOTED"}, 20)
        assert info.value.matched == "the initramfs failing"
        assert "/dev/vda1 and /dev/vdb1" in str(info.value)
    finally:
        con.child.close(force=True)


def test_a_match_before_the_stop_still_wins(tmp_path: Path) -> None:
    with _stopping(tmp_path, "HARNESS-BOOTED token=t\n", 0.0) as con:
        assert con.expect_any({"marker": "HARNESS-BOOTED"}, 20)[0] == "marker"


def test_a_guest_that_runs_on_times_out_as_before(tmp_path: Path) -> None:
    with _stopping(tmp_path, "spinning\n", 60) as con:
        with pytest.raises(GuestVerdict) as info:
            con.expect_any({"marker": "HARNESS-BOOTED"}, 1)
        assert info.value.matched == "timeout"
        assert not con.wait_exit(0.5)


def test_closing_a_program_that_exited_does_not_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU has exited once QMP's quit returned; closing its console must not then sleep
    pexpect's and ptyprocess's pause for a program still on its way out (0.1 s a boot,
    each). Both libraries keep their own pause."""
    import ptyprocess.ptyprocess as ptyprocess_mod  # type: ignore[import-untyped]
    from pexpect import pty_spawn

    con = console.spawn([sys.executable, "-c", "print('bye')"], tmp_path / "console.log")
    assert con.wait_exit(20)
    slept: list[float] = []
    for module in (ptyprocess_mod, pty_spawn):
        fake = type("FakeTime", (), {"sleep": staticmethod(slept.append), "time": time.time})
        monkeypatch.setattr(module, "time", fake)
    con.close()
    assert not con.alive
    assert sum(slept) == 0, slept  # a sleep(0) is no pause


def test_console_reports_a_kernel_panic(tmp_path: Path) -> None:
    con = _child(tmp_path, "booting\nKernel panic - not syncing: VFS\n")
    try:
        with pytest.raises(GuestVerdict) as info:
            con.expect("HARNESS-BOOTED", 20)
        assert info.value.matched == "kernel panic"
    finally:
        con.child.close(force=True)


def test_console_reports_the_initramfs_failing_at_once(tmp_path: Path) -> None:
    """Our kernel's initramfs says why it could not unlock the root, then powers off;
    QEMU stays up (the page is read afterwards), so only this line ends the wait."""
    con = _child(tmp_path, "HARNESS-INITRAMFS-FAILED cryptsetup could not open /dev/vda1\n")
    try:
        with pytest.raises(GuestVerdict) as info:
            con.expect("HARNESS-BOOTED", 20)
        assert info.value.matched == "the initramfs failing"
        assert "could not open /dev/vda1" in str(info.value)
    finally:
        con.child.close(force=True)


def test_console_grub_errors_and_redaction(tmp_path: Path) -> None:
    text = (
        "\x1b[2Jerror: the EFI secret area holds no secret table.\n"
        "Enter passphrase for hd0: hunter2\ndone\n"
    )
    con = _child(tmp_path, text, allowed=(r"holds no secret table",))
    try:
        con.expect("done", 20)
    finally:
        con.child.close(force=True)
    log = (tmp_path / "console.log").read_text()
    assert "hunter2" not in log and console.REDACTED in log and "\x1b" not in log
    con2 = _child(tmp_path, "error: something else broke\nEnter passphrase for hd0\n")
    try:
        with pytest.raises(GuestVerdict) as info:
            con2.expect("Enter passphrase", 20)
        assert info.value.matched == "GRUB error"
    finally:
        con2.child.close(force=True)


def _grub_error(tmp_path: Path, text: str, allowed: tuple[str, ...], until: str) -> str | None:
    """What the console's judge says of a guest printing *text*: None (allowed), or
    the verdict's name."""
    con = _child(tmp_path, text, allowed)
    try:
        con.expect(until, 20)
    except GuestVerdict as verdict:
        return verdict.matched
    finally:
        con.child.close(force=True)
    return None


def test_an_allowed_grub_error_wrapped_mid_word_is_still_allowed(tmp_path: Path) -> None:
    """GRUB master at 80 columns, as a real boot printed it: the error's words are split
    where the line ends. It is allowed as a whole; a different error is not."""
    text = (
        "error:\n/src/grub-core/disk/cryptodisk.c:grub_cryptodisk_scan_device_real:1331:passphra\n"
        "se prompting is disabled.\nThe SEV secret unlocked no volume\n"
    )
    allowed = (r"passphrase prompting is disabled",)
    assert _grub_error(tmp_path, text, allowed, "unlocked no volume") is None
    other = text.replace("prompting is disabled", "prompting is broken")
    assert _grub_error(tmp_path, other, allowed, "unlocked no volume") == "GRUB error"


def test_an_allowed_error_after_an_unexpected_one_does_not_excuse_it(tmp_path: Path) -> None:
    """Each error is judged by its own lines: the window after an unexpected error ends
    where the next error begins, though that one is allowed."""
    text = "error: the disk exploded.\nerror: the EFI secret area holds no secret table.\nthe end\n"
    allowed = (r"holds no secret table",)
    assert _grub_error(tmp_path, text, allowed, "the end") == "GRUB error"
    alone = text.replace("error: the disk exploded.\n", "")
    assert _grub_error(tmp_path, alone, allowed, "the end") is None


def test_console_timeout_is_a_verdict(tmp_path: Path) -> None:
    con = _child(tmp_path, "nothing useful\n")
    try:
        with pytest.raises(GuestVerdict) as info:
            con.expect("HARNESS-BOOTED", 1)
        assert info.value.matched == "timeout"
    finally:
        con.child.close(force=True)


def test_boot_refuses_an_image_of_another_recipe(tmp_path: Path) -> None:
    """console-keys needs the menu recipe: a minimal image is refused before any launch."""
    from harness.config import resolve
    from harness.flows import boot

    (tmp_path / "image.json").write_text('{"recipe": "minimal", "luks": "luks1", "token": "t"}')
    with pytest.raises(ConfigError, match="menu recipe"):
        cfg = resolve(workspace=str(tmp_path / "out"))
        boot.boot(cfg, "console-keys", tmp_path / "OVMF.fd", tmp_path, interactive=False)


def test_what_runs_on_sev_hardware() -> None:
    """The planted pages and the launch attacks are played on the simulated element only;
    every other scenario runs on SEV hardware as well."""
    hardware = {name for name, s in SCENARIOS.items() if not s.simulated_only}
    assert "passwordless" in hardware and "tampered-firmware" in hardware
    assert not {"replayed-secret", "wrong-policy", "foreign-pdh"} & hardware
    assert not any(name.startswith("planted-") for name in hardware)
    assert "secret-removed" not in hardware


def test_used_ranges_are_the_complement_of_the_free_ones() -> None:
    from harness.guest.cryptdisk import _used

    assert _used(100, []) == [(0, 100)]
    assert _used(100, [(0, 100)]) == []
    assert _used(100, [(10, 20), (30, 40)]) == [(0, 10), (20, 30), (40, 100)]
    assert _used(100, [(0, 10), (90, 120)]) == [(10, 90)]


def test_the_volume_key_is_searched_for_wherever_grub_opened_the_owners_disk() -> None:
    """Booted, stopped after the handover, or stalled with the CLI locked (grub 0013):
    the key must be gone. Not where the owner's disk was never opened."""
    searched = {name for name, s in SCENARIOS.items() if runner._handed_over(s)}
    assert {"passwordless", "search-hijack", "broken-kernel", "console-keys",
            "reset-replay", "stalled-menu"} <= searched  # fmt: skip
    assert not searched & {"refusal", "wrong-secret", "owner-disk-missing", "impostor",
                           "keyslot-broken"}  # fmt: skip


def test_where_grub_booted_nothing_no_kernel_may_hold_the_key() -> None:
    """Our kernel holds the key it opened the root with; where GRUB stalled (a missing
    kernel, a failed menu) no kernel ran, so the key must be gone on every image."""
    from harness.guest.imagemeta import GuestKernel, Ready

    def gone(name: str, kernel: GuestKernel, ready: Ready = Ready.MARKER) -> bool:
        return runner._key_must_be_gone(SCENARIOS[name], kernel, ready)

    assert gone("passwordless", GuestKernel.DEBIAN)
    assert not gone("passwordless", GuestKernel.BUILT)
    assert not gone("passwordless", GuestKernel.DEBIAN, Ready.LOGIN)
    for stalled in ("broken-kernel", "stalled-menu"):
        assert gone(stalled, GuestKernel.BUILT) and gone(stalled, GuestKernel.DEBIAN)
    assert not gone("owner-disk-missing", GuestKernel.DEBIAN)


def test_a_slice_of_the_matrix_keeps_its_order_and_refuses_strangers() -> None:
    from harness.boots import matrix

    assert matrix.slice_of(()) == matrix.MATRIX
    picked = matrix.slice_of(["foreign-disk-luks1", "passwordless-luks1"])
    assert picked == (("passwordless", LuksVariant.LUKS1), ("foreign-disk", LuksVariant.LUKS1))
    with pytest.raises(ConfigError, match="--case passwordless-luks9 is not a case"):
        matrix.slice_of(["passwordless-luks9"])
