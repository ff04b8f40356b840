"""The browser console's WebSocket bridge (websockify) to each VM's VNC.

websockify (PyPI, as a library) runs on its own listener and asks
``DoorTokens.lookup`` (cwhost.remote.door_tokens) where a console token leads,
or ``LiveViews.lookup`` (cwhost.remote.live_views) where a live view's does:
the VNC port of that workstation's current run, which listens on the host's
loopback only. A view-only live view's input is dropped here, on its way to
the VNC server (cwhost.remote.rfb_filter). A terminal's token
(``?terminal=``, cwhost.workstations.terminals) leads to that terminal
instead: binary messages are keys, except one that starts with a NUL byte
and goes on with JSON, ``\x00{"resize": {"cols": 120, "rows": 40}}``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

from websockify.websocketproxy import LibProxyServer, ProxyRequestHandler

from cwhost.remote.door_tokens import DoorTokens
from cwhost.remote.listener_guard import HANDSHAKE_SECONDS, ConnectionCaps, GuardedServer, close_at_deadline
from cwhost.remote.live_views import LiveViews
from cwhost.remote.rfb_filter import UnreadableStream, ViewOnlyFilter
from cwhost.workstations.terminals import Terminal, Terminals


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
        self._terminal: Terminal | None = None
        self._terminal_end: socket.socket | None = None
        self._detach_view: Callable[[], None] | None = None
        self._view_only: ViewOnlyFilter | None = None
        super().setup()

    def finish(self):
        self._disarm()
        if self._detach_view is not None:
            self._detach_view()
        super().finish()

    def handle_upgrade(self):
        # websockify's own token check, in its library server, fails on any
        # unknown token with an AttributeError: the look-up is done here.
        shared: Any = self.server  # type: ignore[has-type]  # websockify has no type hints
        query = parse_qs(urlparse(self.path).query)
        if "terminal" in query:
            attached = shared.terminals.attach(query["terminal"][0])
            if attached is None:
                self.send_error(404, "Unknown or closed terminal")
                return
            self._terminal, self._terminal_end = attached
            target: tuple[str, int] | None = ("terminal", 0)  # new_websocket_client reaches no address
        elif "live" in query:
            target = self._live_view_target(shared, query["live"][0])
        else:
            target = shared.tokens.lookup((query.get("token") or [""])[0])
        if target is None:
            self.send_error(404, "Unknown or expired console token")
            return
        self.server = _OneConnection(shared, *target)
        # Authenticated: from here the proxy loop waits on select, as long as the session lasts.
        self._disarm()
        self.request.settimeout(None)
        super().handle_upgrade()

    def _live_view_target(self, shared, token: str) -> tuple[str, int] | None:
        found = shared.live_views.lookup(token)
        if found is None:
            return None
        view, target = found
        self._detach_view = shared.live_views.attach(view.id, self.request)
        if self._detach_view is None:
            return None
        self._view_only = None if view.interactive else ViewOnlyFilter()
        return target

    def new_websocket_client(self):
        if self._terminal_end is None:
            super().new_websocket_client()
            return
        try:
            self.do_proxy(self._terminal_end)
        finally:
            self._terminal_end.close()

    def recv_frames(self):
        frames, closed = super().recv_frames()
        if self._terminal is not None:
            frames = [frame for frame in frames if not self._terminal_control(frame)]
        if self._view_only is not None:
            try:
                frames = [passed for passed in map(self._view_only.feed, frames) if passed]
            except UnreadableStream as exc:
                raise self.CClose(1008, f"view-only: {exc}") from None
        return frames, closed

    def _terminal_control(self, frame: bytes) -> bool:
        """Whether ``frame`` is a terminal's control message (then it is done here, not typed)."""
        if len(frame) < 2 or frame[0] != 0:
            return False
        try:
            size = json.loads(frame[1:])["resize"]
            cols, rows = int(size["cols"]), int(size["rows"])
        except (ValueError, KeyError, TypeError):
            raise self.CClose(1003, 'a control message is \\x00 and JSON: {"resize": {"cols", "rows"}}') from None
        if not (1 <= cols <= 1000 and 1 <= rows <= 1000):
            raise self.CClose(1003, "a terminal is 1 to 1000 columns and rows")
        assert self._terminal is not None
        self._terminal.resize(cols, rows)
        return True

    def validate_connection(self):
        """Done by ``handle_upgrade``."""

    def log_message(self, format, *args):
        # websockify logs each request line, tokens and all: secrets stay out of logs.
        pass


class _ConsoleBridge(GuardedServer, LibProxyServer):
    pass


def console_bridge(
    tokens: DoorTokens, host: str, port: int, caps: ConnectionCaps, live_views: LiveViews, terminals: Terminals
) -> LibProxyServer:
    """The WebSocket-to-VNC (and terminal) listener; ``serve_forever()`` it on a thread."""
    server = _ConsoleBridge(RequestHandlerClass=_ConsoleHandler, listen_host=host, listen_port=port)
    server.caps = caps
    server.tokens = tokens
    server.live_views = live_views
    server.terminals = terminals
    server.daemon_threads = True
    # Nor does it set what its handler reads of a server listening on TCP.
    server.unix_listen = None
    return server
