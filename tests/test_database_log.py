"""The database's write-ahead log stays short while readers never pause (cwhost.db)."""

from __future__ import annotations

import os
import threading

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
