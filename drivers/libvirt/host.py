"""What the host offers workstations, as libvirt sees it: its cores, memory and whole GPUs."""

from __future__ import annotations

import shutil
from pathlib import Path

import libvirt

from drivers.base import GIB, GpuDevice, HostInfo
from drivers.libvirt.reported_xml import parse_pci_device


def host_info(
    conn: libvirt.virConnect, disk_dir: Path, gpu_vendors: tuple[int, ...], gpu_names: dict[str, str]
) -> HostInfo:
    """The host's capacity; its GPUs are the display controllers of ``gpu_vendors``, named from ``gpu_names``
    (by PCI address) where the host's NVML knows them, else by libvirt's product name."""
    _, memory_mib, cpus, *_ = conn.getInfo()
    gpus = []
    for device in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV):
        gpu = parse_pci_device(device.XMLDesc())
        if gpu is None or gpu.vendor_id not in gpu_vendors:
            continue
        address = str(gpu.address)
        gpus.append(GpuDevice(gpu_names.get(address, gpu.product), address, gpu.iommu_group))
    return HostInfo(
        cpu_cores=cpus,
        memory_gb=memory_mib // 1024,
        storage_gb=shutil.disk_usage(disk_dir).total // GIB,
        gpus=tuple(sorted(gpus, key=lambda g: g.pci_address)),
    )
