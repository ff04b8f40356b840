"""Idempotency-Key on create, launch and stop."""

from __future__ import annotations

import threading

from tests.helpers import GOOD_CONFIGURATION, create_stopped


def _create(client, headers, key, name="once"):
    return client.post(
        "/v1/workstations",
        json={"name": name, "configuration": GOOD_CONFIGURATION},
        headers={**headers, "Idempotency-Key": key},
    )


def test_a_retried_create_returns_the_first_answer_and_creates_once(client, alice):
    first = _create(client, alice, "create-1")
    again = _create(client, alice, "create-1")
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/workstations", headers=alice).get_json()["data"]) == 1


def test_the_same_key_with_another_body_is_422_and_does_nothing(client, alice):
    _create(client, alice, "create-2")
    other = _create(client, alice, "create-2", name="different")
    assert (other.status_code, other.get_json()["error"]) == (422, "idempotency_key_reused")
    assert len(client.get("/v1/workstations", headers=alice).get_json()["data"]) == 1


def test_keys_belong_to_their_account(client, alice, bob):
    _create(client, alice, "shared-key")
    theirs = _create(client, bob, "shared-key")
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert len(client.get("/v1/workstations", headers=bob).get_json()["data"]) == 1


def test_a_retried_launch_and_stop_do_nothing_twice(client, alice, components):
    ws = create_stopped(client, alice)
    launch = f"/v1/workstations/{ws['id']}/launch"
    first = client.post(launch, headers={**alice, "Idempotency-Key": "launch-1"})
    again = client.post(launch, headers={**alice, "Idempotency-Key": "launch-1"})
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    unkeyed = client.post(launch, headers=alice)
    assert unkeyed.status_code == 400  # a new launch of a running workstation
    stop = f"/v1/workstations/{ws['id']}/stop"
    assert client.post(stop, headers={**alice, "Idempotency-Key": "stop-1"}).status_code == 200
    assert client.post(stop, headers={**alice, "Idempotency-Key": "stop-1"}).get_json()["status"] == "stopped"


def test_concurrent_requests_with_one_key_create_once(app, client, alice):
    answers = []
    barrier = threading.Barrier(8)

    def create():
        own = app.test_client()
        barrier.wait()
        answers.append(_create(own, alice, "burst"))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [201] * 8
    assert len({a.get_json()["id"] for a in answers}) == 1
    assert len(client.get("/v1/workstations", headers=alice).get_json()["data"]) == 1


def test_a_malformed_key_is_400(client, alice):
    bad = _create(client, alice, "has space")
    assert (bad.status_code, bad.get_json()["error"]) == (400, "invalid_request")
    assert client.get("/v1/workstations", headers=alice).get_json()["data"] == []


def test_expired_keys_are_forgotten(client, alice, components):
    _create(client, alice, "old")
    with components.db.write() as tx:
        tx.execute("UPDATE idempotency_keys SET created_at = created_at - 2 * 86400")
    assert "Idempotent-Replayed" not in _create(client, alice, "old").headers
    assert len(client.get("/v1/workstations", headers=alice).get_json()["data"]) == 2


def test_idempotency_through_the_real_server(server):
    import requests

    from tests.helpers import cli

    token = cli(server.env, "keys", "create", "--account", "a").stdout.split()[-1]
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "real-1"}
    body = {"name": "once", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}}
    first = requests.post(server.url + "/v1/workstations", json=body, headers=headers)
    again = requests.post(server.url + "/v1/workstations", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    other = requests.post(server.url + "/v1/workstations", json={**body, "name": "twice"}, headers=headers)
    assert (other.status_code, other.json()["error"]) == (422, "idempotency_key_reused")
    listed = requests.get(server.url + "/v1/workstations", headers={"Authorization": f"Bearer {token}"})
    assert len(listed.json()["data"]) == 1


def test_answers_kept_before_the_upgrade_lose_their_secrets(tmp_path):
    """An older server kept a launch's whole answer, console password and links; migration 0013 scrubs them."""
    import json

    from cwhost.db.database import Database
    from cwhost.db.schema import migrations

    db = Database(tmp_path / "cwhost.db")
    db.migrate()
    launched = {"id": "ws-1", "status": "running", "access": {"console": {"password": "s3cretpw", "url": "x/tok"}}}
    with db.write() as tx:
        tx.conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0013_idempotency_replays_without_access'")
        for key, body in (("k1", json.dumps(launched)), ("k2", '{"id": "wsp-1", "name": "files"}'), ("k3", "{]")):
            tx.table("idempotency_keys").insert(
                {"account_id": "a", "key": key, "fingerprint": "f", "status": 200, "body": body, "created_at": 1.0}
            )
    migrations.apply(db.db)
    kept = {row["key"]: row["body"] for row in db.query("SELECT key, body FROM idempotency_keys")}
    assert "s3cretpw" not in kept["k1"] and json.loads(kept["k1"]) == {**launched, "access": None}
    assert json.loads(kept["k2"]) == {"id": "wsp-1", "name": "files"} and kept["k3"] == "{]"
