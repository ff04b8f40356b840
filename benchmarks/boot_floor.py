"""The floor of a launch on this machine: the same kernel, booted by cwhost the same way with the same
forwarding, whose initramfs only answers a TCP connection on the forwarded SSH port.

It is made from Debian's packages alone (the kernel package of the image's
kernel, for its virtio modules, and busybox-static), as tests/guest/build-guest.sh
makes the CI guest: nothing of the real image's userspace runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from cwhost.images.initramfs import write_archive

# The forwarding NIC's MAC (drivers.libvirt.domain_xml.FORWARDING_MAC), found by the init below.
FORWARDING_MAC = "52:54:00:cf:00:01"
BANNER = b"SSH-2.0-cwhost-floor"
# virtio_net and what it needs, in load order (Debian builds them as modules).
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in {" ".join(MODULES)}; do insmod /lib/modules/$module.ko; done
for dev in /sys/class/net/*; do [ "$(cat $dev/address)" = {FORWARDING_MAC} ] && nic=${{dev##*/}}; done
ip link set "$nic" up
ip addr add 10.0.2.15/24 dev "$nic"
echo "cwhost-floor: answering on port 22"
exec nc -ll -p 22 -e /bin/echo {BANNER.decode()}
"""


def kernel_version(vmlinuz: Path) -> str:
    """The version a bzImage names itself by (its header points at the string)."""
    data = vmlinuz.read_bytes()
    offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    return data[offset : data.index(b" ", offset)].decode()


def build_floor_initramfs(vmlinuz: Path, out: Path) -> Path:
    """The floor's initramfs for ``vmlinuz`` (the image's kernel), at ``out``."""
    version = kernel_version(vmlinuz)
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        subprocess.run(
            ["apt-get", "download", "-qq", f"linux-image-{version}", "busybox-static"],
            cwd=work,
            check=True,
            capture_output=True,
        )
        for package in work.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(package), str(work / "x")], check=True)
        root = work / "root"
        for directory in ("bin", "dev", "proc", "sys", "lib/modules"):
            (root / directory).mkdir(parents=True)
        shutil.copy(work / "x/bin/busybox", root / "bin/busybox")
        for module in MODULES:
            found = next((work / "x/lib/modules").glob(f"*/kernel/**/{module}.ko"))
            shutil.copy(found, root / "lib/modules" / found.name)
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        write_archive(root, out)
    out.chmod(0o644)
    return out
