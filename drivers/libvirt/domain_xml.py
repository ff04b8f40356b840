"""libvirt domain XML as objects: built and parsed with ElementTree, never with strings.

No policy lives here: what a workstation's domain should contain is decided by
the driver; this module only turns a ``DomainXml`` into XML and back, so that
user text (the title) is always data, never markup.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from drivers.base import DEFAULT_DISPLAY, SHARE_TAG, Display, PortForward
from drivers.libvirt.cloud_init import SEED_SERIAL
from drivers.libvirt.xml_fields import required_attribute, required_child, required_text

METADATA_NAMESPACE = "https://cwhost.invalid/xmlns/workstation/1"
ET.register_namespace("cwhost", METADATA_NAMESPACE)
QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NAMESPACE)
# The user-mode NIC that carries port forwards, by its QEMU id, and the MAC the guest knows it by
# (the same in every guest: each such NIC is alone on its link).
FORWARDING_NETDEV = "cwhostnet0"
FORWARDING_MAC = "52:54:00:cf:00:01"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
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
    # The libvirt network the guest's one routed NIC is on, as an isolated port.
    network: str = "cwhost"
    graphics: Graphics | None = None
    kernel_boot: KernelBoot | None = None
    gpu: PciAddress | None = None
    # A host directory shared with the guest over virtiofs, and the tag it mounts it by.
    share: str | None = None
    share_tag: str = SHARE_TAG
    # The image the disk was made from, kept in cwhost's metadata.
    base_image: str | None = None
    # A cloud-init NoCloud seed image, as a read-only virtio disk whose serial names it (SEED_SERIAL).
    seed_iso: str | None = None
    # Host ports forwarded to the guest through a second NIC, on a user-mode network restricted to them.
    forwards: tuple[PortForward, ...] = ()
    # The screen its video device offers the guest as its preferred mode (EDID), which Xorg takes.
    display: Display = DEFAULT_DISPLAY


# libvirt's filter on every guest's NIC: it learns the guest's address from the
# DHCP answer and drops whatever the guest sends from another address or MAC,
# ARP that claims another address, IPv6 and other layer-2 protocols. The host
# reaches a guest's services at its leased address, so no guest may take
# another's. Its definitions are Debian's libvirt-daemon-config-nwfilter.
TRAFFIC_FILTER = "clean-traffic"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: str(v) for k, v in attributes.items()})
    if text is not None:
        element.text = text
    return element


def to_xml(domain: DomainXml) -> str:
    root = ET.Element("domain", type=domain.domain_type)
    _write_identity(root, domain)
    _write_resources(root, domain)
    _write_os(_sub(root, "os"), domain.kernel_boot)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    _write_disk(devices, domain.disk_path)
    _write_interface(devices, domain.network)
    if domain.forwards:
        _write_forwarding_nic(root, domain.forwards)
    _write_serial_console(devices, domain.console_log)
    _write_guest_agent_channel(devices)
    _write_entropy_source(devices)
    _write_video(devices, domain.display)
    if domain.graphics:
        # An absolute pointer: input is sent at screen coordinates, and noVNC's pointer lands where it shows.
        _sub(devices, "input", type="tablet", bus="usb")
        _write_graphics(devices, domain.graphics)
    if domain.share:
        _write_filesystem(devices, domain.share, domain.share_tag)
    if domain.seed_iso:
        _write_seed_disk(devices, domain.seed_iso)
    if domain.gpu:
        _write_hostdev(devices, domain.gpu)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def _write_identity(root: ET.Element, domain: DomainXml) -> None:
    _sub(root, "name", domain.name)
    _sub(root, "uuid", domain.uuid)
    _sub(root, "title", domain.title)
    metadata = _sub(root, "metadata")
    workstation = ET.SubElement(metadata, f"{{{METADATA_NAMESPACE}}}workstation", storageGB=str(domain.storage_gb))
    if domain.base_image:
        workstation.set("baseImage", domain.base_image)
    # Also kept here, where every libvirt driver keeps it (the test driver drops QEMU's command line).
    for forward in domain.forwards:
        ET.SubElement(
            workstation,
            f"{{{METADATA_NAMESPACE}}}forward",
            hostPort=str(forward.host_port),
            guestPort=str(forward.guest_port),
            listen=forward.listen,
        )


def _write_resources(root: ET.Element, domain: DomainXml) -> None:
    _sub(root, "memory", str(domain.memory_mib), unit="MiB")
    if domain.share:
        # virtiofsd maps guest memory, so it must be shared, file-backed memory.
        backing = _sub(root, "memoryBacking")
        _sub(backing, "source", type="memfd")
        _sub(backing, "access", mode="shared")
    _sub(root, "vcpu", str(domain.vcpus))


def _write_os(os_element: ET.Element, kernel_boot: KernelBoot | None) -> None:
    _sub(os_element, "type", "hvm", arch="x86_64")
    if kernel_boot is None:
        _sub(os_element, "boot", dev="hd")
        return
    _sub(os_element, "kernel", kernel_boot.kernel)
    if kernel_boot.initrd:
        _sub(os_element, "initrd", kernel_boot.initrd)
    if kernel_boot.cmdline:
        _sub(os_element, "cmdline", kernel_boot.cmdline)


def _write_disk(devices: ET.Element, path: str) -> None:
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev="vda", bus="virtio")


def _write_seed_disk(devices: ET.Element, path: str) -> None:
    """The seed on virtio, as the root disk is: its node exists as soon as the initramfs has loaded
    virtio_blk, and the guest finds it by its serial in sysfs, waiting neither for a SATA
    controller's probe nor for udev. cloud-init finds it too, by its label."""
    seed = _sub(devices, "disk", type="file", device="disk")
    _sub(seed, "driver", name="qemu", type="raw")
    _sub(seed, "source", file=path)
    _sub(seed, "target", dev="vdb", bus="virtio")
    _sub(seed, "serial", SEED_SERIAL)
    _sub(seed, "readonly")


