"""The browser console: one-time links to a page, and the WebSocket bridge (websockify) to each VM's VNC.

Tokens are signed, not stored: a token names its workstation, its expiry and
its answer's nonce, and carries a keyed BLAKE2b MAC of them under a key made at start-up and
kept in memory only. Minting one is a hash, with nothing written or kept, so
a list of 200 running workstations can show each a fresh link; a restart
makes a new key, and every token from before it answers 404. One MAC gives
both tokens of a workstation in an answer: its first half signs the console
link, its second the WebSocket token, and neither half tells the other.

A console link works once, within ``link_seconds`` (the links opened are
remembered until they expire); opening it mints a WebSocket token the page
connects with. ``websocket_token`` mints one for a program that embeds noVNC
itself. websockify (PyPI, as a library) runs on its own listener and asks
``ConsoleTokens.lookup`` where a token leads: the VNC port of that
workstation's current run, which listens on the host's loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from websockify.websocketproxy import LibProxyServer, ProxyRequestHandler

from cwhost.listener_guard import HANDSHAKE_SECONDS, ConnectionCaps, GuardedServer, close_at_deadline

# The most opened, unexpired links remembered at once; beyond it links are refused.
MAX_OPENED = 100_000
# Two 128-bit MACs from one 256-bit digest, in hex.
_LINK, _SOCKET = slice(0, 32), slice(32, 64)
_MAC = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Grant:
    workstation_id: str
    expires_at: float


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
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        # Console links already opened, until they expire; in the order they were opened.
        self._opened: dict[str, float] = {}

    def minter(self, link_prefix: str = "", socket_prefix: str = "") -> Callable[[str], tuple[str, str]]:
        """For one answer: each workstation's (console link, WebSocket token), valid ``link_seconds``.

        Each comes after its prefix: the answer's URLs, whole, with no second concatenation per row.
        """
        # The answer's own nonce: reading the same workstation twice in a second gives fresh links too.
        answer = f"_{int(self._clock() + self.link_seconds)}_{secrets.token_hex(8)}"
        # Keyed once per answer; each workstation's MAC continues a copy of it.
        keyed = hashlib.blake2b(key=self._key, digest_size=32)

        def tokens(workstation_id: str) -> tuple[str, str]:
            signed = workstation_id + answer
            mac = keyed.copy()
            mac.update(signed.encode())
            digest = mac.hexdigest()
            return f"{link_prefix}{signed}_{digest[_LINK]}", f"{socket_prefix}{signed}_{digest[_SOCKET]}"

        return tokens

    def console_link(self, workstation_id: str) -> str:
        """A token for one opening of the console page."""
        return self.minter()(workstation_id)[0]

    def websocket_token(self, workstation_id: str) -> str:
        """A token to connect to the workstation's VNC over WebSocket, until it expires."""
        return self.minter()(workstation_id)[1]

    def _verified(self, token: str, half: slice) -> Grant | None:
        parts = token.rsplit("_", 3)
        if len(parts) != 4 or not parts[1].isdigit() or len(parts[1]) > 12:
            return None
        workstation_id, expires, nonce, mac = parts
        # compare_digest takes ASCII text only: anything else is no MAC of ours.
        if _MAC.fullmatch(mac) is None or not workstation_id.isascii() or not nonce.isascii():
            return None
        signed = f"{workstation_id}_{expires}_{nonce}".encode()
        expected = hashlib.blake2b(signed, key=self._key, digest_size=32).hexdigest()[half]
        if not hmac.compare_digest(expected, mac) or int(expires) <= self._clock():
            return None
        return Grant(workstation_id, float(expires))

    def open_link(self, token: str) -> Grant | None:
        """The grant of a console link, used up by this call; None if unknown, used or expired."""
        grant = self._verified(token, _LINK)
        if grant is None:
            return None
        now = self._clock()
        with self._lock:
            if token in self._opened:
                return None
            while self._opened and next(iter(self._opened.values())) <= now:
                del self._opened[next(iter(self._opened))]
            if len(self._opened) >= MAX_OPENED:
                # Expiries are not in opening order, so expired links may sit behind a live one.
                self._opened = {opened: until for opened, until in self._opened.items() if until > now}
                if len(self._opened) >= MAX_OPENED:
                    # Forgetting a live link would let it open twice.
                    return None
            self._opened[token] = grant.expires_at
        return grant

    def lookup(self, token: str) -> tuple[str, int] | None:
        """Where a WebSocket token leads, while it lasts and the workstation runs (the bridge and the CDP proxy ask)."""
        grant = self._verified(token, _SOCKET)
        return self._target_of(grant.workstation_id) if grant is not None else None


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

    def setup(self):
        self._disarm = close_at_deadline(self.request)
        super().setup()

    def finish(self):
        self._disarm()
        super().finish()

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
        self._disarm()
        self.request.settimeout(None)
        super().handle_upgrade()

    def validate_connection(self):
        """Done by ``handle_upgrade``."""

    def log_message(self, format, *args):
        # websockify logs each request line, tokens and all: secrets stay out of logs.
        pass


class _ConsoleBridge(GuardedServer, LibProxyServer):
    pass


def console_bridge(tokens: ConsoleTokens, host: str, port: int, caps: ConnectionCaps) -> LibProxyServer:
    """The WebSocket-to-VNC listener; ``serve_forever()`` it on a thread."""
    server = _ConsoleBridge(RequestHandlerClass=_ConsoleHandler, listen_host=host, listen_port=port)
    server.caps = caps
    server.tokens = tokens
    server.daemon_threads = True
    # Nor does it set what its handler reads of a server listening on TCP.
    server.unix_listen = None
    return server
