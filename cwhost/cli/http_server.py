"""The production HTTP server: waitress, hardened against what a LAN can send it.

Three things waitress does not do by itself:

- **Its own refusals in the API's JSON form.** Waitress refuses some requests
  before any WSGI application sees them (a raw NUL in a header, bytes outside
  ASCII in the request target, a header section too large) and answers them
  in plain text by default. A client of this API gets one error format
  whoever refused it.
- **A refusal before the body.** Waitress reads a request's whole body
  (answering ``Expect: 100-continue`` at once) before the application sees
  it. A *preflight*, given the request line and headers, can refuse at that
  point, so a request with no valid token never has its body read, nor an
  upload to a workspace the caller cannot write or declared over the upload
  limit (cwhost.api.preflight).
- **A cap per peer.** Waitress stops accepting anyone once ``connection_limit``
  sockets are open, so a few hundred idle sockets from one host lock out
  everyone. Each peer address may hold ``max_connections_per_peer``; a
  connection beyond that is closed at once, and the total limit is far above
  what one peer can take.
"""

from __future__ import annotations

import json
import resource
import uuid
from collections.abc import Callable
from http import HTTPStatus

import waitress
from flask import Flask
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.task import ErrorTask
from waitress.utilities import Error

from cwhost.api.common import error_body
from cwhost.api.preflight import Refusal
from cwhost.remote.listener_guard import PeerCounts

# A body this small is read like any other: it costs nothing to take, and
# closing a socket with unread data resets it, so a client sending a small
# body with a bad token might lose the 401 it was sent. Larger bodies and
# chunked ones are decided from the head (clients that send
# "Expect: 100-continue" then never send them at all).
SMALL_BODY_BYTES = 64 * 1024

# (method, path as WSGI text, headers as waitress keeps them, declared body length or None if chunked)
Preflight = Callable[[str, str, dict, "int | None"], "Refusal | None"]


class RefusedBeforeBody(Error):
    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.code = refusal.status
        self.reason = refusal.message
        self.refusal = refusal


class JsonErrorTask(ErrorTask):
    def execute(self):
        error = self.request.error
        request_id = uuid.uuid4().hex
        refusal = getattr(error, "refusal", None)
        message = refusal.message if refusal else f"{error.reason}: {error.body}"
        body = (json.dumps(error_body(error.code, message, request_id), separators=(",", ":")) + "\n").encode()
        self.status = f"{error.code} {HTTPStatus(error.code).phrase}"
        self.response_headers.extend([("Content-Type", "application/json"), ("X-Request-Id", request_id)])
        self.response_headers.extend(refusal.headers if refusal else ())
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


def _parser_class(preflight: Preflight | None) -> type[HTTPRequestParser]:
    class PreflightParser(HTTPRequestParser):
        def parse_header(self, header_plus):
            super().parse_header(header_plus)
            if preflight is None:
                return
            declared = None if self.chunked else self.content_length
            if declared is not None and declared <= SMALL_BODY_BYTES:
                return
            refusal = preflight(self.command, self.path, self.headers, declared)
            if refusal is not None:
                # No "100 Continue", no body read: the answer, then the socket closes.
                self.error = RefusedBeforeBody(refusal)
                self.expect_continue = False
                self.completed = True

    return PreflightParser


def _channel_class(preflight: Preflight | None, peers: PeerCounts) -> type[HTTPChannel]:
    class CwhostChannel(HTTPChannel):
        error_task_class = JsonErrorTask
        parser_class = _parser_class(preflight)

        def __init__(self, server, sock, addr, adj, map=None):
            super().__init__(server, sock, addr, adj, map=map)
            self._peer = addr[0] if isinstance(addr, tuple) else str(addr)
            self._counted = peers.admit(self._peer)
            if not self._counted:
                self.close()

        def del_channel(self, map=None):
            # Every way a channel closes passes here (handle_close calls the
            # base class's close, which skips an override of close).
            if getattr(self, "_counted", False):
                self._counted = False
                peers.release(self._peer)
            super().del_channel(map)

    return CwhostChannel


def _allow_open_files(needed: int) -> None:
    """Raise this process's open-file limit towards ``needed`` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def make_server(
    app: Flask,
    preflight: Preflight | None = None,
    max_connections_per_peer: int = 64,
    connection_limit: int = 1024,
    **options,
):
    """A waitress server for ``app``, not yet running; ``options`` are waitress's.

    Raises OSError if it cannot listen (the port is taken, the address is not this host's).
    """
    # Sockets, plus the database, the sampler's /proc reads and the driver's files.
    _allow_open_files(connection_limit + 256)
    server = waitress.create_server(
        app,
        connection_limit=connection_limit,
        # select() cannot watch a descriptor above 1023; poll() can.
        asyncore_use_poll=True,
        **options,
    )
    server.channel_class = _channel_class(preflight, PeerCounts(max_connections_per_peer))
    return server
