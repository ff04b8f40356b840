"""Storage promised to accounts: workstations' disks and workspaces' files, per account and on the host.

A workstation's disk counts at its full ``storageGB`` from its creation (the
disk may grow to it at any time); a workspace counts what its files hold now.
Two bounds apply at every create, PATCH and upload: the account's
``max_storage_gb``, and the host's storage times ``storage_overcommit``, so
that one account cannot fill the disk and turn every write into a 503 for
everyone. A check and what it allows must not interleave with another's,
or two requests could both take the last gigabyte: an upload holds the
budget's lock across both, and a create or PATCH, whose write waits its turn
at the database, holds a promise instead (``promised``), counted with the
used storage until its write is done, so that the lock is held for moments.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from cwhost.config import Config
from cwhost.db import Database
from cwhost.errors import QuotaExceeded

GIB = 1024**3


class Promise(NamedTuple):
    account_id: str
    size_bytes: int
    new_workstation: bool


class StorageBudget:
    def __init__(
        self,
        db: Database,
        config: Config,
        workspace_bytes: Callable[[str | None], int],
        host_storage_gb: Callable[[], int],
        account_limit_gb: Callable[[str], int],
        lock: threading.Lock,
    ):
        self.lock = lock
        self._promises: dict[object, Promise] = {}
        self._db = db
        self._config = config
        self._workspace_bytes = workspace_bytes
        self._host_storage_gb = host_storage_gb
        self._account_limit_gb = account_limit_gb

    def _disks_gb(self, account_id: str | None) -> int:
        row = self._db.query_row(
            "SELECT COALESCE(SUM(storage_gb), 0) AS gb FROM workstations"
            " WHERE deleted_at IS NULL AND (account_id = ? OR ? IS NULL)",
            [account_id, account_id],
        )
        return row["gb"]

    def used_bytes(self, account_id: str | None) -> int:
        """What an account (everyone, for None) has been promised, in bytes."""
        return self._disks_gb(account_id) * GIB + self._workspace_bytes(account_id)

    @contextmanager
    def promised(
        self, account_id: str, more_bytes: int, new_workstation: Callable[[int], None] | None = None
    ) -> Iterator[None]:
        """Hold ``more_bytes`` for the account while the caller writes what takes them.

        ``new_workstation``, for a create, checks the account's workstation
        count given the creates still promised; it runs under the lock too.
        """
        with self.lock:
            if new_workstation is not None:
                new_workstation(sum(p.new_workstation for p in self._promises.values() if p.account_id == account_id))
            self.require(account_id, more_bytes)
            promise = object()
            self._promises[promise] = Promise(account_id, max(more_bytes, 0), new_workstation is not None)
        try:
            yield
        finally:
            with self.lock:
                del self._promises[promise]

    def _promised_bytes(self, account_id: str | None) -> int:
        return sum(p.size_bytes for p in self._promises.values() if account_id is None or p.account_id == account_id)

    def require(self, account_id: str, more_bytes: int) -> None:
        """QuotaExceeded unless ``more_bytes`` fit both the account's limit and the host (with the lock held)."""
        if more_bytes <= 0:
            return
        limit_gb = self._account_limit_gb(account_id)
        used = self.used_bytes(account_id) + self._promised_bytes(account_id)
        if used + more_bytes > limit_gb * GIB:
            raise QuotaExceeded(
                f"This needs {more_bytes / GIB:.2f} GB more storage against the account's"
                f" max_storage_gb of {limit_gb}; {used / GIB:.2f} GB are in use."
            )
        host_gb = self._host_storage_gb() * self._config.workstation.storage_overcommit
        promised = self.used_bytes(None) + self._promised_bytes(None)
        if promised + more_bytes > host_gb * GIB:
            raise QuotaExceeded(
                f"The server has {max(0.0, host_gb - promised / GIB):.2f} GB of storage left to give;"
                f" this needs {more_bytes / GIB:.2f} GB more."
            )
