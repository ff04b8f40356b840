"""The CDP proxy: a token leads to one browser's DevTools, with the path and Host Chromium expects;
anything else gets 404 and reaches nothing. A stand-in DevTools server plays Chromium here;
tests/test_real_vm_image.py drives a real Chromium through it with a CDP client."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from cwhost.remote.cdp import CdpProxy
from cwhost.remote.door_tokens import DoorTokens as ConsoleTokens
from cwhost.remote.listener_guard import ConnectionCaps
from tests.helpers import StandInServer


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
    proxy = CdpProxy(tokens, "127.0.0.1", 0, ConnectionCaps(256, 16))
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


class StandInGuest(StandInServer):
    """A guest answering /json/version with whatever it likes, as a hostile guest may."""

    def __init__(self, answer_body: bytes):
        self.body = answer_body
        super().__init__()

    def answer(self, connection):
        head = b""
        while b"\r\n\r\n" not in head:
            head += connection.recv(4096)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body))
        try:
            connection.sendall(self.body)
        except OSError:
            pass  # the proxy stopped reading: as it should
        connection.close()


def _proxy(targets: dict):
    tokens = ConsoleTokens(targets.get, link_seconds=60)
    proxy = CdpProxy(tokens, "127.0.0.1", 0, ConnectionCaps(8, 3))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return tokens, proxy


def _answer_of(connection: socket.socket) -> tuple[bytes, dict]:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, json.loads(body)


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"webSocketDebuggerUrl": 7}', b"not json", b'{"x": "' + b"a" * (300 * 1024) + b'"}'],
    ids=["a-list", "a-number", "not-json", "300-KiB"],
)
def test_a_guest_answering_anything_but_chromiums_version_gets_a_json_503(body):
    guest = StandInGuest(body)
    tokens, proxy = _proxy({"ws-1": ("127.0.0.1", guest.port)})
    try:
        with _ask(proxy.server_address[1], f"/cdp/{tokens.websocket_token('ws-1')}") as connection:
            head, answer = _answer_of(connection)
        assert head.startswith(b"HTTP/1.1 503") and b"\r\nRetry-After: 5\r\n" in head
        assert answer["error"] == "unavailable" and "booting" in answer["message"]
    finally:
        proxy.shutdown()
        proxy.server_close()
        guest.close()


def test_a_booting_guest_gets_one_json_503_and_no_warning(caplog):
    nothing = socket.create_server(("127.0.0.1", 0))
    port = nothing.getsockname()[1]
    nothing.close()
    tokens, proxy = _proxy({"ws-1": ("127.0.0.1", port)})
    try:
        for _ in range(3):
            with _ask(proxy.server_address[1], f"/cdp/{tokens.websocket_token('ws-1')}") as connection:
                head, answer = _answer_of(connection)
            assert head.startswith(b"HTTP/1.1 503") and answer["error"] == "unavailable"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_header_line_with_a_bare_line_feed_is_refused_before_any_guest_is_reached():
    devtools = StandInDevTools()
    tokens, proxy = _proxy({"ws-1": ("127.0.0.1", devtools.port)})
    try:
        token = tokens.websocket_token("ws-1")
        with _ask(proxy.server_address[1], f"/cdp/{token}", "X-A: 1\nInjected: yes\r\n") as connection:
            head, answer = _answer_of(connection)
        assert head.startswith(b"HTTP/1.1 400") and answer["error"] == "invalid_request"
        assert devtools.requests == []
    finally:
        proxy.shutdown()
        proxy.server_close()
        devtools.close()


def test_a_slow_handshake_is_closed_at_its_deadline_and_one_peer_holds_few_connections(monkeypatch):
    from cwhost.remote import listener_guard

    monkeypatch.setattr(listener_guard, "HANDSHAKE_SECONDS", 1)
    _, proxy = _proxy({})
    port = proxy.server_address[1]
    try:
        dripping = socket.create_connection(("127.0.0.1", port), timeout=10)
        began = time.monotonic()
        # One byte at a time, each well within any per-read timeout: the deadline still ends it.
        with pytest.raises(OSError):
            for byte in b"GET /cdp/" + b"x" * 40:
                dripping.sendall(bytes([byte]))
                time.sleep(0.2)
        assert time.monotonic() - began < 5
        dripping.close()
        # 3 per peer (as this proxy is set up): a fourth is closed at once, unanswered.
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fourth:
            assert fourth.recv(10) == b""
        for connection in held:
            connection.close()
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_workstation_not_ready_yet_gets_a_json_503_with_retry_after_and_no_guest_is_reached():
    from cwhost.remote.door_tokens import NotReady

    devtools = StandInDevTools()

    def not_ready(workstation_id):
        raise NotReady(workstation_id)

    tokens = ConsoleTokens(not_ready, link_seconds=60)
    proxy = CdpProxy(tokens, "127.0.0.1", 0, ConnectionCaps(256, 16))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with _ask(proxy.server_address[1], f"/cdp/{tokens.websocket_token('ws-1')}") as connection:
            answer = connection.recv(4096).decode()
        head, body = answer.split("\r\n\r\n", 1)
        assert head.startswith("HTTP/1.1 503") and "Retry-After: 5" in head
        assert json.loads(body)["error"] == "unavailable" and "wait=ready" in json.loads(body)["message"]
        assert devtools.requests == []
    finally:
        proxy.shutdown()
        proxy.server_close()
        devtools.close()
