"""cwhost's own guest network: a libvirt NAT network whose guests reach the world and the host's
bridge address, never the host's loopback and never each other.

Why not QEMU's user-mode network: there every guest reaches the host's
``127.0.0.1`` as ``10.0.2.2``, so any guest could open whatever listens on
the host's loopback (other guests' forwarded ports, VNC, cwhost's own
listeners). On a bridge, a guest's packets to ``127.0.0.0/8`` are martians the
host's kernel drops, each guest is its own peer (its own address) to every
host listener, and each interface's ``<port isolated='yes'/>`` keeps the
bridge from carrying one guest's frames to another. (passt would do the same
without a bridge, but libvirt 9.0 refuses it and Debian 12's passt crashes.)

libvirtd (root) runs the network's dnsmasq and its NAT rules: cwhost itself
needs no privilege beyond the libvirt socket. The network is defined once,
set to start with libvirtd, and started whenever a domain needs it.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from drivers.libvirt.domain_xml import TRAFFIC_FILTER

# What libvirt's network XML cannot say, passed to its dnsmasq as options.
# dnsmasq pings every address before its first offer, and holds the offer the
# 3 s it waits for an answer: under TCG that was a sixth of a guest's boot to
# ready. No guest sends from an address it was not leased (TRAFFIC_FILTER),
# so no guest could answer that ping.
DNSMASQ_NAMESPACE = "http://libvirt.org/schemas/network/dnsmasq/1.0"
DNSMASQ_OPTIONS = ("no-ping",)
ET.register_namespace("dnsmasq", DNSMASQ_NAMESPACE)


@dataclass(frozen=True)
class GuestNetwork:
    name: str = "cwhost"
    bridge: str = "cwhost0"
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.150.0/24")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The host's address on the bridge: the one host address guests reach."""
        return self.subnet.network_address + 1

    def to_xml(self) -> str:
        root = ET.Element("network")
        ET.SubElement(root, "name").text = self.name
        ET.SubElement(root, "forward", mode="nat")
        ET.SubElement(root, "bridge", name=self.bridge, stp="on", delay="0")
        ip = ET.SubElement(root, "ip", address=str(self.gateway), netmask=str(self.subnet.netmask))
        hosts = list(self.subnet.hosts())
        ET.SubElement(ET.SubElement(ip, "dhcp"), "range", start=str(hosts[1]), end=str(hosts[-1]))
        _add_dnsmasq_options(root)
        return ET.tostring(root, encoding="unicode")


def _add_dnsmasq_options(root: ET.Element) -> None:
    options = ET.SubElement(root, f"{{{DNSMASQ_NAMESPACE}}}options")
    for value in DNSMASQ_OPTIONS:
        ET.SubElement(options, f"{{{DNSMASQ_NAMESPACE}}}option", value=value)


def _dnsmasq_options(root: ET.Element) -> tuple[str, ...]:
    return tuple(option.get("value", "") for option in root.iter(f"{{{DNSMASQ_NAMESPACE}}}option"))


class NetworkMismatch(Exception):
    """The network cannot carry guests as cwhost means: another address than the configuration's, or no
    traffic filter."""


def _require_traffic_filter(conn: libvirt.virConnect) -> None:
    try:
        conn.nwfilterLookupByName(TRAFFIC_FILTER)
    except libvirt.libvirtError as exc:
        # libvirt's test driver has no filters, and no traffic to filter.
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NWFILTER:
            raise
        raise NetworkMismatch(
            f"libvirt has no network filter {TRAFFIC_FILTER!r}, which keeps each guest to its own address;"
            " install it (apt-get install libvirt-daemon-config-nwfilter) and restart libvirtd"
        ) from exc


def ensure_running(conn: libvirt.virConnect, network: GuestNetwork) -> None:
    """Define the network if libvirt does not know it, and start it if it is down.

    One that exists must have the configured address: guests are told the
    host's address from the configuration, and would otherwise wait for it.
    One defined by an older cwhost gets dnsmasq's options, from its next start.
    """
    _require_traffic_filter(conn)
    try:
        found = conn.networkLookupByName(network.name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise
        found = conn.networkDefineXML(network.to_xml())
        found.setAutostart(1)
    ip = ET.fromstring(found.XMLDesc(0)).find("ip")
    address = (ip.get("address"), ip.get("netmask")) if ip is not None else None
    if address != (str(network.gateway), str(network.subnet.netmask)):
        raise NetworkMismatch(
            f"libvirt's network {network.name!r} has the address {address}, not {network.gateway}"
            f" in {network.subnet} as the configuration says; change guest_subnet or guest_network,"
            f" or remove it (virsh net-destroy {network.name}; virsh net-undefine {network.name})"
        )
    found = _with_dnsmasq_options(conn, found)
    if not found.isActive():
        found.create()


def _with_dnsmasq_options(conn: libvirt.virConnect, found: libvirt.virNetwork) -> libvirt.virNetwork:
    """``found``, its persistent definition given dnsmasq's options if it lacks them (once: the live
    one keeps what it started with until the network's next start)."""
    try:
        defined = ET.fromstring(found.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        # libvirt's test driver keeps no persistent definition apart, and runs no dnsmasq.
        if exc.get_error_code() == libvirt.VIR_ERR_INVALID_ARG:
            return found
        raise
    if _dnsmasq_options(defined) == DNSMASQ_OPTIONS:
        return found
    for options in defined.findall(f"{{{DNSMASQ_NAMESPACE}}}options"):
        defined.remove(options)
    _add_dnsmasq_options(defined)
    return conn.networkDefineXML(ET.tostring(defined, encoding="unicode"))


def leased_address(conn: libvirt.virConnect, network: GuestNetwork, mac: str) -> str | None:
    """The IPv4 address the network's DHCP server gave the interface ``mac``; None before it asked.

    The lease, not what the guest's agent says: a guest chooses what its
    agent reports, while dnsmasq hands each MAC its own address.
    """
    try:
        leases = conn.networkLookupByName(network.name).DHCPLeases(mac)
    except libvirt.libvirtError as exc:
        # libvirt's test driver keeps no leases: its guests never have an address.
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return None
        raise
    found = [lease["ipaddr"] for lease in leases if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4]
    return found[-1] if found else None
