"""Terminals: a program on a pseudo-terminal in the guest, reached by a token-bound WebSocket on the
console bridge; keys in, the screen out, resized in-band, taken over by a reconnect that replays the
recent screen. On the fake driver the program is `cat` (its simulated guest runs nothing of the
host's); tests/real_vm_agents.py runs a shell in a real guest."""

from __future__ import annotations

import threading
import time

import pytest
import websocket

from cwhost.remote.console import console_bridge
from cwhost.remote.listener_guard import ConnectionCaps
from tests.helpers import create_stopped
from tests.test_console import console_app  # noqa: F401  # the app with its console bridge configured


@pytest.fixture
def terminal_bridge(console_app):  # noqa: F811
    app, alice, bob = console_app
    parts = app.extensions["cwhost"]
    server = console_bridge(
        parts.console, "127.0.0.1", parts.config.console.port, ConnectionCaps(256, 16), parts.live_views,
        parts.services.terminals,
    )  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = app.test_client()
    workstation = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    url = f"/v1/workstations/{workstation['id']}"
    client.post(url + "/launch", headers=alice)
    yield client, alice, bob, url
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})
    server.shutdown()
    server.server_close()


def _connect(websocket_url: str) -> websocket.WebSocket:
    return websocket.create_connection(websocket_url.replace("localhost", "127.0.0.1"), timeout=10)


def _screen_until(ws: websocket.WebSocket, wanted: bytes) -> bytes:
    seen = b""
    deadline = time.monotonic() + 10
    while wanted not in seen:
        assert time.monotonic() < deadline, seen
        seen += ws.recv()
    return seen


def test_keys_go_in_the_screen_comes_out_and_a_reconnect_replays_it(terminal_bridge):
    client, alice, _, url = terminal_bridge
    opened = client.post(url + "/terminals", json={"cols": 100, "rows": 30}, headers=alice)
    assert opened.status_code == 201, opened.get_json()
    terminal = opened.get_json()
    assert terminal["websocketUrl"].startswith("ws://localhost:") and "?terminal=" in terminal["websocketUrl"]
    first = _connect(terminal["websocketUrl"])
    first.send_binary(b'\x00{"resize": {"cols": 120, "rows": 40}}')  # taken, never typed
    first.send_binary(b"hello terminal\r")
    # The terminal echoes the line, then cat writes it back.
    assert _screen_until(first, b"hello terminal\r\nhello terminal\r\n").count(b"hello terminal") == 2
    listed = client.get(url + "/terminals", headers=alice).get_json()["data"]
    assert [(t["id"], t["connected"]) for t in listed] == [(terminal["id"], True)]
    # A second connection takes the terminal over, the recent screen first; the first is closed.
    second = _connect(terminal["websocketUrl"])
    assert b"hello terminal" in _screen_until(second, b"hello terminal\r\nhello terminal\r\n")
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, TimeoutError)):
        while True:
            first.recv()
    second.send_binary(b"again\r")
    _screen_until(second, b"again\r\nagain\r\n")
    assert client.delete(f"{url}/terminals/{terminal['id']}", headers=alice).status_code == 204
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, TimeoutError)):
        while True:
            second.recv()
    assert client.get(url + "/terminals", headers=alice).get_json()["data"] == []
    with pytest.raises(websocket.WebSocketBadStatusException):
        _connect(terminal["websocketUrl"])


def test_a_bad_control_message_ends_the_connection_and_terminals_are_the_owners(terminal_bridge):
    client, alice, bob, url = terminal_bridge
    terminal = client.post(url + "/terminals", json={}, headers=alice).get_json()
    ws = _connect(terminal["websocketUrl"])
    ws.send_binary(b"\x00{not json")
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, TimeoutError)):
        while True:
            ws.recv()
    assert client.post(url + "/terminals", json={}, headers=bob).status_code == 404
    assert client.get(url + "/terminals", headers=bob).status_code == 404
    assert client.delete(f"{url}/terminals/{terminal['id']}", headers=bob).status_code == 404
    for bad in ({"cols": 0}, {"rows": 1001}, {"command": []}, {"command": ["x"], "shell": True}):
        assert client.post(url + "/terminals", json=bad, headers=alice).status_code == 400
    refused = client.post(url + "/terminals", json={"command": ["bash"]}, headers=alice)
    assert refused.status_code == 400 and "fake guest runs only" in refused.get_json()["message"]
    with pytest.raises(websocket.WebSocketBadStatusException):
        _connect(terminal["websocketUrl"].split("?terminal=")[0] + "?terminal=" + "x" * 43)


def test_a_fake_guests_terminal_takes_its_programs_argument_rules(terminal_bridge):
    client, alice, _, url = terminal_bridge
    # cat reads no file of the host's: beside a fake guest it runs with no arguments only.
    refused = client.post(url + "/terminals", json={"command": ["cat", "/etc/passwd"]}, headers=alice)
    assert refused.status_code == 400 and "fake guest runs only" in refused.get_json()["message"]
