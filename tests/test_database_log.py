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
# Written after the first restart: a log never started over again would be longer.
AFTER = 4 * 2**20


def log_bytes(db: Database) -> int:
    return os.stat(f"{db.path}-wal").st_size


@pytest.fixture
def db(tmp_path, monkeypatch) -> Database:
    # A failed restart is tried again after 0.2 s, not 2 s, so a run takes seconds.
    monkeypatch.setattr(db_module, "WAL_RESTART_RETRY_SECONDS", 0.2)
    database = Database(tmp_path / "cwhost.db", wal_restart_bytes=LIMIT)
    database.migrate()
    with database.write() as tx:
        tx.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    return database


def write_while_reading(db: Database, read: Callable[[threading.Event], None]) -> tuple[int, int, int]:
    """Commit rows of 16 KiB while three threads run ``read``, until the log has
    been started over and 4 MiB more written, or 60 s have passed.

    Returns the bytes written, the longest the log was before it was first
    started over, and the longest it was after. No fixed window: on a loaded
    machine the tries that fail, each waiting longer than the last, take longer.
    """
    stop = threading.Event()
    readers = [threading.Thread(target=read, args=(stop,)) for _ in range(3)]
    for reader in readers:
        reader.start()
        time.sleep(0.05)
    written = longest_before = longest_after = 0
    started_over_at = None
    try:
        ends = time.monotonic() + 60
        while time.monotonic() < ends and (started_over_at is None or written - started_over_at < AFTER):
            with db.write() as tx:
                tx.execute("INSERT INTO blobs (body) VALUES (?)", [os.urandom(ROW_BYTES)])
            written += ROW_BYTES
            size = log_bytes(db)
            if started_over_at is None and size < longest_before:
                started_over_at = written
            if started_over_at is None:
                longest_before = max(longest_before, size)
            else:
                longest_after = max(longest_after, size)
            time.sleep(0.005)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    return written, longest_before, longest_after


def assert_started_over(db: Database, written: int, longest_before: int, longest_after: int) -> None:
    # Started over: the log's file was cut back to the limit after it had
    # grown past it, and from then on it stayed far shorter than all written
    # since (a log never started over is longer than that: pages and frame
    # headers). It may pass the limit for a while, as a failed try backs off.
    assert longest_before > LIMIT, f"the log never passed its limit ({longest_before} bytes)"
    assert 0 < longest_after < AFTER / 2, f"the log grew to {longest_after} bytes after a restart"
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
