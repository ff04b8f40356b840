"""Workspace files through the real server: hostile paths, the upload limit, and memory for big uploads."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psutil
import pytest
import requests

from cwhost.workspaces.paths import file_id
from tests.helpers import cli, power_off_fake_guests, start_server

SECRET = b"TOP-SECRET: nothing may read or write this from a workspace"


@pytest.fixture(scope="module")
def hostile_setup(tmp_path_factory):
    """A server, a workspace holding what a guest could plant, and a secret beside it all."""
    root = tmp_path_factory.mktemp("traversal")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    server = start_server(root)
    token = cli(server.env, "keys", "create", "--account", "alice").stdout.split()[-1]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    workspace = session.post(server.url + "/v1/workspaces", json={}).json()["id"]
    for path in ("sub/file.txt", "inside.txt"):
        session.put(f"{server.url}/v1/workspaces/{workspace}/files/{path}", data=b"mine")
    directory = root / "server-data" / "workspaces" / workspace
    (directory / "link-dir").symlink_to(outside)
    (directory / "link-file").symlink_to(outside / "secret.txt")
    (directory / "link-root").symlink_to("/")
    (directory / "link-loop").symlink_to("link-loop")
    (directory / "sub" / "link-dir").symlink_to("../../../../outside")
    yield server, token, workspace, root, outside
    server.stop()
    power_off_fake_guests(root / "server-data")


def snapshot(root: Path) -> dict:
    """Everything under ``root`` but the database: kind, size, content hash or link target."""
    seen = {}
    for directory, dirs, files, dir_fd in os.fwalk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if name.startswith("cwhost.db") or name.startswith("server-"):
                continue
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                seen[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                seen[path] = ("file", info.st_size, hashlib.sha256(Path(path).read_bytes()).hexdigest())
            else:
                seen[path] = ("dir",)
    return seen


def raw_request(url: str, method: str, target: str, token: str, body: bytes | None = None):
    """A request whose target is sent byte for byte: no client normalises '..' or '//' away."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {token}")
        connection.putheader("Content-Length", str(len(body or b"")))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


# As they appear in the URL; the server decodes the percent escapes.
HOSTILE_PATHS = [
    "../../../outside/secret.txt",
    "..%2F..%2F..%2Foutside%2Fsecret.txt",
    "%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
    "sub/../../../../outside/secret.txt",
    "..",
    "sub/..",
    "./inside.txt",
    "{absolute}",
    "%2F{absolute_unslashed}",
    "inside.txt%00.png",
    "%00",
    "link-dir/secret.txt",
    "link-dir/planted.txt",
    "link-file",
    "link-dir",
    "sub/link-dir/secret.txt",
    "link-root/etc/hostname",
    "link-loop/x",
    "sub/file.txt/x",
    "a" * 256,
    "d/" * 2100 + "x",
    "sub//file.txt",
    "sub/",
    "..%5C..%5C..%5Coutside%5Csecret.txt",
    "new%0Aline.txt",
    "tab%09.txt",
]


def _target(template: str, outside: Path) -> str:
    secret = str(outside / "secret.txt")
    return template.format(absolute=secret, absolute_unslashed=secret.lstrip("/"))


@pytest.mark.parametrize("hostile", HOSTILE_PATHS, ids=range(len(HOSTILE_PATHS)))
def test_a_hostile_path_is_refused_by_upload_and_download_and_touches_nothing(hostile_setup, hostile):
    server, token, workspace, root, outside = hostile_setup
    path = _target(hostile, outside)
    before = snapshot(root)

    status, content_type, body = raw_request(
        server.url, "PUT", f"/v1/workspaces/{workspace}/files/{path}", token, b"PLANTED " * 10
    )
    assert status == 400, body
    assert content_type == "application/json" and json.loads(body)["error"] == "invalid_request"

    status, content_type, body = raw_request(
        server.url, "GET", f"/v1/workspaces/{workspace}/files/{file_id(unquote(path))}/content", token
    )
    # A path no file can have names no file (404); one through a link is refused (400).
    assert status in (400, 404), body
    assert json.loads(body)["error"] == {400: "invalid_request", 404: "not_found"}[status]
    assert b"TOP-SECRET" not in body and content_type == "application/json"

    assert snapshot(root) == before
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_there_are_at_least_twenty_hostile_paths():
    assert len(set(HOSTILE_PATHS)) >= 20


def test_the_listing_never_shows_what_links_point_to(hostile_setup):
    server, token, workspace, _root, _outside = hostile_setup
    listed = requests.get(
        f"{server.url}/v1/workspaces/{workspace}/files", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert sorted(f["name"] for f in listed["data"]) == ["inside.txt", "sub/file.txt"]


def test_a_chunked_upload_over_the_limit_is_a_json_413_and_stores_nothing(tmp_path):
    server = start_server(tmp_path, "[workspaces]\nmax_upload_bytes = 65536\n")
    try:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + cli(server.env, "keys", "create", "--account", "a").stdout.split()[-1]
        workspace = session.post(server.url + "/v1/workspaces", json={}).json()["id"]

        def body():  # a generator: requests sends it chunked, with no Content-Length
            for _ in range(40):
                yield b"z" * 4096

        answer = session.put(f"{server.url}/v1/workspaces/{workspace}/files/big.bin", data=body())
        assert answer.status_code == 413
        assert answer.json()["error"] == "payload_too_large" and "65536" in answer.json()["message"]
        fits = session.put(f"{server.url}/v1/workspaces/{workspace}/files/fits.bin", data=(b"f" * 1024 for _ in range(64)))
        assert fits.status_code == 201 and fits.json()["size"] == 65536
        stored = tmp_path / "server-data" / "workspaces" / workspace
        assert [p.name for p in stored.iterdir()] == ["fits.bin"]
        assert not list((tmp_path / "server-data" / "workspaces" / ".staging").iterdir())
    finally:
        server.stop()


def test_a_100_megabyte_upload_does_not_grow_the_service_by_its_size(tmp_path):
    size = 100 * 1024 * 1024
    source = tmp_path / "upload.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(100):
            chunk = bytes([i]) + block[1:]
            digest.update(chunk)
            f.write(chunk)
    server = start_server(tmp_path)
    try:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + cli(server.env, "keys", "create", "--account", "a").stdout.split()[-1]
        workspace = session.post(server.url + "/v1/workspaces", json={}).json()["id"]
        # Warm every code path on a small file before measuring.
        warm = session.put(f"{server.url}/v1/workspaces/{workspace}/files/warm.bin", data=os.urandom(2 * 1024 * 1024))
        assert warm.status_code == 201, warm.text
        session.get(server.url + warm.json()["url"]).content
        process = psutil.Process(server.process.pid)
        before = process.memory_info().rss

        with open(source, "rb") as f:
            answer = session.put(f"{server.url}/v1/workspaces/{workspace}/files/data/big.bin", data=f)
        assert answer.status_code == 201 and answer.json()["size"] == size
        after_upload = process.memory_info().rss

        downloaded = hashlib.sha256()
        with session.get(server.url + answer.json()["url"], stream=True) as response:
            for chunk in response.iter_content(1024 * 1024):
                downloaded.update(chunk)
        after_download = process.memory_info().rss
    finally:
        server.stop()
    assert downloaded.hexdigest() == digest.hexdigest()
    # Whole in memory would be +100 MiB; streamed, the growth is noise.
    assert after_upload - before < size / 4, (before, after_upload)
    assert after_download - before < size / 4, (before, after_download)