def _write_entropy_source(devices: ET.Element) -> None:
    """The host's randomness for the guest's kernel: without it, a fresh guest waits for entropy
    at boot (the random seed, sshd)."""
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")


def _write_interface(devices: ET.Element, network: str) -> None:
    interface = _sub(devices, "interface", type="network")
    _sub(interface, "source", network=network)
    _sub(interface, "model", type="virtio")
    # The bridge carries nothing from this port to another isolated one: no guest reaches another.
    _sub(interface, "port", isolated="yes")
    # Nor does a guest send from an address or MAC it was not given (TRAFFIC_FILTER).
    filterref = _sub(interface, "filterref", filter=TRAFFIC_FILTER)
    _sub(filterref, "parameter", name="CTRL_IP_LEARNING", value="dhcp")


def _write_forwarding_nic(root: ET.Element, forwards: tuple[PortForward, ...]) -> None:
    """A virtio NIC on QEMU's user-mode network with ``hostfwd`` rules, passed through libvirt's
    QEMU namespace: libvirt 9.0 forwards ports only with passt, which Debian 12's cannot do.

    ``restrict=on`` makes it inbound only: the forwarded connections reach the
    guest, and the guest reaches nothing through it (not the host's loopback
    as 10.0.2.2, not the outside world); its routes are on the network NIC.
    """
    rules = ",".join(f"hostfwd=tcp:{f.listen}:{f.host_port}-:{f.guest_port}" for f in forwards)
    commandline = ET.SubElement(root, f"{{{QEMU_NAMESPACE}}}commandline")
    for value in (
        "-netdev",
        f"user,id={FORWARDING_NETDEV},restrict=on,{rules}",
        "-device",
        # A slot of its own: libvirt hands out the root bus's slots from 2 up and knows nothing of this NIC.
        f"virtio-net-pci,netdev={FORWARDING_NETDEV},mac={FORWARDING_MAC},bus=pci.0,addr=0x1e",
    ):
        ET.SubElement(commandline, f"{{{QEMU_NAMESPACE}}}arg", value=value)


def _write_guest_agent_channel(devices: ET.Element) -> None:
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)


def _write_serial_console(devices: ET.Element, log_path: str) -> None:
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=log_path, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")


def _write_graphics(devices: ET.Element, graphics: Graphics) -> None:
    attributes = {"type": graphics.kind, "autoport": "yes"}
    if graphics.password:
        attributes["passwd"] = graphics.password
    element = _sub(devices, "graphics", **attributes)
    _sub(element, "listen", type="address", address=graphics.listen)


def _write_video(devices: ET.Element, display: Display) -> None:
    # virtio-vga: its EDID offers exactly this mode, where a VGA's would offer a list for Xorg to choose from.
    model = _sub(_sub(devices, "video"), "model", type="virtio", heads="1", primary="yes")
    _sub(model, "resolution", x=display.width, y=display.height)


