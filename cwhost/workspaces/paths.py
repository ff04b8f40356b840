"""Paths inside a workspace, file ids, and the small guards every file operation uses.

A workspace is shared with its guest, which can create anything in it,
symlinks to ``/etc`` included. Paths are therefore refused on their text
alone (``..``, absolute, NUL, control characters, over-long) before anything
on disk is touched, and walked one component at a time with ``O_NOFOLLOW``
descriptors (cwhost.workspaces.files).
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cwhost.errors import InvalidRequest, NotFound, PayloadTooLarge
from drivers.base import GUEST_UID

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 64
COPY_CHUNK_BYTES = 1024 * 1024
FILE_ID_PREFIX = "f-"
# Unpadded URL-safe base64 of at most 6 KiB (a path is at most 4096 bytes):
# every text of this shape decodes, so the document's pattern is the server's rule.
FILE_ID_PATTERN = FILE_ID_PREFIX + r"(?:[A-Za-z0-9_-]{4}){0,2048}(?:[A-Za-z0-9_-]{2,3})?"
FILE_ID = re.compile(f"^{FILE_ID_PATTERN}$")
OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(text: str) -> list[str]:
    """A client's file path as its components, or InvalidRequest saying what is wrong with it."""

    def refuse(reason: str) -> InvalidRequest:
        return InvalidRequest(f"Invalid file path: {reason}.", details={"path": [reason]})

    if not text:
        raise refuse("it is empty")
    if "\x00" in text:
        raise refuse("it contains a NUL byte")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise refuse("it contains control characters")
    if "\\" in text:
        raise refuse("it contains a backslash; separate directories with '/'")
    try:
        encoded = os.fsencode(text)
    except UnicodeEncodeError:
        raise refuse("it is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise refuse(f"it is longer than {MAX_PATH_BYTES} bytes")
    if text.startswith("/"):
        raise refuse("it must be relative to the workspace, not absolute")
    parts = text.split("/")
    if len(parts) > MAX_DEPTH:
        raise refuse(f"it is more than {MAX_DEPTH} directories deep")
    for part in parts:
        if part == "":
            raise refuse("it has an empty component ('//' or a trailing '/')")
        if part in (".", ".."):
            raise refuse("'.' and '..' are not allowed")
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise refuse(f"a name in it is longer than {MAX_NAME_BYTES} bytes")
    return parts


def file_id(path: str) -> str:
    """A file's id: its path, reversibly and URL-safely encoded (the files themselves are the record)."""
    return FILE_ID_PREFIX + base64.urlsafe_b64encode(os.fsencode(path)).decode("ascii").rstrip("=")


def path_of_file_id(identifier: str) -> str:
    if not FILE_ID.fullmatch(identifier):
        raise NotFound(f"No file {identifier!r}.")
    encoded = identifier[len(FILE_ID_PREFIX) :]
    try:
        return os.fsdecode(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        raise NotFound(f"No file {identifier!r}.") from None


def tree_bytes(top: Path) -> int:
    """The bytes of the regular files under ``top``, links not followed."""
    total = 0
    for _directory_path, _dirs, files, dir_fd in os.fwalk(top):
        for name in files:
            try:
                status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(status.st_mode):
                total += status.st_size
    return total


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The file is larger than this server's upload limit of {limit} bytes.")


def outside(path: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid file path {path!r}: it passes through a link or something that is not a directory.",
        details={"path": ["It must name a place inside the workspace through directories only."]},
    )


class WriteGate:
    """Orders uploads and deletion per workspace: uploads share it, a deletion takes it alone.

    An upload therefore either completes before a deletion starts (and is
    deleted with the workspace) or starts after it and finds no workspace;
    a deletion never races files appearing in the tree it removes.
    """

    def __init__(self):
        self._changed = threading.Condition()
        self._uploads: Counter[str] = Counter()
        self._deleting: set[str] = set()

    @contextmanager
    def upload(self, workspace_id: str) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: workspace_id not in self._deleting)
            self._uploads[workspace_id] += 1
        try:
            yield
        finally:
            with self._changed:
                self._uploads[workspace_id] -= 1
                if not self._uploads[workspace_id]:
                    del self._uploads[workspace_id]
                self._changed.notify_all()

    @contextmanager
    def deletion(self, workspace_id: str) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: workspace_id not in self._deleting)
            self._deleting.add(workspace_id)
            self._changed.wait_for(lambda: not self._uploads[workspace_id])
        try:
            yield
        finally:
            with self._changed:
                self._deleting.discard(workspace_id)
                self._changed.notify_all()


def display_name(relative: bytes) -> str:
    """A path as text; bytes that are not UTF-8 (a guest can write such names) show as ``\\xff``.

    Never U+FFFD: two different names must never look the same.
    """
    return relative.decode("utf-8", "backslashreplace")


def give_to_guest(path: str | Path, dir_fd: int | None = None) -> None:
    """Make a workspace file or directory the guest user's, as the guest's own files are.

    The service keeps reaching them as root or, under the systemd unit, with
    CAP_DAC_OVERRIDE; a service run by hand without CAP_CHOWN leaves them its
    own, and the guest's user can then not write them.
    """
    try:
        os.chown(path, GUEST_UID, GUEST_UID, dir_fd=dir_fd, follow_symlinks=False)
    except PermissionError:
        pass


@contextmanager
def closing_directory(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def walk_to_directory(root_fd: int, parts: list[str], path: str, create: bool) -> int:
    """A descriptor of the directory ``parts`` names below ``root_fd``, refusing any link."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o770, dir_fd=fd)
                    give_to_guest(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, OPEN_DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                raise NotFound(f"No file {path!r} in this workspace.") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise outside(path) from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise
