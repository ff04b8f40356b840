"""The files in workspaces: listed, downloaded and uploaded, never through a symlink.

A running workstation sees its workspace as a share (virtiofs under libvirt),
so its guest can create anything there, symlinks to ``/etc`` included. Every
file operation therefore walks the client's path one component at a time
from the workspace's directory, with ``O_NOFOLLOW`` file descriptors: a
symlink anywhere on the path is refused, never followed, and there is no
window between a check and its use for a guest to race. Paths are also
refused on their text alone (``..``, absolute, NUL, over-long) before
anything on disk is touched.

Uploads are streamed into a staging directory beside the workspaces (the same
file system), flushed to disk, and only then renamed into place: a client
that goes away, an upload over the size limit or a crash leaves the
workspace as it was. An upload counts against the account's storage under
the storage budget's lock, so two uploads cannot both take the last space.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cwhost.accounts.tokens import Principal
from cwhost.errors import InvalidRequest, InvalidState, NotFound, disk_faults
from cwhost.workspaces.paths import (
    COPY_CHUNK_BYTES,
    OPEN_DIRECTORY,
    closing_directory,
    display_name,
    file_id,
    give_to_guest,
    outside,
    path_of_file_id,
    split_path,
    too_large,
    walk_to_directory,
)
from cwhost.workspaces.registry import ACTIVE, Workspace, Workspaces
from cwhost.workspaces.storage_budget import StorageBudget


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


class WorkspaceFiles:
    def __init__(self, workspaces: Workspaces, storage: StorageBudget, max_upload_bytes: int):
        self._workspaces = workspaces
        self._storage = storage
        self.max_upload_bytes = max_upload_bytes

    def _open_root(self, workspace: Workspace) -> int:
        try:
            return os.open(self._workspaces.directory(workspace.id), OPEN_DIRECTORY)
        except FileNotFoundError:
            raise NotFound(f"No workspace {workspace.id!r}.") from None

    def open_file(self, principal: Principal, workspace_id: str, identifier: str) -> tuple[IO[bytes], FileInfo]:
        """A file to download, opened; the caller closes it."""
        workspace = self._workspaces.get(principal, workspace_id)
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
        workspace = self._workspaces.get(principal, workspace_id)
        return self.list_directory(workspace, limit, after)

    def list_directory(self, workspace: Workspace, limit: int, after: str | None) -> FilePage:
        try:
            after_key = os.fsencode(path_of_file_id(after)) if after else b""
        except NotFound:
            raise InvalidRequest(
                "Not a cursor this server issued.", details={"after": ["Not a cursor this server issued."]}
            ) from None
        top = self._workspaces.directory(workspace.id)
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
        workspace = self._workspaces.get(principal, workspace_id)
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
        with self._workspaces.gate.upload(workspace_id):
            workspace = self.writable(principal, workspace_id)
            with disk_faults():
                return self._store(workspace, path, parts, body, declared_length)

    def _store(
        self, workspace: Workspace, path: str, parts: list[str], body: IO[bytes], declared_length: int | None
    ) -> tuple[FileInfo, bool]:
        """Stream to a staging file, fsync, rename into place: a failure anywhere leaves nothing."""
        limit = self.max_upload_bytes
        fd, staged = tempfile.mkstemp(dir=self._workspaces.staging, prefix="upload-")
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
                    with self._storage.lock:
                        self._storage.require(workspace.account_id, written - (existing.st_size if existing else 0))
                        os.replace(staged, parts[-1], dst_dir_fd=parent)
                    os.fsync(parent)
                    status = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            Path(staged).unlink(missing_ok=True)
        return FileInfo(file_id(path), workspace.id, path, status.st_size, status.st_mtime), existing is None
