"""Workspaces: directories that outlive workstations, owned by an account.

A workspace is ``<root>/<id>`` on the host, and a row of the ``workspaces``
table; this registry owns both. What is in the directory is
cwhost.workspaces.files'; a running workstation that holds one, and what
archiving or deleting does to the workstations that have it, are
cwhost.workstations.workspace_retirement's.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from cwhost.accounts.tokens import Principal
from cwhost.db.database import Database, split_page
from cwhost.errors import InvalidState, NotFound, UnknownAsset
from cwhost.ids import new_id, unix_to_rfc3339
from cwhost.model import Workstation
from cwhost.workspaces.paths import (
    WriteGate,
    give_to_guest,
    tree_bytes,
)

log = logging.getLogger(__name__)

ACTIVE, ARCHIVED = "active", "archived"


@dataclass(frozen=True)
class Workspace:
    id: str
    account_id: str
    name: str | None
    status: str
    created_at: str


def _from_row(row: dict) -> Workspace:
    return Workspace(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        status=row["status"],
        created_at=row["created_at"],
    )


class Workspaces:
    def __init__(self, db: Database, root: Path, clock):
        self._db, self.root = db, Path(root)
        self.staging = self.root / ".staging"
        self._clock = clock
        # Uploads into a workspace and its deletion, never at once.
        self.gate = WriteGate()
        self.staging.mkdir(parents=True, exist_ok=True)

    def directory(self, workspace_id: str) -> Path:
        return self.root / workspace_id

    # -- workspaces ------------------------------------------------------------

    def create(self, principal: Principal, name: str | None) -> Workspace:
        workspace_id = new_id("wsp")
        row = {
            "id": workspace_id,
            "account_id": principal.account_id,
            "name": name,
            "status": ACTIVE,
            "created_at": unix_to_rfc3339(self._clock()),
            "deleted_at": None,
        }
        # The directory first: a crash before the row is committed leaves an
        # empty directory nobody refers to, never a workspace with no directory.
        self.directory(workspace_id).mkdir(mode=0o770)
        give_to_guest(self.directory(workspace_id))
        try:
            with self._db.write() as tx:
                tx.table("workspaces").insert(row)
        except BaseException:
            self.directory(workspace_id).rmdir()
            raise
        return _from_row(row)

    def get(self, principal: Principal, workspace_id: str) -> Workspace:
        row = self._db.query_one(
            "SELECT * FROM workspaces WHERE id = ? AND deleted_at IS NULL AND (account_id = ? OR ?)",
            [workspace_id, principal.account_id, principal.admin],
        )
        if row is None:
            raise NotFound(f"No workspace {workspace_id!r}.")
        return _from_row(row)

    def find(self, workspace_id: str) -> Workspace | None:
        """A workspace that exists, whoever owns it; for showing it on a workstation."""
        row = self._db.query_one("SELECT * FROM workspaces WHERE id = ? AND deleted_at IS NULL", [workspace_id])
        return _from_row(row) if row else None

    def of_workstation(self, ws: Workstation) -> Workspace | None:
        """The workspace a workstation has, if any."""
        return self.find(ws.workspace_id) if ws.workspace_id else None

    def page(self, principal: Principal, limit: int, after: int | None) -> tuple[list[Workspace], str | None]:
        rows = self._db.query(
            "SELECT rowid AS cursor, * FROM workspaces WHERE deleted_at IS NULL AND rowid > ?"
            " AND (account_id = ? OR ?) ORDER BY rowid LIMIT ?",
            [after or 0, principal.account_id, principal.admin, limit + 1],
        )
        rows, next_cursor = split_page(rows, limit, "cursor")
        return [_from_row(r) for r in rows], next_cursor

    def mark_retired(self, tx, workspace_id: str, delete: bool, now: float) -> None:
        """Archive or delete the workspace's row, in the caller's transaction."""
        changes = {"deleted_at": unix_to_rfc3339(now)} if delete else {"status": ARCHIVED}
        tx.table("workspaces").update(workspace_id, changes)

    def remove_directory(self, workspace_id: str) -> None:
        directory = self.directory(workspace_id)
        if directory.exists():
            # rmtree works on file descriptors here and never follows a symlink
            # out of the tree (shutil.rmtree.avoids_symlink_attacks).
            try:
                shutil.rmtree(directory)
            except OSError as exc:
                # The workspace is deleted; its files go at the next start (recover).
                log.warning("could not remove %s yet (%s); it is removed at the next start", directory, exc)

    def bytes_used(self, account_id: str | None = None) -> int:
        """What the workspaces of an account (of everyone, for None) hold on disk, in bytes."""
        rows = self._db.query(
            "SELECT id FROM workspaces WHERE deleted_at IS NULL AND (account_id = ? OR ? IS NULL)",
            [account_id, account_id],
        )
        return sum(tree_bytes(self.directory(row["id"])) for row in rows)

    def recover(self) -> None:
        """Finish what a crash interrupted: removals of deleted workspaces, half-done uploads."""
        for row in self._db.query("SELECT id FROM workspaces WHERE deleted_at IS NOT NULL"):
            self.remove_directory(row["id"])
        for leftover in self.staging.iterdir():
            leftover.unlink(missing_ok=True)

    def attachable(self, principal: Principal, workspace_id: str) -> Workspace:
        """The workspace a new workstation asks for: the account's own, and active."""
        row = self._db.query_one(
            "SELECT * FROM workspaces WHERE id = ? AND deleted_at IS NULL AND account_id = ?",
            [workspace_id, principal.account_id],
        )
        if row is None:
            raise UnknownAsset(f"This account has no workspace {workspace_id!r}.")
        workspace = _from_row(row)
        if workspace.status != ACTIVE:
            raise InvalidState(f"Workspace {workspace.id} is archived; an archived workspace cannot be attached.")
        return workspace
