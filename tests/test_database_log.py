"""The database's write-ahead log stays short while readers never pause (cwhost.db)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from cwhost import db as db_module
from cwhost.db import Database

LIMIT = 256 * 1024


def log_bytes(db: Database) -> int:
    return os.stat(f"{db.path}-wal").st_size


def write_under_steady_reads(db: Database, rows: int) -> int:
    """Insert ``rows`` rows of 16 KiB while four threads read without a pause; the longest log seen."""
    with db.write() as tx:
        tx.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            db.query("SELECT count(*), sum(length(body)) FROM blobs")

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    longest = 0
    try:
        for _ in range(rows):
            with db.write() as tx:
                tx.execute("INSERT INTO blobs (body) VALUES (?)", [os.urandom(16 * 1024)])
            longest = max(longest, log_bytes(db))
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    return longest


def test_the_log_is_started_over_though_readers_never_pause(tmp_path):
    db = Database(tmp_path / "cwhost.db", wal_restart_bytes=LIMIT)
    db.migrate()
    longest = write_under_steady_reads(db, rows=400)
    # 400 commits of 16 KiB log 6.5 MB in all; the log holds at most the limit and one commit more.
    assert longest < 2 * LIMIT, f"the log grew to {longest} bytes"
    assert log_bytes(db) < 2 * LIMIT
    counted = db.query_row("SELECT count(*) AS n, sum(length(body)) AS size FROM blobs")
    assert counted == {"n": 400, "size": 400 * 16 * 1024}
    assert db.query_row("PRAGMA integrity_check") == {"integrity_check": "ok"}


def test_the_log_is_started_over_though_reads_outlast_the_first_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(db_module, "WAL_RESTART_RETRY_SECONDS", 0.2)
    db = Database(tmp_path / "cwhost.db", wal_restart_bytes=LIMIT)
    db.migrate()
    with db.write() as tx:
        tx.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
        tx.execute("INSERT INTO blobs (body) VALUES (x'00')")
    stop = threading.Event()

    def read_slowly(delay: float) -> None:
        # Each read holds its snapshot 300 ms, as a long report does on a busy server; one always holds one.
        time.sleep(delay)
        own = sqlite3.connect(db.path)
        while not stop.is_set():
            rows = own.execute("SELECT id FROM blobs")
            rows.fetchone()
            time.sleep(0.3)
            rows.fetchall()
        own.close()

    readers = [threading.Thread(target=read_slowly, args=(n * 0.1,)) for n in range(3)]
    for reader in readers:
        reader.start()
    try:
        written = 0
        ends = time.monotonic() + 3
        while time.monotonic() < ends:
            with db.write() as tx:
                tx.execute("INSERT INTO blobs (body) VALUES (?)", [os.urandom(16 * 1024)])
            written += 16 * 1024
            time.sleep(0.005)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert written > 8 * LIMIT
    assert log_bytes(db) < 2 * LIMIT, f"{written} bytes written, the log is {log_bytes(db)} bytes long"
