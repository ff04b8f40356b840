"""How a user reaches a running workstation, as its JSON shows it."""

from __future__ import annotations

import logging

from cwhost.config import Config
from cwhost.workstations.model import RUNNING, Reach, SshAccess, Workstation
from drivers.base import DriverError, HypervisorDriver

log = logging.getLogger(__name__)


def reach(ws: Workstation, driver: HypervisorDriver, config: Config) -> Reach | None:
    """How to reach a running workstation; None when it is not running.

    A read of a workstation must not fail because the hypervisor is away:
    SSH is known from the database, and what only the hypervisor knows
    (the console, the guest's addresses) is left out until it is back.
    """
    if ws.status != RUNNING:
        return None
    try:
        live = driver.access(ws.domain_name)
    except DriverError as exc:
        log.warning("no access details for %s: %s", ws.id, exc)
        live = None
    addresses = live.ip_addresses if live else ()
    user = config.guest.user
    ssh: SshAccess | None
    if ws.ssh_port:
        ssh = SshAccess(config.public_host, ws.ssh_port, user)
    else:
        # On a bridged network the guest has a LAN address of its own.
        ipv4 = [a for a in addresses if "." in a]
        ssh = SshAccess(ipv4[0], 22, user) if ipv4 else None
    return Reach(ssh, live.console if live else None, addresses)
