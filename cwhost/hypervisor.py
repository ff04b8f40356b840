"""The hypervisor's absence or failure, turned into an answer a client can act on (a 503)."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from cwhost.errors import Unavailable
from drivers.base import HostInfo, HypervisorDriver, HypervisorUnavailable, ProvisioningError

log = logging.getLogger(__name__)


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
