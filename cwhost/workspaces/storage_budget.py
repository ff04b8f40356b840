"""Storage promised to accounts: workstations' disks, workspaces' files and screen recordings, per
account and on the host.

A workstation's disk counts at its full ``storageGB`` from its creation (the
disk may grow to it at any time); a workspace counts what its files hold now.
Two bounds apply at every create, PATCH and upload: the account's
``max_storage_gb``, and the host's storage times ``storage_overcommit``, so
that one account cannot fill the disk and turn every write into a 503 for
everyone. A check and what it allows must not interleave with another's,
or two requests could both take the last gigabyte: an upload holds the
budget's lock across both, and a create or PATCH, whose write waits its turn
at the database, holds a promise instead (``promised``) until its write is
done, so that the lock is held for moments. A promise names its workstation
and counts that disk at its promised size in place of the database's row,
whether the write has committed yet or not: counted once, never twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from cwhost import inventory
from cwhost.accounts.limits import AccountLimitsBook
from cwhost.db.database import Database
from cwhost.errors import QuotaExceeded
from cwhost.hypervisor import read_host
from cwhost.workspaces.registry import Workspaces
from drivers.base import GIB, HypervisorDriver


class Promise(NamedTuple):
    account_id: str
    workstation_id: str
    # The workstation's whole disk once its write is done.
    disk_bytes: int
    new_workstation: bool


class StorageBudget:
    def __init__(
        self,
        db: Database,
        workspaces: Workspaces,
        driver: HypervisorDriver,
        limits: AccountLimitsBook,
        overcommit: float,
    ):
        # Held by whoever checks a change against the budget and makes it; see the module's docstring.
        self.lock = threading.Lock()
        self._promises: dict[object, Promise] = {}
        self._db = db
        self._workspaces = workspaces
        self._driver = driver
        self._limits = limits
        self._overcommit = overcommit

    def _used(self, account_id: str | None, excluding: str | None = None) -> int:
        """Bytes promised to an account (everyone, for None): disks as written or promised, and workspaces;
        the disk of ``excluding`` left out."""
        # list() of a dict's values is one step under the GIL: a read without the lock sees no half-change.
        promises = [p for p in list(self._promises.values()) if account_id is None or p.account_id == account_id]
        skipped = [p.workstation_id for p in promises] + ([excluding] if excluding else [])
        promised = sum(p.disk_bytes for p in promises if p.workstation_id != excluding)
        disks = inventory.disks_gb(self._db, account_id, skipped) * GIB
        recordings = inventory.recording_bytes(self._db, account_id)
        return disks + promised + self._workspaces.bytes_used(account_id) + recordings

    def used_bytes(self, account_id: str | None) -> int:
        """What an account (everyone, for None) has been promised, in bytes."""
        return self._used(account_id)

    @contextmanager
    def promised(
        self,
        account_id: str,
        workstation_id: str,
        disk_bytes: int,
        new_workstation: Callable[[list[str]], None] | None = None,
    ) -> Iterator[None]:
        """Hold a disk of ``disk_bytes`` for the workstation while the caller writes its row.

        A disk that grows (or is new) must fit the account's limit and the
        host's. ``new_workstation``, for a create, checks the account's
        workstation count given the ids of the creates still promised; it
        runs under the lock too.
        """
        with self.lock:
            if new_workstation is not None:
                mine = [p for p in self._promises.values() if p.account_id == account_id]
                new_workstation([p.workstation_id for p in mine if p.new_workstation])
            written = self._written_disk_bytes(workstation_id)
            if disk_bytes > written:
                self._require(account_id, disk_bytes - written, excluding=(workstation_id, written))
            promise = object()
            self._promises[promise] = Promise(account_id, workstation_id, disk_bytes, new_workstation is not None)
        try:
            yield
        finally:
            with self.lock:
                del self._promises[promise]

    def _written_disk_bytes(self, workstation_id: str) -> int:
        return inventory.disk_gb(self._db, workstation_id) * GIB

    def require(self, account_id: str, more_bytes: int) -> None:
        """QuotaExceeded unless ``more_bytes`` fit both the account's limit and the host (with the lock held)."""
        if more_bytes > 0:
            self._require(account_id, more_bytes)

    def _require(self, account_id: str, more_bytes: int, excluding: tuple[str, int] | None = None) -> None:
        """``excluding``: a workstation whose disk is counted at the size given, not as the database has it."""
        skipped, counted = excluding or (None, 0)
        limit_gb = self._limits.of(account_id).max_storage_gb
        used = self._used(account_id, skipped) + counted
        if used + more_bytes > limit_gb * GIB:
            raise QuotaExceeded(
                f"This needs {more_bytes / GIB:.2f} GB more storage against the account's"
                f" max_storage_gb of {limit_gb}; {used / GIB:.2f} GB are in use."
            )
        host_gb = read_host(self._driver).storage_gb * self._overcommit
        promised = self._used(None, skipped) + counted
        if promised + more_bytes > host_gb * GIB:
            raise QuotaExceeded(
                f"The server has {max(0.0, host_gb - promised / GIB):.2f} GB of storage left to give;"
                f" this needs {more_bytes / GIB:.2f} GB more."
            )
