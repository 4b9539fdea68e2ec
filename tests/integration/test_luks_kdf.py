"""``--kdf``: the passphrase's key slot has cryptsetup's own costs unless a test asks for
fast ones, and the key file's slot always has the fast ones. Read back by cryptsetup's
own luksDump, not by the code that wrote the header."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import run
from harness.errors import ConfigError
from harness.files import write_private
from harness.guest import cryptdisk, imagemeta
from harness.guest.imagemeta import Kdf, LuksVariant

pytestmark = pytest.mark.tools

#: The test costs (harness/guest/image.py); cryptsetup's benchmark for 2 s lands far
#: above them on any machine that can run this suite.
TEST_ITERATIONS = 1000
TEST_ARGON2_KIB = 32768


def slots(variant: LuksVariant, kdf: Kdf, work: Path) -> list[dict[str, int]]:
    """The costs luksDump shows for key slots 0 (the passphrase) and 1 (the key file)."""
    work.mkdir()
    passphrase, key = work / "passphrase", work / "root.key"
    write_private({passphrase: b"an owner's passphrase", key: bytes(range(64))})
    luks, _ = cryptdisk.luks_header(variant, passphrase, work, 1 << 20, key_path=key, kdf=kdf)
    dump = run.run(["cryptsetup", "luksDump", str(luks)]).stdout.decode()
    if variant is LuksVariant.LUKS1:
        parts = re.split(r"^Key Slot (\d): ENABLED$", dump, flags=re.MULTILINE)[1:]
    else:
        keyslots = dump.split("Keyslots:", 1)[1].split("Tokens:", 1)[0]
        parts = re.split(r"^\s+(\d): luks2$", keyslots, flags=re.MULTILINE)[1:]
    found = {}
    for number, text in zip(parts[::2], parts[1::2], strict=True):
        pattern = r"^\s*(Iterations|Memory|Time cost):\s+(\d+)"
        costs = {name: int(value) for name, value in re.findall(pattern, text, re.MULTILINE)}
        found[int(number)] = costs
    return [found[0], found[1]]


@pytest.mark.parametrize("variant", list(LuksVariant))
def test_standard_costs_are_cryptsetups_own_on_the_passphrase_slot_only(
    variant: LuksVariant, tmp_path: Path
) -> None:
    passphrase, key_file = slots(variant, Kdf.STANDARD, tmp_path / "standard")
    fast_passphrase, fast_key_file = slots(variant, Kdf.TEST, tmp_path / "test")
    if variant is LuksVariant.LUKS2_ARGON2ID:
        assert fast_passphrase == {"Time cost": 4, "Memory": TEST_ARGON2_KIB}
        assert passphrase["Memory"] > TEST_ARGON2_KIB, passphrase
    else:
        assert fast_passphrase == {"Iterations": TEST_ITERATIONS}
        assert passphrase["Iterations"] > 10 * TEST_ITERATIONS, passphrase
    # A key file of 64 random bytes gains nothing from a costly KDF.
    assert key_file == fast_key_file == fast_passphrase


def test_a_bad_kdf_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="--kdf 'fast' is not one of test, standard"):
        imagemeta.parse_kdf("fast")
