"""The database's schema: append-only migrations, applied in order by ``Database.migrate``.

A migration, once released, is never edited: a server's database records
which it has run, and a changed one would never run there again.
"""

from __future__ import annotations

import math

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("cwhost")
# Rollup tables by the length of their slot in seconds, coarsest first.
ROLLUP_TABLES = {"usage_daily": 86400, "usage_hourly": 3600, "usage_minutely": 60}
# Those kept only as long as the raw samples.
PRUNED_ROLLUP_TABLES = ("usage_minutely",)


@migrations(name="0001_accounts_keys_workstations")
def _initial(db: sqlite_utils.Database) -> None:
    db.table("accounts").create(
        {"id": str, "name": str, "created_at": str},
        pk="id",
        not_null={"name", "created_at"},
    )
    db.table("accounts").create_index(["name"], unique=True)
    db.table("api_keys").create(
        {
            "id": str,
            "account_id": str,
            "token_hash": str,
            "admin": int,
            "created_at": str,
            "revoked_at": str,
        },
        pk="id",
        not_null={"account_id", "token_hash", "admin", "created_at"},
        foreign_keys=[("account_id", "accounts", "id")],
    )
    db.table("api_keys").create_index(["token_hash"], unique=True)
    _create_workstations(db)


def _create_workstations(db: sqlite_utils.Database) -> None:
    """Part of 0001 (a helper of an applied migration: what it creates must never change)."""
    db.table("workstations").create(
        {
            "id": str,
            "account_id": str,
            "name": str,
            "status": str,
            "type": str,
            "workspace_id": str,
            "cpu_cores": int,
            "memory_gb": int,
            "gpu": str,
            "storage_gb": int,
            "region": str,
            "created_at": str,
            "started_at": str,
            "status_message": str,
            "idle_timeout_minutes": int,
            "running_timeout_minutes": int,
            # PCI address of the GPU held while launching or running; the
            # source of truth for which card is free.
            "gpu_address": str,
            # Deleted workstations stay as rows so their usage remains billable.
            "deleted_at": str,
        },
        pk="id",
        not_null={
            "account_id",
            "name",
            "status",
            "cpu_cores",
            "memory_gb",
            "storage_gb",
            "region",
            "created_at",
            "idle_timeout_minutes",
            "running_timeout_minutes",
        },
        foreign_keys=[("account_id", "accounts", "id")],
    )
    db.table("workstations").create_index(["account_id", "deleted_at"])
    db.table("workstations").create_index(["gpu_address"], unique=True)


@migrations(name="0002_usage_ledger")
def _usage_ledger(db: sqlite_utils.Database) -> None:
    # Intervals of constant billable configuration; times are UNIX seconds.
    db.table("usage_segments").create(
        {
            "id": int,
            "workstation_id": str,
            "started_at": float,
            "ended_at": float,
            "running": int,
            "storage_gb": int,
            "gpu": str,
        },
        pk="id",
        not_null={"workstation_id", "started_at", "running", "storage_gb"},
    )
    db.table("usage_segments").create_index(["workstation_id", "started_at"])
    # One row per sampler reading: what was used over (since, sampled_at].
    db.table("usage_samples").create(
        {
            "workstation_id": str,
            "since": float,
            "sampled_at": float,
            "cpu_seconds": float,
            "memory_gb_seconds": float,
            "gpu_utilized_seconds": float,
        },
        not_null={"workstation_id", "since", "sampled_at"},
    )
    db.table("usage_samples").create_index(["workstation_id", "sampled_at"])
    db.table("usage_samples").create_index(["sampled_at"])
    _create_rollups_and_meter_state(db)


def _create_rollup(db: sqlite_utils.Database, table: str) -> None:
    """Part of 0002 and 0011 (a helper of applied migrations: what it creates must never change)."""
    db.execute(
        f"""CREATE TABLE {table} (
                workstation_id TEXT NOT NULL,
                start INTEGER NOT NULL,
                cpu_seconds REAL NOT NULL,
                memory_gb_seconds REAL NOT NULL,
                gpu_utilized_seconds REAL NOT NULL,
                PRIMARY KEY (workstation_id, start)
            ) WITHOUT ROWID"""
    )


