"""One ``cwhost serve`` per data directory.

Two servers on one database would each reconcile, meter and allocate as if
alone: launches fail, workstations flip between running and stopped, GPUs
could be promised twice. So ``cwhost serve`` takes an exclusive lock on a file
in the data directory before it touches anything, and a second one refuses to
start, naming the first one's PID. The kernel drops the lock of a process that
dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE = "serve.lock"


class AlreadyServing(Exception):
    """Another process serves this data directory."""

    def __init__(self, data_dir: Path, pid: str):
        super().__init__(
            f"another cwhost serve (PID {pid or 'unknown'}) already serves {data_dir};"
            " stop it first, or give this one another data_dir"
        )


def hold_data_dir(data_dir: Path) -> IO[str]:
    """Lock ``data_dir`` for this process; keep the returned file open while serving."""
    lock_file = open(data_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip()
        lock_file.close()
        raise AlreadyServing(data_dir, holder) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file
