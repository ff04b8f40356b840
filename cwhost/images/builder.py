"""``cwhost images build``: a type's image from Debian packages, on the host, with no loop device or mount.

mmdebstrap installs the packages into a directory; ``mkfs.ext4 -d`` turns
that directory into a file system image and ``qemu-img convert`` into
qcow2. The kernel the packages installed is copied beside it with an
initramfs made from the image's own files (cwhost.images.initramfs), and both
are booted directly (``guest_files.KERNEL_CMDLINE``): no boot loader to
install and nothing to mount. Each step says what it does as it goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cwhost.images import desktop_files, guest_files, initramfs
from cwhost.images.catalog import DISK, INITRD, KERNEL, MANIFEST, BuiltImage, ImageCatalog
from cwhost.images.packages import SUITE, has_desktop, has_sound, image_components, image_packages
from cwhost.images.types import WorkstationType

MIB = 1024**2
# Room to work in on the first boot, beyond what the packages take; the seed
# applier then grows the file system to the workstation's whole disk.
HEADROOM_BYTES = 768 * MIB


class BuildError(Exception):
    """A step of the build failed; the message says which and why."""


def mmdebstrap_command(wtype: WorkstationType, root: Path, mirror: str) -> list[str]:
    with_gpu = wtype.gpu is not None
    command = [
        "mmdebstrap",
        "--mode=root",
        "--variant=important",
        "--components=" + ",".join(image_components(with_gpu)),
        "--include=" + ",".join(image_packages(wtype.packages, with_gpu)),
        # The end of options: what follows is never read as one, whatever the configuration holds.
        "--",
        SUITE,
        str(root),
    ]
    return command + [mirror] if mirror else command


class ImageBuilder:
    def __init__(self, catalog: ImageCatalog, mirror: str, disk_dir: Path, say: Callable[[str], None] = print):
        self._catalog = catalog
        self._mirror = mirror
        self._disk_dir = disk_dir
        self._say = say

    def build(self, wtype: WorkstationType) -> BuiltImage:
        """Build, then make it current; older builds no disk uses are removed."""
        type_dir = self._catalog.type_dir(wtype.id)
        type_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        build_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        staging = type_dir / f".building-{build_id}"
        remove_build(staging)
        staging.mkdir(mode=0o755)
        try:
            manifest = self._make(wtype, staging)
            final = type_dir / build_id
            staging.rename(final)
        except BaseException:
            remove_build(staging)
            raise
        self._catalog.set_current(wtype.id, final)
        self._say(f"{wtype.id}: built {final / DISK} ({manifest['files'][DISK]['size'] / MIB:.0f} MiB)")
        for old in self._catalog.prune(wtype.id, self._disk_dir):
            self._say(f"{wtype.id}: removed {old}, which no disk uses any more")
        return BuiltImage(final, manifest)

    def _make(self, wtype: WorkstationType, out: Path) -> dict:
        root = out / "root"
        started = time.time()
        self._step(wtype, 1, f"installing {len(image_packages(wtype.packages, wtype.gpu is not None))} packages")
        self._run(mmdebstrap_command(wtype, root, self._mirror), stream=True)
        self._step(wtype, 2, "adding cwhost's guest files")
        add_guest_files(root, wtype)
        packages = installed_packages(root)
        copy_boot_files(root, out, has_desktop(wtype.packages))
        self._step(wtype, 3, "making the file system and the qcow2 image")
        raw = out / "disk.raw"
        size = _filesystem_size(root)
        self._run(["mkfs.ext4", "-q", "-L", "root", "-d", str(root), str(raw), f"{size // MIB}M"])
        remove_build(root)
        self._run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / DISK)])
        raw.unlink()
        self._step(wtype, 4, "writing the manifest")
        manifest = {
            "type": wtype.id,
            "builtAt": time.time(),
            "buildSeconds": round(time.time() - started, 1),
            "suite": SUITE,
            "requested": list(image_packages(wtype.packages, wtype.gpu is not None)),
            "packages": packages,
            "cmdline": guest_files.KERNEL_CMDLINE,
            "files": {name: _file_facts(out / name) for name in (DISK, KERNEL, INITRD)},
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        for name in (DISK, KERNEL, INITRD, MANIFEST):
            (out / name).chmod(0o644)
        return manifest

    def _step(self, wtype: WorkstationType, number: int, what: str) -> None:
        self._say(f"{wtype.id}: [{number}/4] {what}")

    def _run(self, command: list[str], stream: bool = False) -> None:
        """Run one step; its output goes to the terminal as it comes when ``stream``."""
        try:
            result = subprocess.run(command, stdout=None if stream else subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise BuildError(f"{command[0]} could not run: {exc.strerror}") from None
        if result.returncode != 0:
            output = (result.stdout or b"").decode(errors="replace").strip()[-2000:]
            raise BuildError(f"{command[0]} failed (exit {result.returncode}){': ' + output if output else ''}")


def _mount_points() -> list[Path]:
    with open("/proc/self/mounts") as mounts:
        return [Path(line.split()[1].replace("\\040", " ")) for line in mounts]


def remove_build(directory: Path) -> None:
    """Delete a build's directory, unmounting first what an interrupted mmdebstrap left mounted in it.

    Never delete through a mount point: mmdebstrap bind-mounts the host's own
    /dev nodes into the root it builds.
    """
    inside = [point for point in _mount_points() if point == directory or directory in point.parents]
    for point in sorted(inside, key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True)
    if any(point == directory or directory in point.parents for point in _mount_points()):
        raise BuildError(f"{directory} still has file systems mounted in it; it was left as it is")
    shutil.rmtree(directory, ignore_errors=True)


def add_guest_files(root: Path, wtype: WorkstationType) -> None:
    files = dict(guest_files.BASE_FILES)
    desktop = has_desktop(wtype.packages)
    if desktop:
        files.update(desktop_files.DESKTOP_FILES)
    if "chromium" in wtype.packages:
        files.update(desktop_files.CDP_FILES)
        files["etc/cwhost/start-url"] = (wtype.start_url or "about:blank") + "\n"
        if (wtype.start_url or "").startswith(("http:", "https:")):
            files.update(desktop_files.DESKTOP_NETWORK_FILES)
    if has_sound(wtype.packages):
        files.update(desktop_files.AUDIO_FILES)
    executables = guest_files.EXECUTABLES + desktop_files.EXECUTABLES
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if relative in executables else 0o644)
    # Each workstation is its own machine: its own machine id, made at its
    # first boot, and its own SSH host key, which cwhost gives in its seed.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # DNS from DHCP, through systemd-resolved's stub, whatever the build left in resolv.conf.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    _in_root(root, "systemctl", "enable", "systemd-networkd.service", "systemd-resolved.service")
    ours = ("cwhost-seed.service", "cwhost-ready.service", "cwhost-guest.service", "cwhost-guest-agent.service")
    _in_root(root, "systemctl", "enable", *ours)
    _in_root(root, "systemctl", "mask", *guest_files.MASKED_UNITS)
    if desktop:
        # A system user: uid 1000 stays free for the seed's user (GUEST_UID).
        _in_root(root, "useradd", "--system", "--create-home", "--groups", "audio,video", desktop_files.DESKTOP_USER)
        _in_root(root, "systemctl", "enable", "cwhost-desktop.service")
    if "chromium" in wtype.packages:
        _in_root(root, "systemctl", "enable", "cwhost-cdp-relay.service")
    if has_sound(wtype.packages):
        _in_root(root, "systemctl", "enable", "cwhost-sound.service")
        _in_root(root, "systemctl", "--global", "mask", *desktop_files.USER_UNITS_MASKED)


def _in_root(root: Path, *command: str) -> None:
    result = subprocess.run(["chroot", str(root), *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{command[0]} in the image failed: {result.stderr.strip()}")


def installed_packages(root: Path) -> dict[str, str]:
    result = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\n"],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("\t", 1) for line in result.stdout.splitlines() if line)


def copy_boot_files(root: Path, out: Path, display: bool) -> None:
    """The installed kernel, readable by the hypervisor (Debian installs it 0600), and cwhost's initramfs for it."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError("the image has no kernel in /boot (is linux-image-amd64 installed?)")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[-1], out / KERNEL)
    try:
        modules = initramfs.MODULES + (initramfs.DISPLAY_MODULES if display else ())
        initramfs.build(root, version, out / INITRD, modules)
    except (initramfs.InitramfsError, OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"the initramfs for kernel {version} could not be made: {exc}") from None


def _filesystem_size(root: Path) -> int:
    used = 0
    for directory, _, files in os.walk(root):
        for name in files:
            used += os.lstat(os.path.join(directory, name)).st_blocks * 512
    wanted = int(used * 1.15) + HEADROOM_BYTES
    return -(-wanted // (256 * MIB)) * 256 * MIB


def _file_facts(path: Path) -> dict:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}
