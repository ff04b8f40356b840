"""All SQL on workstations and their events.

``transition`` is the one way a workstation changes state: it writes the row,
closes the usage segment and opens the next, and logs the event, in one
transaction, so billing and the record can never disagree.

Live workstations are read from memory (cwhost.workstations.records), which
every write here brings up to date before it returns.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cwhost.accounts.tokens import Principal
from cwhost.db.database import Database, split_page
from cwhost.errors import NotFound
from cwhost.model import DOMAIN_PREFIX, RUNNING, Configuration, Workstation, from_row, to_row
from cwhost.usage.ledger import close_segment, open_segment
from cwhost.workstations.records import Records

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogEntry:
    """One entry of a workstation's log: an event (``log-N``), or its serial console."""

    id: str
    workstation_id: str
    type: str
    level: str
    created_at: float
    message: str


@dataclass(frozen=True)
class Page:
    items: list[Workstation]
    next_cursor: str | None


# The writes here are plain SQL rather than sqlite-utils' insert() and
# update(), which read the schema first: a dozen statements, each letting go
# of the GIL and waiting to take it back, while the write lock is held.


# A log is for reading what happened lately: one tenant's loop of commands must not grow the database without end.
MAX_EVENTS_PER_WORKSTATION = 10_000
PRUNE_EVERY = 100


def log_event(tx, workstation_id: str, at: float, level: str, message: str) -> None:
    """Add an event; a workstation keeps its newest MAX_EVENTS_PER_WORKSTATION (give or take PRUNE_EVERY)."""
    cursor = tx.execute(
        "INSERT INTO workstation_events (workstation_id, at, level, message) VALUES (?, ?, ?, ?)",
        [workstation_id, at, level, message],
    )
    # Now and then, not at every event: skipping to the cut costs a walk of the index.
    if cursor.lastrowid % PRUNE_EVERY == 0:
        keep_newest_events(tx, workstation_id, MAX_EVENTS_PER_WORKSTATION)


def keep_newest_events(tx, workstation_id: str, count: int) -> None:
    tx.execute(
        "DELETE FROM workstation_events WHERE workstation_id = ? AND id <= (SELECT id FROM workstation_events"
        " WHERE workstation_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        [workstation_id, workstation_id, count],
    )