def _create_rollups_and_meter_state(db: sqlite_utils.Database) -> None:
    """Part of 0002 (a helper of an applied migration: what it creates must never change)."""
    # Rollups of the samples per UTC hour and per UTC day, kept forever.
    # WITHOUT ROWID keeps a workstation's rows together in key order, so a
    # window's range scan reads contiguous pages (3x faster for a year of
    # hours with 20 workstations interleaved).
    for table in ("usage_daily", "usage_hourly"):
        _create_rollup(db, table)
    # The last counter values read (so a restart neither loses nor repeats an
    # interval) and the running totals.
    db.table("meter_state").create(
        {
            "workstation_id": str,
            "pid": int,
            "process_started": float,
            "cpu_seconds_counter": float,
            "rss_bytes": int,
            "sampled_at": float,
            "cpu_seconds": float,
            "memory_gb_seconds": float,
            "gpu_utilized_seconds": float,
        },
        pk="workstation_id",
    )


@migrations(name="0003_idempotency_keys")
def _idempotency_keys(db: sqlite_utils.Database) -> None:
    db.table("idempotency_keys").create(
        {
            "account_id": str,
            "key": str,
            "fingerprint": str,
            "status": int,
            "body": str,
            "location": str,
            "created_at": float,
        },
        pk=("account_id", "key"),
        not_null={"fingerprint", "status", "body", "created_at"},
    )
    db.table("idempotency_keys").create_index(["created_at"])


@migrations(name="0004_account_credits")
def _account_credits(db: sqlite_utils.Database) -> None:
    # Credit granted in total; the balance is this less the ledger's cost of
    # the account's workstations. NULL: no credit limit.
    db.table("accounts").add_column("credits_usd", float)


@migrations(name="0005_workstation_boot_source")
def _workstation_boot_source(db: sqlite_utils.Database) -> None:
    # Copied from the workstation's type when it is created, so that an
    # operator re-mapping a type later does not change existing workstations.
    for column in ("boot_image", "boot_kernel", "boot_initrd", "boot_cmdline"):
        db.table("workstations").add_column(column, str)


@migrations(name="0006_workstation_events")
def _workstation_events(db: sqlite_utils.Database) -> None:
    db.table("workstation_events").create(
        {"id": int, "workstation_id": str, "at": float, "level": str, "message": str},
        pk="id",
        not_null={"workstation_id", "at", "level", "message"},
    )
    db.table("workstation_events").create_index(["workstation_id", "id"])


@migrations(name="0007_ssh_keys")
def _ssh_keys(db: sqlite_utils.Database) -> None:
    # An account's SSH public keys, each once (by fingerprint).
    db.table("ssh_keys").create(
        {"id": str, "account_id": str, "name": str, "public_key": str, "fingerprint": str, "created_at": str},
        pk="id",
        not_null={"account_id", "name", "public_key", "fingerprint", "created_at"},
        foreign_keys=[("account_id", "accounts", "id")],
    )
    db.table("ssh_keys").create_index(["account_id", "fingerprint"], unique=True)


@migrations(name="0008_workstation_ssh_keys")
def _workstation_ssh_keys(db: sqlite_utils.Database) -> None:
    # Keys a create gave for that workstation alone (a JSON list), besides its account's.
    db.table("workstations").add_column("ssh_public_keys", str)


@migrations(name="0007_workspaces")
def _workspaces(db: sqlite_utils.Database) -> None:
    # A deleted workspace keeps its row (with deleted_at) until its directory
    # is gone, so that a crash half-way through the removal is finished at start-up.
    db.table("workspaces").create(
        {
            "id": str,
            "account_id": str,
            "name": str,
            "status": str,
            "created_at": str,
            "deleted_at": str,
        },
        pk="id",
        not_null={"account_id", "status", "created_at"},
        foreign_keys=[("account_id", "accounts", "id")],
    )
    db.table("workspaces").create_index(["account_id"])
    db.table("workstations").create_index(["workspace_id"])


