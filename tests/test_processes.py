"""Background processes through the API, on the fake driver: the fake guest's service is the real
one, simulated (its programs are a few harmless ones, never a tenant's command on the host).
tests/test_real_vm_image.py runs them in a real guest."""

from __future__ import annotations

import json

import pytest

from cwhost.accounts import tokens as auth
from tests.helpers import app_with, bearer, create_stopped


def launched(client, headers, name: str) -> str:
    workstation = create_stopped(client, headers, name=name, cpuCores=1, memoryGB=1)
    client.post(f"/v1/workstations/{workstation['id']}/launch", headers=headers)
    return f"/v1/workstations/{workstation['id']}"


def events(response, until: str = "exit") -> list[tuple[str, dict, str | None]]:
    """The SSE events of a streamed answer, read as they come, up to the first ``until``."""
    found, pending = [], b""
    for piece in response.response:  # one iterator: a second call goes on where the first stopped
        pending += piece
        while b"\n\n" in pending:
            block, pending = pending.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if not line.startswith(":"))
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
                if fields["event"] == until:
                    return found
    return found


def start(client, alice, running_url, command, **extra):
    answer = client.post(running_url + "/processes", json={"command": command, **extra}, headers=alice)
    assert answer.status_code == 201, answer.get_json()
    return running_url + "/processes/" + answer.get_json()["id"], answer.get_json()


