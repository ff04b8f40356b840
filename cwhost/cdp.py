"""The browser over CDP: a token-bound proxy from a program to the Chromium of a running workstation.

``access.browser.cdpUrl`` is ``ws://<host>:<[browser] port>/cdp/<token>``:
Playwright's ``connect_over_cdp()`` and Puppeteer's ``connect()`` take it as
the browser's WebSocket endpoint. A connection with a known token is led to
the workstation's DevTools relay (a host port on loopback forwarded to the
guest, where socat reaches Chromium's loopback-only port): the proxy asks
Chromium for its browser endpoint, rewrites the request's path and Host to
it, and then copies bytes both ways. Without a token, or with a used-up one,
the answer is 404 and nothing reaches the guest.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import socketserver
from urllib.parse import urlsplit

from cwhost.console import HANDSHAKE_SECONDS, ConsoleTokens

MAX_HEAD_BYTES = 16 * 1024
_TOKEN_PATH = re.compile(r"^/cdp/([A-Za-z0-9_-]{20,100})$")
# What Chromium accepts as the Host of a DevTools request (it refuses other names).
DEVTOOLS_HOST = "127.0.0.1:9222"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def browser_endpoint(target: tuple[str, int]) -> str:
    """The path of Chromium's browser-wide DevTools WebSocket, from its /json/version."""
    connection = http.client.HTTPConnection(*target, timeout=HANDSHAKE_SECONDS)
    try:
        connection.request("GET", "/json/version", headers={"Host": DEVTOOLS_HOST})
        version = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return urlsplit(version["webSocketDebuggerUrl"]).path


def _splice(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    peers = {one: other, other: one}
    while True:
        readable, _, _ = select.select(list(peers), [], [])
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            peers[source].sendall(data)


class _CdpHandler(socketserver.StreamRequestHandler):
    timeout = HANDSHAKE_SECONDS
    server: CdpProxy

    def handle(self):
        head = self._read_head()
        if head is None:
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        found = _TOKEN_PATH.match(urlsplit(parts[1]).path) if len(parts) == 3 else None
        target = self.server.tokens.lookup(found.group(1)) if found else None
        if target is None:
            self.wfile.write(_NOT_FOUND)
            return
        try:
            path = browser_endpoint(target)
            upstream = socket.create_connection(target, timeout=HANDSHAKE_SECONDS)
        except (OSError, ValueError, KeyError):
            self.wfile.write(_UNAVAILABLE)
            return
        kept = [line for line in header_lines if line and not line.lower().startswith(("host:", "origin:"))]
        with upstream:
            upstream.sendall(f"{parts[0]} {path} {parts[2]}\r\nHost: {DEVTOOLS_HOST}\r\n".encode("latin-1"))
            upstream.sendall(("".join(line + "\r\n" for line in kept) + "\r\n").encode("latin-1"))
            upstream.settimeout(None)
            self.connection.settimeout(None)
            _splice(self.connection, upstream)

    def _read_head(self) -> bytes | None:
        head = b""
        while b"\r\n\r\n" not in head:
            try:
                chunk = self.connection.recv(4096)
            except OSError:
                return None
            if not chunk or len(head) > MAX_HEAD_BYTES:
                return None
            head += chunk
        # A client sends nothing more before the upgrade's answer.
        return head.split(b"\r\n\r\n", 1)[0]


class CdpProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tokens: ConsoleTokens, host: str, port: int):
        self.tokens = tokens
        super().__init__((host, port), _CdpHandler)
