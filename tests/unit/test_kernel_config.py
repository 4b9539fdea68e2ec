"""The guest kernel's configuration: the fragment, Kconfig's verdict on it, and the
configuration read back from a bzImage (IKCONFIG)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from harness.components import linux
from harness.components.pipeline import (
    BuilderRecord,
    BuildInputs,
    Finished,
    Request,
    SourceRecord,
)
from harness.errors import BuildRefused, ConfigError, InfrastructureError

pytestmark = pytest.mark.unit


def test_the_fragment_asks_for_what_the_guest_needs() -> None:
    fragment = linux.parse_config(linux.fragment_text())
    for symbol in ("EFI_STUB", "EFI_SECRET", "EFI_COCO_SECRET", "SECURITYFS", "DM_CRYPT",
                   "CRYPTO_XTS", "CRYPTO_AES", "VIRTIO_BLK", "EXT4_FS", "IKCONFIG",
                   "AMD_MEM_ENCRYPT", "SERIAL_8250_CONSOLE", "DEVTMPFS"):  # fmt: skip
        assert fragment[f"CONFIG_{symbol}"] == "y", symbol
    assert fragment["CONFIG_MODULES"] == "n"


def test_parse_config_reads_values_unset_lines_and_comments() -> None:
    text = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n\n# a comment\nCONFIG_D=n\n'
    assert linux.parse_config(text) == {
        "CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"', "CONFIG_D": "n"
    }  # fmt: skip
    with pytest.raises(ConfigError, match="line 2 is not CONFIG_X=value"):
        linux.parse_config("CONFIG_A=y\nEFI_SECRET=y\n")


def test_dropped_names_each_value_kconfig_did_not_keep() -> None:
    fragment = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "64"}
    assert linux.dropped(fragment, {"CONFIG_A": "y", "CONFIG_C": "64"}) == []
    assert linux.dropped(fragment, {"CONFIG_A": "m", "CONFIG_B": "y", "CONFIG_C": "64"}) == [
        "CONFIG_A=y (Kconfig made it m)",
        "CONFIG_B=n (Kconfig made it y)",
    ]
    assert linux.dropped(fragment, {"CONFIG_C": "64"}) == ["CONFIG_A=y (Kconfig made it n)"]


def _bzimage(config: str | None) -> bytes:
    """A stand-in for a bzImage: a setup header, then the gzipped kernel, which holds
    the gzipped configuration between kernel/configs.c's markers."""
    inside = os.urandom(4096)
    if config is not None:
        blob = gzip.compress(config.encode())
        inside += linux.IKCFG_START + blob + linux.IKCFG_END + os.urandom(512)
    return b"MZ" + os.urandom(1000) + b"\x1f\x8b\x08 not gzip" + gzip.compress(inside) + b"tail"


def test_ikconfig_reads_the_configuration_out_of_the_compressed_kernel() -> None:
    config = "CONFIG_EFI_SECRET=y\n# CONFIG_MODULES is not set\n"
    assert linux.ikconfig(_bzimage(config)) == config


def test_ikconfig_refuses_a_kernel_without_its_configuration() -> None:
    with pytest.raises(InfrastructureError, match="carries no configuration"):
        linux.ikconfig(_bzimage(None))
    with pytest.raises(InfrastructureError, match="carries no configuration"):
        linux.ikconfig(b"MZ" + bytes(4096))


def _finished(tmp_path: Path, fragment: str, config: str, release: str = "6.12.107") -> Finished:
    (tmp_path / linux.BZIMAGE).write_bytes(_bzimage(config))
    (tmp_path / linux.CONFIG).write_text(config)
    (tmp_path / "release").write_text(release + "\n")
    inputs = BuildInputs(
        sources={"linux": SourceRecord("linux", "6.12.107", "linux.tar.xz", "ab" * 32)},
        provenance={},
        local_trees={},
        series_applied=True,
        builder_image=BuilderRecord("harness-linux:x", "sha256:x"),
        toolchain=(),
        options={"fragment": fragment, "timestamp": linux.BUILD_TIMESTAMP},
    )
    return Finished(tmp_path, inputs, "key", 1.0, {}, Request())


def test_the_manifest_records_the_kernels_own_configuration(tmp_path: Path) -> None:
    config = "CONFIG_EFI_SECRET=y\n# CONFIG_MODULES is not set\nCONFIG_OTHER=y\n"
    fragment = "CONFIG_EFI_SECRET=y\nCONFIG_MODULES=n\n"
    made = linux.SPEC.manifest(_finished(tmp_path, fragment, config)).output
    assert made.fragment == {"CONFIG_EFI_SECRET": "y", "CONFIG_MODULES": "n"}
    assert made.release == "6.12.107"


def test_a_value_kconfig_did_not_keep_is_a_refused_build(tmp_path: Path) -> None:
    """A verdict on the sources and the fragment (the nightly's failed build case), not
    an infrastructure error that would abort the night."""
    config = "CONFIG_EFI_SECRET=y\nCONFIG_VT=y\n"
    with pytest.raises(
        BuildRefused, match=r"did not keep 1 value.*CONFIG_VT=n \(Kconfig made it y\)"
    ):
        linux.SPEC.manifest(_finished(tmp_path, "CONFIG_EFI_SECRET=y\nCONFIG_VT=n\n", config))
    with pytest.raises(BuildRefused, match=r"the pin says 6\.12\.107"):
        linux.SPEC.manifest(_finished(tmp_path, "CONFIG_VT=y\n", config, release="7.2.8"))
