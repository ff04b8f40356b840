"""Bringing the database in line with the hypervisor, at start-up and then periodically.

The hypervisor is the truth about domains: a domain that vanished makes its
workstation ``error``; one running that the database thought stopped is
recorded running, and the reverse stopped; what a crash left half done
(a deletion, provisioning) is finished. Domains cwhost does not know are
left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cwhost.errors import StorageUnavailable
from cwhost.ids import unix_to_rfc3339
from cwhost.model import ERROR, PROVISIONING, RELEASED, RUNNING, STOPPED, Workstation, domain_name
from cwhost.usage.ledger import UsageLedger
from cwhost.workspaces.registry import Workspaces
from cwhost.workstations.access import LiveAccess
from cwhost.workstations.background import BackgroundWork
from cwhost.workstations.guards import WorkstationLocks
from cwhost.workstations.host_keys import HostKeys
from cwhost.workstations.lifecycle import Lifecycle
from cwhost.workstations.store import WorkstationStore
from drivers.base import DomainState, HypervisorDriver, HypervisorUnavailable

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        store: WorkstationStore,
        lifecycle: Lifecycle,
        workspaces: Workspaces,
        ledger: UsageLedger,
        driver: HypervisorDriver,
        *,
        locks: WorkstationLocks,
        live: LiveAccess,
        background: BackgroundWork,
        host_keys: HostKeys,
        clock=time.time,
    ):
        self._host_keys = host_keys
        self._store = store
        self._lifecycle = lifecycle
        self._locks = locks
        self._live = live
        self._background = background
        self._workspaces = workspaces
        self._ledger = ledger
        self._driver = driver
        self._clock = clock
        self._foreign_reported: set[str] = set()

    def recover(self) -> None:
        """At start-up: reconcile, provision again what a crash left provisioning, tidy workspaces."""
        self._workspaces.recover()
        self.reconcile(resume_provisioning=True)

    def reconcile(self, resume_provisioning: bool = False) -> None:
        """One round. A workstation with a transition in flight is skipped: the transition leaves it
        consistent, and the next round looks again."""
        domains = self._driver.list_domains()
        found = self._store.to_reconcile(domains)
        for ws, deleted_at in found:
            lock = self._locks.of(ws.id)
            if not lock.acquire(blocking=False):
                continue
            try:
                state = domains.get(ws.domain_name)
                self._reconcile_one(ws, deleted_at, state, resume_provisioning)
                # The console and the guest's addresses, which reads show without asking the driver.
                if state == DomainState.RUNNING and not deleted_at:
                    self._live.refresh(ws)
                else:
                    self._live.forget(ws.id)
            finally:
                lock.release()
        known = {domain_name(ws.id) for ws, _ in found}
        for name in domains.keys() - known - self._foreign_reported:
            log.warning("domain %s is not a cwhost workstation; leaving it alone", name)
            self._foreign_reported.add(name)

    def _reconcile_one(self, ws: Workstation, deleted_at, state, resume_provisioning) -> None:
        if deleted_at:
            if state is not None:
                self._finish_deletion(ws, state)
        elif ws.status == PROVISIONING:
            if resume_provisioning:
                self._background.submit(self._lifecycle.provision, ws.id)
        elif state is None and ws.status in (STOPPED, RUNNING):
            self._record_lost(ws)
        elif state == DomainState.RUNNING and ws.status != RUNNING:
            log.warning("workstation %s is running on the hypervisor; recording it", ws.id)
            now = self._clock()
            self._store.transition(
                ws,
                now,
                RUNNING,
                ("warning", "Found running on the hypervisor; recorded as running."),
                status=RUNNING,
                started_at=ws.started_at or unix_to_rfc3339(now),
            )
        elif state == DomainState.STOPPED and (ws.status == RUNNING or ws.gpu_address or ws.ssh_port):
            log.warning("workstation %s is not running on the hypervisor; recording it", ws.id)
            at = self._last_seen(ws) if ws.status == RUNNING else self._clock()
            self._store.transition(
                ws,
                at,
                STOPPED,
                ("warning", "Found not running on the hypervisor (its VM stopped); recorded as stopped."),
                status=STOPPED,
                started_at=None,
                **RELEASED,
            )

    def _finish_deletion(self, ws: Workstation, state: DomainState) -> None:
        log.warning("finishing the deletion of %s", ws.id)
        if state == DomainState.RUNNING:
            self._driver.destroy(ws.domain_name)
        self._driver.delete(ws.domain_name)
        self._store.transition(ws, self._clock(), None, ("warning", "Its deletion, interrupted, was finished."))
        self._store.close_log(ws.id)
        self._host_keys.forget(ws.id)

    def _record_lost(self, ws: Workstation) -> None:
        log.error("workstation %s has no domain on the hypervisor", ws.id)
        gone = "Its virtual machine no longer exists on the hypervisor."
        self._store.transition(
            ws,
            self._last_seen(ws),
            None,
            ("error", gone),
            status=ERROR,
            started_at=None,
            **RELEASED,
            status_message=gone,
        )

    def _last_seen(self, ws: Workstation) -> float:
        """When a domain that vanished unwatched was last known to run: its last reading or launch."""
        return self._ledger.last_seen_running(ws.id) or self._clock()

    def run(self, stop: threading.Event, interval_seconds: float, also: Callable[[], None]) -> None:
        """Reconcile, then ``also`` (the enforcer), every interval until ``stop`` is set.

        The hypervisor's or the database's absence is no crash: the next round tries again.
        """
        while not stop.wait(interval_seconds):
            try:
                self.reconcile()
                also()
            except HypervisorUnavailable as exc:
                log.warning("hypervisor unavailable; reconciliation waits: %s", exc)
            except StorageUnavailable as exc:
                log.warning("database unavailable; reconciliation waits: %s", exc.message)
            except Exception:
                log.exception("reconciliation failed; trying again next interval")
