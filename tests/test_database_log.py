"""The database's write-ahead log stays short while readers never pause (cwhost.db)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable

import pytest

from cwhost.db import database as db_module
from cwhost.db.database import Database

LIMIT = 256 * 1024
ROW_BYTES = 16 * 1024


def log_bytes(db: Database) -> int:
    return os.stat(f"{db.path}-wal").st_size


@pytest.fixture
def db(tmp_path, monkeypatch) -> Database:
    # A failed restart is tried again after 0.2 s, not 2 s: the writes here last 5 s.
    monkeypatch.setattr(db_module, "WAL_RESTART_RETRY_SECONDS", 0.2)
    database = Database(tmp_path / "cwhost.db", wal_restart_bytes=LIMIT)
    database.migrate()
    with database.write() as tx:
        tx.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    return database


def write_while_reading(db: Database, read: Callable[[threading.Event], None]) -> tuple[int, int]:
    """Commit rows of 16 KiB for 5 s while three threads run ``read``; bytes written, longest log in the last 1 s.

    Five, so that on a loaded machine a fourth try (its wait 800 ms, 2.5 s in)
    still starts the log over before the last second.
    """
    stop = threading.Event()
    readers = [threading.Thread(target=read, args=(stop,)) for _ in range(3)]
    for reader in readers:
        reader.start()
        time.sleep(0.05)
    written = longest = 0
    try:
        ends = time.monotonic() + 5
        while time.monotonic() < ends:
            with db.write() as tx:
                tx.execute("INSERT INTO blobs (body) VALUES (?)", [os.urandom(ROW_BYTES)])
            written += ROW_BYTES
            if ends - time.monotonic() < 1:
                longest = max(longest, log_bytes(db))
            time.sleep(0.005)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    return written, longest


def assert_started_over(db: Database, written: int, longest: int) -> None:
    assert written > 8 * LIMIT
    # Started over, and kept short from then on: a log never started over is
    # longer than all that was written (pages and frame headers); through the
    # last second this one held a quarter of it at most. It may be longer than
    # the limit for a while, as a failed try backs off before the next.
    assert longest < written / 4, f"{written} bytes written, the log grew to {longest} bytes in the last second"
    counted = db.query_row("SELECT count(*) AS n, sum(length(body)) AS size FROM blobs")
    assert counted == {"n": written // ROW_BYTES, "size": written}
    assert db.query_row("PRAGMA integrity_check") == {"integrity_check": "ok"}


def test_the_log_is_started_over_though_readers_never_pause(db):
    def read(stop: threading.Event) -> None:
        while not stop.is_set():
            db.query("SELECT count(*), sum(length(body)) FROM blobs")

    assert_started_over(db, *write_while_reading(db, read))


def test_the_log_is_started_over_though_reads_outlast_the_first_wait(db):
    def read_slowly(stop: threading.Event) -> None:
        # Each read holds its snapshot 150 ms, longer than the first wait, as a
        # long report does on a busy server; one always holds one.
        own = sqlite3.connect(db.path)
        while not stop.is_set():
            rows = own.execute("SELECT id FROM blobs")
            rows.fetchone()
            time.sleep(0.15)
            rows.fetchall()
        own.close()

    assert_started_over(db, *write_while_reading(db, read_slowly))
