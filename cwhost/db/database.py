"""SQLite through sqlite-utils: one connection per thread, WAL, one writer at a time.

A connection is opened once per server thread and reused, because opening one
per request measurably halves throughput on this kind of machine. Writes that
read before they write take ``BEGIN IMMEDIATE`` so two threads never both hold
a read snapshot and then fight to upgrade it (that fight fails at once with
"database is locked" instead of waiting for the busy timeout).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from cwhost.db.schema import migrations
from cwhost.errors import StorageUnavailable

BUSY_TIMEOUT_MS = 10_000
PAGE_CACHE_KIB = 256
# The write-ahead log is started over once it is longer than this, and its
# file cut back to this length: four of SQLite's automatic checkpoints.
WAL_RESTART_BYTES = 16 * 2**20
# A restart waits for the readers of the old log, holding back every writer
# meanwhile, but only as long as they take: first 100 ms at most; each time
# readers outlast the wait, the next try may wait twice as long, up to the
# slowest reads seen under load (an account's usage over 200 workstations
# took 500 ms), and comes twice as late, so that reads slower still hold the
# writers back for at most 1.6 s a minute.
WAL_RESTART_FIRST_WAIT_MS = 100
WAL_RESTART_LONGEST_WAIT_MS = 1600
WAL_RESTART_RETRY_SECONDS = 2.0
WAL_RESTART_RETRY_MAX_SECONDS = 64.0

log = logging.getLogger(__name__)

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


class _RestartSchedule:
    """When the log's next restart may be tried, and how long it may wait for readers."""

    def __init__(self) -> None:
        self.wait_ms = WAL_RESTART_FIRST_WAIT_MS
        self._retry_seconds = WAL_RESTART_RETRY_SECONDS
        self._not_before = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._not_before

    def record(self, started_over: bool) -> None:
        if started_over:
            self._retry_seconds = WAL_RESTART_RETRY_SECONDS
            return
        self.wait_ms = min(2 * self.wait_ms, WAL_RESTART_LONGEST_WAIT_MS)
        self._not_before = time.monotonic() + self._retry_seconds
        self._retry_seconds = min(2 * self._retry_seconds, WAL_RESTART_RETRY_MAX_SECONDS)


class Database:
    """Per-thread sqlite-utils connections to one database file."""

    def __init__(self, path: Path, wal_restart_bytes: int = WAL_RESTART_BYTES):
        self.path = Path(path)
        self._wal_path = Path(f"{self.path}-wal")
        self._wal_restart_bytes = wal_restart_bytes
        self._wal_restarts = _RestartSchedule()
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
        db.execute(f"PRAGMA journal_size_limit = {self._wal_restart_bytes}")
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
            self._keep_wal_short(db)
        finally:
            self._writer.release()

    def _keep_wal_short(self, db: sqlite_utils.Database) -> None:
        """Start the write-ahead log over once it is longer than its limit; under the write lock.

        SQLite's automatic checkpoints copy the log into the database, but the
        log starts over only at a commit that finds no reader on it. Under
        steady reads that moment never came: with 200 workstations metered
        each second the log grew by 1 MB a second, and its index, mapped by
        every connection, with it. A RESTART checkpoint waits for the readers
        of the old log (new ones read the database file), so the next commit
        writes from the log's start and cuts its file back to the limit.
        """
        if not self._wal_restarts.due():
            return
        try:
            if self._wal_path.stat().st_size <= self._wal_restart_bytes:
                return
        except FileNotFoundError:
            return
        conn, started_over = db.conn, False
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._wal_restarts.wait_ms}")
            try:
                readers_outlasted_the_wait = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                started_over = not readers_outlasted_the_wait
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            # The commit stands; the log is only longer until a later one.
            log.warning("the database's log could not be started over: %s", exc)
        self._wal_restarts.record(started_over)

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
