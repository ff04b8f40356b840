"""What workstations exist, whose they are and what they hold: the reads of the ``workstations``
table that subjects other than the workstations' own need (credit, quotas, storage, usage).

The store (cwhost.workstations.store) writes the table and answers the life
cycle's reads from memory; these are the SQL reads it leaves to others, each
run on the database or transaction it is given, so that a caller holding a
write sees the table as its own write does. Nothing else reads the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cwhost.model import RUNNING


@dataclass(frozen=True)
class RunningUse:
    """What an account's workstations hold: how many there are, and what the running ones run on."""

    workstations: int
    cpu_cores: int
    memory_gb: int
    gpus: int


def running_use(db, account_id: str) -> RunningUse:
    row = db.query_row(
        """SELECT COUNT(*) AS workstations,
                  COALESCE(SUM(CASE WHEN status = :running THEN cpu_cores END), 0) AS cpu,
                  COALESCE(SUM(CASE WHEN status = :running THEN memory_gb END), 0) AS memory,
                  COALESCE(SUM(status = :running AND gpu IS NOT NULL), 0) AS gpus
             FROM workstations WHERE account_id = :account AND deleted_at IS NULL""",
        {"running": RUNNING, "account": account_id},
    )
    return RunningUse(row["workstations"], row["cpu"], row["memory"], row["gpus"])


def count_besides(db, account_id: str, excluded: list[str]) -> int:
    """The account's workstations, ``excluded`` left out."""
    return db.query_row(
        "SELECT COUNT(*) AS n FROM workstations WHERE account_id = ? AND deleted_at IS NULL"
        " AND id NOT IN (SELECT value FROM json_each(?))",
        [account_id, json.dumps(excluded)],
    )["n"]


def ever_of_account(db, account_id: str) -> list[dict]:
    """Every workstation the account has had, deleted ones included, oldest first: id, name, created_at,
    deleted_at."""
    return db.query(
        "SELECT id, name, created_at, deleted_at FROM workstations WHERE account_id = ? ORDER BY rowid",
        [account_id],
    )


def live_of_account(db, account_id: str) -> list[dict]:
    """The account's workstations that are not deleted, as rows."""
    return db.query("SELECT * FROM workstations WHERE account_id = ? AND deleted_at IS NULL", [account_id])


def disks_gb(db, account_id: str | None, excluded: list[str]) -> int:
    """The storageGB of an account's workstations (everyone's, for None) as written, ``excluded`` left out."""
    return db.query_row(
        "SELECT COALESCE(SUM(storage_gb), 0) AS gb FROM workstations"
        " WHERE deleted_at IS NULL AND (account_id = ? OR ? IS NULL)"
        " AND id NOT IN (SELECT value FROM json_each(?))",
        [account_id, account_id, json.dumps(excluded)],
    )["gb"]


def disk_gb(db, workstation_id: str) -> int:
    """A workstation's storageGB as written; 0 for one not written yet."""
    row = db.query_one("SELECT storage_gb FROM workstations WHERE id = ?", [workstation_id])
    return row["storage_gb"] if row else 0


def running_among(db, workstation_ids: list[str]) -> set[str]:
    """Which of ``workstation_ids`` run, as the database has it now."""
    rows = db.query(
        "SELECT id FROM workstations WHERE status = ? AND id IN (SELECT value FROM json_each(?))",
        [RUNNING, json.dumps(workstation_ids)],
    )
    return {row["id"] for row in rows}


def owners(db) -> list[dict]:
    """Every workstation, deleted ones included, in creation order: workstation_id and its account's name."""
    return db.query(
        "SELECT w.id AS workstation_id, a.name AS account FROM workstations w"
        " JOIN accounts a ON a.id = w.account_id ORDER BY w.rowid"
    )


def recording_bytes(db, account_id: str | None) -> int:
    """What an account's screen recordings (everyone's, for None) hold on disk, as last measured."""
    row = db.query_row(
        "SELECT COALESCE(SUM(size_bytes), 0) AS held FROM recordings WHERE account_id = ? OR ? IS NULL",
        [account_id, account_id],
    )
    return row["held"]
