"""SQLite through sqlite-utils: one connection per thread, WAL, append-only migrations.

A connection is opened once per server thread and reused, because opening one
per request measurably halves throughput on this kind of machine. Writes that
read before they write take ``BEGIN IMMEDIATE`` so two threads never both hold
a read snapshot and then fight to upgrade it (that fight fails at once with
"database is locked" instead of waiting for the busy timeout).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from cwhost.errors import StorageUnavailable

BUSY_TIMEOUT_MS = 10_000
PAGE_CACHE_KIB = 256

migrations = Migrations("cwhost")
# Rollup tables by the length of their slot in seconds, coarsest first.
ROLLUP_TABLES = {"usage_daily": 86400, "usage_hourly": 3600}


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


def _create_rollups_and_meter_state(db: sqlite_utils.Database) -> None:
    """Part of 0002 (a helper of an applied migration: what it creates must never change)."""
    # Rollups of the samples per UTC hour and per UTC day, kept forever.
    # WITHOUT ROWID keeps a workstation's rows together in key order, so a
    # window's range scan reads contiguous pages (3x faster for a year of
    # hours with 20 workstations interleaved).
    for table in ROLLUP_TABLES:
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


# What a client is told when SQLite cannot do its part; nothing was changed.
_STORAGE_FAULTS = {
    "SQLITE_FULL": "The server's disk is full",
    "SQLITE_READONLY": "The server's database is read-only",
    # A failing disk, or a file made unwritable (EPERM) under the server.
    "SQLITE_IOERR": "The server cannot read or write its database",
    "SQLITE_BUSY": "The database is busy",
    "SQLITE_LOCKED": "The database is busy",
    "SQLITE_CANTOPEN": "The server cannot open its database",
}


@contextmanager
def _storage_faults() -> Iterator[None]:
    """SQLite errors of the storage under it become the client's 503; any other error passes.

    Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED...) share
    their primary code's prefix.
    """
    try:
        yield
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", "") or ""
        for prefix, what in _STORAGE_FAULTS.items():
            if name.startswith(prefix):
                busy = prefix in ("SQLITE_BUSY", "SQLITE_LOCKED")
                raise StorageUnavailable(
                    f"{what} ({exc}); nothing was changed. Try again "
                    + ("shortly." if busy else "once an operator has fixed it."),
                    retry_after=1 if busy else 30,
                ) from exc
        raise


def split_page(rows: list[dict], limit: int, cursor_column: str) -> tuple[list[dict], str | None]:
    """Rows fetched with ``LIMIT limit + 1`` as one page and the next page's cursor (None on the last)."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1][cursor_column])


class Database:
    """Per-thread sqlite-utils connections to one database file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._writer = threading.Lock()

    def connect(self) -> sqlite_utils.Database:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        # FULL: a committed usage record or state change survives power loss,
        # not only a crash of the process.
        db.execute("PRAGMA synchronous = FULL")
        # Each server thread has its own connection and each connection its
        # own page cache (2 MiB by default): bounded here, the service's memory
        # stays flat as the database grows instead of rising towards threads x
        # 2 MiB. The OS page cache still holds the file for all of them.
        db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        return db

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self.connect()
        return db

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A transaction that holds the write lock from its first statement.

        All of it or none of it: a COMMIT that fails (a full disk) is rolled
        back too, or the connection would stay inside the failed transaction
        and refuse every later one on this thread.

        This process's writers queue on a lock first: SQLite's busy handler
        polls with sleeps growing to 100 ms, so a contended writer could wait
        seconds while others come and go; the lock hands the turn over at once.
        """
        if not self._writer.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise StorageUnavailable("The database is busy; nothing was changed. Try again shortly.", retry_after=1)
        try:
            db = self.db
            with _storage_faults():
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.conn.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        finally:
            self._writer.release()

    def query(self, sql: str, params=()) -> list[dict]:
        """Rows of a SELECT as dicts.

        Straight on the connection: sqlite-utils' ``query()`` wraps each read
        in a SAVEPOINT and RELEASE, tripling the statements of the hottest path.
        """
        with _storage_faults():
            cursor = self.db.conn.execute(sql, params)
            rows = cursor.fetchall()
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def query_one(self, sql: str, params=()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def query_row(self, sql: str, params=()) -> dict:
        """The one row a query always has (an aggregate, a row known to exist)."""
        rows = self.query(sql, params)
        if not rows:
            raise LookupError(f"no row for: {sql}")
        return rows[0]

    def migrate(self) -> None:
        """Create or upgrade the schema; run once by the process that owns the database."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self.db
        db.enable_wal()
        migrations.apply(db)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
