"""What libvirt reports as XML beyond a domain's definition: the host's GPUs (node devices), and a
running domain's network MAC and graphics console."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from drivers.libvirt.domain_xml import PciAddress
from drivers.libvirt.xml_fields import required_attribute, required_child, required_text


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
        address=PciAddress(*(int(required_text(capability, part)) for part in ("domain", "bus", "slot", "function"))),
        vendor_id=int(required_attribute(required_child(capability, "vendor"), "id"), 16),
        product=capability.findtext("product") or "",
        iommu_group=int(required_attribute(group, "number")) if group is not None else None,
    )


def network_mac(text: str) -> str:
    """The MAC libvirt gave the domain's network NIC (it writes one in when the domain is defined)."""
    return required_attribute(required_child(ET.fromstring(text), "devices/interface[@type='network']/mac"), "address")


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
        kind=required_attribute(graphics, "type"),
        listen=listen.get("address", "") if listen is not None else graphics.get("listen", ""),
        port=port if port > 0 else None,
        password=graphics.get("passwd"),
    )
