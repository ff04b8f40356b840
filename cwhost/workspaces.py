"""Workspaces: directories that outlive workstations, owned by an account, and their files.

A workspace is ``<root>/<id>`` on the host. A running workstation sees it as
a share (virtiofs under libvirt), so its guest can create anything there,
symlinks to ``/etc`` included. Every file operation therefore walks the
client's path one component at a time from the workspace's directory, with
``O_NOFOLLOW`` file descriptors: a symlink anywhere on the path is refused,
never followed, and there is no window between a check and its use for a
guest to race. Paths are also refused on their text alone (``..``, absolute,
NUL, over-long) before anything on disk is touched.

Uploads are streamed into a staging directory beside the workspaces (the same
file system), flushed to disk, and only then renamed into place: a client
that goes away, an upload over the size limit or a crash leaves the
workspace as it was.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cwhost.auth import Principal
from cwhost.db import Database, split_page
from cwhost.errors import InvalidRequest, InvalidState, NotFound, UnknownAsset
from cwhost.ids import new_id, unix_to_rfc3339
from cwhost.workspace_paths import (
    COPY_CHUNK_BYTES,
    OPEN_DIRECTORY,
    WriteGate,
    closing_directory,
    disk_faults,
    display_name,
    file_id,
    give_to_guest,
    outside,
    path_of_file_id,
    split_path,
    too_large,
    tree_bytes,
    walk_to_directory,
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


@dataclass(frozen=True)
class FileInfo:
    id: str
    workspace_id: str
    path: str
    size: int
    modified_at: float


@dataclass(frozen=True)
class FilePage:
    items: list[FileInfo]
    next_cursor: str | None


def _from_row(row: dict) -> Workspace:
    return Workspace(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        status=row["status"],
        created_at=row["created_at"],
    )


class Workspaces:
    """Workspaces of accounts, and the files in them.

    ``workstation_holding`` says which running (or launching) workstation
    holds a workspace, if any; it is called under ``lock``, the lock launches
    take while they choose what to attach, so a workspace cannot be deleted
    between a launch's check and its start.
    """

    def __init__(
        self,
        db: Database,
        root: Path,
        max_upload_bytes: int,
        lock,
        storage_lock,
        workstation_holding: Callable[[str], str | None],
        clock,
        require_storage: Callable[[str, int], None] = lambda account_id, more_bytes: None,
        detached: Callable[[list[str]], None] = lambda workstation_ids: None,
    ):
        self._db, self.root = db, Path(root)
        self._staging = self.root / ".staging"
        self.max_upload_bytes = max_upload_bytes
        self._lock = lock  # the allocation lock: a launch attaches a workspace under it
        self._storage_lock = storage_lock
        self._workstation_holding = workstation_holding
        self._clock = clock
        self._require_storage = require_storage
        # Told which workstations lost their workspace, once that is committed (the store's read-back).
        self._detached = detached
        self._gate = WriteGate()
        self._staging.mkdir(parents=True, exist_ok=True)

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

    def page(self, principal: Principal, limit: int, after: int | None) -> tuple[list[Workspace], str | None]:
        rows = self._db.query(
            "SELECT rowid AS cursor, * FROM workspaces WHERE deleted_at IS NULL AND rowid > ?"
            " AND (account_id = ? OR ?) ORDER BY rowid LIMIT ?",
            [after or 0, principal.account_id, principal.admin, limit + 1],
        )
        rows, next_cursor = split_page(rows, limit, "cursor")
        return [_from_row(r) for r in rows], next_cursor

    def archive(self, principal: Principal, workspace_id: str) -> Workspace:
        return self._retire(principal, workspace_id, delete=False)

    def delete(self, principal: Principal, workspace_id: str) -> None:
        with self._gate.deletion(workspace_id):
            self._retire(principal, workspace_id, delete=True)
            self._remove_directory(workspace_id)

    def _retire(self, principal: Principal, workspace_id: str, delete: bool) -> Workspace:
        """Archive or delete a workspace no running workstation holds.

        Stopped workstations that have it lose it, each with a log entry: an
        archived or deleted workspace is attached to nothing.
        """
        action = "deleted" if delete else "archived"
        with self._lock:
            workspace = self.get(principal, workspace_id)
            if not delete and workspace.status == ARCHIVED:
                return workspace
            holder = self._workstation_holding(workspace.id)
            if holder is not None:
                raise InvalidState(
                    f"Workspace {workspace.id} is attached to running workstation {holder};"
                    f" stop it before the workspace can be {action}."
                )
            now = self._clock()
            with self._db.write() as tx:
                changes = {"deleted_at": unix_to_rfc3339(now)} if delete else {"status": ARCHIVED}
                tx.table("workspaces").update(workspace.id, changes)
                holders = [
                    row["id"]
                    for row in tx.query(
                        "SELECT id FROM workstations WHERE workspace_id = ? AND deleted_at IS NULL", [workspace.id]
                    )
                ]
                for holder_id in holders:
                    tx.table("workstations").update(holder_id, {"workspace_id": None})
                    tx.table("workstation_events").insert(
                        {
                            "workstation_id": holder_id,
                            "at": now,
                            "level": "warning",
                            "message": f"Its workspace {workspace.id} was {action}; it no longer has one.",
                        }
                    )
            self._detached(holders)
            return self.get(principal, workspace.id) if not delete else workspace

    def _remove_directory(self, workspace_id: str) -> None:
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
            self._remove_directory(row["id"])
        for leftover in self._staging.iterdir():
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

    # -- files -----------------------------------------------------------------

    def _open_root(self, workspace: Workspace) -> int:
        try:
            return os.open(self.directory(workspace.id), OPEN_DIRECTORY)
        except FileNotFoundError:
            raise NotFound(f"No workspace {workspace.id!r}.") from None

    def open_file(self, principal: Principal, workspace_id: str, identifier: str) -> tuple[IO[bytes], FileInfo]:
        """A file to download, opened; the caller closes it."""
        workspace = self.get(principal, workspace_id)
        path = path_of_file_id(identifier)
        try:
            parts = split_path(path)
        except InvalidRequest:
            # No file can have such a path: an id nobody issued.
            raise NotFound(f"No file {identifier!r}.") from None
        with closing_directory(self._open_root(workspace)) as root:
            with closing_directory(walk_to_directory(root, parts[:-1], path, create=False)) as parent:
                try:
                    # O_NONBLOCK: opening a FIFO a guest left there must not hang the request.
                    fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
                except FileNotFoundError:
                    raise NotFound(f"No file {path!r} in this workspace.") from None
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise outside(path) from None
                    raise
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise NotFound(f"{path!r} in this workspace is not a file.")
        info = FileInfo(file_id(path), workspace.id, display_name(os.fsencode(path)), status.st_size, status.st_mtime)
        return os.fdopen(fd, "rb"), info

    def list_files(self, principal: Principal, workspace_id: str, limit: int, after: str | None) -> FilePage:
        """Regular files anywhere in the workspace, by path; links and special files are not shown."""
        workspace = self.get(principal, workspace_id)
        return self.list_directory(workspace, limit, after)

    def list_directory(self, workspace: Workspace, limit: int, after: str | None) -> FilePage:
        try:
            after_key = os.fsencode(path_of_file_id(after)) if after else b""
        except NotFound:
            raise InvalidRequest(
                "Not a cursor this server issued.", details={"after": ["Not a cursor this server issued."]}
            ) from None
        top = self.directory(workspace.id)
        found: list[tuple[bytes, os.stat_result]] = []
        # fwalk never descends through a symlink, and stats by descriptor.
        for directory, _dirs, files, dir_fd in os.fwalk(os.fsencode(top)):
            prefix = os.path.relpath(directory, os.fsencode(top))
            for name in files:
                relative = name if prefix == b"." else prefix + b"/" + name
                if relative <= after_key:
                    continue
                try:
                    status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed by its guest while we looked
                if stat.S_ISREG(status.st_mode):
                    found.append((relative, status))
        found.sort(key=lambda item: item[0])
        page = found[:limit]
        items = [
            FileInfo(
                id=file_id(os.fsdecode(relative)),
                workspace_id=workspace.id,
                path=display_name(relative),
                size=status.st_size,
                modified_at=status.st_mtime,
            )
            for relative, status in page
        ]
        more = len(found) > limit
        return FilePage(items, items[-1].id if more else None)

    def writable(self, principal: Principal, workspace_id: str) -> Workspace:
        """The caller's workspace, if files may be written to it."""
        workspace = self.get(principal, workspace_id)
        if workspace.status != ACTIVE:
            raise InvalidState(f"Workspace {workspace.id} is archived; its files can be read, not written.")
        return workspace

    def upload(
        self, principal: Principal, workspace_id: str, path: str, body: IO[bytes], declared_length: int | None
    ) -> tuple[FileInfo, bool]:
        """Store ``body`` at ``path``; returns the file and whether it is new."""
        parts = split_path(path)
        limit = self.max_upload_bytes
        if declared_length is not None and declared_length > limit:
            raise too_large(limit)
        with self._gate.upload(workspace_id):
            workspace = self.writable(principal, workspace_id)
            with disk_faults():
                return self._store(workspace, path, parts, body, declared_length)

    def _store(
        self, workspace: Workspace, path: str, parts: list[str], body: IO[bytes], declared_length: int | None
    ) -> tuple[FileInfo, bool]:
        """Stream to a staging file, fsync, rename into place: a failure anywhere leaves nothing."""
        limit = self.max_upload_bytes
        fd, staged = tempfile.mkstemp(dir=self._staging, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                written = 0
                while chunk := body.read(COPY_CHUNK_BYTES):
                    written += len(chunk)
                    if written > limit:
                        raise too_large(limit)
                    out.write(chunk)
                if declared_length is not None and written != declared_length:
                    raise InvalidRequest("The request body ended before its Content-Length; nothing was stored.")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(staged, 0o660)
            give_to_guest(staged)
            with closing_directory(self._open_root(workspace)) as root:
                with closing_directory(walk_to_directory(root, parts[:-1], path, create=True)) as parent:
                    try:
                        existing = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                    except FileNotFoundError:
                        existing = None
                    if existing is not None and stat.S_ISLNK(existing.st_mode):
                        raise outside(path)
                    if existing is not None and stat.S_ISDIR(existing.st_mode):
                        raise InvalidRequest(
                            f"{path!r} is a directory in this workspace; a file cannot replace it.",
                            details={"path": ["It names a directory."]},
                        )
                    # Under the lock storage is counted by, so two uploads cannot both take the last space.
                    with self._storage_lock:
                        self._require_storage(workspace.account_id, written - (existing.st_size if existing else 0))
                        os.replace(staged, parts[-1], dst_dir_fd=parent)
                    os.fsync(parent)
                    status = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            Path(staged).unlink(missing_ok=True)
        return FileInfo(file_id(path), workspace.id, path, status.st_size, status.st_mtime), existing is None
