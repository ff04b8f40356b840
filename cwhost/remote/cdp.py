"""The browser over CDP: a token-bound proxy from a program to the Chromium of a running workstation.

``access.browser.cdpUrl`` is ``ws://<host>:<[browser] port>/cdp/<token>``:
Playwright's ``connect_over_cdp()`` and Puppeteer's ``connect()`` take it as
the browser's WebSocket endpoint. A connection with a known token is led to
the workstation's DevTools relay, which the host alone reaches (on cwhost's
isolated guest network, where socat in the guest answers only the host and
leads to Chromium's loopback-only port): the proxy asks Chromium for its
browser endpoint, rewrites the request's path and Host to it, and then copies
bytes both ways. Without a token, or with a used-up one, the answer is 404
and nothing reaches the guest.

What the guest answers is the guest's to choose, so it is read with bounds:
at most ``MAX_VERSION_BYTES`` within the handshake's deadline, and anything
but Chromium's shape is a 503, as is a guest still booting (with Retry-After).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import select
import socket
import socketserver
from urllib.parse import urlsplit

from cwhost.remote.door_tokens import DoorTokens, NotReady
from cwhost.remote.listener_guard import HANDSHAKE_SECONDS, ConnectionCaps, GuardedServer, close_at_deadline

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
# Chromium's /json/version is under 1 KiB; more is not Chromium.
MAX_VERSION_BYTES = 64 * 1024
_TOKEN_PATH = re.compile(r"^/cdp/([A-Za-z0-9_-]{20,100})$")
# What Chromium accepts as the Host of a DevTools request (it refuses other names).
DEVTOOLS_HOST = "127.0.0.1:9222"
# How soon a client should try again while the guest's browser is not up (it boots for minutes under TCG).
BOOTING_RETRY_SECONDS = 5


class NotChromium(ValueError):
    """The guest's /json/version is not what Chromium answers."""


def _answer(status: str, error: str, message: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": error, "message": message}).encode()
    retry = f"Retry-After: {retry_after}\r\n" if retry_after else ""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{retry}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


_NOT_FOUND = _answer("404 Not Found", "not_found", "Unknown or expired CDP token.")
_MALFORMED = _answer("400 Bad Request", "invalid_request", "The request's head is not valid HTTP.")
_NOT_READY = _answer(
    "503 Service Unavailable",
    "unavailable",
    "The workstation is not ready yet: its guest has not said so (GET it with ?wait=ready).",
    retry_after=BOOTING_RETRY_SECONDS,
)
_BOOTING = _answer(
    "503 Service Unavailable",
    "unavailable",
    "The workstation's browser does not answer yet (is it still booting?).",
    retry_after=BOOTING_RETRY_SECONDS,
)


def browser_endpoint(target: tuple[str, int]) -> str:
    """The path of Chromium's browser-wide DevTools WebSocket, from its /json/version (read with bounds)."""
    connection = http.client.HTTPConnection(*target, timeout=HANDSHAKE_SECONDS)
    try:
        connection.connect()
        disarm = close_at_deadline(connection.sock)
        try:
            connection.request("GET", "/json/version", headers={"Host": DEVTOOLS_HOST})
            body = connection.getresponse().read(MAX_VERSION_BYTES + 1)
        finally:
            disarm()
    finally:
        connection.close()
    if len(body) > MAX_VERSION_BYTES:
        raise NotChromium(f"its /json/version is over {MAX_VERSION_BYTES} bytes")
    try:
        version = json.loads(body)
    except ValueError as exc:
        raise NotChromium("its /json/version is not JSON") from exc
    url = version.get("webSocketDebuggerUrl") if isinstance(version, dict) else None
    if not isinstance(url, str):
        raise NotChromium("its /json/version names no webSocketDebuggerUrl")
    return urlsplit(url).path


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


def _forwarded_headers(header_lines: list[str]) -> list[str] | None:
    """The client's headers to pass on, less Host and Origin; None if any line holds a bare CR or LF."""
    if any("\r" in line or "\n" in line for line in header_lines):
        return None
    return [line for line in header_lines if line and not line.lower().startswith(("host:", "origin:"))]


class _CdpHandler(socketserver.BaseRequestHandler):
    server: CdpProxy

    def handle(self):
        disarm = close_at_deadline(self.request)
        try:
            upstream = self._upgraded()
        finally:
            disarm()
        if upstream is not None:
            with upstream:
                upstream.settimeout(None)
                self.request.settimeout(None)
                _splice(self.request, upstream)

    def _upgraded(self) -> socket.socket | None:
        """The connection to the guest's DevTools with the upgrade request sent; None once answered here."""
        head = self._read_head()
        if head is None:
            return None
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        kept = _forwarded_headers(header_lines)
        if len(parts) != 3 or kept is None:
            self.request.sendall(_MALFORMED)
            return None
        found = _TOKEN_PATH.match(urlsplit(parts[1]).path)
        try:
            target = self.server.tokens.lookup(found.group(1)) if found else None
        except NotReady:
            self.request.sendall(_NOT_READY)
            return None
        if target is None:
            self.request.sendall(_NOT_FOUND)
            return None
        try:
            path = browser_endpoint(target)
            upstream = socket.create_connection(target, timeout=HANDSHAKE_SECONDS)
        except (OSError, http.client.HTTPException, NotChromium) as exc:
            self.server.unreachable(target, exc)
            self.request.sendall(_BOOTING)
            return None
        self.server.reachable(target)
        upstream.sendall(f"{parts[0]} {path} {parts[2]}\r\nHost: {DEVTOOLS_HOST}\r\n".encode("latin-1"))
        upstream.sendall(("".join(line + "\r\n" for line in kept) + "\r\n").encode("latin-1"))
        return upstream

    def _read_head(self) -> bytes | None:
        head = b""
        while b"\r\n\r\n" not in head:
            try:
                chunk = self.request.recv(4096)
            except OSError:
                return None
            if not chunk or len(head) > MAX_HEAD_BYTES:
                return None
            head += chunk
        # A client sends nothing more before the upgrade's answer.
        return head.split(b"\r\n\r\n", 1)[0]


class CdpProxy(GuardedServer, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tokens: DoorTokens, host: str, port: int, caps: ConnectionCaps):
        self.tokens = tokens
        self.caps = caps
        # Guests whose browser answered last time: a booting guest logs one line when it comes up,
        # not one for every client's retry before that.
        self._answering: set[tuple[str, int]] = set()
        super().__init__((host, port), _CdpHandler)

    def reachable(self, target: tuple[str, int]) -> None:
        if target not in self._answering:
            self._answering.add(target)
            log.info("the browser at %s:%s answers over CDP", *target)

    def unreachable(self, target: tuple[str, int], why: Exception) -> None:
        if target in self._answering:
            self._answering.discard(target)
            log.warning("the browser at %s:%s no longer answers over CDP: %s", *target, why)
        else:
            log.debug("the browser at %s:%s does not answer over CDP yet: %s", *target, why)