def _write_filesystem(devices: ET.Element, share: str, tag: str) -> None:
    filesystem = _sub(devices, "filesystem", type="mount", accessmode="passthrough")
    _sub(filesystem, "driver", type="virtiofs")
    _sub(filesystem, "source", dir=share)
    _sub(filesystem, "target", dir=tag)


def _write_hostdev(devices: ET.Element, gpu: PciAddress) -> None:
    hostdev = _sub(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
    _sub(
        _sub(hostdev, "source"),
        "address",
        domain=f"0x{gpu.domain:04x}",
        bus=f"0x{gpu.bus:02x}",
        slot=f"0x{gpu.slot:02x}",
        function=f"0x{gpu.function:x}",
    )


def _memory_mib(element: ET.Element) -> int:
    value = int(element.text or "0")
    factor = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}
    return int(value * factor[element.get("unit", "KiB")])


def from_xml(text: str) -> DomainXml:
    root = ET.fromstring(text)
    devices = required_child(root, "devices")
    filesystem = next(
        (fs for fs in devices.findall("filesystem") if fs.find("driver[@type='virtiofs']") is not None), None
    )
    workstation = root.find(f"metadata/{{{METADATA_NAMESPACE}}}workstation")
    return DomainXml(
        name=required_text(root, "name"),
        uuid=required_text(root, "uuid"),
        title=root.findtext("title") or "",
        domain_type=required_attribute(root, "type"),
        vcpus=int(required_text(root, "vcpu")),
        memory_mib=_memory_mib(required_child(root, "memory")),
        disk_path=_read_root_disk(devices),
        storage_gb=int(required_attribute(workstation, "storageGB")) if workstation is not None else 0,
        console_log=required_attribute(required_child(devices, "serial/log"), "file"),
        network=_read_network(required_child(devices, "interface[@type='network']")),
        graphics=_read_graphics(devices.find("graphics")),
        kernel_boot=_read_kernel_boot(required_child(root, "os")),
        gpu=_read_hostdev(devices.find("hostdev[@type='pci']")),
        share=required_attribute(required_child(filesystem, "source"), "dir") if filesystem is not None else None,
        share_tag=required_attribute(required_child(filesystem, "target"), "dir")
        if filesystem is not None
        else SHARE_TAG,
        base_image=workstation.get("baseImage") if workstation is not None else None,
        seed_iso=_read_seed_disk(devices),
        forwards=_read_forwards(workstation),
        display=_read_display(devices.find("video/model/resolution")),
    )


def _read_display(resolution: ET.Element | None) -> Display:
    if resolution is None:
        return DEFAULT_DISPLAY
    return Display(int(required_attribute(resolution, "x")), int(required_attribute(resolution, "y")))


def _read_forwards(workstation: ET.Element | None) -> tuple[PortForward, ...]:
    if workstation is None:
        return ()
    return tuple(
        PortForward(
            int(required_attribute(f, "hostPort")),
            int(required_attribute(f, "guestPort")),
            required_attribute(f, "listen"),
        )
        for f in workstation.findall(f"{{{METADATA_NAMESPACE}}}forward")
    )


def _read_root_disk(devices: ET.Element) -> str:
    disks = [disk for disk in devices.findall("disk[@device='disk']") if disk.findtext("serial") != SEED_SERIAL]
    return required_attribute(required_child(disks[0] if disks else devices, "source"), "file")


def _read_seed_disk(devices: ET.Element) -> str | None:
    # A domain started before the seed moved to virtio still has it as a CD-ROM until its next launch.
    seed = devices.find(f"disk[serial='{SEED_SERIAL}']")
    if seed is None:
        seed = devices.find("disk[@device='cdrom']")
    return required_attribute(required_child(seed, "source"), "file") if seed is not None else None


def _read_network(interface: ET.Element) -> str:
    return required_attribute(required_child(interface, "source"), "network")


def _read_graphics(graphics: ET.Element | None) -> Graphics | None:
    if graphics is None:
        return None
    return Graphics(
        kind=required_attribute(graphics, "type"),
        listen=required_attribute(required_child(graphics, "listen"), "address"),
        password=graphics.get("passwd"),
    )


def _read_kernel_boot(os_element: ET.Element) -> KernelBoot | None:
    kernel = os_element.findtext("kernel")
    return KernelBoot(kernel, os_element.findtext("initrd"), os_element.findtext("cmdline")) if kernel else None


def _read_hostdev(hostdev: ET.Element | None) -> PciAddress | None:
    if hostdev is None:
        return None
    address = required_child(hostdev, "source/address")
    return PciAddress(*(int(required_attribute(address, part), 16) for part in ("domain", "bus", "slot", "function")))
