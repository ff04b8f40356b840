"""Live views: links to a running workstation's screen for any page's iframe, view-only unless asked,
for a set time, revocable, and each account's own. Through the real bridge (websockify on loopback) to a
stand-in VNC server that keeps what reaches it; tests/test_real_vm_image.py watches a real guest's."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
import websocket

from cwhost.remote.console import console_bridge
from cwhost.remote.door_tokens import DoorTokens
from cwhost.remote.listener_guard import ConnectionCaps
from cwhost.remote.live_views import LiveViews
from tests.helpers import StandInServer, create_stopped, wait_until
from tests.test_console import console_app  # noqa: F401  # the app with its console bridge configured
from tests.test_rfb_filter import HANDSHAKE, KEY, POINTER, UPDATE

SERVER_GREETING = b"RFB 003.008\n"


class RecordingVnc(StandInServer):
    """Greets as VNC does and keeps every byte a client sends."""

    def __init__(self):
        self.received = bytearray()
        super().__init__()

    def answer(self, connection: socket.socket) -> None:
        connection.sendall(SERVER_GREETING)
        while chunk := connection.recv(4096):
            self.received += chunk


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def bridge():
    vnc = RecordingVnc()
    views = LiveViews({"ws-1": ("127.0.0.1", vnc.port)}.get, max_per_workstation=3)
    server = console_bridge(DoorTokens({}.get, 60), "127.0.0.1", 0, ConnectionCaps(256, 16), views, None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield views, vnc, server.server_address[1]
    server.shutdown()
    server.server_close()
    vnc.close()


def _connect(port: int, token: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/?live={token}", subprotocols=["binary"], timeout=10)
    assert ws.recv() == SERVER_GREETING
    return ws


def _typed_and_asked(ws: websocket.WebSocket) -> None:
    for message in (HANDSHAKE, KEY, POINTER, UPDATE):
        ws.send_binary(message)


def test_a_view_only_viewers_input_never_reaches_the_server_and_an_interactive_ones_does(bridge):
    views, vnc, port = bridge
    _, view_only = views.create("ws-1", interactive=False, seconds=60)
    viewer = _connect(port, view_only)
    _typed_and_asked(viewer)
    wait_until(lambda: len(vnc.received) >= len(HANDSHAKE + UPDATE), 10, "the picture request")
    time.sleep(0.2)
    assert bytes(vnc.received) == HANDSHAKE + UPDATE
    viewer.close()
    vnc.received.clear()
    _, interactive = views.create("ws-1", interactive=True, seconds=60)
    user = _connect(port, interactive)
    _typed_and_asked(user)
    wait_until(lambda: bytes(vnc.received) == HANDSHAKE + KEY + POINTER + UPDATE, 10, "everything")
    user.close()


def test_a_client_that_sends_what_cannot_be_read_is_cut_off(bridge):
    views, vnc, port = bridge
    _, token = views.create("ws-1", interactive=False, seconds=60)
    viewer = _connect(port, token)
    viewer.send_binary(HANDSHAKE)
    wait_until(lambda: bytes(vnc.received) == HANDSHAKE, 10, "the handshake")
    viewer.send_binary(struct.pack(">BBH", 99, 0, 0))
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        for _ in range(50):
            viewer.send_binary(UPDATE)
            viewer.recv()
    viewer.shutdown()  # the server closed it: nothing to send a close frame on
    assert bytes(vnc.received) == HANDSHAKE


def test_revoking_a_view_cuts_its_open_connection_and_its_token_opens_nothing(bridge):
    views, _, port = bridge
    view, token = views.create("ws-1", interactive=False, seconds=60)
    viewer = _connect(port, token)
    views.revoke("ws-1", view.id)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        viewer.recv()
    viewer.shutdown()
    refused = websocket.WebSocket()
    with pytest.raises(websocket.WebSocketBadStatusException, match="404"):
        refused.connect(f"ws://127.0.0.1:{port}/?live={token}", subprotocols=["binary"], timeout=10)
    refused.close()


def test_a_view_expires_on_time_cutting_its_connection():
    clock = Clock()
    vnc = RecordingVnc()
    views = LiveViews({"ws-1": ("127.0.0.1", vnc.port)}.get, max_per_workstation=3, clock=clock)
    try:
        view, token = views.create("ws-1", interactive=False, seconds=1)
        assert views.lookup(token) == (view, ("127.0.0.1", vnc.port))
        left, right = socket.socketpair()
        detach = views.attach(view.id, left)
        assert detach is not None
        wait_until(lambda: _closed(right), 5, "the connection cut at the view's expiry")
        clock.now += 2
        assert views.lookup(token) is None and views.of("ws-1") == []
        assert views.attach(view.id, left) is None
        left.close()
        right.close()
    finally:
        vnc.close()


def _closed(peer: socket.socket) -> bool:
    peer.settimeout(0.1)
    try:
        return peer.recv(1) == b""
    except TimeoutError:
        return False


def test_a_workstation_has_at_most_its_configured_live_views():
    views = LiveViews({}.get, max_per_workstation=2)
    views.create("ws-1", False, 60)
    views.create("ws-1", True, 60)
    from cwhost.errors import QuotaExceeded

    with pytest.raises(QuotaExceeded, match="live_views_per_workstation"):
        views.create("ws-1", False, 60)
    views.create("ws-2", False, 60)  # another workstation's are its own


def test_live_views_through_the_api(console_app):  # noqa: F811
    app, alice, bob = console_app
    client = app.test_client()
    ws = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    url = f"/v1/workstations/{ws['id']}/live-views"
    stopped = client.post(url, json={}, headers=alice)
    assert (stopped.status_code, stopped.get_json()["error"]) == (400, "invalid_state")
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    app.extensions["cwhost"].services.readiness.check()
    made = client.post(url, json={"minutes": 5}, headers=alice)
    assert made.status_code == 201, made.get_json()
    view = made.get_json()
    assert view["interactive"] is False and view["url"].startswith("http://localhost/live/")
    listed = client.get(url, headers=alice).get_json()["data"]
    assert [item["id"] for item in listed] == [view["id"]] and "url" not in listed[0]
    page = client.get(view["url"].removeprefix("http://localhost"))
    assert page.status_code == 200 and '"viewOnly": true' in page.get_data(as_text=True)
    assert "frame-ancestors *" in page.headers["Content-Security-Policy"]
    assert client.get(view["url"].removeprefix("http://localhost")).status_code == 200  # as often as wanted
    for other in (client.post(url, json={}, headers=bob), client.get(url, headers=bob)):
        assert other.status_code == 404
    assert client.delete(f"{url}/{view['id']}", headers=bob).status_code == 404
    assert client.delete(f"{url}/{view['id']}", headers=alice).status_code == 204
    assert client.get(view["url"].removeprefix("http://localhost")).status_code == 404
    assert client.get(url, headers=alice).get_json()["data"] == []
    assert client.delete(f"{url}/{view['id']}", headers=alice).status_code == 404
    interactive = client.post(url, json={"interactive": True}, headers=alice).get_json()
    page = client.get(interactive["url"].removeprefix("http://localhost")).get_data(as_text=True)
    assert '"viewOnly": false' in page
    for bad in ({"minutes": 0}, {"minutes": 1441}, {"minutes": "5"}, {"interactive": "yes"}, {"shared": True}):
        refused = client.post(url, json=bad, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_request"), bad
    client.post(f"/v1/workstations/{ws['id']}/stop", headers=alice, query_string={"force": "true"})


def test_the_dashboard_shares_the_screen_and_revokes_it(console_app):  # noqa: F811
    from cwhost.accounts import tokens as auth
    from tests.test_web import csrf, sign_in

    app, alice, _ = console_app
    client = app.test_client()
    token = auth.create_key(app.extensions["cwhost"].db, "alice").token
    assert sign_in(client, token).status_code == 302
    ws = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    page_url = f"/ui/workstations/{ws['id']}"
    assert "Share the screen" not in client.get(page_url).get_data(as_text=True)  # only while it runs
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    form = {"csrf_token": csrf(client), "minutes": "99999"}
    too_long = client.post(page_url + "/live-views", data=form)
    assert too_long.status_code == 422 and "Must be" in too_long.get_data(as_text=True)
    made = client.post(page_url + "/live-views", data={**form, "minutes": "30"})
    html = made.get_data(as_text=True)
    assert made.status_code == 200 and 'id="live-view-url">http://localhost/live/' in html
    link = html.split('id="live-view-url">', 1)[1].split("<", 1)[0]
    assert '"viewOnly": true' in client.get(link.removeprefix("http://localhost")).get_data(as_text=True)
    views = client.get(f"/v1/workstations/{ws['id']}/live-views", headers=alice).get_json()["data"]
    assert len(views) == 1 and views[0]["interactive"] is False
    assert link not in client.get(page_url).get_data(as_text=True)  # the link is shown once
    revoked = client.post(f"{page_url}/live-views/{views[0]['id']}/revoke", data={"csrf_token": form["csrf_token"]})
    assert revoked.status_code == 302
    assert client.get(link.removeprefix("http://localhost")).status_code == 404
    assert client.post(page_url + "/live-views", data={"minutes": "30"}).status_code == 403  # no CSRF token
    client.post(f"/v1/workstations/{ws['id']}/stop", headers=alice, query_string={"force": "true"})
