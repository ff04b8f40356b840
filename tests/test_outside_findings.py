"""What outside testing found in the API, each pinned by the behaviour a user would see."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cwhost import auth
from cwhost.app import create_app
from cwhost.db import Database
from tests.conftest import (
    GOOD_CONFIGURATION,
    bearer,
    create_stopped,
    make_config,
    power_off_fake_guests,
)

# -- names and patterns --------------------------------------------------------


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


# -- money ---------------------------------------------------------------------


def test_a_balance_beyond_any_calendar_shows_no_exhaustion_date_and_reads_fine(client, alice, admin):
    create_stopped(client, alice)  # storage costs something, so there is a burn rate
    answer = client.put("/v1/accounts/alice/credits", json={"balanceUSD": 1_000_000}, headers=admin)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["exhaustedAt"] is None
    again = client.get("/v1/account", headers=alice)
    assert again.status_code == 200
    assert again.get_json()["balanceUSD"] == pytest.approx(1_000_000, rel=1e-6)
    assert again.get_json()["exhaustedAt"] is None


def test_a_near_exhaustion_date_is_still_given(client, alice, admin):
    create_stopped(client, alice)
    client.put("/v1/accounts/alice/credits", json={"balanceUSD": 1}, headers=admin)
    assert client.get("/v1/account", headers=alice).get_json()["exhaustedAt"] is not None


@pytest.mark.parametrize("balance", [float("nan"), float("inf"), -float("inf"), 1e13])
def test_the_service_refuses_a_balance_that_is_not_money(components, client, alice, balance):
    from cwhost.errors import InvalidRequest

    before = client.get("/v1/account", headers=alice).get_json()
    with pytest.raises(InvalidRequest):
        components.services.accounts.set_balance("alice", balance)
    assert client.get("/v1/account", headers=alice).get_json() == before


def test_json_answers_never_carry_nan_or_infinity(app):
    with app.app_context():
        with pytest.raises(ValueError):
            app.json.dumps({"balanceUSD": float("nan")})
        with pytest.raises(ValueError):
            app.json.dumps({"balanceUSD": float("inf")})


# -- usage windows ---------------------------------------------------------------


@pytest.mark.parametrize(
    "window",
    ["from=0001-01-01T00:00:00%2B01:00", "from=9999-12-31T23:59:59-23:59", "to=0001-01-01T00:30:00%2B01:00"],
)
def test_a_window_outside_the_calendar_is_400(client, alice, window):
    ws = create_stopped(client, alice)
    answer = client.get(f"/v1/workstations/{ws['id']}/usage?{window}", headers=alice)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == "invalid_request"


# -- the answers' form -----------------------------------------------------------


def test_errors_are_written_like_successes_and_204_has_no_content_type(client, alice):
    ok = client.get("/v1/workstations", headers=alice)
    missing = client.get("/v1/workstations/ws-nothere", headers=alice)
    assert ok.get_data(as_text=True).endswith("\n") and missing.get_data(as_text=True).endswith("\n")
    assert ", " not in missing.get_data(as_text=True) and ": " not in missing.get_data(as_text=True)
    ws = create_stopped(client, alice)
    deleted = client.delete(f"/v1/workstations/{ws['id']}", headers=alice)
    assert deleted.status_code == 204
    assert "Content-Type" not in deleted.headers and deleted.get_data() == b""


def test_a_503_for_capacity_is_a_warning_not_an_error(client, alice, caplog):
    ws = create_stopped(client, alice, cpuCores=16)
    other = create_stopped(client, alice, name="ws2", cpuCores=16)
    assert client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice).status_code == 200
    with caplog.at_level(logging.INFO, logger="cwhost"):
        refused = client.post(f"/v1/workstations/{other['id']}/launch", headers=alice)
    assert refused.status_code == 503
    records = [r for r in caplog.records if "CPU cores free" in r.getMessage()]
    assert records and all(r.levelno == logging.WARNING for r in records)


# -- unknown query parameters and paging ------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/v1/workstations/{id}"),
        ("get", "/v1/host"),
        ("get", "/v1/account"),
        ("post", "/v1/workstations/{id}/launch"),
        ("patch", "/v1/workstations/{id}"),
        ("delete", "/v1/workstations/{id}"),
        ("get", "/v1/workspaces/{workspace}"),
    ],
)
def test_an_unknown_query_parameter_is_refused_on_every_operation(client, alice, method, path):
    ws = create_stopped(client, alice)
    workspace = client.post("/v1/workspaces", json={}, headers=alice).get_json()["id"]
    url = path.format(id=ws["id"], workspace=workspace) + "?staus=running"
    kwargs = {"json": {}} if method == "patch" else {}
    answer = getattr(client, method)(url, headers=alice, **kwargs)
    assert answer.status_code == 400, answer.get_json()
    assert "staus" in answer.get_json()["details"]
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["status"] == "stopped"


def test_workstation_types_are_paged_like_every_list(client, alice):
    first = client.get("/v1/workstation-types?limit=2", headers=alice).get_json()
    assert len(first["data"]) == 2 and first["hasMore"] is True
    seen = [t["id"] for t in first["data"]]
    cursor = first["nextCursor"]
    while cursor:
        page = client.get(f"/v1/workstation-types?limit=2&after={cursor}", headers=alice).get_json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["nextCursor"]
    assert len(seen) == 9 == len(set(seen))
    assert client.get("/v1/workstation-types?limit=0", headers=alice).status_code == 400
    assert client.get("/v1/workstation-types?colour=red", headers=alice).status_code == 400


# -- storage quotas ----------------------------------------------------------------


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
    components.services.lifecycle.wait_idle()
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
        components.services.lifecycle.wait_idle()


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
        components.services.lifecycle.wait_idle()
        power_off_fake_guests(config.data_dir)


# -- deleting a workspace while uploads run ------------------------------------------


def test_deleting_a_workspace_while_uploads_run_loses_nothing_and_leaves_nothing(components, alice, app):
    for _round in range(5):
        client = app.test_client()
        workspace = client.post("/v1/workspaces", json={}, headers=alice).get_json()["id"]
        directory = components.services.workspaces.directory(workspace)
        answers: list[int] = []
        start = threading.Barrier(13)

        def upload(index: int) -> None:
            start.wait()
            answer = app.test_client().put(
                f"/v1/workspaces/{workspace}/files/dir{index % 3}/f{index}.bin", data=b"y" * 200_000, headers=alice
            )
            answers.append(answer.status_code)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        start.wait()
        deleted = app.test_client().delete(f"/v1/workspaces/{workspace}", headers=alice)
        for thread in threads:
            thread.join()
        assert deleted.status_code == 204, deleted.get_json()
        assert set(answers) <= {201, 404}, answers
        assert not directory.exists()
        assert client.get(f"/v1/workspaces/{workspace}/files", headers=alice).status_code == 404


def test_json_bodies_of_errors_parse_strictly(client, alice):
    answer = client.get("/v1/workstations/ws-nothere", headers=alice)
    json.loads(answer.get_data(as_text=True), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


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
    app.extensions["cwhost"].services.lifecycle.wait_idle()
    power_off_fake_guests(config.data_dir)
