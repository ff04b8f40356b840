"""Whether a running workstation is ready, as its own guest says, and waiting until it is.

A guest is ready when its first-boot work is done, its workspace is mounted,
sshd answers, and, for browser types, DevTools answer. The image's readiness
unit writes what it has seen of its boot to a file the driver reads over the
domain's own agent channel (``driver.readiness``): no guest can write another's,
and nothing here guesses from elapsed time. A round asks every running
workstation that is not ready yet; the first ready report is recorded
(``readyAt``, and a log entry with its phases). One still not ready
``timeout_seconds`` after its launch gets a log entry with what its guest last
said, and a ``statusMessage``; it stays running, and is still recorded ready
if it gets there.
"""

from __future__ import annotations

import logging
import threading
import time

from cwhost.config.server import ReadinessConfig
from cwhost.db.outage import StorageOutage
from cwhost.errors import StorageUnavailable
from cwhost.ids import rfc3339_to_unix, unix_to_rfc3339
from cwhost.model import Workstation
from cwhost.workstations.account_slots import AccountSlots
from cwhost.workstations.guards import WorkstationLocks
from cwhost.workstations.store import WorkstationStore
from drivers.base import DriverError, HypervisorDriver, ReadinessReport

log = logging.getLogger(__name__)

# How often a waiting request looks again, besides being woken when a workstation gets ready.
_WAIT_STEP_SECONDS = 0.5


class Readiness:
    def __init__(
        self,
        store: WorkstationStore,
        driver: HypervisorDriver,
        locks: WorkstationLocks,
        settings: ReadinessConfig,
        clock=time.time,
    ):
        self._store = store
        self._driver = driver
        self._locks = locks
        self._settings = settings
        self._clock = clock
        self._changed = threading.Condition()
        # Requests waiting for readiness: bounded per account and in all (they have threads of their own).
        self.waits = AccountSlots(
            settings.max_waits_per_account, "waits for readiness", "readiness.max_waits_per_account", settings.max_waits
        )

    def check(self) -> None:
        """One round: record what the guests that are not ready yet say."""
        for ws in self._store.running():
            if ws.ready_at is None:
                self._check_one(ws, self._report(ws))

    def _report(self, ws: Workstation) -> ReadinessReport | None:
        try:
            return self._driver.readiness(ws.domain_name)
        except DriverError as exc:
            log.debug("no readiness report from %s: %s", ws.id, exc)
            return None

    def _check_one(self, ws: Workstation, report: ReadinessReport | None) -> None:
        now = self._clock()
        waited = now - rfc3339_to_unix(ws.started_at) if ws.started_at else 0.0
        if report is not None and report.ready:
            self._record(
                ws, ("info", ready_sentence(waited, report)), ready_at=unix_to_rfc3339(now), status_message=None
            )
        elif waited > self._settings.timeout_seconds and ws.status_message is None:
            self._record(
                ws,
                ("warning", f"Not ready {waited:.0f} s after its launch; {last_said(report)}"),
                status_message=f"Not ready {waited:.0f} s after its launch (readiness.timeout_seconds); see its log.",
            )

    def _record(self, ws: Workstation, event: tuple[str, str], **columns) -> None:
        """Record it if the workstation is still in the run that was asked; a stop or relaunch meanwhile wins."""
        lock = self._locks.of(ws.id)
        if not lock.acquire(blocking=False):
            return  # a transition is under way: ask again next round
        try:
            current = self._store.find(ws.id)
            if current is not None and current.started_at == ws.started_at and current.ready_at is None:
                self._store.record(ws.id, event, **columns)
        finally:
            lock.release()
        if "ready_at" in columns:
            log.info("workstation %s ready", ws.id)
            with self._changed:
                self._changed.notify_all()

    def wait(self, workstation_id: str, seconds: float) -> None:
        """Return once the workstation is ready, no longer running, or ``seconds`` have passed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ws = self._store.find(workstation_id)
            if ws is None or ws.ready or ws.status_message is not None or not ws.started_at:
                return
            with self._changed:
                self._changed.wait(min(left, _WAIT_STEP_SECONDS))

    def run(self, stop: threading.Event) -> None:
        """A round every ``poll_seconds`` until ``stop`` is set; a failed round is logged, and the next goes on."""
        outage = StorageOutage(log, "readiness cannot record", "readiness recording again")
        while not stop.wait(self._settings.poll_seconds):
            try:
                self.check()
                outage.wrote()
            except StorageUnavailable as exc:
                outage.failed(exc)  # a guest's ready report is read again next round
            except Exception:
                log.exception("readiness round failed; the next one asks again")


def ready_sentence(waited: float, report: ReadinessReport) -> str:
    return f"Ready {waited:.1f} s after its launch; its guest's boot: {_phases(report)}."


def last_said(report: ReadinessReport | None) -> str:
    if report is None:
        return "its guest has said nothing of its boot (its agent does not answer, or it wrote no report)."
    if not report.phases:
        return "its guest has said it has passed no phase of its boot yet."
    return f"its guest last said: {_phases(report)}, and not ready."


def _phases(report: ReadinessReport) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.phases) + " (seconds since it booted)"
