"""The way into a running workstation's guest service, shared by its processes and its files: whose
workstation it is, whether it runs and offers the capability, and the guest's answers as the API's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import Conflict, Forbidden, InvalidRequest, InvalidState, NotFound, PayloadTooLarge, Unavailable
from cwhost.hypervisor import hypervisor
from cwhost.model import Workstation
from cwhost.workstations.guest_actions import AGENT_RETRY_SECONDS, running_workstation
from cwhost.workstations.store import WorkstationStore
from drivers.base import HypervisorDriver, InvalidDomainState
from drivers.guest_service.client import GuestService, GuestServiceRefused, GuestServiceUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# The guest's refusals, as the API answers them.
REFUSALS: dict[str, tuple[type, str]] = {
    "not_found": (NotFound, "No such file or directory in the guest"),
    "exists": (Conflict, "It exists already in the guest"),
    "not_empty": (Conflict, "The directory is not empty (delete it with recursive=true)"),
    "no_space": (Conflict, "The guest's disk is full"),
    "permission_denied": (Forbidden, "The guest user may not do this there"),
    "not_a_directory": (InvalidRequest, "A part of the path is not a directory"),
    "is_a_directory": (InvalidRequest, "It is a directory"),
    "too_large": (PayloadTooLarge, "It is larger than the limit"),
    "not_started": (InvalidRequest, "The command could not be started"),
    "invalid": (InvalidRequest, "The guest refused the request"),
}


def refusal(exc: GuestServiceRefused, path: str | None = None) -> Exception:
    kind, sentence = REFUSALS.get(exc.code, (Unavailable, "The guest could not do it"))
    where = f" ({path})" if path else ""
    return kind(f"{sentence}{where}: {exc}.")


class GuestServices:
    def __init__(self, store: WorkstationStore, driver: HypervisorDriver, config: Config):
        self._store = store
        self._driver = driver
        self._config = config

    def owned(self, principal: Principal, workstation_id: str) -> Workstation:
        return self._store.load(principal, workstation_id)

    def service(self, principal: Principal, workstation_id: str, capability: str) -> tuple[Workstation, GuestService]:
        ws = running_workstation(self._store, self._config, principal, workstation_id, capability)
        try:
            with hypervisor("reach"):
                return ws, self._driver.guest_service(ws.domain_name, self._config.guest.user)
        except InvalidDomainState as exc:
            raise InvalidState(f"Workstation {ws.id} is not running on the hypervisor.") from exc

    def calling(self, ws: Workstation, action: Callable[[], T], path: str | None = None) -> T:
        """``action`` on the guest service, its failures as the API's errors."""
        try:
            return action()
        except GuestServiceUnavailable as exc:
            raise Unavailable(
                f"Workstation {ws.id}'s guest service does not answer yet (is it still booting?): {exc}",
                retry_after=AGENT_RETRY_SECONDS,
            ) from exc
        except GuestServiceRefused as exc:
            raise refusal(exc, path) from exc

    def log(self, workstation_id: str, message: str) -> None:
        try:
            self._store.record(workstation_id, ("info", message))
        except Exception:  # a log line never fails what it tells of
            log.exception("could not log for %s: %s", workstation_id, message)
