"""Hostile input through the real server, sent byte for byte on a socket.

Each request must get a 4xx with the JSON error body, write nothing to the
database or the hypervisor, and leave the server healthy for the next one.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers import (
    GOOD_CONFIGURATION,
    cli,
    create_stopped,
    power_off_fake_guests,
    start_server,
    wait_over_http,
)

TABLES = ("accounts", "api_keys", "workstations", "workstation_events", "idempotency_keys", "workspaces")
CONFIGURATION = {"cpuCores": 2, "memoryGB": 4, "storageGB": 10}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    server = start_server(root, "[server]\nrate_limit_per_minute = 100000\n")
    token = cli(server.env, "keys", "create", "--account", "alice").stdout.split()[-1]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    created = session.post(server.url + "/v1/workstations", json={"name": "victim", "configuration": CONFIGURATION})
    assert created.status_code == 201
    victim = created.json()["id"]
    wait_over_http(session, f"{server.url}/v1/workstations/{victim}", "stopped")
    yield server, token, victim, root / "server-data"
    server.stop()
    power_off_fake_guests(root / "server-data")


def exchange(url: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send ``request`` as it is and read the whole answer (the request asks to close)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def http_request(method: str, target: bytes, token: bytes | None, body: bytes = b"", extra: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    if token is not None:
        lines.append(b"Authorization: Bearer " + token)
    if body:
        lines += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    if extra:
        lines.append(extra)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def create_body(name="ok", **configuration) -> bytes:
    return json.dumps({"name": name, "configuration": {**CONFIGURATION, **configuration}}).encode()


def raw_create(configuration_json: bytes) -> bytes:
    """A create body whose configuration is written by hand, for numbers json.dumps will not write."""
    return b'{"name": "big", "configuration": ' + configuration_json + b"}"


# (what is tried, method, target with {id}, token or None for the real one, body, extra header, status)
CASES = [
    ("NUL in a name", "POST", b"/v1/workstations", None, create_body("a\x00b"), b"", 400),
    ("NUL in a renamed name", "PATCH", b"/v1/workstations/{id}", None, b'{"name": "a\\u0000b", "configuration": {}}', b"", 400),
    ("header injection in a name", "POST", b"/v1/workstations", None, create_body("x\r\nX-Injected: yes"), b"", 400),
    ("header injection in a rename", "PATCH", b"/v1/workstations/{id}", None, b'{"name": "x\\r\\nSet-Cookie: a=b", "configuration": {}}', b"", 400),
    ("invalid UTF-8 in a JSON body", "POST", b"/v1/workstations", None, b'{"name": "\xff\xfe\xc3", "configuration": {}}', b"", 400),
    ("invalid UTF-8 as the whole body", "POST", b"/v1/workstations", None, b"\xc3\x28\xa0\xa1\xff", b"", 400),
    ("a UTF-16 body", "POST", b"/v1/workstations", None, create_body().decode().encode("utf-16"), b"", 400),
    ("100 000 nested arrays", "POST", b"/v1/workstations", None, b"[" * 100_000 + b"]" * 100_000, b"", 400),
    ("50 000 nested objects", "POST", b"/v1/workstations", None, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"", 400),
    ("nesting inside a valid field", "POST", b"/v1/workstations", None, b'{"name": "n", "configuration": ' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"}", b"", 400),
    ("cpuCores of 2**70", "POST", b"/v1/workstations", None, raw_create(b'{"cpuCores": 1180591620717411303424, "memoryGB": 4, "storageGB": 10}'), b"", 400),
    ("memoryGB of 2**64", "POST", b"/v1/workstations", None, raw_create(b'{"cpuCores": 2, "memoryGB": 18446744073709551616, "storageGB": 10}'), b"", 400),
    ("storageGB of -2**63 - 1", "POST", b"/v1/workstations", None, raw_create(b'{"cpuCores": 2, "memoryGB": 4, "storageGB": -9223372036854775809}'), b"", 400),
    ("a 5 000 digit integer", "POST", b"/v1/workstations", None, raw_create(b'{"cpuCores": ' + b"9" * 5000 + b', "memoryGB": 4, "storageGB": 10}'), b"", 400),
    ("a float beyond double range", "POST", b"/v1/workstations", None, raw_create(b'{"cpuCores": 1e400, "memoryGB": 4, "storageGB": 10}'), b"", 400),
    ("NaN", "POST", b"/v1/workstations", None, raw_create(b'{"cpuCores": NaN, "memoryGB": 4, "storageGB": 10}'), b"", 400),
    ("a 2**70 storage growth", "PATCH", b"/v1/workstations/{id}", None, b'{"configuration": {"storageGB": 1180591620717411303424}}', b"", 400),
    ("a page limit of 2**70", "GET", b"/v1/workstations?limit=1180591620717411303424", None, b"", b"", 400),
    ("a cursor of 2**70", "GET", b"/v1/workstations?after=1180591620717411303424", None, b"", b"", 400),
    ("a log cursor of 2**70", "GET", b"/v1/workstations/{id}/logs?after=1180591620717411303424", None, b"", b"", 400),
    ("invalid UTF-8 in a query", "GET", b"/v1/workstations?status=%ff%fe", None, b"", b"", 400),
    ("raw high bytes in a query", "GET", b"/v1/workstations?status=\xff\xfe", None, b"", b"", 400),
    ("NUL in a query", "GET", b"/v1/workstations?status=running%00", None, b"", b"", 400),
    ("NUL in an id", "GET", b"/v1/workstations/{id}%00", None, b"", b"", 404),
    ("a raw NUL in an id", "GET", b"/v1/workstations/\x00", None, b"", b"", 404),
    ("invalid UTF-8 in an id", "GET", b"/v1/workstations/%ff%fe", None, b"", b"", 404),
    # Not HTTP at all: waitress refuses these before the application, in JSON too.
    ("raw high bytes in an id", "DELETE", b"/v1/workstations/\xff\xfe", None, b"", b"", 400),
    ("header injection in an id", "GET", b"/v1/workstations/{id}%0d%0aX-Injected:%20yes", None, b"", b"", 404),
    ("a 10 KB token", "GET", b"/v1/workstations", b"cwh_" + b"A" * 10_240, b"", b"", 401),
    ("a 10 KB token on a write", "POST", b"/v1/workstations", b"cwh_" + b"A" * 10_240, create_body(), b"", 401),
    ("invalid UTF-8 in a token", "GET", b"/v1/workstations", b"cwh_\xff\xfe\x80", b"", b"", 401),
    ("NUL in a token", "GET", b"/v1/workstations", b"cwh_a\x00b", b"", b"", 400),
    ("a 10 KB idempotency key", "POST", b"/v1/workstations", None, create_body(), b"Idempotency-Key: " + b"k" * 10_240, 400),
    ("a 10 MB body", "POST", b"/v1/workstations", None, b'{"name": "' + b"a" * 10 * 1024 * 1024 + b'"}', b"", 413),
    # Refused by waitress from the header alone, before anything is read.
    ("a body declared as 1 TB", "POST", b"/v1/workstations", None, b"", b"Content-Length: 1000000000000", 413),
]


def row_counts(data_dir) -> dict:
    with sqlite3.connect(f"file:{data_dir / 'cwhost.db'}?mode=ro", uri=True) as db:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in TABLES}


def domains(data_dir) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (data_dir / "fake-driver" / "domains").iterdir()}


@pytest.mark.parametrize(
    "method,target_template,token,body,extra,status", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_hostile_request_is_a_clean_4xx_that_writes_nothing(target, method, target_template, token, body, extra, status):
    server, real_token, victim, data_dir = target
    victim_before = requests.get(f"{server.url}/v1/workstations/{victim}", headers={"Authorization": f"Bearer {real_token}"}).json()
    counts, definitions = row_counts(data_dir), domains(data_dir)

    request = http_request(
        method, target_template.replace(b"{id}", victim.encode()), real_token.encode() if token is None else token, body, extra
    )
    answered, headers, raw_body = exchange(server.url, request)

    assert answered == status, raw_body[:500]
    assert headers["content-type"] == "application/json"
    error = json.loads(raw_body)
    assert set(error) >= {"error", "message", "requestId"} and error["message"], error
    assert "x-injected" not in headers and "set-cookie" not in headers
    assert "Traceback" not in raw_body.decode("utf-8", "replace")
    assert row_counts(data_dir) == counts
    assert domains(data_dir) == definitions
    after = requests.get(f"{server.url}/v1/workstations/{victim}", headers={"Authorization": f"Bearer {real_token}"})
    assert after.json() == victim_before
    assert requests.get(server.url + "/healthz").status_code == 200


def test_the_server_is_healthy_and_its_log_clean_after_all_of_it(target):
    server, real_token, _, data_dir = target
    for _, method, template, token, body, extra, _ in CASES:
        exchange(server.url, http_request(method, template.replace(b"{id}", b"ws-x"), token or real_token.encode(), body, extra))
    assert server.process.poll() is None
    created = requests.post(
        server.url + "/v1/workstations",
        json={"name": "after", "configuration": CONFIGURATION},
        headers={"Authorization": f"Bearer {real_token}"},
    )
    assert created.status_code == 201
    log = server.log()
    assert "Traceback" not in log and " 500 " not in log
    with sqlite3.connect(data_dir / "cwhost.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "\nabc"])
def test_a_name_with_a_newline_is_refused_everywhere(client, alice, name):
    created = client.post("/v1/workstations", json={"name": name, "configuration": GOOD_CONFIGURATION}, headers=alice)
    assert created.status_code == 400, created.get_json()
    assert "name" in created.get_json()["details"]
    assert client.post("/v1/workspaces", json={"name": name}, headers=alice).status_code == 400
    ws = create_stopped(client, alice)
    renamed = client.patch(f"/v1/workstations/{ws['id']}", json={"name": name}, headers=alice)
    assert renamed.status_code == 400
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["name"] == ws["name"]


def test_a_request_id_with_a_final_newline_is_not_echoed(client):
    answer = client.get("/healthz", environ_overrides={"HTTP_X_REQUEST_ID": "abc\n"})
    assert answer.headers["X-Request-Id"] != "abc\n" and "\n" not in answer.headers["X-Request-Id"]
