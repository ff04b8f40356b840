"""How a user reaches a running workstation, as its JSON shows it, read with no call to the hypervisor.

What only the hypervisor knows (the console, with this run's password, and
the guest's addresses) is asked of it at launch and by the reconciler's
rounds, and kept in memory: a list of 200 running workstations makes no
driver call, and the console password is never written anywhere.
"""

from __future__ import annotations

import logging
import threading

from cwhost.config.server import Config
from cwhost.model import RUNNING, Reach, SshAccess, Workstation
from cwhost.workstations.host_keys import host_key_fingerprint, known_hosts_line
from drivers.base import Access, DriverError, HypervisorDriver

log = logging.getLogger(__name__)


class LiveAccess:
    """The driver's Access of each running workstation, by id."""

    def __init__(self, driver: HypervisorDriver):
        self._driver = driver
        self._lock = threading.Lock()
        self._by_id: dict[str, Access] = {}

    def refresh(self, ws: Workstation) -> None:
        """Ask the driver again; what it cannot say now stays as it was."""
        try:
            access = self._driver.access(ws.domain_name)
        except DriverError as exc:
            log.warning("no access details for %s: %s", ws.id, exc)
            return
        with self._lock:
            if access is None:
                self._by_id.pop(ws.id, None)
            else:
                self._by_id[ws.id] = access

    def forget(self, workstation_id: str) -> None:
        with self._lock:
            self._by_id.pop(workstation_id, None)

    def get(self, workstation_id: str) -> Access | None:
        # One dict look-up is atomic under the GIL, and every list asks once per row: no lock.
        return self._by_id.get(workstation_id)


def offers_browser(ws: Workstation, config: Config) -> bool:
    """Whether a browser type's DevTools are offered (access.browser.cdpUrl).

    Only on cwhost's own network, where the host alone reaches the guest's
    DevTools relay: on an operator's LAN bridge, every LAN peer would too.
    """
    wtype = config.workstation_type(ws.type)
    return wtype is not None and "chromium" in wtype.software and config.guests_on_own_network


def reach(ws: Workstation, live: Access | None, config: Config, host: str) -> Reach | None:
    """How to reach a running workstation; None when it is not running.

    SSH is known from the database, at the server's ``host`` as the caller
    names it; the console and the guest's addresses are left out until the
    driver has told them (``live``).
    """
    if ws.status != RUNNING:
        return None
    addresses = live.ip_addresses if live else ()
    user = config.guest.user
    ssh: SshAccess | None
    if ws.ssh_port:
        ssh = _ssh(host, ws.ssh_port, user, ws.ssh_host_key)
    else:
        # On a bridged network the guest has a LAN address of its own.
        ipv4 = [a for a in addresses if "." in a]
        ssh = _ssh(ipv4[0], 22, user, ws.ssh_host_key) if ipv4 else None
    return Reach(ssh, live.console if live else None, addresses)


def _ssh(host: str, port: int, user: str, host_key: str | None) -> SshAccess:
    if host_key is None:
        return SshAccess(host, port, user)
    return SshAccess(host, port, user, host_key_fingerprint(host_key), known_hosts_line(host, port, host_key))
