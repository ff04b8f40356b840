"""The guest's files, as the guest user sees them: stat, list, read, write, make directories,
delete, and watch a directory.

Each operation answers one JSON frame, ``{"entry": ...}``, ``{"entries": [...],
"truncated": bool}`` or ``{"error": {"code", "message"}}``; a read follows its entry
with DATA frames and END; a write answers ``{"accepted": true}``, takes DATA frames
and END, then answers its entry; a watch answers ``{"watching": entry}`` and then one
``{"event", "path", "type"}`` frame per change until the host closes.
"""

from __future__ import annotations

import errno
import os
import posixpath
import select
import shutil
import socket
import stat as stat_module
import tempfile

from . import frames

CHUNK_BYTES = 256 * 1024
WATCH_ROUND_SECONDS = 0.5
# A watch compares a directory's entries; past this many it keeps only these.
MAX_WATCHED_ENTRIES = 10_000
WRITE_PREFIX = ".cwhost-write-"
CODES = {
    errno.ENOENT: "not_found",
    errno.EEXIST: "exists",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.ENOTDIR: "not_a_directory",
    errno.EISDIR: "is_a_directory",
    errno.ENOTEMPTY: "not_empty",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EFBIG: "too_large",
    errno.ENAMETOOLONG: "invalid",
}


class Refused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _kind(mode: int) -> str:
    if stat_module.S_ISREG(mode):
        return "file"
    if stat_module.S_ISDIR(mode):
        return "directory"
    return "symlink" if stat_module.S_ISLNK(mode) else "other"


def entry(place, local: str, status: os.stat_result | None = None) -> dict:
    status = status or os.lstat(local)
    return {
        "path": place.shown(local),
        "name": posixpath.basename(local) or "/",
        "type": _kind(status.st_mode),
        "size": status.st_size,
        "mode": f"{stat_module.S_IMODE(status.st_mode):04o}",
        "modifiedAt": status.st_mtime,
    }


def answering(operation):
    """The operation, its OSErrors answered as the error codes above (a closed connection is not one)."""

    def run(sock: socket.socket, reader: frames.Reader, request: dict, place) -> None:
        try:
            operation(sock, reader, request, place, place.local(request["path"]))
        except Refused as exc:
            frames.send_json(sock, {"error": {"code": exc.code, "message": str(exc)}})
        except (BrokenPipeError, ConnectionError):
            raise
        except OSError as exc:
            code = CODES.get(exc.errno or 0, "io_error")
            frames.send_json(sock, {"error": {"code": code, "message": exc.strerror or str(exc)}})

    return run


@answering
def stat(sock, reader, request, place, local) -> None:
    frames.send_json(sock, {"entry": entry(place, local)})


@answering
def listing(sock, reader, request, place, local) -> None:
    limit = int(request.get("limit") or MAX_WATCHED_ENTRIES)
    entries: list[dict] = []
    truncated = False
    with os.scandir(local) as found:
        for item in found:
            if len(entries) == limit:
                truncated = True
                break
            entries.append(entry(place, item.path, item.stat(follow_symlinks=False)))
    entries.sort(key=lambda item: item["name"])
    frames.send_json(sock, {"entry": entry(place, local), "entries": entries, "truncated": truncated})


@answering
def read(sock, reader, request, place, local) -> None:
    with open(local, "rb") as source:
        status = os.fstat(source.fileno())
        if stat_module.S_ISDIR(status.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        frames.send_json(sock, {"entry": entry(place, local, status)})
        # The size it had when opened, and no more: the host has promised the reader that length.
        left = status.st_size
        while left and (chunk := source.read(min(CHUNK_BYTES, left))):
            frames.send(sock, frames.DATA, chunk)
            left -= len(chunk)
    frames.send(sock, frames.END)


@answering
def write(sock, reader, request, place, local) -> None:
    """Into a new file beside the target, renamed over it once whole: a write cut short changes nothing."""
    limit = int(request["maxBytes"])
    directory = posixpath.dirname(local)
    if os.path.isdir(local):
        raise IsADirectoryError(errno.EISDIR, "Is a directory")
    handle, partial = tempfile.mkstemp(dir=directory, prefix=WRITE_PREFIX)
    try:
        with os.fdopen(handle, "wb") as target:
            frames.send_json(sock, {"accepted": True})
            _receive(reader, target, limit)
            target.flush()
            os.fsync(target.fileno())
        os.chmod(partial, 0o644 & ~_umask())
        os.replace(partial, local)
    except BaseException:
        os.unlink(partial)
        raise
    frames.send_json(sock, {"entry": entry(place, local)})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _receive(reader: frames.Reader, target, limit: int) -> None:
    written = 0
    while True:
        frame = reader.next()
        if frame is None:
            raise ConnectionAbortedError("the host closed the connection before the end")
        kind, payload = frame
        if kind == frames.END:
            return
        if kind != frames.DATA:
            raise frames.ProtocolError(f"expected data, got {kind!r}")
        written += len(payload)
        if written > limit:
            raise Refused("too_large", f"more than {limit} bytes")
        target.write(payload)


@answering
def mkdir(sock, reader, request, place, local) -> None:
    if request.get("parents"):
        os.makedirs(local, mode=0o755)
    else:
        os.mkdir(local, 0o755)
    frames.send_json(sock, {"entry": entry(place, local)})


@answering
def delete(sock, reader, request, place, local) -> None:
    if local == place.local("/"):
        raise Refused("invalid", "the root directory is not deleted")
    status = os.lstat(local)
    if stat_module.S_ISDIR(status.st_mode):
        if request.get("recursive"):
            shutil.rmtree(local)
        else:
            os.rmdir(local)
    else:
        os.unlink(local)
    frames.send_json(sock, {})


def _snapshot(local: str) -> dict[str, tuple[str, int, int]]:
    found = {}
    with os.scandir(local) as entries:
        for item in entries:
            if item.name.startswith(WRITE_PREFIX):
                continue  # a write under way, not yet a file
            status = item.stat(follow_symlinks=False)
            found[item.path] = (_kind(status.st_mode), status.st_mtime_ns, status.st_size)
            if len(found) == MAX_WATCHED_ENTRIES:
                break
    return found


@answering
def watch(sock, reader, request, place, local) -> None:
    """A directory's entries compared every round; the host's closing ends it."""
    before = _snapshot(local)
    frames.send_json(sock, {"watching": entry(place, local)})
    while True:
        readable, _, _ = select.select([sock], [], [], WATCH_ROUND_SECONDS)
        if readable and not sock.recv(4096):
            return
        try:
            now = _snapshot(local)
        except FileNotFoundError:
            frames.send_json(sock, {"event": "deleted", "path": place.shown(local), "type": "directory"})
            return
        for path in now.keys() | before.keys():
            change = _change(before.get(path), now.get(path))
            if change:
                kind = (now.get(path) or before[path])[0]
                frames.send_json(sock, {"event": change, "path": place.shown(path), "type": kind})
        before = now


def _change(old, new) -> str | None:
    if old is None:
        return "created"
    if new is None:
        return "deleted"
    return "modified" if old != new else None
