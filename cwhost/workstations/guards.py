"""What guards a workstation's transitions: one lock each, and the hypervisor's absence turned into a 503."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from contextlib import contextmanager

from cwhost.errors import Unavailable
from drivers.base import HostInfo, HypervisorDriver, HypervisorUnavailable, ProvisioningError

log = logging.getLogger(__name__)


class WorkstationLocks:
    """One lock per workstation: its transitions, and the reconciler's look at it, one at a time."""

    def __init__(self):
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def of(self, workstation_id: str) -> threading.Lock:
        with self._guard:
            return self._locks[workstation_id]

    @contextmanager
    def held(self, workstation_id: str):
        with self.of(workstation_id):
            yield

    def forget(self, workstation_id: str) -> None:
        with self._guard:
            self._locks.pop(workstation_id, None)


@contextmanager
def hypervisor(action: str):
    """Turn the hypervisor's absence into an answer a client can act on."""
    try:
        yield
    except HypervisorUnavailable as exc:
        log.warning("hypervisor unavailable during %s: %s", action, exc)
        raise Unavailable("The hypervisor is unreachable right now; try again shortly.") from exc
    except ProvisioningError as exc:
        # The launch is released and nothing changed: the operator's log has the whole reason.
        log.error("the hypervisor failed the %s: %s", action, exc)
        raise Unavailable(
            f"The hypervisor could not {action} the virtual machine ({str(exc)[:300]}); nothing was changed.",
            retry_after=60,
        ) from exc


def read_host(driver: HypervisorDriver) -> HostInfo:
    with hypervisor("host query"):
        return driver.host()
