"""What libvirt tells of a running guest from inside it: the QEMU guest agent's answers."""

from __future__ import annotations

import libvirt


def guest_addresses(domain: libvirt.virDomain) -> tuple[str, ...]:
    """The guest's addresses from the network's DHCP leases, else from the guest agent; () until known."""
    for source in (
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    ):
        try:
            interfaces = domain.interfaceAddresses(source)
        except libvirt.libvirtError:
            continue
        found = tuple(
            address["addr"]
            for name, interface in sorted(interfaces.items())
            if name != "lo"
            for address in interface.get("addrs") or ()
        )
        if found:
            return found
    return ()
