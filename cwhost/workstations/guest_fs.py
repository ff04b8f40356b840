"""The files of a running workstation's guest, at any path its user may use, as that user.

Paths follow the workspace files' rules on their text (no NUL, control
characters, backslashes, empty components, ``.`` or ``..``; bounded length
and depth), except that they may be absolute; a relative one starts at the
user's home. What the user may read or write is the guest's to decide, as it
would be for the user at a shell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import InvalidRequest, Unavailable
from cwhost.workspaces.paths import split_path
from cwhost.workstations.guest_service import GuestServices
from drivers.guest_service.client import Connection

CAPABILITY = "files"
# Reading or writing a file's bytes: the most a guest may go silent in the middle.
TRANSFER_SECONDS = 60.0


def guest_path(text: str) -> str:
    """A client's guest path, checked; InvalidRequest saying what is wrong with it."""
    if text == "/":
        return text
    split_path(text[1:] if text.startswith("/") else text)
    if text.startswith("//"):
        raise InvalidRequest("Invalid file path: it has an empty component ('//').", details={"path": ["'//'"]})
    return text


KINDS = frozenset(("file", "directory", "symlink", "other"))
_MODE = re.compile(r"[0-7]{3,4}")


def entry_from_guest(raw: object) -> dict:
    """An entry the guest sent, checked field by field (a tenant with sudo can make the guest say
    anything); Unavailable when it is not one."""
    if not isinstance(raw, dict):
        raise Unavailable("The guest's service answered something that is not a file's entry.")
    path, name, kind, size, mode, modified = (
        raw.get(key) for key in ("path", "name", "type", "size", "mode", "modifiedAt")
    )
    texts_fine = isinstance(path, str) and isinstance(name, str) and "\x00" not in path + name
    size_fine = type(size) is int and size >= 0
    time_fine = type(modified) in (int, float) and 0 <= float(modified) < 1e11  # type: ignore[arg-type]
    if not (
        texts_fine and kind in KINDS and size_fine and isinstance(mode, str) and _MODE.fullmatch(mode) and time_fine
    ):
        raise Unavailable("The guest's service answered something that is not a file's entry.")
    return {"path": path, "name": name, "type": kind, "size": size, "mode": mode, "modified_at": modified}


class GuestFs:
    def __init__(self, guests: GuestServices, config: Config):
        self._guests = guests
        self._settings = config.guest_files

    def _call(self, principal: Principal, workstation_id: str, op: str, path: str, **arguments) -> dict:
        path = guest_path(path)
        ws, service = self._guests.service(principal, workstation_id, CAPABILITY)
        return self._guests.calling(ws, lambda: service.call(op, path=path, **arguments), path)

    def stat(self, principal: Principal, workstation_id: str, path: str) -> dict:
        """The path's entry; a directory's with its entries (up to the configured count)."""
        found = entry_from_guest(self._call(principal, workstation_id, "stat", path).get("entry"))
        if found["type"] != "directory":
            return found
        listing = self._call(principal, workstation_id, "list", path, limit=self._settings.max_list_entries)
        entries = listing.get("entries")
        if not isinstance(entries, list) or len(entries) > self._settings.max_list_entries:
            raise Unavailable("The guest's service answered something that is not a directory's listing.")
        return {
            **entry_from_guest(listing.get("entry")),
            "entries": [entry_from_guest(item) for item in entries],
            "truncated": listing.get("truncated") is True,
        }

    def make_directory(self, principal: Principal, workstation_id: str, path: str, parents: bool) -> dict:
        return entry_from_guest(self._call(principal, workstation_id, "mkdir", path, parents=parents).get("entry"))

    def delete(self, principal: Principal, workstation_id: str, path: str, recursive: bool) -> None:
        if guest_path(path) == "/":
            raise InvalidRequest("The guest's root directory cannot be deleted.")
        self._call(principal, workstation_id, "delete", path, recursive=recursive)

    def read(self, principal: Principal, workstation_id: str, path: str) -> tuple[dict, Iterator[bytes]]:
        path = guest_path(path)
        ws, service = self._guests.service(principal, workstation_id, CAPABILITY)
        found, chunks = self._guests.calling(ws, lambda: service.read(path, TRANSFER_SECONDS), path)
        return entry_from_guest(found), chunks

    def write(self, principal: Principal, workstation_id: str, path: str, chunks: Iterable[bytes]) -> dict:
        """The file at ``path`` replaced by ``chunks`` once they are all there; nothing changes if they
        stop short or pass guest_files.max_write_bytes."""
        path = guest_path(path)
        ws, service = self._guests.service(principal, workstation_id, CAPABILITY)
        limit = self._settings.max_write_bytes
        return entry_from_guest(
            self._guests.calling(ws, lambda: service.write(path, chunks, limit, TRANSFER_SECONDS), path)
        )

    @property
    def max_write_bytes(self) -> int:
        return self._settings.max_write_bytes

    def watch(
        self, principal: Principal, workstation_id: str, path: str, round_seconds: float
    ) -> tuple[dict, Connection]:
        path = guest_path(path)
        ws, service = self._guests.service(principal, workstation_id, CAPABILITY)
        watched, connection = self._guests.calling(ws, lambda: service.watch(path, round_seconds), path)
        return entry_from_guest(watched), connection
