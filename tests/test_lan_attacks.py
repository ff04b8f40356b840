"""What a host on the LAN can do to the real server, on loopback: hold sockets, send bodies without a token, odd names.

The attacker and the honest client come from different loopback addresses
(127.0.0.1 and 127.0.0.2), as two hosts on a LAN would.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from cwhost.workspaces.paths import file_id
from tests.helpers import cli, power_off_fake_guests, start_server

ATTACKER = "127.0.0.1"
HONEST = "127.0.0.2"


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    root = tmp_path_factory.mktemp("lan")
    server = start_server(root, "[server]\nhost = \"0.0.0.0\"\n")
    token = cli(server.env, "keys", "create", "--account", "alice").stdout.split()[-1]
    other = cli(server.env, "keys", "create", "--account", "mallory").stdout.split()[-1]
    yield server, token, other, root / "server-data"
    server.stop()
    power_off_fake_guests(root / "server-data")


def _connect(url: str, source: str) -> socket.socket:
    parts = urlsplit(url)
    connection = socket.socket()
    connection.bind((source, 0))
    connection.settimeout(10)
    connection.connect(("127.0.0.1", parts.port))
    return connection


def _ask(url: str, source: str, request: bytes, timeout: float) -> bytes:
    """Send ``request`` from ``source`` and read until the server closes or the timeout passes."""
    with _connect(url, source) as connection:
        connection.settimeout(timeout)
        connection.sendall(request)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def _healthz_from(url: str, source: str) -> tuple[bytes, float]:
    started = time.monotonic()
    answer = _ask(url, source, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5)
    return answer, time.monotonic() - started


def test_a_thousand_idle_or_dripping_sockets_from_one_host_lock_no_one_out(lan):
    server, token, _other, _data = lan
    held: list[socket.socket] = []
    try:
        for index in range(1000):
            try:
                connection = _connect(server.url, ATTACKER)
            except OSError:
                continue  # refused or reset at once: the cap at work
            if index % 2:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: ")  # and never finishes
            held.append(connection)
        for _ in range(3):
            for connection in held[1::2]:
                try:
                    connection.sendall(b"a")
                except OSError:
                    pass
            answer, took = _healthz_from(server.url, HONEST)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert took < 2.0, took
        authorised = _ask(
            server.url,
            HONEST,
            f"GET /v1/workstations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode(),
            timeout=5,
        )
        assert authorised.startswith(b"HTTP/1.1 200"), authorised[:200]
    finally:
        for connection in held:
            connection.close()
    assert server.process.poll() is None


def _head(method: str, path: str, token: str | None, length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {length}", "Expect: 100-continue"]
    lines.append("Content-Type: application/octet-stream")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("token", [None, "cwh_not-a-real-token"])
def test_a_body_without_a_valid_token_is_refused_before_it_is_read(lan, token):
    server, real_token, _other, _data = lan
    workspace = requests.post(
        server.url + "/v1/workspaces", json={}, headers={"Authorization": f"Bearer {real_token}"}
    ).json()["id"]
    started = time.monotonic()
    answer = _ask(server.url, HONEST, _head("PUT", f"/v1/workspaces/{workspace}/files/big.bin", token, 1024**3), 5)
    assert time.monotonic() - started < 2
    assert b"100 Continue" not in answer
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b"www-authenticate: bearer" in answer.lower() and b'"error":"unauthorized"' in answer


def test_an_upload_to_someone_elses_workspace_is_refused_before_its_body(lan):
    server, real_token, other, _data = lan
    workspace = requests.post(
        server.url + "/v1/workspaces", json={}, headers={"Authorization": f"Bearer {real_token}"}
    ).json()["id"]
    answer = _ask(server.url, HONEST, _head("PUT", f"/v1/workspaces/{workspace}/files/x.bin", other, 1024**3), 5)
    assert b"100 Continue" not in answer and answer.startswith(b"HTTP/1.1 404"), answer[:300]


def test_a_valid_upload_with_expect_continue_is_invited_and_stored(lan):
    server, real_token, _other, _data = lan
    headers = {"Authorization": f"Bearer {real_token}"}
    workspace = requests.post(server.url + "/v1/workspaces", json={}, headers=headers).json()["id"]
    body = os.urandom(200_000)
    with _connect(server.url, HONEST) as connection:
        connection.sendall(_head("PUT", f"/v1/workspaces/{workspace}/files/ok.bin", real_token, len(body)))
        assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue")
        connection.sendall(body)
        assert connection.recv(100).startswith(b"HTTP/1.1 201")
    listed = requests.get(f"{server.url}/v1/workspaces/{workspace}/files", headers=headers).json()["data"]
    assert [(f["name"], f["size"]) for f in listed] == [("ok.bin", len(body))]


def test_two_names_that_are_not_utf8_never_become_one_file(lan):
    server, real_token, _other, _data = lan
    headers = {"Authorization": f"Bearer {real_token}"}
    workspace = requests.post(server.url + "/v1/workspaces", json={}, headers=headers).json()["id"]
    for name in (b"inv%ff.txt", b"inv%fe.txt"):
        request = (
            f"PUT /v1/workspaces/{workspace}/files/".encode() + name + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + real_token.encode() + b"\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        )
        answer = _ask(server.url, HONEST, request, 5)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
        assert b"UTF-8" in answer
    assert requests.get(f"{server.url}/v1/workspaces/{workspace}/files", headers=headers).json()["data"] == []


def test_a_guests_file_whose_name_is_not_utf8_is_listed_and_downloads(lan):
    server, real_token, _other, data = lan
    headers = {"Authorization": f"Bearer {real_token}"}
    workspace = requests.post(server.url + "/v1/workspaces", json={}, headers=headers).json()["id"]
    directory = Path(data) / "workspaces" / workspace
    (directory / os.fsdecode(b"guest\xff.txt")).write_bytes(b"from the guest")
    (directory / os.fsdecode(b"guest\xfe.txt")).write_bytes(b"another")
    listed = requests.get(f"{server.url}/v1/workspaces/{workspace}/files", headers=headers).json()["data"]
    names = {f["name"]: f for f in listed}
    assert set(names) == {"guest\\xff.txt", "guest\\xfe.txt"}
    assert names["guest\\xff.txt"]["id"] == file_id(os.fsdecode(b"guest\xff.txt"))
    downloaded = requests.get(server.url + names["guest\\xff.txt"]["url"], headers=headers)
    assert downloaded.status_code == 200 and downloaded.content == b"from the guest"
