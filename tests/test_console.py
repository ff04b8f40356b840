"""The browser console: one-time links, the page they open, and the WebSocket bridge to VNC.

The bridge is real websockify on loopback, in front of a stand-in VNC
server that greets as VNC does; tests/test_real_vm_image.py opens the real
console of a real VM in Chromium.
"""

from __future__ import annotations

import base64
import os
import socket
import threading

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from cwhost.remote.console import console_bridge
from cwhost.remote.door_tokens import DoorTokens as ConsoleTokens
from cwhost.remote.listener_guard import ConnectionCaps
from cwhost.remote.live_views import LiveViews
from tests.helpers import StandInServer, bearer, create_stopped, free_port, make_config, power_off_fake_guests


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_link_opens_once_and_not_after_it_expires():
    clock = Clock()
    tokens = ConsoleTokens(lambda workstation_id: ("127.0.0.1", 5901), link_seconds=300, clock=clock)
    link = tokens.console_link("ws-1")
    assert tokens.open_link(link).workstation_id == "ws-1"
    assert tokens.open_link(link) is None
    late = tokens.console_link("ws-1")
    clock.now += 301
    assert tokens.open_link(late) is None
    assert tokens.open_link("made-up") is None


def test_a_token_cannot_be_turned_into_another_or_outlive_a_restart():
    clock = Clock()
    running = {"ws-1": ("127.0.0.1", 5901), "ws-2": ("127.0.0.1", 5902)}
    tokens = ConsoleTokens(running.get, link_seconds=60, clock=clock)
    link, socket_token = tokens.minter()("ws-1")
    assert link != socket_token
    # Each signs one use: a link is no WebSocket token, nor the reverse.
    assert tokens.lookup(link) is None and tokens.open_link(socket_token) is None
    name, expires, nonce, mac = socket_token.rsplit("_", 3)
    # Another workstation or a later expiry under the same signature is refused.
    assert tokens.lookup(f"ws-2_{expires}_{nonce}_{mac}") is None
    assert tokens.lookup(f"{name}_{int(expires) + 3600}_{nonce}_{mac}") is None
    assert tokens.lookup(socket_token) == ("127.0.0.1", 5901)
    # A restart has a new key: nothing minted before it leads anywhere.
    restarted = ConsoleTokens(running.get, link_seconds=60, clock=clock)
    assert restarted.lookup(socket_token) is None and restarted.open_link(link) is None


def test_one_answer_mints_a_distinct_token_for_each_workstation():
    tokens = ConsoleTokens({"ws-1": ("127.0.0.1", 5901), "ws-2": ("127.0.0.1", 5902)}.get, link_seconds=60)
    mint = tokens.minter()
    (link_1, socket_1), (link_2, socket_2) = mint("ws-1"), mint("ws-2")
    assert len({link_1, socket_1, link_2, socket_2}) == 4
    assert [tokens.lookup(socket_1), tokens.lookup(socket_2)] == [("127.0.0.1", 5901), ("127.0.0.1", 5902)]
    assert tokens.open_link(link_2).workstation_id == "ws-2"


def test_a_websocket_token_leads_to_its_workstations_vnc_until_it_expires():
    clock = Clock()
    running = {"ws-1": ("127.0.0.1", 5901)}
    tokens = ConsoleTokens(running.get, link_seconds=60, clock=clock)
    token = tokens.websocket_token("ws-1")
    assert tokens.lookup(token) == ("127.0.0.1", 5901)
    running.clear()  # stopped
    assert tokens.lookup(token) is None
    running["ws-1"] = ("127.0.0.1", 5907)  # launched again: the new run's port
    assert tokens.lookup(token) == ("127.0.0.1", 5907)
    clock.now += 61
    assert tokens.lookup(token) is None
    assert tokens.lookup("made-up") is None


@pytest.fixture
def console_app(tmp_path):
    novnc = tmp_path / "novnc"
    (novnc / "core").mkdir(parents=True)
    (novnc / "core" / "rfb.js").write_text("export default class RFB {}\n")
    (novnc / "vnc.html").write_text("not served")
    config = make_config(tmp_path / "data", console={"port": free_port(), "novnc_dir": str(novnc)})
    Database(config.database_path).migrate()
    app = create_app(config)
    db = app.extensions["cwhost"].db
    yield app, bearer(auth.create_key(db, "alice").token), bearer(auth.create_key(db, "bob").token)
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


