"""Terminals in running workstations: a program on a pseudo-terminal in the guest (the user's login
shell unless another is asked), reached by a token-bound WebSocket on the console bridge.

One program per terminal, one viewer at a time: a new connection with the same token takes the
terminal over (the old one is closed), first receiving the recent screen (the newest
``TERMINAL_SCREEN_BYTES`` of output), so a client that lost its connection picks up where it
was. A terminal nobody is connected to for ``processes.terminal_detached_minutes`` is closed, as
is one whose program has ended. Tokens are kept as SHA-256 digests, in memory.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import threading
from dataclasses import dataclass, field

from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import NotFound, TooManyRequests
from cwhost.ids import new_id
from cwhost.workstations.account_slots import RETRY_SECONDS
from cwhost.workstations.guest_service import GuestServices
from drivers.guest_service import frames
from drivers.guest_service.client import Connection, GuestServiceUnavailable

# About two full screens of a large terminal with colours: enough to redraw what was shown.
TERMINAL_SCREEN_BYTES = 64 * 1024
CAPABILITY = "processes"


@dataclass(eq=False)
class Terminal:
    id: str
    account_id: str
    workstation_id: str
    command: tuple[str, ...]
    created_at: float
    connection: Connection = field(repr=False)
    digest: bytes = field(repr=False)
    screen: bytearray = field(default_factory=bytearray, repr=False)
    viewer: socket.socket | None = field(default=None, repr=False)
    detached_since: float | None = None
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def keys(self, data: bytes) -> None:
        with self.lock:
            self.connection.send(frames.STDIN, data)

    def resize(self, cols: int, rows: int) -> None:
        with self.lock:
            self.connection.send(frames.JSON, json.dumps({"resize": [cols, rows]}).encode())


class Terminals:
    def __init__(self, guests: GuestServices, config: Config, clock):
        self._guests = guests
        self._settings = config.processes
        self._clock = clock
        self._lock = threading.Lock()
        self._table: dict[str, Terminal] = {}
        self._by_digest: dict[bytes, str] = {}

    def open(
        self, principal: Principal, workstation_id: str, command: list[str], cols: int, rows: int
    ) -> tuple[Terminal, str]:
        """A new terminal and its token (given once, never kept)."""
        ws, service = self._guests.service(principal, workstation_id, CAPABILITY)
        self._close_abandoned()
        with self._lock:
            held = sum(t.account_id == principal.account_id for t in self._table.values())
            if held >= self._settings.max_terminals_per_account:
                raise TooManyRequests(
                    f"This account has {held} terminals open, the most it may (processes.max_terminals_per_account);"
                    " close one first.",
                    retry_after=RETRY_SECONDS,
                )
        request = {"command": command, "cols": cols, "rows": rows}
        _, connection = self._guests.calling(ws, lambda: service.terminal(request))
        token = secrets.token_urlsafe(32)
        terminal = Terminal(
            new_id("t"), principal.account_id, ws.id, tuple(command), self._clock(), connection,
            hashlib.sha256(token.encode()).digest(), detached_since=self._clock(),
        )  # fmt: skip
        with self._lock:
            self._table[terminal.id] = terminal
            self._by_digest[terminal.digest] = terminal.id
        threading.Thread(target=self._pump, args=(terminal,), name=f"terminal-{terminal.id}", daemon=True).start()
        return terminal, token

    def _pump(self, terminal: Terminal) -> None:
        """The screen's bytes into the recent screen and to the viewer, until the program ends."""
        try:
            while (frame := terminal.connection.frame()) is not None:
                kind, payload = frame
                if kind != frames.STDOUT:
                    break  # the exit: nothing more will be shown
                with terminal.lock:
                    terminal.screen += payload
                    del terminal.screen[:-TERMINAL_SCREEN_BYTES]
                    viewer = terminal.viewer
                if viewer is not None:
                    _give(viewer, payload)
        except (GuestServiceUnavailable, OSError):
            pass
        finally:
            self._end(terminal)

    def _end(self, terminal: Terminal) -> None:
        with self._lock:
            self._table.pop(terminal.id, None)
            self._by_digest.pop(terminal.digest, None)
        with terminal.lock:
            terminal.ended = True
            viewer, terminal.viewer = terminal.viewer, None
        terminal.connection.close()
        if viewer is not None:
            _let_go(viewer)

    def attach(self, token: str) -> tuple[Terminal, socket.socket] | None:
        """Take a terminal over with its token: the end of a socket pair whose other end the caller
        carries to its client (it has the recent screen waiting in it), or None for no such terminal."""
        terminal = self._table.get(self._by_digest.get(hashlib.sha256(token.encode()).digest(), ""))
        if terminal is None:
            return None
        ours, theirs = socket.socketpair()
        with terminal.lock:
            if terminal.ended:
                ours.close()
                theirs.close()
                return None
            previous, terminal.viewer, terminal.detached_since = terminal.viewer, ours, None
            _give(ours, bytes(terminal.screen))
        if previous is not None:
            _let_go(previous)
        threading.Thread(target=self._keys, args=(terminal, ours), name=f"keys-{terminal.id}", daemon=True).start()
        return terminal, theirs

    def _keys(self, terminal: Terminal, viewer: socket.socket) -> None:
        """The viewer's keys to the terminal, until it goes."""
        try:
            while data := viewer.recv(64 * 1024):
                terminal.keys(data)
        except OSError:
            pass
        with terminal.lock:
            if terminal.viewer is viewer:
                terminal.viewer, terminal.detached_since = None, self._clock()
        viewer.close()

    def _close_abandoned(self) -> None:
        horizon = self._clock() - self._settings.terminal_detached_minutes * 60
        for terminal in list(self._table.values()):
            if terminal.detached_since is not None and terminal.detached_since < horizon:
                self._end(terminal)

    def listed(self, principal: Principal, workstation_id: str) -> list[Terminal]:
        ws = self._guests.owned(principal, workstation_id)
        self._close_abandoned()
        return sorted((t for t in list(self._table.values()) if t.workstation_id == ws.id), key=lambda t: t.created_at)

    def close(self, principal: Principal, workstation_id: str, terminal_id: str) -> None:
        ws = self._guests.owned(principal, workstation_id)
        terminal = self._table.get(terminal_id)
        if terminal is None or terminal.workstation_id != ws.id:
            raise NotFound(f"Workstation {ws.id} has no terminal {terminal_id}.")
        self._end(terminal)


def _give(viewer: socket.socket, data: bytes) -> None:
    """To the viewer, if it is still there (a gone viewer is noticed by its keys' thread)."""
    try:
        viewer.sendall(data)
    except OSError:
        pass


def _let_go(viewer: socket.socket) -> None:
    """End a viewer's socket pair: shut down first, which wakes its keys' thread and tells the
    bridge (a close alone would wait for that thread's read to return)."""
    try:
        viewer.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    viewer.close()
