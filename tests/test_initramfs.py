"""The images' initramfs: the root disk's modules, each after what it needs, busybox, and an init that
mounts root= and hands over to the image's systemd. (The real-VM tests boot it.)"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from cwhost.images import initramfs

VERSION = "6.1.0-57-amd64"
# As depmod writes it for Debian 12's kernel: what each needs, the first to load last.
MODULES_DEP = """kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/gpu/drm/bochs/bochs-drm.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/virtio/virtio-gpu.ko: kernel/drivers/virtio/virtio_dma_buf.ko \
kernel/drivers/gpu/drm/drm_shmem_helper.ko kernel/drivers/gpu/drm/drm_kms_helper.ko kernel/drivers/gpu/drm/drm.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_dma_buf.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/gpu/drm/drm_shmem_helper.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/drm_kms_helper.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/drm.ko:
""".replace("\\\n", "")


def _image_root(tmp_path: Path, modules_dep: str = MODULES_DEP) -> Path:
    root = tmp_path / "root"
    modules = root / "lib/modules" / VERSION
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text(modules_dep)
    for line in modules_dep.splitlines():
        module = modules / line.partition(":")[0]
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_bytes(b"\x7fELF " + module.name.encode())
    (root / "bin").mkdir()
    (root / "bin/busybox").write_bytes(b"\x7fELF busybox")
    return root


def test_each_module_loads_after_what_it_needs_and_once(tmp_path):
    order = [Path(m).name for m in initramfs.load_order(_image_root(tmp_path) / "lib/modules" / VERSION)]
    assert set(order) == {
        "virtio_ring.ko", "virtio.ko", "virtio_pci_legacy_dev.ko", "virtio_pci_modern_dev.ko", "virtio_pci.ko",
        "virtio_blk.ko", "crc32c_generic.ko", "crc16.ko", "mbcache.ko", "jbd2.ko", "ext4.ko", "virtio-rng.ko",
        "virtio_console.ko", "virtio_net.ko", "net_failover.ko", "failover.ko",
    }  # fmt: skip
    assert len(order) == len(set(order))
    for module, needs in [("virtio_pci.ko", "virtio.ko"), ("virtio.ko", "virtio_ring.ko"), ("ext4.ko", "jbd2.ko"),
                          ("virtio_net.ko", "net_failover.ko"), ("net_failover.ko", "failover.ko")]:
        assert order.index(needs) < order.index(module)  # fmt: skip
    assert "drm.ko" not in order


def test_a_desktops_initramfs_loads_the_virtio_gpu_after_drm_and_its_helpers(tmp_path):
    modules_dir = _image_root(tmp_path) / "lib/modules" / VERSION
    order = [Path(m).name for m in initramfs.load_order(modules_dir, initramfs.MODULES + initramfs.DISPLAY_MODULES)]
    for needs in ("drm.ko", "drm_kms_helper.ko", "drm_shmem_helper.ko", "virtio_dma_buf.ko", "virtio_pci.ko"):
        assert order.index(needs) < order.index("virtio-gpu.ko")
    assert order.index("drm.ko") < order.index("drm_kms_helper.ko")
    assert "bochs-drm.ko" not in order


def test_a_module_the_kernel_lacks_or_compresses_is_a_clear_error(tmp_path):
    without_ext4 = "\n".join(line for line in MODULES_DEP.splitlines() if not line.startswith("kernel/fs/ext4/"))
    with pytest.raises(initramfs.InitramfsError, match="no module ext4"):
        initramfs.load_order(_image_root(tmp_path / "a", without_ext4) / "lib/modules" / VERSION)
    compressed = MODULES_DEP.replace("virtio_blk.ko", "virtio_blk.ko.xz")
    with pytest.raises(initramfs.InitramfsError, match=r"compressed modules: .*virtio_blk\.ko\.xz"):
        initramfs.load_order(_image_root(tmp_path / "b", compressed) / "lib/modules" / VERSION)


def test_the_archive_holds_busybox_the_modules_in_order_and_the_init(tmp_path):
    out = tmp_path / "initrd.img"
    initramfs.build(_image_root(tmp_path), VERSION, out)
    archive = gzip.decompress(out.read_bytes())
    listed = subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True, check=True).stdout
    names = set(listed.decode().split())
    assert {
        "init",
        "bin/busybox",
        "lib/modules/ext4.ko",
        "lib/modules/virtio_blk.ko",
        "lib/modules/load-order",
    } <= names
    assert "lib/modules/drm.ko" not in names
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["cpio", "-i", "--quiet", "-d"], input=archive, cwd=extracted, check=True)
    load_order = (extracted / "lib/modules/load-order").read_text().split()
    assert load_order.index("virtio_ring.ko") < load_order.index("virtio_pci.ko") < load_order.index("virtio_blk.ko")
    init = extracted / "init"
    assert init.stat().st_mode & 0o111 and "switch_root /root /sbin/init" in init.read_text()
    assert (extracted / "bin/busybox").read_bytes() == b"\x7fELF busybox"


def test_an_image_without_busybox_is_refused(tmp_path):
    root = _image_root(tmp_path)
    (root / "bin/busybox").unlink()
    with pytest.raises(initramfs.InitramfsError, match="busybox-static"):
        initramfs.build(root, VERSION, tmp_path / "initrd.img")
