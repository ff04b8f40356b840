"""The built images in the data directory, and which one a type boots now.

Each build of a type has a directory of its own, ``<images>/<type>/<build>/``,
holding ``disk.qcow2``, the kernel and initrd that match it, and
``manifest.json``; ``<images>/<type>/current`` points at the newest. A
workstation's disk is an overlay of the build it was created from, and its
record names that build's files, never ``current``: a rebuild changes what new
workstations get and nothing else. An old build is removed once no disk in
the disk directory is an overlay of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cwhost.images.types import WorkstationType
from drivers.base import BootSource

DISK = "disk.qcow2"
KERNEL = "vmlinuz"
INITRD = "initrd.img"
MANIFEST = "manifest.json"
CURRENT = "current"


@dataclass(frozen=True)
class BuiltImage:
    directory: Path
    manifest: dict

    @property
    def built_at(self) -> float:
        return float(self.manifest["builtAt"])

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["files"][DISK]["size"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["files"][DISK]["sha256"])

    @property
    def packages(self) -> dict[str, str]:
        """Every installed package's version, by name."""
        return dict(self.manifest["packages"])

    @property
    def boot(self) -> BootSource:
        return BootSource(
            image=str(self.directory / DISK),
            kernel=str(self.directory / KERNEL),
            initrd=str(self.directory / INITRD),
            cmdline=str(self.manifest["cmdline"]),
        )


class ImageCatalog:
    def __init__(self, images_dir: Path):
        self.images_dir = Path(images_dir)

    def type_dir(self, type_id: str) -> Path:
        return self.images_dir / type_id

    def current(self, type_id: str) -> BuiltImage | None:
        """The build new workstations of this type get; None before the first build."""
        link = self.type_dir(type_id) / CURRENT
        try:
            directory = link.resolve(strict=True)
            manifest = json.loads((directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not all((directory / name).is_file() for name in (DISK, KERNEL, INITRD)):
            return None
        return BuiltImage(directory, manifest)

    def expected_disk(self, type_id: str) -> Path:
        """Where a type's current image is looked for: what an operator is told is missing."""
        return self.type_dir(type_id) / CURRENT / DISK

    def boot_for(self, wtype: WorkstationType) -> BootSource | None:
        """What a new workstation of the type boots; None when its image is not built."""
        if not wtype.boots_built_image:
            return wtype.boot
        built = self.current(wtype.id)
        return built.boot if built else None

    def status(self, wtype: WorkstationType) -> tuple[BuiltImage | None, list[str]]:
        """The type's built image (None for files its configuration names, or none built) and the files missing."""
        if not wtype.boots_built_image:
            return None, wtype.missing_files
        built = self.current(wtype.id)
        return built, [] if built else [str(self.expected_disk(wtype.id))]

    def missing_files(self, wtype: WorkstationType) -> list[str]:
        return self.status(wtype)[1]

    def set_current(self, type_id: str, build: Path) -> None:
        """Point ``current`` at ``build`` in one step (a rename), so a reader never sees no link."""
        link = self.type_dir(type_id) / CURRENT
        staged = link.with_name(f".{CURRENT}.new")
        staged.unlink(missing_ok=True)
        staged.symlink_to(build.name)
        staged.replace(link)

    def prune(self, type_id: str, disk_dir: Path) -> list[Path]:
        """Remove the type's builds that are neither current nor under any disk; the removed ones."""
        current = self.current(type_id)
        in_use = backing_files(disk_dir)
        removed = []
        for build in sorted(self.type_dir(type_id).iterdir()):
            if build.is_symlink() or not build.is_dir() or build.name.startswith("."):
                continue
            if current and build.resolve() == current.directory:
                continue
            if str(build.resolve() / DISK) in in_use:
                continue
            shutil.rmtree(build)
            removed.append(build)
        return removed


def backing_files(disk_dir: Path) -> set[str]:
    """The backing file of every qcow2 disk in ``disk_dir``, running ones included."""
    found = set()
    for disk in Path(disk_dir).glob("*.qcow2"):
        info = subprocess.run(
            ["qemu-img", "info", "--force-share", "--output=json", str(disk)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if info.returncode != 0:
            # A disk we cannot read might use any build: keep them all.
            raise OSError(f"qemu-img info {disk} failed: {info.stderr.strip()}")
        details = json.loads(info.stdout)
        backing = details.get("full-backing-filename") or details.get("backing-filename")
        if backing:
            found.add(str(Path(backing).resolve()))
    return found
