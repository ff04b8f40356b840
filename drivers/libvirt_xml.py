"""libvirt domain XML as objects: built and parsed with ElementTree, never with strings.

No policy lives here: what a workstation's domain should contain is decided by
the driver; this module only turns a ``DomainXml`` into XML and back, so that
user text (the title) is always data, never markup.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from drivers.base import SHARE_TAG

METADATA_NAMESPACE = "https://cwhost.invalid/xmlns/workstation/1"
ET.register_namespace("cwhost", METADATA_NAMESPACE)


@dataclass(frozen=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str) -> "PciAddress":
        """``0000:65:00.0``"""
        domain, bus, slot_function = text.split(":")
        slot, function = slot_function.split(".")
        return cls(int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16))

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


@dataclass(frozen=True)
class KernelBoot:
    kernel: str
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class Graphics:
    kind: str  # "vnc" or "spice"
    listen: str
    password: str | None = None


@dataclass(frozen=True)
class DomainXml:
    name: str
    uuid: str
    title: str
    domain_type: str
    vcpus: int
    memory_mib: int
    disk_path: str
    storage_gb: int
    console_log: str
    network: str | None = None  # a libvirt network's name; None for user-mode networking
    graphics: Graphics | None = None
    kernel_boot: KernelBoot | None = None
    gpu: PciAddress | None = None
    # A host directory shared with the guest over virtiofs, and the tag it mounts it by.
    share: str | None = None
    share_tag: str = SHARE_TAG
    # The image the disk was made from, kept in cwhost's metadata.
    base_image: str | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: str(v) for k, v in attributes.items()})
    if text is not None:
        element.text = text
    return element


def to_xml(domain: DomainXml) -> str:
    root = ET.Element("domain", type=domain.domain_type)
    _sub(root, "name", domain.name)
    _sub(root, "uuid", domain.uuid)
    _sub(root, "title", domain.title)
    metadata = _sub(root, "metadata")
    workstation = ET.SubElement(
        metadata, f"{{{METADATA_NAMESPACE}}}workstation", storageGB=str(domain.storage_gb)
    )
    if domain.base_image:
        workstation.set("baseImage", domain.base_image)
    _sub(root, "memory", str(domain.memory_mib), unit="MiB")
    if domain.share:
        # virtiofsd maps guest memory, so it must be shared, file-backed memory.
        backing = _sub(root, "memoryBacking")
        _sub(backing, "source", type="memfd")
        _sub(backing, "access", mode="shared")
    _sub(root, "vcpu", str(domain.vcpus))
    os_element = _sub(root, "os")
    _sub(os_element, "type", "hvm", arch="x86_64")
    if domain.kernel_boot:
        _sub(os_element, "kernel", domain.kernel_boot.kernel)
        if domain.kernel_boot.initrd:
            _sub(os_element, "initrd", domain.kernel_boot.initrd)
        if domain.kernel_boot.cmdline:
            _sub(os_element, "cmdline", domain.kernel_boot.cmdline)
    else:
        _sub(os_element, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")

    devices = _sub(root, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=domain.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    if domain.network:
        interface = _sub(devices, "interface", type="network")
        _sub(interface, "source", network=domain.network)
    else:
        interface = _sub(devices, "interface", type="user")
    _sub(interface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=domain.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if domain.graphics:
        graphics_attributes = {"type": domain.graphics.kind, "autoport": "yes"}
        if domain.graphics.password:
            graphics_attributes["passwd"] = domain.graphics.password
        graphics = _sub(devices, "graphics", **graphics_attributes)
        _sub(graphics, "listen", type="address", address=domain.graphics.listen)
    if domain.share:
        filesystem = _sub(devices, "filesystem", type="mount", accessmode="passthrough")
        _sub(filesystem, "driver", type="virtiofs")
        _sub(filesystem, "source", dir=domain.share)
        _sub(filesystem, "target", dir=domain.share_tag)
    if domain.gpu:
        hostdev = _sub(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
        source = _sub(hostdev, "source")
        _sub(
            source,
            "address",
            domain=f"0x{domain.gpu.domain:04x}",
            bus=f"0x{domain.gpu.bus:02x}",
            slot=f"0x{domain.gpu.slot:02x}",
            function=f"0x{domain.gpu.function:x}",
        )
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def _memory_mib(element: ET.Element) -> int:
    value = int(element.text)
    factor = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}
    return int(value * factor[element.get("unit", "KiB")])


def from_xml(text: str) -> DomainXml:
    root = ET.fromstring(text)
    devices = root.find("devices")
    os_element = root.find("os")
    kernel = os_element.findtext("kernel")
    interface = devices.find("interface")
    graphics = devices.find("graphics")
    hostdev = devices.find("hostdev[@type='pci']")
    filesystem = next(
        (fs for fs in devices.findall("filesystem") if fs.find("driver[@type='virtiofs']") is not None),
        None,
    )
    gpu = None
    if hostdev is not None:
        address = hostdev.find("source/address")
        gpu = PciAddress(*(int(address.get(part), 16) for part in ("domain", "bus", "slot", "function")))
    workstation = root.find(f"metadata/{{{METADATA_NAMESPACE}}}workstation")
    return DomainXml(
        name=root.findtext("name"),
        uuid=root.findtext("uuid"),
        title=root.findtext("title") or "",
        domain_type=root.get("type"),
        vcpus=int(root.findtext("vcpu")),
        memory_mib=_memory_mib(root.find("memory")),
        disk_path=devices.find("disk/source").get("file"),
        storage_gb=int(workstation.get("storageGB")) if workstation is not None else 0,
        console_log=devices.find("serial/log").get("file"),
        network=(
            interface.find("source").get("network")
            if interface is not None and interface.get("type") == "network"
            else None
        ),
        graphics=(
            Graphics(
                kind=graphics.get("type"),
                listen=graphics.find("listen").get("address"),
                password=graphics.get("passwd"),
            )
            if graphics is not None
            else None
        ),
        kernel_boot=(
            KernelBoot(kernel, os_element.findtext("initrd"), os_element.findtext("cmdline"))
            if kernel
            else None
        ),
        gpu=gpu,
        share=filesystem.find("source").get("dir") if filesystem is not None else None,
        share_tag=filesystem.find("target").get("dir") if filesystem is not None else SHARE_TAG,
        base_image=workstation.get("baseImage") if workstation is not None else None,
    )


@dataclass(frozen=True)
class NodeGpu:
    address: PciAddress
    vendor_id: int
    product: str
    iommu_group: int | None


def parse_pci_device(text: str) -> NodeGpu | None:
    """A node device's XML as a GPU, or None when it is not a display controller."""
    capability = ET.fromstring(text).find("capability[@type='pci']")
    if capability is None:
        return None
    pci_class = int(capability.findtext("class") or "0", 16)
    if pci_class >> 16 != 0x03:
        return None
    group = capability.find("iommuGroup")
    return NodeGpu(
        address=PciAddress(
            *(int(capability.findtext(part)) for part in ("domain", "bus", "slot", "function"))
        ),
        vendor_id=int(capability.find("vendor").get("id"), 16),
        product=capability.findtext("product") or "",
        iommu_group=int(group.get("number")) if group is not None else None,
    )


@dataclass(frozen=True)
class LiveConsole:
    kind: str
    listen: str
    port: int | None
    password: str | None


def live_console(text: str) -> LiveConsole | None:
    """The graphics console of a running domain's XML (fetched with its secrets)."""
    graphics = ET.fromstring(text).find("devices/graphics")
    if graphics is None:
        return None
    listen = graphics.find("listen")
    port = int(graphics.get("port", "-1"))
    return LiveConsole(
        kind=graphics.get("type"),
        listen=listen.get("address") if listen is not None else graphics.get("listen", ""),
        port=port if port > 0 else None,
        password=graphics.get("passwd"),
    )