def _insert_workstation(tx, row: dict) -> None:
    names = ", ".join(f'"{name}"' for name in row)
    tx.execute(f"INSERT INTO workstations ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def _update_workstation(tx, workstation_id: str, columns: dict) -> None:
    assignments = ", ".join(f'"{name}" = ?' for name in columns)
    cursor = tx.execute(f"UPDATE workstations SET {assignments} WHERE id = ?", [*columns.values(), workstation_id])
    if cursor.rowcount != 1:
        raise LookupError(f"no workstation {workstation_id} to update")


class WorkstationStore:
    def __init__(self, db: Database, clock=time.time):
        self._db = db
        self._clock = clock
        self._records = Records()

    # -- reading -------------------------------------------------------------------

    @contextmanager
    def _records_now(self) -> Iterator[Records]:
        with self._records.lock:
            if self._records.stale:
                rows = self._db.query("SELECT rowid AS row_number, * FROM workstations WHERE deleted_at IS NULL")
                self._records.replace_all((row["row_number"], from_row(row)) for row in rows)
            yield self._records

    def load(self, principal: Principal, workstation_id: str, include_deleted: bool = False) -> Workstation:
        """The caller's workstation (any, for an admin); NotFound as for one that does not exist."""
        if include_deleted:
            row = self._db.query_one("SELECT * FROM workstations WHERE id = ?", [workstation_id])
            found = from_row(row) if row is not None else None
        else:
            found = self.find(workstation_id)
        if found is None or not (found.account_id == principal.account_id or principal.admin):
            raise NotFound(f"No workstation {workstation_id!r}.")
        return found

    def reload(self, workstation_id: str) -> Workstation:
        found = self.find(workstation_id)
        if found is not None:
            return found
        return from_row(self._db.query_row("SELECT * FROM workstations WHERE id = ?", [workstation_id]))

    def page(
        self, principal: Principal, limit: int, after: int | None = None, status: str | None = None, type_id=None
    ) -> Page:
        """One page in creation order; the cursor is the last row's rowid."""

        def wanted(ws: Workstation) -> bool:
            return (status is None or ws.status == status) and (type_id is None or ws.type == type_id)

        filtered = status is not None or type_id is not None
        with self._records_now() as records:
            account = None if principal.admin else principal.account_id
            rows = records.page(account, after or 0, limit + 1, wanted if filtered else None)
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return Page(items=[ws for _, ws in rows[:limit]], next_cursor=next_cursor)

    def running(self) -> list[Workstation]:
        with self._records_now() as records:
            return [ws for ws in records.all() if ws.status == RUNNING]

    def find(self, workstation_id: str) -> Workstation | None:
        """A workstation that exists, whoever's it is."""
        with self._records_now() as records:
            return records.get(workstation_id)

    def current(self, workstation_id: str) -> Workstation:
        """A workstation known to exist, as last written."""
        found = self.find(workstation_id)
        if found is None:
            raise NotFound(f"No workstation {workstation_id}.")
        return found

    def running_one(self, workstation_id: str) -> Workstation | None:
        found = self.find(workstation_id)
        return found if found is not None and found.status == RUNNING else None

    def running_or_holding_a_gpu(self) -> list[Workstation]:
        rows = self._db.query(
            "SELECT * FROM workstations WHERE deleted_at IS NULL AND (status = ? OR gpu_address IS NOT NULL)",
            [RUNNING],
        )
        return [from_row(r) for r in rows]

    # Deleted workstations hold no port and no GPU: only a stopped or failed
    # workstation can be deleted, and stopping or failing releases them.

    def held_ports(self) -> set[int]:
        """Host ports forwarded to any workstation's SSH."""
        with self._records_now() as records:
            return {ws.ssh_port for ws in records.all() if ws.ssh_port is not None}

    def held_gpu_addresses(self) -> set[str]:
        with self._records_now() as records:
            return {ws.gpu_address for ws in records.all() if ws.gpu_address is not None}

    def running_with_workspace(self, workspace_id: str) -> str | None:
        row = self._db.query_one(
            "SELECT id FROM workstations WHERE workspace_id = ? AND status = ? AND deleted_at IS NULL",
            [workspace_id, RUNNING],
        )
        return row["id"] if row else None

    def to_reconcile(self, domain_names) -> list[tuple[Workstation, str | None]]:
        """Every live workstation, and deleted ones whose domain is still there; with their deletion time."""
        ids = [name.removeprefix(DOMAIN_PREFIX) for name in domain_names if name.startswith(DOMAIN_PREFIX)]
        rows = self._db.query(
            "SELECT * FROM workstations WHERE deleted_at IS NULL OR id IN (SELECT value FROM json_each(?))",
            [json.dumps(ids)],
        )
        return [(from_row(r), r["deleted_at"]) for r in rows]

    def events(self, workstation_id: str, limit: int, after: int | None) -> tuple[list[LogEntry], str | None]:
        """A page of a workstation's log events, oldest first, and the next cursor."""
        rows = self._db.query(
            "SELECT * FROM workstation_events WHERE workstation_id = ? AND id > ? ORDER BY id LIMIT ?",
            [workstation_id, after or 0, limit + 1],
        )
        rows, next_cursor = split_page(rows, limit, "id")
        entries = [LogEntry(f"log-{r['id']}", workstation_id, "event", r["level"], r["at"], r["message"]) for r in rows]
        return entries, next_cursor

    def event(self, workstation_id: str, event_id: int) -> dict:
        row = self._db.query_one(
            "SELECT * FROM workstation_events WHERE workstation_id = ? AND id = ?", [workstation_id, event_id]
        )
        if row is None:
            raise NotFound(f"No log {event_id} for workstation {workstation_id}.")
        return row

    # -- writing -------------------------------------------------------------------

    def insert(self, ws: Workstation, at: float, event: str) -> None:
        """A new workstation, its first (stopped) segment and its first event."""
        with self._db.write() as tx:
            _insert_workstation(tx, to_row(ws))
            open_segment(tx, ws.id, at, running=False, storage_gb=ws.configuration.storage_gb, gpu=None)
            log_event(tx, ws.id, at, "info", event)
        self.read_back([ws.id])

    def transition(
        self,
        ws: Workstation,
        at: float,
        next_segment: str | None,
        event: tuple[str, str],
        configuration: Configuration | None = None,
        **columns,
    ) -> None:
        """Change a workstation, its billing segment and its log in one transaction.

        ``next_segment`` is RUNNING or STOPPED for the segment that starts now,
        or None when billing ends (failure, deletion). ``event`` is the
        (level, message) the workstation's log records.
        """
        configuration = configuration or ws.configuration
        with self._db.write() as tx:
            log_event(tx, ws.id, self._clock(), *event)
            if columns:
                _update_workstation(tx, ws.id, columns)
            close_segment(tx, ws.id, at)
            if next_segment is not None:
                open_segment(
                    tx,
                    ws.id,
                    at,
                    running=next_segment == RUNNING,
                    storage_gb=configuration.storage_gb,
                    gpu=configuration.gpu,
                )
        self.read_back([ws.id])

    def close_log(self, workstation_id: str) -> None:
        """A deleted workstation's log, which no one can read any more, down to its last entry."""
        with self._db.write() as tx:
            keep_newest_events(tx, workstation_id, 1)

    def record(self, workstation_id: str, event: tuple[str, str] | None = None, **columns) -> None:
        """Change columns, or log an event, or both, in one transaction; billing untouched (that is
        ``transition``'s)."""
        with self._db.write() as tx:
            if columns:
                _update_workstation(tx, workstation_id, columns)
            if event is not None:
                log_event(tx, workstation_id, self._clock(), *event)
        if columns:
            self.read_back([workstation_id])

    def detach_workspace(self, tx, workspace_id: str, at: float, message: str) -> list[str]:
        """In the caller's transaction, take the workspace off every workstation that has it, each with
        ``message`` in its log; the ids of those workstations, to ``read_back`` once committed."""
        holders = [
            row["id"]
            for row in tx.query(
                "SELECT id FROM workstations WHERE workspace_id = ? AND deleted_at IS NULL", [workspace_id]
            )
        ]
        for holder_id in holders:
            tx.execute("UPDATE workstations SET workspace_id = NULL WHERE id = ?", [holder_id])
            log_event(tx, holder_id, at, "warning", message)
        return holders

    def read_back(self, workstation_ids: list[str]) -> None:
        """Bring the rows in memory to what was just committed for these workstations.

        Under the records' lock, so that read-backs apply in order: each reads
        the latest commit. A failed read-back cannot undo the commit before it,
        so it leaves the write standing and marks the model stale instead.
        """
        with self._records.lock:
            try:
                rows = self._db.query(
                    "SELECT rowid AS row_number, * FROM workstations WHERE id IN (SELECT value FROM json_each(?))",
                    [json.dumps(workstation_ids)],
                )
            except Exception as exc:
                log.warning(
                    "reading back workstations %s failed, reloading all at the next read: %s", workstation_ids, exc
                )
                self._records.stale = True
                return
            found = {row["id"]: row for row in rows}
            for workstation_id in workstation_ids:
                row = found.get(workstation_id)
                if row is None or row["deleted_at"] is not None:
                    self._records.drop(workstation_id)
                else:
                    self._records.put(row["row_number"], from_row(row))
