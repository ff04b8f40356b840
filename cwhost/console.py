"""The browser console: one-time links to a page, and the WebSocket bridge (websockify) to each VM's VNC.

Every secret here lives in memory only, by its SHA-256: a restart forgets
them all, and a link or token from before it answers 404. A console link
works once, within ``link_seconds``; opening it mints a WebSocket token the
page connects with. ``websocket_token`` mints one for a program that embeds
noVNC itself. websockify (PyPI, as a library) runs on its own listener and
asks ``ConsoleTokens.lookup`` where a token leads: the VNC port of that
workstation's current run, which listens on the host's loopback only.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from websockify.websocketproxy import LibProxyServer, ProxyRequestHandler

# The most secrets kept at once; beyond it the oldest go first.
MAX_TOKENS = 100_000
# Seconds an unauthenticated WebSocket handshake may take.
HANDSHAKE_SECONDS = 10


@dataclass(frozen=True)
class Grant:
    account_id: str
    workstation_id: str
    expires_at: float


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleTokens:
    def __init__(
        self,
        target_of: Callable[[str], tuple[str, int] | None],
        link_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        # Where a token of a running workstation leads (its VNC, or its DevTools relay); None when nowhere.
        self._target_of = target_of
        self.link_seconds = link_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._links: dict[str, Grant] = {}
        self._sockets: dict[str, Grant] = {}

    def _mint(self, table: dict[str, Grant], account_id: str, workstation_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            # Every grant lives link_seconds, so the table is in order of expiry: the expired are its head.
            while table and (len(table) >= MAX_TOKENS or next(iter(table.values())).expires_at <= now):
                del table[next(iter(table))]
            table[_key(token)] = Grant(account_id, workstation_id, now + self.link_seconds)
        return token

    def console_link(self, account_id: str, workstation_id: str) -> str:
        """A token for one opening of the console page."""
        return self._mint(self._links, account_id, workstation_id)

    def websocket_token(self, account_id: str, workstation_id: str) -> str:
        """A token to connect to the workstation's VNC over WebSocket, until it expires."""
        return self._mint(self._sockets, account_id, workstation_id)

    def open_link(self, token: str) -> Grant | None:
        """The grant of a console link, used up by this call; None if unknown, used or expired."""
        with self._lock:
            grant = self._links.pop(_key(token), None)
        return grant if grant is not None and grant.expires_at > self._clock() else None

    def lookup(self, token: str) -> tuple[str, int] | None:
        """Where a WebSocket token leads, while it lasts and the workstation runs (the bridge and the CDP proxy ask)."""
        with self._lock:
            grant = self._sockets.get(_key(token))
        if grant is None or grant.expires_at <= self._clock():
            return None
        return self._target_of(grant.workstation_id)


class _OneConnection:
    """The proxy server as one connection sees it, with a target of its own.

    websockify's handler stores the target a token leads to on the server
    object, which every thread of a threaded server shares: two connections at
    once could swap targets. Each handler gets this view instead.
    """

    def __init__(self, server, target_host: str, target_port: int):
        self._server = server
        self.target_host = target_host
        self.target_port = target_port

    def __getattr__(self, name):
        return getattr(self._server, name)


class _ConsoleHandler(ProxyRequestHandler):
    timeout = HANDSHAKE_SECONDS

    def handle_upgrade(self):
        # websockify's own token check, in its library server, fails on any
        # unknown token with an AttributeError: the look-up is done here.
        shared: Any = self.server  # type: ignore[has-type]  # websockify has no type hints
        tokens = parse_qs(urlparse(self.path).query).get("token") or [""]
        target = shared.tokens.lookup(tokens[0])
        if target is None:
            self.send_error(404, "Unknown or expired console token")
            return
        self.server = _OneConnection(shared, *target)
        # Authenticated: from here the proxy loop waits on select, as long as the session lasts.
        self.request.settimeout(None)
        super().handle_upgrade()

    def validate_connection(self):
        """Done by ``handle_upgrade``."""

    def log_message(self, format, *args):
        # websockify logs each request line, tokens and all: secrets stay out of logs.
        pass


def console_bridge(tokens: ConsoleTokens, host: str, port: int) -> LibProxyServer:
    """The WebSocket-to-VNC listener; ``serve_forever()`` it on a thread."""
    server = LibProxyServer(RequestHandlerClass=_ConsoleHandler, listen_host=host, listen_port=port)
    server.tokens = tokens
    server.daemon_threads = True
    # Nor does it set what its handler reads of a server listening on TCP.
    server.unix_listen = None
    return server