@migrations(name="0009_workstation_ssh_port")
def _workstation_ssh_port(db: sqlite_utils.Database) -> None:
    # The host port forwarded to a running workstation's SSH: one holder at a time.
    db.table("workstations").add_column("ssh_port", int)
    db.table("workstations").create_index(["ssh_port"], unique=True)


@migrations(name="0010_workstation_cdp_port")
def _workstation_cdp_port(db: sqlite_utils.Database) -> None:
    # The host port (on its loopback) forwarded to a running browser type's DevTools relay.
    db.table("workstations").add_column("cdp_port", int)
    db.table("workstations").create_index(["cdp_port"], unique=True)


@migrations(name="0011_usage_minutely")
def _usage_minutely(db: sqlite_utils.Database) -> None:
    # Rollups per minute, kept as long as the samples, so that a partial hour
    # sums at most 59 rows and two minutes of samples per workstation. The
    # readings recorded before this have none: a report takes the minutes
    # from the one after the last of them from these rows, the earlier from
    # the samples.
    _create_rollup(db, "usage_minutely")
    db.table("usage_minutely").create_index(["start"])
    last_reading = db.execute("SELECT MAX(sampled_at) FROM usage_samples").fetchone()[0]
    since = 0 if last_reading is None else math.ceil(last_reading / 60) * 60
    db.table("rollup_starts").create({"rollup": str, "since": int}, pk="rollup", not_null={"since"})
    db.table("rollup_starts").insert({"rollup": "usage_minutely", "since": since})


@migrations(name="0012_drop_workstation_cdp_port")
def _drop_workstation_cdp_port(db: sqlite_utils.Database) -> None:
    # The DevTools relay is reached over the guest's isolated network, no longer through a host port.
    db.execute("DROP INDEX IF EXISTS idx_workstations_cdp_port")
    db.execute("ALTER TABLE workstations DROP COLUMN cdp_port")


@migrations(name="0013_idempotency_replays_without_access")
def _idempotency_replays_without_access(db: sqlite_utils.Database) -> None:
    # Kept answers held a launch's console password and links; replays now mint access afresh.
    db.execute(
        "UPDATE idempotency_keys SET body = json_set(body, '$.access', json('null'))"
        " WHERE json_valid(body) AND json_type(body, '$.access') = 'object'"
    )


@migrations(name="0014_workstation_host_key_and_readiness")
def _workstation_host_key_and_readiness(db: sqlite_utils.Database) -> None:
    # The public half of the SSH host key cwhost made for it (its private half is a file of the
    # data directory), and when its guest last reported ready in the current run.
    db.table("workstations").add_column("ssh_host_key", str)
    db.table("workstations").add_column("ready_at", str)


@migrations(name="0015_account_limits")
def _account_limits(db: sqlite_utils.Database) -> None:
    # Limits an operator set for an account at run time, over the configuration's.
    db.table("account_limits").create(
        {"account_id": str, "name": str, "value": int},
        pk=("account_id", "name"),
        not_null={"value"},
        foreign_keys=[("account_id", "accounts", "id")],
    )


@migrations(name="0016_workstation_display")
def _workstation_display(db: sqlite_utils.Database) -> None:
    # Its screen, in pixels; those made before it was configurable had XGA.
    db.table("workstations").add_column("display_width", int, not_null_default=1024)
    db.table("workstations").add_column("display_height", int, not_null_default=768)


@migrations(name="0017_recordings")
def _recordings(db: sqlite_utils.Database) -> None:
    # Screen recordings: what each is and how big its file is now (it counts against its account's
    # storage while it exists); the files are in the data directory's recordings/.
    db.table("recordings").create(
        {
            "id": str, "account_id": str, "workstation_id": str, "status": str, "frames_per_second": int,
            "started_at": float, "ended_at": float, "size_bytes": int, "message": str,
        },
        pk="id",
        not_null={"account_id", "workstation_id", "status", "frames_per_second", "started_at", "size_bytes"},
        foreign_keys=[("account_id", "accounts", "id"), ("workstation_id", "workstations", "id")],
    )  # fmt: skip
    db.table("recordings").create_index(["workstation_id"])