def test_a_running_workstations_console_link_opens_the_page_once(console_app):
    app, alice, _ = console_app
    client = app.test_client()
    workstation = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    assert workstation["access"] is None
    launched = client.post(f"/v1/workstations/{workstation['id']}/launch", headers=alice).get_json()
    console = launched["access"]["console"]
    assert console["url"].startswith("http://localhost/console/")
    port = app.extensions["cwhost"].config.console.port
    assert console["websocketUrl"].startswith(f"ws://localhost:{port}/?token=")
    # Every read gives fresh links.
    again = client.get(f"/v1/workstations/{workstation['id']}", headers=alice).get_json()["access"]["console"]
    assert again["url"] != console["url"]
    # Before its guest says it is ready: 503, and the link is not used up.
    early = client.get(console["url"].removeprefix("http://localhost"))
    assert early.status_code == 503 and early.headers["Retry-After"] and early.get_json()["error"] == "unavailable"
    app.extensions["cwhost"].services.readiness.check()

    page = client.get(console["url"].removeprefix("http://localhost"))
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert console["password"] in html and '"port": %d' % port in html
    assert page.headers["Cache-Control"] == "no-store" and "nonce-" in page.headers["Content-Security-Policy"]
    used = client.get(console["url"].removeprefix("http://localhost"))
    assert used.status_code == 404 and used.get_json()["error"] == "not_found"
    assert client.get("/console/made-up-token").status_code == 404
    # A token that is no hex MAC (non-ASCII here) is unknown like any other, not a crash.
    for made_up in ("/console/ws-x_123_abc_%C3%A9", "/console/ws-x_123_abc_" + "%C3%A9" * 16):
        refused = client.get(made_up)
        assert refused.status_code == 404 and refused.get_json()["error"] == "not_found", made_up
    # noVNC's modules are served, nothing else of its directory.
    for path, status in (
        ("/console/novnc/core/rfb.js", 200),
        ("/console/novnc/vnc.html", 404),
        ("/console/novnc/core/../vnc.html", 404),
    ):
        with client.get(path) as asset:
            assert asset.status_code == status, path


def test_a_link_of_a_stopped_workstation_opens_nothing(console_app):
    app, alice, _ = console_app
    client = app.test_client()
    workstation = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    url = client.post(f"/v1/workstations/{workstation['id']}/launch", headers=alice).get_json()["access"]["console"]
    client.post(f"/v1/workstations/{workstation['id']}/stop", headers=alice, query_string={"force": "true"})
    answer = client.get(url["url"].removeprefix("http://localhost"))
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_state"


class StandInVnc(StandInServer):
    """Greets every connection as a VNC server does, with its own name."""

    def __init__(self, name: bytes):
        self.greeting = b"RFB 003.008\n" + name
        super().__init__()

    def answer(self, connection):
        connection.sendall(self.greeting)


def _websocket_read(port: int, token: str) -> bytes:
    """Open a WebSocket to the bridge (by hand, as RFC 6455 says) and read the first binary frame."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        key = base64.b64encode(os.urandom(16)).decode()
        connection.sendall(
            f"GET /?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: binary\r\n\r\n".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = connection.recv(4096)
            if not chunk:
                return b""
            reply += chunk
        head, _, rest = reply.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            return b""
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            rest += connection.recv(4096)
        return rest[2 : 2 + (rest[1] & 0x7F)]


def test_the_bridge_leads_each_token_to_its_own_vnc_and_nothing_else():
    first, second = StandInVnc(b"first"), StandInVnc(b"second")
    running = {"ws-1": ("127.0.0.1", first.port), "ws-2": ("127.0.0.1", second.port)}
    tokens = ConsoleTokens(running.get, link_seconds=60)
    bridge = console_bridge(tokens, "127.0.0.1", 0, ConnectionCaps(256, 16), LiveViews(running.get, 5), None)
    port = bridge.server_address[1]
    threading.Thread(target=bridge.serve_forever, daemon=True).start()
    try:
        one, two = tokens.websocket_token("ws-1"), tokens.websocket_token("ws-2")
        assert _websocket_read(port, one) == first.greeting
        # Many at once, on the threads of one server: each connection reaches its own target.
        answers: dict[int, bytes] = {}
        work = [(i, one if i % 2 else two) for i in range(16)]
        threads = [
            threading.Thread(target=lambda i, t: answers.__setitem__(i, _websocket_read(port, t)), args=w) for w in work
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert answers == {i: first.greeting if i % 2 else second.greeting for i in range(16)}
        assert _websocket_read(port, "made-up") == b""
        assert _websocket_read(port, f"ws-1_{10**11}_abc_" + "%C3%A9" * 16) == b""
        # The bridge still serves after them.
        assert _websocket_read(port, one) == first.greeting
    finally:
        bridge.shutdown()
        bridge.server_close()
        first.close()
        second.close()


def test_an_idempotent_launch_keeps_no_secret_and_its_replay_mints_fresh_links(console_app):
    app, alice, _ = console_app
    client = app.test_client()
    workstation = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    launch = f"/v1/workstations/{workstation['id']}/launch"
    first = client.post(launch, headers={**alice, "Idempotency-Key": "launch-secret"}).get_json()
    console = first["access"]["console"]
    kept = app.extensions["cwhost"].db.query_one("SELECT body FROM idempotency_keys")["body"]
    assert console["password"] not in kept and console["url"].rsplit("/", 1)[1] not in kept
    assert '"access":null' in kept
    replay = client.post(launch, headers={**alice, "Idempotency-Key": "launch-secret"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    again = replay.get_json()["access"]["console"]
    assert again["password"] == console["password"] and again["url"] != console["url"]
    app.extensions["cwhost"].services.readiness.check()
    assert client.get(again["url"].removeprefix("http://localhost")).status_code == 200
    assert {k: v for k, v in replay.get_json().items() if k != "access"} == {
        k: v for k, v in first.items() if k != "access"
    }
