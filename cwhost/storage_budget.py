"""Storage promised to accounts: workstations' disks and workspaces' files, per account and on the host.

A workstation's disk counts at its full ``storageGB`` from its creation (the
disk may grow to it at any time); a workspace counts what its files hold now.
Two bounds apply at every create, PATCH and upload: the account's
``max_storage_gb``, and the host's storage times ``storage_overcommit``, so
that one account cannot fill the disk and turn every write into a 503 for
everyone. Callers hold the allocation lock, so that two requests cannot both
take the last gigabyte.
"""

from __future__ import annotations

from collections.abc import Callable

from cwhost.config import Config
from cwhost.db import Database
from cwhost.errors import QuotaExceeded

GIB = 1024**3


class StorageBudget:
    def __init__(
        self,
        db: Database,
        config: Config,
        workspace_bytes: Callable[[str | None], int],
        host_storage_gb: Callable[[], int],
        account_limit_gb: Callable[[str], int],
    ):
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

    def require(self, account_id: str, more_bytes: int) -> None:
        """QuotaExceeded unless ``more_bytes`` fit both the account's limit and the host."""
        if more_bytes <= 0:
            return
        limit_gb = self._account_limit_gb(account_id)
        used = self.used_bytes(account_id)
        if used + more_bytes > limit_gb * GIB:
            raise QuotaExceeded(
                f"This needs {more_bytes / GIB:.2f} GB more storage against the account's"
                f" max_storage_gb of {limit_gb}; {used / GIB:.2f} GB are in use."
            )
        host_gb = self._host_storage_gb() * self._config.workstation.storage_overcommit
        promised = self.used_bytes(None)
        if promised + more_bytes > host_gb * GIB:
            raise QuotaExceeded(
                f"The server has {max(0.0, host_gb - promised / GIB):.2f} GB of storage left to give;"
                f" this needs {more_bytes / GIB:.2f} GB more."
            )
