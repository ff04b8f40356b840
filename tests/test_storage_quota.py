"""Storage is bounded per account and on the host, at create, PATCH and upload, and under concurrency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import GOOD_CONFIGURATION, bearer, create_stopped, make_config, power_off_fake_guests


@pytest.fixture
def small_storage(tmp_path):
    config = make_config(
        tmp_path / "data",
        limits={"max_storage_gb": 50},
        workstation={"storage_overcommit": 1.0},
        workspaces={"max_upload_bytes": 2 * 1024**2},
    )
    Database(config.database_path).migrate()
    app = create_app(config)
    components = app.extensions["cwhost"]
    yield app.test_client(), bearer(auth.create_key(components.db, "alice").token), bearer(
        auth.create_key(components.db, "bob").token
    ), components
    components.services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


def test_an_accounts_storage_is_bounded_at_create_patch_and_upload(small_storage):
    client, alice, bob, components = small_storage
    ws = create_stopped(client, alice, storageGB=40)
    over = client.post(
        "/v1/workstations", json={"name": "b", "configuration": {**GOOD_CONFIGURATION, "storageGB": 11}}, headers=alice
    )
    assert over.status_code == 403 and "max_storage_gb" in over.get_json()["message"]
    grown = client.patch(f"/v1/workstations/{ws['id']}", json={"configuration": {"storageGB": 51}}, headers=alice)
    assert grown.status_code == 403
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["configuration"]["storageGB"] == 40
    # Bob's quota is his own.
    assert create_stopped(client, bob, storageGB=45)["configuration"]["storageGB"] == 45
    account = client.get("/v1/account", headers=alice).get_json()
    assert account["limits"]["maxStorageGB"] == 50 and account["use"]["storageGB"] == 40


def test_uploads_count_against_the_storage_quota(small_storage):
    client, alice, _bob, components = small_storage
    ws = create_stopped(client, alice, storageGB=49)
    workspace = client.post("/v1/workspaces", json={}, headers=alice).get_json()["id"]
    megabyte = b"x" * 1024**2
    assert client.put(f"/v1/workspaces/{workspace}/files/a", data=megabyte, headers=alice).status_code == 201
    assert client.get("/v1/account", headers=alice).get_json()["use"]["storageGB"] == pytest.approx(49 + 1 / 1024)
    # The file takes part of the last GiB, so the disk can no longer grow to it.
    grown = client.patch(f"/v1/workstations/{ws['id']}", json={"configuration": {"storageGB": 50}}, headers=alice)
    assert grown.status_code == 403


def test_an_upload_past_the_storage_quota_is_403_and_stores_nothing(tmp_path):
    config = make_config(tmp_path / "data", limits={"accounts": {"carol": {"max_storage_gb": 0}}})
    Database(config.database_path).migrate()
    app = create_app(config)
    components = app.extensions["cwhost"]
    client = app.test_client()
    carol = bearer(auth.create_key(components.db, "carol").token)
    try:
        workspace = client.post("/v1/workspaces", json={}, headers=carol).get_json()["id"]
        refused = client.put(f"/v1/workspaces/{workspace}/files/a.txt", data=b"data", headers=carol)
        assert refused.status_code == 403 and "max_storage_gb" in refused.get_json()["message"]
        assert client.get(f"/v1/workspaces/{workspace}/files", headers=carol).get_json()["data"] == []
        assert not list(components.services.workspaces.directory(workspace).iterdir())
    finally:
        components.services.background.wait_idle()


def test_the_host_cannot_promise_more_storage_than_it_has(tmp_path):
    config = make_config(tmp_path / "data", limits={"max_storage_gb": 100_000})
    Database(config.database_path).migrate()
    app = create_app(config)
    components = app.extensions["cwhost"]
    client = app.test_client()
    alice = bearer(auth.create_key(components.db, "alice").token)
    bob = bearer(auth.create_key(components.db, "bob").token)
    try:
        host_gb = client.get("/v1/host", headers=alice).get_json()["storageGB"]
        create_stopped(client, alice, storageGB=host_gb - 10)
        refused = client.post(
            "/v1/workstations", json={"name": "b", "configuration": {**GOOD_CONFIGURATION, "storageGB": 11}}, headers=bob
        )
        assert refused.status_code == 403 and "storage left" in refused.get_json()["message"]
        assert create_stopped(client, bob, storageGB=10)["configuration"]["storageGB"] == 10
    finally:
        components.services.background.wait_idle()
        power_off_fake_guests(config.data_dir)


def _slowed(monkeypatch, method_name):
    """Make each of the store's writes of this kind take 0.3 s, so that concurrent requests overlap."""
    from cwhost.workstations.store import WorkstationStore

    real = getattr(WorkstationStore, method_name)

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WorkstationStore, method_name, slow)


def _at_once(requests_to_send):
    with ThreadPoolExecutor(len(requests_to_send)) as pool:
        return [future.result() for future in [pool.submit(send) for send in requests_to_send]]


def test_creates_at_once_cannot_both_take_the_last_gigabytes(small_storage, monkeypatch):
    client, alice, _bob, components = small_storage
    _slowed(monkeypatch, "insert")
    app = client.application
    body = {"configuration": {**GOOD_CONFIGURATION, "storageGB": 30}}
    answers = _at_once(
        [lambda n=n: app.test_client().post("/v1/workstations", json={"name": f"w{n}", **body}, headers=alice)
         for n in range(2)]
    )
    assert sorted(answer.status_code for answer in answers) == [201, 403], [a.get_json() for a in answers]
    assert client.get("/v1/account", headers=alice).get_json()["use"]["storageGB"] == 30


def test_patches_at_once_cannot_both_take_the_last_gigabytes(small_storage, monkeypatch):
    client, alice, _bob, components = small_storage
    first, second = (create_stopped(client, alice, name=f"w{n}", storageGB=20) for n in range(2))
    _slowed(monkeypatch, "transition")
    app = client.application
    answers = _at_once(
        [lambda ws=ws: app.test_client().patch(
            f"/v1/workstations/{ws['id']}", json={"configuration": {"storageGB": 26}}, headers=alice)
         for ws in (first, second)]
    )
    assert sorted(answer.status_code for answer in answers) == [200, 403], [a.get_json() for a in answers]
    assert client.get("/v1/account", headers=alice).get_json()["use"]["storageGB"] == 46


def test_creates_at_once_cannot_both_take_the_last_place(tmp_path, monkeypatch):
    config = make_config(tmp_path / "data", limits={"max_workstations": 1})
    Database(config.database_path).migrate()
    app = create_app(config)
    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    _slowed(monkeypatch, "insert")
    body = {"configuration": GOOD_CONFIGURATION}
    answers = _at_once(
        [lambda n=n: app.test_client().post("/v1/workstations", json={"name": f"w{n}", **body}, headers=alice)
         for n in range(2)]
    )
    assert sorted(answer.status_code for answer in answers) == [201, 403], [a.get_json() for a in answers]
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)
