"""``./inv build-*`` and ``build-image``: one component, or one guest image, for a user."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.components import linux, ovmf, qemu, registry
from harness.components.pipeline import Built, Request, build, builder_image
from harness.components.trees import follow_upstream
from harness.components.workspace import Workspace
from harness.config import Config, Upstream
from harness.errors import ConfigError
from harness.guest import debian, image, imagemeta
from harness.host import doctor
from harness.upstream import sources

#: Host tools the builds need besides the Docker engine.
BUILD_TOOLS = ("docker", "debootstrap", "git")
#: What a guest image build needs on top.
IMAGE_TOOLS = (*BUILD_TOOLS, "cryptsetup", "e2fsprogs", "sfdisk")
#: And the Debian recipe's: the assembly VM, the ESP check, qcow2.
DEBIAN_IMAGE_TOOLS = ("qemu", "mtools", "qemu-img")


def workspace(
    cfg: Config,
    names: tuple[str, ...],
    note: Callable[[str], None] = lambda n: None,
    given: Workspace | None = None,
) -> Workspace:
    """The workspace that builds *names* as the configuration says (*given*, else the
    configuration's): the pins, or (for ``--upstream head``) the newest versions Debian's
    mirror serves. The one place head pins are followed; *note* hears of versions passed
    over.

    Raises:
        InfrastructureError: Debian's index could not be read for head.
    """
    ws = given or Workspace.of(cfg)
    # A component built from another's source (GRUB for arm64) moves with that one.
    known = registry.names()
    names = tuple(dict.fromkeys(registry.get(n).source_name if n in known else n for n in names))
    if cfg.upstream is Upstream.MASTER:
        return master_workspace(ws, names, note)
    if cfg.upstream is not Upstream.HEAD:
        return ws
    tools = builder_image(registry.TOOLS_BUILDER, ws)
    notes: list[str] = []
    moved = follow_upstream(names, tools.tag, ws.patches, notes=notes)
    for line in notes:
        note(line)
    return dataclasses.replace(ws, upstream=moved)


def master_workspace(
    ws: Workspace, names: tuple[str, ...], note: Callable[[str], None] = lambda n: None
) -> Workspace:
    """*ws* on upstream's development branch: each of *names* whose ``upstream.toml``
    names a ``[master]`` commit at that commit, with its ``master`` series where it has
    one; the others stay on their pins (*note* hears which)."""
    pins = []
    for name in names:
        pin = sources.load_master(ws.patches / name / "upstream.toml", name)
        if pin is None:
            note(f"patches/{name}/upstream.toml names no [master]; {name} stays on its pin")
            continue
        pins.append(pin)
    return dataclasses.replace(ws, upstream=tuple(pins), series="master")


def build_component(
    cfg: Config,
    name: str,
    trees: Mapping[str, str],
    *,
    apply: bool = True,
    debug: bool = False,
) -> Built[Any]:
    """Build component *name* (and what it is built with) into the workspace.

    Raises:
        ConfigError: no such component.
        PrerequisiteError: a host tool or the Docker engine is missing.
        PatchError, ChecksumError, CommandError, InfrastructureError: see
            :func:`harness.components.pipeline.build`.
    """
    spec = registry.get(name)
    doctor.require(BUILD_TOOLS, docker_engine=True)
    needed = (*(d.name for d in spec.depends), name)
    ws = workspace(cfg, needed, note=lambda n: print(f"note: {n}"))
    # A tree given for a build of another's source (grub-arm64) is that source's tree.
    known = registry.names()
    request = Request(
        {(registry.get(k).source_name if k in known else k): Path(v) for k, v in trees.items()},
        apply,
        debug,
    )
    return build(spec, ws, request)


def render(built: Built[Any]) -> str:
    """What a build made, for the terminal."""
    cached = " (from cache)" if built.cached else ""
    manifest = built.manifest
    lines = []
    if isinstance(manifest, ovmf.OvmfManifest):
        out = manifest.output
        area = out.secret_area
        lines += [
            f"{built.published / out.file}{cached}",
            f"  sha256             {out.sha256}",
            f"  SEV launch digest  {out.sev_launch_digest}",
            f"  secret area        GPA {area.gpa:#x}, {area.size:#x} bytes"
            if area
            else "  secret area        none",
        ]
    elif isinstance(manifest, qemu.QemuManifest):
        lines += [
            f"{built.published / manifest.output.binary}{cached}",
            f"  version            {manifest.output.version_line}",
        ]
    elif isinstance(manifest, linux.KernelManifest):
        made = manifest.output
        lines += [
            f"{built.published / made.file}{cached}",
            f"  release            {made.release}",
            f"  sha256             {made.sha256}",
            f"  own configuration  sha256 {made.config_sha256[:16]}… (IKCONFIG, read from "
            "the bzImage)",
            f"  CONFIG_EFI_SECRET  {made.fragment.get('CONFIG_EFI_SECRET', 'n')}",
            f"  build time         {manifest.build_seconds:.0f} s",
        ]
    else:
        lines.append(f"{built.component} installed in {built.published}{cached}")
    lines.append(f"  manifest           {built.published / 'manifest.json'}")
    return "\n".join(lines)


def build_image(
    cfg: Config,
    recipe: str,
    luks: str,
    passphrase_file: Path | None,
    out: str,
    secret_only: bool,
    kernel: str = imagemeta.GuestKernel.BUILT.value,
    options: debian.DebianOptions | None = None,
) -> imagemeta.Image:
    """A guest image of *recipe* in *out* (default: the workspace's image directory),
    booting the *kernel* flavour: ``built`` builds the guest kernel first (or takes the
    cached build), ``debian`` is the distribution's. A Debian recipe
    (:mod:`harness.guest.debian`) boots Debian's own kernel and takes *options*; our
    kernel runs its assembly VM.

    Raises:
        InputError, ConfigError: a refused passphrase, an unknown variant, recipe or
            kernel flavour, or an option the recipe does not take.
        PrerequisiteError: a host tool is missing.
    """
    passphrase = image.image_passphrase(passphrase_file, secret_only)
    variant = imagemeta.parse_variant(luks)
    flavour = imagemeta.parse_guest_kernel(kernel)
    distro = debian.DebianRecipe.load(recipe)
    if distro is None and options is not None and options != debian.DebianOptions():
        raise ConfigError(
            f"--suite, --size, --packages, --format, --root-password-file, --ssh-key and "
            f"--kdf are for the Debian recipe, not {recipe} (its images are test images, "
            "with test KDF costs)."
        )
    if distro is None:
        imagemeta.Recipe.load(recipe)  # an unknown recipe is refused before any build
    else:
        debian.pick_suite(distro, (options or debian.DebianOptions()).suite)
    doctor.require(
        (*IMAGE_TOOLS, *DEBIAN_IMAGE_TOOLS) if distro else IMAGE_TOOLS, docker_engine=True
    )
    dest = Path(out).resolve() if out else cfg.layout.image(recipe, variant)
    built = None
    if flavour is imagemeta.GuestKernel.BUILT or distro is not None:
        built = linux.guest_kernel(build_component(cfg, linux.SPEC.name, {}))
    ws = Workspace.of(cfg)
    tools = builder_image(registry.TOOLS_BUILDER, ws)
    if distro is not None:
        assert built is not None
        return debian.build(
            distro,
            variant,
            dest,
            options or debian.DebianOptions(),
            cache=cfg.layout.image_cache,
            builder=builder_image(registry.DEBIAN_IMAGE_BUILDER, ws).tag,
            tools_builder=tools.tag,
            kernel=built,
            passphrase=passphrase,
        )
    return image.build_image(
        recipe, variant, dest, cfg.layout.image_cache, tools.tag, passphrase, built
    )
