"""The images' initramfs: what mounts the root disk, and nothing else, before the image's own systemd.

Debian's initramfs-tools starts udev and runs its scripts before it mounts
the root, seconds of a boot under TCG, even with only the modules it needs.
This one is the image's own busybox-static and kernel modules: the root
disk's (virtio_pci, virtio_blk, ext4, with what modules.dep says each needs),
virtio_rng, which seeds the kernel's randomness before anything waits for
it, virtio_console, whose port the guest agent opens at once, and virtio_net:
a NIC whose driver udev's coldplug loads appears only after every device
it was asked about, so networkd (and DHCP, and the guest service the host
reaches over it) waited seconds for it. A desktop's adds virtio_gpu, whose
DRM device its display waits for, for the same reason. Its init
loads them, mounts ``root=`` and hands over to systemd, as the launch floor's
init (benchmarks/boot_floor.py) loads its own. The seed's disk is virtio too,
so it is there when systemd starts.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_rng", "virtio_console", "virtio_net")
DISPLAY_MODULES = ("virtio_gpu",)
BUSYBOX = "bin/busybox"
# A root that will not mount stops the boot there, saying why on the serial console (the host's
# console log); the workstation then never says it is ready, and cwhost reports that.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do insmod "/lib/modules/$module"; done < /lib/modules/load-order
root=/dev/vda
for word in $(cat /proc/cmdline); do
    case $word in root=*) root=${word#root=} ;; esac
done
if mount -t ext4 -o rw "$root" /root; then
    mount --move /dev /root/dev
    umount /sys /proc
    exec switch_root /root /sbin/init
fi
echo "cwhost initramfs: could not mount the root file system $root" > /dev/console
exec sleep 2147483647
"""


class InitramfsError(Exception):
    """The image lacks something the initramfs needs; the message says what."""


def load_order(modules_dir: Path, wanted: tuple[str, ...] = MODULES) -> list[str]:
    """The module files to load, each after what it needs, each once (paths relative to ``modules_dir``)."""
    needs: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        module, _, dependencies = line.partition(":")
        needs[module] = dependencies.split()
        by_name[Path(module).name.split(".ko")[0].replace("-", "_")] = module
    order: list[str] = []

    def visit(module: str) -> None:
        if module in order:
            return
        # modules.dep lists what a module needs with the first to load last.
        for dependency in reversed(needs.get(module, [])):
            visit(dependency)
        order.append(module)

    for name in wanted:
        if name not in by_name:
            raise InitramfsError(f"the image's kernel has no module {name} (is it built in?)")
        visit(by_name[name])
    compressed = [module for module in order if not module.endswith(".ko")]
    if compressed:
        raise InitramfsError(f"busybox's insmod cannot load compressed modules: {', '.join(compressed)}")
    return order


def build(root: Path, version: str, out: Path, modules: tuple[str, ...] = MODULES) -> None:
    """The initramfs for the kernel ``version`` installed in the image at ``root``, loading ``modules``,
    written to ``out``."""
    busybox = root / BUSYBOX
    if not busybox.is_file():
        raise InitramfsError("the image has no /bin/busybox (is busybox-static installed?)")
    modules_dir = root / "lib/modules" / version
    order = load_order(modules_dir, modules)
    with tempfile.TemporaryDirectory(prefix="cwhost-initramfs-") as work_dir:
        work = Path(work_dir)
        for directory in ("bin", "dev", "proc", "sys", "root", "lib/modules"):
            (work / directory).mkdir(parents=True)
        shutil.copy(busybox, work / BUSYBOX)
        for module in order:
            shutil.copy(modules_dir / module, work / "lib/modules" / Path(module).name)
        (work / "lib/modules/load-order").write_text("".join(Path(m).name + "\n" for m in order))
        (work / "init").write_text(INIT)
        (work / "init").chmod(0o755)
        write_archive(work, out)


def write_archive(directory: Path, out: Path) -> None:
    """``directory`` as the kernel unpacks an initramfs: a gzipped newc cpio archive, owned by root."""
    names = sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))
    archive = subprocess.run(
        ["cpio", "--create", "--format=newc", "--quiet", "--owner=0:0"],
        input="\n".join(names).encode(),
        cwd=directory,
        capture_output=True,
        check=True,
    ).stdout
    out.write_bytes(gzip.compress(archive, compresslevel=6))
