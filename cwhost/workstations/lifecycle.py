"""The workstation state machine: create, provision, launch, stop, patch, delete.

States: ``provisioning`` → ``stopped`` ⇄ ``running``; ``error`` when provisioning
fails or the hypervisor lost the domain. The order of effects is chosen so
that a crash at any point leaves something the reconciler can finish:

- create commits the row as ``provisioning`` before the driver is called;
  recovery provisions such rows again (``define`` is idempotent).
- launch commits the GPU it takes before starting the domain, so no other
  launch can take the same card; recovery frees a GPU whose domain is not
  running and marks running a domain the database thought stopped.
- delete commits ``deleted_at`` before removing the domain; recovery removes
  the domain of a deleted row that is still there.

A per-workstation lock serialises its transitions: enough, as one process owns the database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from cwhost.accounts.credit import Accounts
from cwhost.accounts.ssh_keys import SshKeys, authorized_lines
from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import InvalidState, StorageUnavailable
from cwhost.hypervisor import hypervisor, read_host
from cwhost.ids import unix_to_rfc3339
from cwhost.model import (
    ERROR,
    PROVISIONING,
    RELEASED,
    RUNNING,
    STOPPED,
    Workstation,
    describe_change,
)
from cwhost.usage.sampler import Sampler
from cwhost.workspaces.registry import Workspace, Workspaces
from cwhost.workspaces.storage_budget import StorageBudget
from cwhost.workstations import sizing
from cwhost.workstations.access import LiveAccess
from cwhost.workstations.allocation import Allocation
from cwhost.workstations.background import BackgroundWork
from cwhost.workstations.changes import changed, checked_configuration
from cwhost.workstations.guards import WorkstationLocks
from cwhost.workstations.host_keys import HostKeys
from cwhost.workstations.recordings import Recordings
from cwhost.workstations.store import WorkstationStore
from drivers.base import (
    GIB,
    DomainState,
    DriverError,
    GuestSeed,
    HostInfo,
    HypervisorDriver,
    HypervisorUnavailable,
    InvalidDomainState,
)
from drivers.libvirt.cloud_init import hostname_of

log = logging.getLogger(__name__)

PROVISION_RETRY_DELAYS = (1, 2, 4, 8, 16)
# How often a stopping guest's process is read while it shuts down.
STOP_READING_SECONDS = 0.1


class Lifecycle:
    def __init__(
        self,
        store: WorkstationStore,
        allocation: Allocation,
        accounts: Accounts,
        workspaces: Workspaces,
        storage: StorageBudget,
        ssh_keys: SshKeys,
        driver: HypervisorDriver,
        config: Config,
        *,
        locks: WorkstationLocks,
        live: LiveAccess,
        images: sizing.Images,
        background: BackgroundWork,
        host_keys: HostKeys,
        final_reading: Sampler,
        recordings: Recordings,
        clock=time.time,
    ):
        self._recordings = recordings
        self._store = store
        self._allocation = allocation
        self._accounts = accounts
        self._workspaces = workspaces
        self._storage = storage
        self._ssh_keys = ssh_keys
        self._driver = driver
        self._config = config
        self._locks = locks
        self._live = live
        self._images = images
        self._background = background
        self._host_keys = host_keys
        self._sampler = final_reading
        self._clock = clock

    def _final_reading(self, ws: Workstation) -> None:
        """What the domain used since the last tick, read before it powers off."""
        try:
            self._sampler.sample(only={ws.id})
        except Exception:
            log.exception("final reading of %s failed; the next tick has what it missed", ws.id)

    def host_info(self) -> HostInfo:
        return read_host(self._driver)

    # -- reads that need the hypervisor ------------------------------------------------

    def console_log(self, ws: Workstation) -> Path | None:
        """The serial console's log file, if the driver keeps one and it exists yet."""
        path = self._driver.console_log(ws.domain_name)
        return path if path is not None and path.is_file() else None

    # -- create ------------------------------------------------------------------------

    def create(
        self,
        principal: Principal,
        name: str,
        configuration: dict | None,
        type_id: str | None = None,
        workspace_id: str | None = None,
        idle_timeout_minutes: int | None = None,
        running_timeout_minutes: int | None = None,
        ssh_public_keys: list[str] | None = None,
    ) -> Workstation:
        """Create a workstation; a type's defaults fill what the request leaves out."""
        request = sizing.resolve(
            self._config, configuration, type_id, idle_timeout_minutes, running_timeout_minutes, self._images
        )
        keys = authorized_lines(ssh_public_keys or [])
        if workspace_id is not None:
            self._workspaces.attachable(principal, workspace_id)
        sizing.validate(self._config, self.host_info(), request.configuration)
        self._accounts.require_credit(principal.account_id)
        now = self._clock()
        ws = request.workstation(principal.account_id, name, type_id, workspace_id, keys, now)
        ws = replace(ws, ssh_host_key=self._host_keys.make(ws.id))
        try:
            # Promised before the write, so that two creates cannot both take the last place.
            with self._storage.promised(
                principal.account_id,
                ws.id,
                request.configuration.storage_gb * GIB,
                lambda creating: self._accounts.require_quota_for_another_workstation(principal.account_id, creating),
            ):
                self._store.insert(ws, now, "Created; provisioning its disk and virtual machine.")
        except BaseException:
            self._host_keys.forget(ws.id)
            raise
        self._background.submit(self.provision, ws.id)
        return ws

    def provision(self, workstation_id: str) -> None:
        """Define the domain and its disk, retrying while the hypervisor is away."""
        with self._locks.held(workstation_id):
            ws = self._store.reload(workstation_id)
            if ws.status != PROVISIONING:
                return
            failure = self._define(ws)
            if failure is None:
                self._store.record(workstation_id, ("info", "Provisioned; it is stopped."), status=STOPPED)
                log.info("workstation %s provisioned", workstation_id)
                return
            log.error("workstation %s: %s", workstation_id, failure)
            # No disk exists, so nothing is billed from here on.
            self._store.transition(ws, self._clock(), None, ("error", failure), status=ERROR, status_message=failure)

    def _define(self, ws: Workstation) -> str | None:
        """None once the domain is defined; else why provisioning failed."""
        for delay in (*PROVISION_RETRY_DELAYS, None):
            try:
                self._driver.define(ws.spec())
                return None
            except HypervisorUnavailable as exc:
                if delay is None:
                    return f"Provisioning failed: the hypervisor stayed unreachable ({exc})."
                time.sleep(delay)
            except DriverError as exc:
                return f"Provisioning failed: {exc}"
            except Exception:
                log.exception("provisioning %s failed unexpectedly", ws.id)
                return "Provisioning failed because of an internal error."
        return "Provisioning failed."

    # -- launch ------------------------------------------------------------------------

    def launch(self, principal: Principal, workstation_id: str) -> Workstation:
        with self._locks.held(workstation_id):
            ws = self._store.load(principal, workstation_id)
            if ws.status != STOPPED:
                raise InvalidState(f"Workstation {ws.id} is {ws.status}; only a stopped workstation can be launched.")
            with self._allocation.claimed(ws) as taken:
                gpu, workspace = taken.gpu, taken.workspace
                share = self._workspaces.directory(workspace.id) if workspace else None
                seed = self._seed(ws, workspace is not None)
                with hypervisor("launch"):
                    self._driver.start(
                        ws.domain_name, gpu, share, seed, taken.forwards(self._config.access.forward_listen)
                    )
                try:
                    self._record_launch(ws, gpu, workspace)
                except StorageUnavailable:
                    # Unrecorded, the VM would run unbilled until the reconciler
                    # adopted it, after the client was told the launch failed.
                    self._power_off_unrecorded(ws)
                    raise
            log.info("workstation %s launched (gpu %s)", ws.id, gpu.pci_address if gpu else None)
            self._live.refresh(ws)
            return self._store.reload(ws.id)

    def _record_launch(self, ws: Workstation, gpu, workspace: Workspace | None) -> None:
        now = self._clock()
        launched = "Launched" + (f" with the GPU at {gpu.pci_address}" if gpu else "")
        launched += f" and workspace {workspace.id} shared." if workspace else "."
        self._store.transition(
            ws, now, RUNNING, ("info", launched), status=RUNNING, started_at=unix_to_rfc3339(now), status_message=None
        )

    def _seed(self, ws: Workstation, with_share: bool) -> GuestSeed:
        """What the guest is told at this boot: the account's keys as they are now, then the workstation's own;
        and its host key."""
        keys = list(dict.fromkeys([*self._ssh_keys.of_account(ws.account_id), *ws.ssh_public_keys]))
        public = ws.ssh_host_key
        if public is None:
            # Made before cwhost made host keys: it has one from now on.
            public = self._host_keys.make(ws.id)
            self._store.record(ws.id, ssh_host_key=public)
        return GuestSeed(
            hostname_of(ws.name),
            self._config.guest.user,
            tuple(keys),
            mount_share=with_share,
            host_key=self._host_keys.of(ws.id, public),
        )

    def _power_off_unrecorded(self, ws: Workstation) -> None:
        try:
            self._driver.destroy(ws.domain_name)
        except DriverError as exc:
            log.error("workstation %s runs unrecorded and could not be powered off: %s", ws.id, exc)

    # -- stop --------------------------------------------------------------------------

    def stop(self, principal: Principal, workstation_id: str, force: bool = False, reason: str | None = None):
        """Stop a running workstation; ``reason`` says why when cwhost itself stops it."""
        with self._locks.held(workstation_id):
            ws = self._store.load(principal, workstation_id)
            if ws.status != RUNNING:
                raise InvalidState(f"Workstation {ws.id} is {ws.status}; only a running workstation can be stopped.")
            self._stop_held(ws, force, reason)
            return self._store.reload(ws.id)

    def _stop_held(self, ws: Workstation, force: bool, reason: str | None) -> None:
        """Stop ``ws``, metered to the end; the caller holds its lock."""
        self._final_reading(ws)
        with hypervisor("stop"):
            how = self._power_off(ws, force)
        event = ("warning", f"Stopped because {reason}. {how}") if reason else ("info", f"Stopped. {how}")
        self._store.transition(
            ws, self._clock(), STOPPED, event, status=STOPPED, started_at=None, status_message=None, **RELEASED
        )
        self._live.forget(ws.id)
        log.info("workstation %s stopped (%s)", ws.id, "forced" if force else "graceful")

    def _power_off(self, ws: Workstation, force: bool) -> str:
        """Power the domain off, gracefully unless ``force``; the log's sentence for how it went."""
        timeout = self._config.driver.stop_timeout_seconds
        try:
            if force:
                self._driver.destroy(ws.domain_name)
                return "It was powered off at once, as asked."
            if self._shut_down_metering(ws, timeout):
                return "The guest powered off when asked."
            self._driver.destroy(ws.domain_name)
            return f"The guest did not power off within {timeout:g} s, so it was forced."
        except InvalidDomainState:
            return "It had already powered off."

    def _shut_down_metering(self, ws: Workstation, timeout: float) -> bool:
        """Ask the guest to power off and read its process until it is gone; True if it went in time.

        The CPU a guest burns while it shuts down is billable like any other:
        reading it every STOP_READING_SECONDS loses at most that much per vCPU
        when the process exits between two readings.
        """
        deadline = time.monotonic() + timeout
        self._driver.shutdown(ws.domain_name, 0)
        while True:
            self._final_reading(ws)
            if self._driver.state(ws.domain_name) != DomainState.RUNNING:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(STOP_READING_SECONDS, left))

    # -- patch -------------------------------------------------------------------------

    def patch(
        self,
        principal: Principal,
        workstation_id: str,
        name: str | None,
        configuration: dict,
        idle_timeout_minutes: int | None = None,
        running_timeout_minutes: int | None = None,
        ssh_public_keys: list[str] | None = None,
    ) -> Workstation:
        keys = tuple(authorized_lines(ssh_public_keys)) if ssh_public_keys is not None else None
        with self._locks.held(workstation_id):
            ws = self._store.load(principal, workstation_id)
            if ws.status != STOPPED:
                raise InvalidState(f"Workstation {ws.id} is {ws.status}; it can be changed only when stopped.")
            new = checked_configuration(ws, configuration, self._config, self.host_info())
            with self._storage.promised(ws.account_id, ws.id, new.storage_gb * GIB):
                return self._reconfigure(ws, new, name, keys, idle_timeout_minutes, running_timeout_minutes)

    def _reconfigure(self, ws, new, name, keys, idle_timeout_minutes, running_timeout_minutes) -> Workstation:
        """Change the domain and the record to ``new``; the domain goes back if the record cannot be written."""
        updated, columns = changed(ws, new, name, keys, idle_timeout_minutes, running_timeout_minutes)
        if updated.spec() != ws.spec():
            with hypervisor("update"):
                self._driver.update(updated.spec())
        try:
            event = ("info", describe_change(ws, updated))
            self._store.transition(ws, self._clock(), STOPPED, event, configuration=new, **columns)
        except Exception:
            # The domain changed but the record did not: put the domain back
            # (a disk that grew stays grown, which only wastes space).
            if updated.spec() != ws.spec():
                self._driver.update(replace(ws.spec(), storage_gb=new.storage_gb))
            raise
        return self._store.reload(ws.id)

    # -- delete ------------------------------------------------------------------------

    def delete(self, principal: Principal, workstation_id: str, force: bool = False) -> None:
        """Delete a stopped or failed workstation; with ``force``, a running one too, stopped at once first."""
        with self._locks.held(workstation_id):
            ws = self._store.load(principal, workstation_id)
            if force and ws.status == RUNNING:
                self._stop_held(ws, force=True, reason=None)
                ws = self._store.reload(ws.id)
            if ws.status not in (STOPPED, ERROR):
                raise InvalidState(
                    f"Workstation {ws.id} is {ws.status}; only a stopped or failed workstation can be deleted"
                    + ("." if ws.status != RUNNING else " (or a running one with ?force=true).")
                )
            self._store.record(ws.id, deleted_at=unix_to_rfc3339(self._clock()))
            try:
                with hypervisor("delete"):
                    self._driver.delete(ws.domain_name)
            except BaseException:
                self._store.record(ws.id, deleted_at=None)
                raise
            self._store.transition(ws, self._clock(), None, ("info", "Deleted, with its disk."))
            self._store.close_log(ws.id)
            self._host_keys.forget(ws.id)
            self._recordings.remove_of(ws.id)
        self._locks.forget(ws.id)
        self._live.forget(ws.id)
        log.info("workstation %s deleted", ws.id)
