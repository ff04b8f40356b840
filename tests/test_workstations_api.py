"""The workstation API through Flask's test client: life cycle, validation, errors, allocation."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from cwhost.accounts import tokens as auth
from cwhost.model import domain_name
from drivers.base import DomainState, ProvisioningError
from tests.helpers import GOOD_CONFIGURATION, bearer, create_stopped, wait_for_status


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["requestId"] == response.headers["X-Request-Id"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def assert_nothing_written(components):
    assert components.db.query("SELECT id FROM workstations") == []
    assert components.driver.list_domains() == {}


# -- life cycle ---------------------------------------------------------------


def test_full_life_cycle(client, alice, components):
    created = client.post(
        "/v1/workstations",
        json={"name": "My-New-Workstation", "configuration": {**GOOD_CONFIGURATION, "gpu": "NVIDIA L40S"}},
        headers=alice,
    )
    assert created.status_code == 201
    body = created.get_json()
    assert body["status"] == "provisioning"
    assert created.headers["Location"] == f"/v1/workstations/{body['id']}"
    xga = {"width": 1024, "height": 768}
    assert body["configuration"] == {**GOOD_CONFIGURATION, "gpu": "NVIDIA L40S", "display": xga}
    assert body["startedAt"] is None and body["access"] is None
    ws_id = body["id"]
    wait_for_status(client, alice, ws_id, "stopped")

    launched = client.post(f"/v1/workstations/{ws_id}/launch", headers=alice)
    assert launched.status_code == 200
    assert launched.get_json()["status"] == "running"
    assert launched.get_json()["startedAt"].endswith("Z")
    console = launched.get_json()["access"]["console"]
    assert console["protocol"] == "vnc" and console["port"] >= 5900 and len(console["password"]) == 8
    assert components.driver.state(domain_name(ws_id)) == DomainState.RUNNING

    assert_error(client.post(f"/v1/workstations/{ws_id}/launch", headers=alice), 400, "invalid_state")
    assert_error(
        client.patch(f"/v1/workstations/{ws_id}", json={"name": "x"}, headers=alice), 400, "invalid_state"
    )
    assert_error(client.delete(f"/v1/workstations/{ws_id}", headers=alice), 400, "invalid_state")

    stopped = client.post(f"/v1/workstations/{ws_id}/stop", headers=alice)
    assert stopped.status_code == 200
    assert stopped.get_json()["status"] == "stopped"
    assert stopped.get_json()["startedAt"] is None
    assert stopped.get_json()["access"] is None
    assert components.driver.state(domain_name(ws_id)) == DomainState.STOPPED
    assert_error(client.post(f"/v1/workstations/{ws_id}/stop", headers=alice), 400, "invalid_state")

    patched = client.patch(
        f"/v1/workstations/{ws_id}",
        json={
            "name": "Renamed",
            "configuration": {"cpuCores": 8, "storageGB": 40, "gpu": None, "display": {"width": 1280, "height": 800}},
        },
        headers=alice,
    )
    assert patched.status_code == 200
    assert patched.get_json()["name"] == "Renamed"
    assert patched.get_json()["configuration"] == {
        "cpuCores": 8,
        "memoryGB": 8,
        "storageGB": 40,
        "gpu": None,
        "region": "us-west-2",
        "display": {"width": 1280, "height": 800},
    }
    described = components.driver.describe(domain_name(ws_id))
    assert (described.title, described.cpu_cores, described.storage_gb) == ("Renamed", 8, 40)
    assert described.display == (1280, 800)

    usage = client.get(f"/v1/workstations/{ws_id}/usage", headers=alice)
    assert usage.status_code == 200
    assert set(usage.get_json()) >= {
        "cpuHours",
        "gpuHours",
        "memoryGBHours",
        "storageGBHours",
        "costUSD",
        "lastUpdated",
    }

    assert client.delete(f"/v1/workstations/{ws_id}", headers=alice).status_code == 204
    assert_error(client.get(f"/v1/workstations/{ws_id}", headers=alice), 404, "not_found")
    assert components.driver.list_domains() == {}
    assert not components.driver.disk_path(domain_name(ws_id)).exists()


def test_region_defaults_to_the_first_served_region(client, alice):
    configuration = {k: v for k, v in GOOD_CONFIGURATION.items() if k != "region"}
    created = client.post("/v1/workstations", json={"name": "r", "configuration": configuration}, headers=alice)
    assert created.get_json()["configuration"]["region"] == "us-west-2"


def test_stop_forces_a_guest_that_ignores_acpi(client, alice, components):
    ws = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    components.driver.set_ignores_acpi(domain_name(ws["id"]), True)
    stopped = client.post(f"/v1/workstations/{ws['id']}/stop", headers=alice)
    assert stopped.get_json()["status"] == "stopped"
    assert components.driver.state(domain_name(ws["id"])) == DomainState.STOPPED


def test_stop_with_force_skips_the_guest(client, alice, components, monkeypatch):
    ws = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    asked = []
    monkeypatch.setattr(components.driver, "shutdown", lambda *a: asked.append(a) or True)
    stopped = client.post(f"/v1/workstations/{ws['id']}/stop?force=true", headers=alice)
    assert stopped.get_json()["status"] == "stopped"
    assert asked == []
    assert_error(client.post(f"/v1/workstations/{ws['id']}/stop?force=maybe", headers=alice), 400, "invalid_request")


def test_storage_never_shrinks_and_a_refused_patch_changes_nothing(client, alice, components):
    ws = create_stopped(client, alice, storageGB=50)
    for body, status, code in (
        ({"configuration": {"storageGB": 49}}, 400, "invalid_request"),
        ({"name": "ok", "configuration": {"gpu": "NVIDIA H100"}}, 422, "unknown_asset"),
        ({"name": "ok", "configuration": {"region": "mars-1"}}, 400, "invalid_request"),
        ({"name": "ok", "configuration": {"cpuCores": 17}}, 400, "invalid_request"),
        ({"name": "ok", "colour": "red"}, 400, "invalid_request"),
        ({"name": "bad name"}, 400, "invalid_request"),
    ):
        assert_error(client.patch(f"/v1/workstations/{ws['id']}", json=body, headers=alice), status, code)
    after = client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()
    assert after == ws
    assert components.driver.describe(domain_name(ws["id"])).storage_gb == 50


def test_failed_provisioning_ends_in_error_with_a_reason(client, alice, components, monkeypatch):
    def refuse(spec):
        raise ProvisioningError("disk pool is full")

    monkeypatch.setattr(components.driver, "define", refuse)
    created = client.post("/v1/workstations", json={"name": "w", "configuration": GOOD_CONFIGURATION}, headers=alice)
    failed = wait_for_status(client, alice, created.get_json()["id"], "error")
    assert "disk pool is full" in failed["statusMessage"]
    assert_error(client.post(f"/v1/workstations/{failed['id']}/launch", headers=alice), 400, "invalid_state")
    assert client.delete(f"/v1/workstations/{failed['id']}", headers=alice).status_code == 204


# -- listing ------------------------------------------------------------------


def test_list_pages_with_a_cursor_and_filters(client, alice):
    ids = [create_stopped(client, alice, name=f"w{i}")["id"] for i in range(5)]
    client.post(f"/v1/workstations/{ids[1]}/launch", headers=alice)
    seen, after = [], None
    while True:
        query = "/v1/workstations?limit=2" + (f"&after={after}" if after else "")
        page = client.get(query, headers=alice).get_json()
        assert page["object"] == "list"
        assert len(page["data"]) <= 2
        seen += [w["id"] for w in page["data"]]
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            break
        after = page["nextCursor"]
    assert seen == ids
    running = client.get("/v1/workstations?status=running", headers=alice).get_json()
    assert [w["id"] for w in running["data"]] == [ids[1]]
    for bad in ("limit=0", "limit=201", "limit=ten", "after=xyz", "status=sleeping"):
        assert_error(client.get(f"/v1/workstations?{bad}", headers=alice), 400, "invalid_request")


# -- bad input: 4xx, JSON, nothing written -------------------------------------


def _body(**overrides):
    body = {"name": "ok", "configuration": dict(GOOD_CONFIGURATION)}
    for key, value in overrides.items():
        if key in GOOD_CONFIGURATION or key in ("gpu",):
            body["configuration"][key] = value
        else:
            body[key] = value
    return body


BAD_BODIES = [
    *[
        pytest.param(_body(name=name), id=f"name={name!r}")
        for name in ("", "a" * 64, "a<b", "a&b", 'a"b', "a'b", "a b", "ünïcode", "a\x00b", "a\r\nX-Evil: 1", 123, None)
    ],
    *[
        pytest.param(_body(cpuCores=value), id=f"cpuCores={value!r}")
        for value in (0, -1, 2**64, 10**30, "4", 4.5, True, None, [4])
    ],
    pytest.param(_body(memoryGB=0), id="memoryGB=0"),
    pytest.param(_body(memoryGB=-8), id="memoryGB=-8"),
    pytest.param(_body(storageGB=0), id="storageGB=0"),
    pytest.param(_body(storageGB=10**12), id="storageGB=huge"),
    pytest.param(_body(cpuCores=17), id="cpuCores-over-host"),
    pytest.param(_body(memoryGB=65), id="memoryGB-over-host"),
    pytest.param(_body(region="us-east-1"), id="unknown-region"),
    pytest.param(_body(region=""), id="empty-region"),
    pytest.param(_body(colour="red"), id="unknown-field"),
    pytest.param({"name": "ok", "configuration": {**GOOD_CONFIGURATION, "x": 1}}, id="unknown-nested-field"),
    pytest.param({"name": "ok"}, id="no-configuration"),
    pytest.param({"configuration": GOOD_CONFIGURATION}, id="no-name"),
    pytest.param({"name": "ok", "configuration": "big"}, id="configuration-string"),
    pytest.param([{"name": "ok"}], id="array"),
    pytest.param("workstation", id="string"),
    pytest.param(42, id="number"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_invalid_create_bodies_are_400_and_write_nothing(client, alice, components, body):
    response = client.post("/v1/workstations", data=json.dumps(body), content_type="application/json", headers=alice)
    assert_error(response, 400, "invalid_request")
    assert_nothing_written(components)


def test_validation_errors_name_their_fields(client, alice):
    response = client.post("/v1/workstations", json=_body(name="a b", cpuCores="4"), headers=alice)
    details = assert_error(response, 400, "invalid_request")["details"]
    assert "name" in details
    assert "cpuCores" in details["configuration"]


RAW_BAD_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b'{"name": ', id="truncated"),
    pytest.param(b"{'name': 'single quotes'}", id="not-json"),
    pytest.param(b'{"name": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    pytest.param(b'{"name": "ok", "configuration": {"cpuCores": ' + b"9" * 5000 + b"}}", id="5000-digit-number"),
    pytest.param(b'{"name": "ok", "name": "twice"}', id="no-configuration-dup-key"),
]


@pytest.mark.parametrize("raw", RAW_BAD_BODIES)
def test_malformed_json_is_400_and_writes_nothing(client, alice, components, raw):
    response = client.post("/v1/workstations", data=raw, content_type="application/json", headers=alice)
    assert_error(response, 400, "invalid_request")
    assert_nothing_written(components)


def test_body_of_10_megabytes_is_413(client, alice, components):
    raw = json.dumps({"name": "x" * (10 * 1024 * 1024)})
    response = client.post("/v1/workstations", data=raw, content_type="application/json", headers=alice)
    assert_error(response, 413, "payload_too_large")
    assert_nothing_written(components)


def test_other_content_types_are_415(client, alice, components):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = client.post(
            "/v1/workstations", data=json.dumps(_body()), content_type=content_type, headers=alice
        )
        assert_error(response, 415, "unsupported_media_type")
    assert_nothing_written(components)


@pytest.mark.parametrize(
    "overrides, what",
    [({"gpu": "NVIDIA H100"}, "GPU"), ({"type": "cobol-mainframe"}, "type"), ({"workspaceId": "wsp-12345678"}, "workspace")],
)
def test_assets_the_server_does_not_have_are_422(client, alice, components, overrides, what):
    body = _body(**overrides)
    assert_error(client.post("/v1/workstations", json=body, headers=alice), 422, "unknown_asset")
    assert_nothing_written(components)


# -- auth, routing, isolation ---------------------------------------------------


def test_requests_without_a_valid_token_are_401(client, components):
    key = auth.create_key(components.db, "carol")
    auth.revoke_key(components.db, key.key_id)
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer("cwh_not-a-real-token"),
        bearer(key.token),
        bearer("x" * 10_000),
        {"Authorization": "Bearer"},
    ):
        response = client.get("/v1/workstations", headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_tokens_are_stored_only_as_hashes(components):
    key = auth.create_key(components.db, "dave")
    stored = json.dumps(components.db.query("SELECT * FROM api_keys"))
    assert key.token not in stored
    assert auth.hash_token(key.token) in stored


def test_another_accounts_workstation_is_404_like_a_missing_one(client, alice, bob, admin):
    ws = create_stopped(client, alice)
    for method, path in (
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "/launch"),
        ("post", "/stop"),
        ("get", "/usage"),
    ):
        kwargs = {"json": {"name": "mine"}} if method == "patch" else {}
        theirs = getattr(client, method)(f"/v1/workstations/{ws['id']}{path}", headers=bob, **kwargs)
        missing = getattr(client, method)(f"/v1/workstations/ws-00000000{path}", headers=bob, **kwargs)
        assert_error(theirs, 404, "not_found")
        assert_error(missing, 404, "not_found")
        assert theirs.get_json()["message"].replace(ws["id"], "X") == missing.get_json()["message"].replace(
            "ws-00000000", "X"
        )
    assert client.get("/v1/workstations", headers=bob).get_json()["data"] == []
    assert [w["id"] for w in client.get("/v1/workstations", headers=admin).get_json()["data"]] == [ws["id"]]
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json() == ws


def test_unknown_routes_and_methods_answer_json(client, alice):
    assert_error(client.get("/v1/nothing-here", headers=alice), 404, "not_found")
    response = client.put("/v1/workstations", headers=alice)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_request_ids_are_echoed_or_made(client, alice):
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-Id": "bad id\x7f"}).headers["X-Request-Id"]
    assert made != "bad id\x7f" and len(made) == 32


def test_unexpected_exceptions_are_500_json_and_logged(client, alice, components, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(components.services.store, "page", explode)
    with caplog.at_level(logging.ERROR):
        response = client.get("/v1/workstations", headers=alice)
    body = assert_error(response, 500, "internal")
    assert "secret internals" not in response.get_data(as_text=True)
    assert any(body["requestId"] in r.getMessage() for r in caplog.records)


# -- the hypervisor and the host's resources ------------------------------------


def test_unreachable_hypervisor_is_503_then_recovers(client, alice, components):
    ws = create_stopped(client, alice)
    components.driver.set_available(False)
    for response in (
        client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice),
        client.get("/v1/host", headers=alice),
        client.post("/v1/workstations", json=_body(), headers=alice),
    ):
        assert_error(response, 503, "unavailable")
        assert int(response.headers["Retry-After"]) > 0
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["status"] == "stopped"
    components.driver.set_available(True)
    assert client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice).status_code == 200


def test_only_one_workstation_gets_the_only_gpu_of_a_model(client, alice, bob, admin):
    first = create_stopped(client, alice, name="a", gpu="NVIDIA L40S")
    second = create_stopped(client, bob, name="b", gpu="NVIDIA L40S")
    assert client.post(f"/v1/workstations/{first['id']}/launch", headers=alice).status_code == 200
    refused = assert_error(client.post(f"/v1/workstations/{second['id']}/launch", headers=bob), 503, "unavailable")
    assert "NVIDIA L40S" in refused["message"]
    assert client.get(f"/v1/workstations/{second['id']}", headers=bob).get_json()["status"] == "stopped"

    def l40s(headers):
        gpus = client.get("/v1/host", headers=headers).get_json()["gpus"]
        return next(g for g in gpus if g["model"] == "NVIDIA L40S")

    assert l40s(admin) == {**l40s(admin), "state": "assigned", "holder": first["id"]}
    assert l40s(alice)["holder"] == first["id"]
    assert l40s(bob) == {**l40s(admin), "holder": None}

    client.post(f"/v1/workstations/{first['id']}/stop", headers=alice)
    assert l40s(admin)["state"] == "free"
    assert client.post(f"/v1/workstations/{second['id']}/launch", headers=bob).status_code == 200


def test_concurrent_launches_never_share_a_gpu(app, client, alice):
    ids = [create_stopped(client, alice, name=f"g{i}", gpu="NVIDIA L40S", cpuCores=1, memoryGB=1)["id"] for i in range(8)]
    statuses = {}
    barrier = threading.Barrier(len(ids))

    def launch(ws_id):
        own_client = app.test_client()
        barrier.wait()
        statuses[ws_id] = own_client.post(f"/v1/workstations/{ws_id}/launch", headers=alice).status_code

    threads = [threading.Thread(target=launch, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses.values()) == [200] + [503] * 7
    running = client.get("/v1/workstations?status=running", headers=alice).get_json()["data"]
    assert len(running) == 1


def test_concurrent_launches_of_one_workstation_succeed_once(app, client, alice):
    ws = create_stopped(client, alice)
    statuses = []
    barrier = threading.Barrier(50)

    def launch():
        own_client = app.test_client()
        barrier.wait()
        statuses.append(own_client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice).status_code)

    threads = [threading.Thread(target=launch) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [400] * 49


def test_a_patch_racing_a_launch_gives_the_vm_the_old_or_the_new_configuration(
    app, client, alice, components, monkeypatch
):
    """The launched VM, the launch's answer and the stored record always agree, whoever wins.

    A slow hypervisor widens the window: the update of the definition and the
    start both take a while, as they do on a real host, so that a launch
    slipping between a PATCH's update of the domain and its write of the
    record would show as a VM unlike its record.
    """
    old = {"cpuCores": 2, "memoryGB": 4, "storageGB": 10}
    new = {"cpuCores": 6, "memoryGB": 12, "storageGB": 30}
    driver = components.driver
    update, start = driver.update, driver.start

    def slow_update(spec):
        update(spec)
        time.sleep(0.03)

    def slow_start(*args):
        time.sleep(0.03)
        start(*args)

    monkeypatch.setattr(driver, "update", slow_update)
    monkeypatch.setattr(driver, "start", slow_start)
    winners = []
    for round_number in range(12):
        ws = create_stopped(client, alice, name=f"race{round_number}", **old)
        url = f"/v1/workstations/{ws['id']}"
        # Alternate which request leaves first, so that both orders happen.
        head_start = {"patch": 0.0, "launch": 0.01} if round_number % 2 else {"patch": 0.01, "launch": 0.0}
        barrier = threading.Barrier(2)
        answers = {}

        def act(kind):
            own = app.test_client()
            barrier.wait()
            time.sleep(head_start[kind])
            if kind == "patch":
                answers[kind] = own.patch(url, json={"configuration": new}, headers=alice)
            else:
                answers[kind] = own.post(url + "/launch", headers=alice)

        threads = [threading.Thread(target=act, args=(kind,)) for kind in ("patch", "launch")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert answers["launch"].status_code == 200, answers["launch"].get_json()
        patched = answers["patch"].status_code == 200
        if not patched:
            assert (answers["patch"].status_code, answers["patch"].get_json()["error"]) == (400, "invalid_state")
        expected = new if patched else old
        domain = driver.describe(domain_name(ws["id"]))
        assert driver.state(domain_name(ws["id"])) == DomainState.RUNNING
        running = {"cpuCores": domain.cpu_cores, "memoryGB": domain.memory_gb, "storageGB": domain.storage_gb}
        assert running == expected
        launched = answers["launch"].get_json()["configuration"]
        assert {key: launched[key] for key in expected} == expected
        stored = client.get(url, headers=alice).get_json()["configuration"]
        assert {key: stored[key] for key in expected} == expected
        winners.append("patch" if patched else "launch")
        assert client.post(url + "/stop", headers=alice).status_code == 200
    assert set(winners) == {"patch", "launch"}


def test_launch_beyond_the_hosts_free_cores_is_503(client, alice):
    big = create_stopped(client, alice, name="big", cpuCores=10)
    other = create_stopped(client, alice, name="other", cpuCores=10)
    assert client.post(f"/v1/workstations/{big['id']}/launch", headers=alice).status_code == 200
    refused = assert_error(client.post(f"/v1/workstations/{other['id']}/launch", headers=alice), 503, "unavailable")
    assert "6 of 16 CPU cores free" in refused["message"]
    host = client.get("/v1/host", headers=alice).get_json()
    assert host["cpuCoresAllocated"] == 10


def test_a_running_workstation_is_deleted_in_one_call_with_force_and_metered_to_the_end(client, alice, components):
    ws = create_stopped(client, alice)
    url = f"/v1/workstations/{ws['id']}"
    assert client.post(url + "/launch", headers=alice).status_code == 200
    refused = client.delete(url, headers=alice)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_state"
    assert "force=true" in refused.get_json()["message"]
    assert client.get(url, headers=alice).get_json()["status"] == "running"

    deleted = client.delete(url + "?force=true", headers=alice)
    assert deleted.status_code == 204, deleted.get_json()
    assert client.get(url, headers=alice).status_code == 404
    assert components.driver.list_domains().get(domain_name(ws["id"])) is None
    usage = client.get(url + "/usage", headers=alice).get_json()
    # The running time ended with the delete: it does not grow afterwards.
    time.sleep(1.1)
    later = client.get(url + "/usage", headers=alice).get_json()
    assert {k: v for k, v in later.items() if k != "to"} == {k: v for k, v in usage.items() if k != "to"}
    assert usage["storageGBHours"] > 0


def test_force_on_a_stopped_workstation_deletes_it_as_without_and_must_be_a_boolean(client, alice):
    ws = create_stopped(client, alice)
    unclear = client.delete(f"/v1/workstations/{ws['id']}?force=yes-please", headers=alice)
    assert unclear.status_code == 400 and "force" in unclear.get_json()["details"]
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).status_code == 200
    assert client.delete(f"/v1/workstations/{ws['id']}?force=true", headers=alice).status_code == 204