def test_a_process_streams_its_output_takes_stdin_and_ends_with_its_exit(client, alice, running_url):
    process, shown = start(client, alice, running_url, ["cat"])
    assert shown["status"] == "running" and shown["exitCode"] is None and shown["command"] == ["cat"]
    stream = client.get(process + "/output", headers=alice, buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    pieces = iter(stream.response)
    assert client.post(process + "/stdin", json={"data": "first line\n"}, headers=alice).status_code == 204
    # The first line arrives while the process still runs (cat waits for more).
    first = b""
    while b"first line" not in first:
        first += next(pieces)
    assert client.get(process, headers=alice).get_json()["status"] == "running"
    assert client.post(process + "/stdin", json={"data": "bGFzdA==", "encoding": "base64", "eof": True},
                       headers=alice).status_code == 204  # fmt: skip
    rest = b"".join(pieces).decode()
    assert "last" in rest and "event: exit" in rest
    ended = client.get(process, query_string={"wait": "exit", "timeoutSeconds": 10}, headers=alice).get_json()
    assert ended["status"] == "exited" and ended["exitCode"] == 0 and ended["endedAt"]


def test_a_late_reader_gets_the_output_from_the_start_and_can_resume(client, alice, running_url):
    process, _ = start(client, alice, running_url, ["echo", "hello", "from", "the", "guest"])
    client.get(process, query_string={"wait": "exit", "timeoutSeconds": 10}, headers=alice)
    read = events(client.get(process + "/output", headers=alice, buffered=False))
    assert read[0][0] == "stdout" and read[0][1] == {"data": "hello from the guest\n", "encoding": "utf-8"}
    assert read[-1][0] == "exit" and read[-1][1]["exitCode"] == 0 and read[-1][1]["status"] == "exited"
    resumed = client.get(process + "/output", headers={**alice, "Last-Event-ID": read[0][2]}, buffered=False)
    assert [event for event, _, _ in events(resumed)] == ["exit"]


def test_signals_and_kill(client, alice, running_url):
    process, _ = start(client, alice, running_url, ["sleep", "300"])
    signalled = client.post(process + "/signal", json={"signal": "TERM"}, headers=alice)
    assert signalled.status_code == 200
    ended = client.get(process, query_string={"wait": "exit", "timeoutSeconds": 10}, headers=alice).get_json()
    assert (ended["status"], ended["signal"], ended["exitCode"]) == ("killed", "TERM", None)
    late = client.post(process + "/signal", json={"signal": "KILL"}, headers=alice)
    assert (late.status_code, late.get_json()["error"]) == (400, "invalid_state")
    assert client.post(process + "/stdin", json={"data": "x"}, headers=alice).status_code == 400
    other, _ = start(client, alice, running_url, ["sleep", "300"])
    assert client.delete(other, headers=alice).status_code == 204
    assert client.get(other, headers=alice).status_code == 404
    listed = client.get(running_url + "/processes", headers=alice).get_json()["data"]
    assert [p["status"] for p in listed] == ["killed"]


def test_a_process_past_its_timeout_is_killed(client, alice, running_url):
    process, _ = start(client, alice, running_url, ["sleep", "300"], timeoutSeconds=0.5)
    ended = client.get(process, query_string={"wait": "exit", "timeoutSeconds": 10}, headers=alice).get_json()
    assert ended["status"] == "killed" and ended["timedOut"] is True and ended["signal"] == "KILL"


def test_the_fake_guest_starts_only_its_harmless_programs(client, alice, running_url, tmp_path):
    marker = tmp_path / "ran-on-the-host"
    refused = client.post(running_url + "/processes", json={"command": ["touch", str(marker)]}, headers=alice)
    assert refused.status_code == 400 and "fake guest runs only" in refused.get_json()["message"]
    assert not marker.exists()


@pytest.fixture
def narrow(tmp_path):
    """Two processes per workstation, three per account; one stream per account, two in all."""
    with app_with(
        tmp_path / "data",
        processes={"max_per_workstation": 2, "max_per_account": 3},
        streams={"max_per_account": 1, "max_open": 2},
    ) as app:
        yield app


def test_limits_per_workstation_and_per_account_refuse_clearly(narrow):
    db, client = narrow.extensions["cwhost"].db, narrow.test_client()
    alice, bob = (bearer(auth.create_key(db, name).token) for name in ("alice", "bob"))
    first, second = (launched(client, alice, name) for name in ("one", "two"))
    for _ in range(2):
        start(client, alice, first, ["sleep", "300"])
    refused = client.post(first + "/processes", json={"command": ["sleep", "1"]}, headers=alice)
    assert refused.status_code == 429 and "processes.max_per_workstation" in refused.get_json()["message"]
    start(client, alice, second, ["sleep", "300"])
    refused = client.post(second + "/processes", json={"command": ["sleep", "1"]}, headers=alice)
    assert refused.status_code == 429 and "processes.max_per_account" in refused.get_json()["message"]
    # Another account's processes are counted apart.
    start(client, bob, launched(client, bob, "three"), ["true"])


def test_streams_hold_the_accounts_slots_not_the_servers(narrow):
    db, client = narrow.extensions["cwhost"].db, narrow.test_client()
    alice, bob, carol = (bearer(auth.create_key(db, name).token) for name in ("alice", "bob", "carol"))
    held = []
    for who in (alice, bob):
        process, _ = start(client, who, launched(client, who, "w"), ["sleep", "300"])
        held.append(client.get(process + "/output", headers=who, buffered=False))
        assert held[-1].status_code == 200
    again = client.get(process + "/output", headers=bob)
    assert again.status_code == 429 and "streams.max_per_account" in again.get_json()["message"]
    carols, _ = start(client, carol, launched(client, carol, "w"), ["sleep", "300"])
    assert client.get(carols + "/output", headers=carol).status_code == 503
    # Other requests still go through; a closed stream gives its slot back.
    assert client.get("/v1/workstations", headers=carol).status_code == 200
    held.pop().close()
    assert client.get(process + "/output", headers=bob, buffered=False).status_code == 200


def test_processes_are_the_owners_alone_and_need_a_running_workstation(client, alice, bob, running_url):
    process, _ = start(client, alice, running_url, ["sleep", "300"])
    for method, path, body in (
        ("get", running_url + "/processes", None),
        ("post", running_url + "/processes", {"command": ["true"]}),
        ("get", process, None),
        ("get", process + "/output", None),
        ("post", process + "/stdin", {"data": "x"}),
        ("post", process + "/signal", {"signal": "KILL"}),
        ("delete", process, None),
    ):
        answer = getattr(client, method)(path, json=body, headers=bob)
        assert answer.status_code == 404, (method, path)
    assert client.get(process, headers=alice).get_json()["status"] == "running"
    for bad in ({"command": []}, {"command": ["true"], "timeoutSeconds": 0}, {"command": ["true"], "stdin": "x"}):
        assert client.post(running_url + "/processes", json=bad, headers=alice).status_code == 400
    assert client.post(process + "/signal", json={"signal": "NOPE"}, headers=alice).status_code == 400
    for not_base64 in ("%%", "\u00d9\u00ed=="):
        bad_stdin = client.post(process + "/stdin", json={"data": not_base64, "encoding": "base64"}, headers=alice)
        assert bad_stdin.status_code == 400 and bad_stdin.get_json()["details"] == {"data": ["Not valid base64."]}
    bad_id = client.get(process + "/output", headers={**alice, "Last-Event-ID": "x"})
    assert bad_id.status_code == 400


def test_a_stop_ends_the_workstations_processes(client, alice, running_url):
    process, _ = start(client, alice, running_url, ["sleep", "300"])
    pid = client.get(process, headers=alice).get_json()
    client.post(running_url + "/stop", headers=alice, query_string={"force": "true"})
    ended = client.get(process, query_string={"wait": "exit", "timeoutSeconds": 10}, headers=alice).get_json()
    assert ended["status"] == "killed" and pid["status"] == "running"
