"""Screen recordings of running workstations: started and stopped through the API, kept as WebM files
in the data directory, listed, downloaded and deleted, and counted against their account's storage
(their rows say how big each file is; cwhost.inventory sums them for the storage budget).

A recording a restart interrupted is ``failed``, its file kept as far as it got. A workstation's
recordings go when it is deleted.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.db.database import Database
from cwhost.errors import Conflict, InvalidRequest, InvalidState, NotFound, QuotaExceeded, TooManyRequests
from cwhost.ids import new_id
from cwhost.workspaces.storage_budget import StorageBudget
from cwhost.workstations.account_slots import RETRY_SECONDS
from cwhost.workstations.guest_actions import running_workstation
from cwhost.workstations.recorder import Recorder
from cwhost.workstations.store import WorkstationStore
from drivers.base import HypervisorDriver

log = logging.getLogger(__name__)
RECORDING, READY, FAILED = "recording", "ready", "failed"
# What a recording must have room for when it starts: a few minutes of a quiet screen.
ROOM_TO_START_BYTES = 16 * 1024 * 1024
STOP_WAIT_SECONDS = 150
# A start answers once the screen as it was then is in the recording, or after this long at most.
FIRST_PICTURE_SECONDS = 30


class Recordings:
    def __init__(self, db: Database, store: WorkstationStore, driver: HypervisorDriver, storage: StorageBudget,
                 config: Config, clock):  # fmt: skip
        self._db, self._store, self._driver, self._storage = db, store, driver, storage
        self._config, self._settings, self._clock = config, config.recordings, clock
        self._dir = config.recordings_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._recorders: dict[str, Recorder] = {}

    def path(self, recording_id: str) -> Path:
        return self._dir / f"{recording_id}.webm"

    def recover(self) -> None:
        """Recordings a stop of the service cut short: failed, kept as far as they got."""
        for row in self._db.query("SELECT id FROM recordings WHERE status = ?", [RECORDING]):
            self._finish(row["id"], FAILED, "cwhost stopped while it recorded", self._size(row["id"]))

    def _size(self, recording_id: str) -> int:
        path = self.path(recording_id)
        return path.stat().st_size if path.exists() else 0

    def start(self, principal: Principal, workstation_id: str, frames_per_second: int | None) -> dict:
        ws = running_workstation(self._store, self._config, principal, workstation_id, "screenshot")
        fps = frames_per_second or self._settings.frames_per_second
        if fps > self._settings.max_frames_per_second:
            raise InvalidRequest(
                f"A recording takes at most {self._settings.max_frames_per_second} pictures a second here.",
                details={"framesPerSecond": [f"Must be at most {self._settings.max_frames_per_second}."]},
            )
        with self._lock, self._storage.lock:
            self._check_room(principal.account_id, ws.id)
            row = {
                "id": new_id("rec"), "account_id": principal.account_id, "workstation_id": ws.id,
                "status": RECORDING, "frames_per_second": fps, "started_at": self._clock(), "ended_at": None,
                "size_bytes": 0, "message": None,
            }  # fmt: skip
            with self._db.write() as tx:
                tx.table("recordings").insert(row)
            recorder = Recorder(
                lambda: self._driver.screen_frame(ws.domain_name), self.path(row["id"]), fps,
                self._settings.max_seconds, lambda size: self._measured(row["id"], principal.account_id, size),
                lambda outcome, message, size: self._finish(row["id"], outcome, message, size),
            )  # fmt: skip
            self._recorders[row["id"]] = recorder
        recorder.thread.start()
        self._store.record(ws.id, ("info", f"Recording {row['id']} of the screen started."))
        # So what a client does once it has the answer is in the video.
        recorder.first_picture.wait(FIRST_PICTURE_SECONDS)
        return self._db.query("SELECT * FROM recordings WHERE id = ?", [row["id"]])[0]

    def _check_room(self, account_id: str, workstation_id: str) -> None:
        rows = self._db.query(
            "SELECT workstation_id FROM recordings WHERE status = ? AND account_id = ?", [RECORDING, account_id]
        )
        if any(row["workstation_id"] == workstation_id for row in rows):
            raise Conflict(f"Workstation {workstation_id} is being recorded already; stop that recording first.")
        if len(rows) >= self._settings.max_per_account:
            raise TooManyRequests(
                f"This account already records {len(rows)} screens, the most it may (recordings.max_per_account).",
                retry_after=RETRY_SECONDS,
            )
        self._storage.require(account_id, ROOM_TO_START_BYTES)

    def _measured(self, recording_id: str, account_id: str, size: int) -> str | None:
        """Record the file's size; a reason to stop if the account's storage would be passed."""
        with self._storage.lock:
            with self._db.write() as tx:
                tx.execute("UPDATE recordings SET size_bytes = ? WHERE id = ?", [size, recording_id])
            try:
                self._storage.require(account_id, ROOM_TO_START_BYTES // 4)
            except QuotaExceeded as exc:
                return f"the account's storage is full ({exc})"
        return None

    def _finish(self, recording_id: str, outcome: str, message: str | None, size: int) -> None:
        with self._lock:
            self._recorders.pop(recording_id, None)
        with self._db.write() as tx:
            tx.execute(
                "UPDATE recordings SET status = ?, message = ?, size_bytes = ?, ended_at = ? WHERE id = ?",
                [outcome, message, size, self._clock(), recording_id],
            )
        log.info("recording %s %s (%s bytes)%s", recording_id, outcome, size, f": {message}" if message else "")

    def listed(self, principal: Principal, workstation_id: str) -> list[dict]:
        ws = self._store.load(principal, workstation_id)
        return self._db.query("SELECT * FROM recordings WHERE workstation_id = ? ORDER BY started_at, id", [ws.id])

    def one(self, principal: Principal, workstation_id: str, recording_id: str) -> dict:
        ws = self._store.load(principal, workstation_id)
        rows = self._db.query("SELECT * FROM recordings WHERE id = ? AND workstation_id = ?", [recording_id, ws.id])
        if not rows:
            raise NotFound(f"Workstation {ws.id} has no recording {recording_id}.")
        return rows[0]

    def stop(self, principal: Principal, workstation_id: str, recording_id: str) -> dict:
        """Stop it and wait for its file to be whole; 400 if it has ended already."""
        row = self.one(principal, workstation_id, recording_id)
        with self._lock:
            recorder = self._recorders.get(row["id"])
        if recorder is not None:
            recorder.stop()
            recorder.done.wait(STOP_WAIT_SECONDS)
        elif row["status"] != RECORDING:
            raise InvalidState(f"Recording {recording_id} has ended ({row['status']}).")
        return self.one(principal, workstation_id, recording_id)

    def content(self, principal: Principal, workstation_id: str, recording_id: str) -> Path:
        row = self.one(principal, workstation_id, recording_id)
        if row["status"] == RECORDING:
            raise InvalidState(f"Recording {recording_id} is still recording; stop it first.")
        path = self.path(row["id"])
        if not path.exists():
            raise NotFound(f"Recording {recording_id} has no video (it failed before its first picture).")
        return path

    def delete(self, principal: Principal, workstation_id: str, recording_id: str) -> None:
        row = self.one(principal, workstation_id, recording_id)
        self._remove(row["id"])

    def remove_of(self, workstation_id: str) -> None:
        """Every recording of a workstation being deleted."""
        for row in self._db.query("SELECT id FROM recordings WHERE workstation_id = ?", [workstation_id]):
            self._remove(row["id"])

    def _remove(self, recording_id: str) -> None:
        with self._lock:
            recorder = self._recorders.get(recording_id)
        if recorder is not None:
            recorder.stop()
            recorder.done.wait(STOP_WAIT_SECONDS)
        with self._db.write() as tx:
            tx.execute("DELETE FROM recordings WHERE id = ?", [recording_id])
        self.path(recording_id).unlink(missing_ok=True)
