"""The CDP proxy: a token leads to one browser's DevTools, with the path and Host Chromium expects;
anything else gets 404 and reaches nothing. A stand-in DevTools server plays Chromium here;
tests/test_real_vm_image.py drives a real Chromium through it with Playwright."""

from __future__ import annotations

import json
import socket
import threading

from cwhost.cdp import CdpProxy
from cwhost.console import ConsoleTokens
from tests.conftest import StandInServer


class StandInDevTools(StandInServer):
    """Answers /json/version as Chromium does, and then any other request with 101 and an echo."""

    def __init__(self):
        self.requests: list[bytes] = []
        super().__init__()

    def answer(self, connection):
        head = b""
        while b"\r\n\r\n" not in head:
            head += connection.recv(4096)
        self.requests.append(head)
        if head.startswith(b"GET /json/version "):
            body = json.dumps({"webSocketDebuggerUrl": "ws://127.0.0.1:9222/devtools/browser/abc-123"}).encode()
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            connection.close()
            return
        connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        while data := connection.recv(4096):
            connection.sendall(data)


def _ask(port: int, path: str, extra: str = "") -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(
        f"GET {path} HTTP/1.1\r\nHost: gpu-server.lan:{port}\r\nOrigin: http://evil.example\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n".encode()
    )
    return connection


def test_a_token_leads_to_the_browsers_endpoint_and_nothing_else_does():
    devtools = StandInDevTools()
    tokens = ConsoleTokens({"ws-1": ("127.0.0.1", devtools.port)}.get, link_seconds=60)
    proxy = CdpProxy(tokens, "127.0.0.1", 0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    port = proxy.server_address[1]
    try:
        token = tokens.websocket_token("ws-1")
        with _ask(port, f"/cdp/{token}", "Sec-WebSocket-Key: abc\r\n") as connection:
            assert connection.recv(4096).startswith(b"HTTP/1.1 101")
            connection.sendall(b"frame bytes")
            assert connection.recv(4096) == b"frame bytes"
        upgrade = devtools.requests[-1].decode()
        assert upgrade.startswith("GET /devtools/browser/abc-123 HTTP/1.1\r\nHost: 127.0.0.1:9222\r\n")
        assert "Sec-WebSocket-Key: abc" in upgrade and "Origin" not in upgrade and "gpu-server.lan" not in upgrade
        seen = len(devtools.requests)
        for path in ("/cdp/" + "x" * 43, "/cdp/short", f"/other/{token}", "/json/version"):
            with _ask(port, path) as refused:
                assert refused.recv(4096).startswith(b"HTTP/1.1 404"), path
        assert len(devtools.requests) == seen
    finally:
        proxy.shutdown()
        proxy.server_close()
        devtools.close()
