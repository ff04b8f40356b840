"""Workstations' JSON is built outside marshmallow's per-row dump; it must still be what the schema documents."""

from __future__ import annotations

import json

import pytest

from cwhost.accounts import tokens as auth
from cwhost.api.schemas import WorkstationListSchema, WorkstationSchema
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import GOOD_CONFIGURATION, ONE_GPU_HOST, bearer, free_port, make_config, wait_for_status


@pytest.fixture
def reachable(tmp_path):
    """A server with SSH forwarding, the browser console and the CDP proxy: every part of ``access`` shown."""
    first = free_port()
    novnc = tmp_path / "novnc"
    (novnc / "core").mkdir(parents=True)
    (novnc / "core" / "rfb.js").write_text("export default class RFB {}\n")
    config = make_config(
        tmp_path / "data",
        access={"public_host": "gpu-server.lan", "ssh_port_first": first, "ssh_port_last": first + 20},
        browser={"port": free_port()},
        console={"port": free_port(), "novnc_dir": str(novnc)},
        driver={"name": "fake", "stop_timeout_seconds": 0.5, "fake": ONE_GPU_HOST},
    )
    Database(config.database_path).migrate()
    app = create_app(config)
    yield app, bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    app.extensions["cwhost"].services.background.wait_idle()
    for ws in app.extensions["cwhost"].services.store.running():
        app.extensions["cwhost"].driver.destroy(ws.domain_name)


def _running_browser(client, alice) -> dict:
    """A running chromium workstation, whose rows show console links and a CDP URL."""
    created = client.post("/v1/workstations", json={"name": "b", "type": "chromium"}, headers=alice).get_json()
    wait_for_status(client, alice, created["id"], "stopped")
    assert client.post(f"/v1/workstations/{created['id']}/launch", headers=alice).status_code == 200
    return created


def _as_documented(schema, body: dict) -> dict:
    """The body loaded by the schema (unknown or missing fields, wrong types raise) and dumped again."""
    return schema.dump(schema.load(body))


def test_every_kind_of_row_is_exactly_what_the_schema_documents(reachable):
    app, alice = reachable
    client = app.test_client()
    workspace = client.post("/v1/workspaces", json={"name": "w"}, headers=alice).get_json()
    ids = []
    for body in (
        {"name": "browser", "type": "chromium"},
        {"name": "plain", "configuration": GOOD_CONFIGURATION, "workspaceId": workspace["id"]},
        {"name": "stays-stopped", "type": "python"},
    ):
        ids.append(client.post("/v1/workstations", json=body, headers=alice).get_json()["id"])
        wait_for_status(client, alice, ids[-1], "stopped")
    for workstation_id in ids[:2]:
        assert client.post(f"/v1/workstations/{workstation_id}/launch", headers=alice).status_code == 200
    listed = client.get("/v1/workstations", headers=alice).get_json()
    assert _as_documented(WorkstationListSchema(), listed) == listed
    rows = {row["name"]: row for row in listed["data"]}
    assert rows["browser"]["access"]["browser"]["cdpUrl"] and rows["browser"]["access"]["console"]["url"]
    assert rows["plain"]["workspace"]["id"] == workspace["id"] and rows["plain"]["access"]["ssh"]["port"]
    assert rows["stays-stopped"]["access"] is None
    for workstation_id in ids:
        one = client.get(f"/v1/workstations/{workstation_id}", headers=alice).get_json()
        assert _as_documented(WorkstationSchema(), one) == one


def test_each_answer_mints_its_own_links_and_keeps_the_rest(reachable):
    app, alice = reachable
    client = app.test_client()
    created = _running_browser(client, alice)
    first, second = (client.get(f"/v1/workstations/{created['id']}", headers=alice).get_json() for _ in range(2))
    for key in ("url", "websocketUrl"):
        assert first["access"]["console"][key] != second["access"]["console"][key]
    assert first["access"]["browser"]["cdpUrl"] != second["access"]["browser"]["cdpUrl"]
    unchanged = {key: value for key, value in first.items() if key != "access"}
    assert unchanged == {key: value for key, value in second.items() if key != "access"}
    assert first["access"]["ssh"] == second["access"]["ssh"]


def test_links_made_from_an_odd_host_header_still_make_valid_json(reachable):
    """The links' fixed parts come from the request's Host and are put into encoded rows: they are escaped."""
    app, alice = reachable
    client = app.test_client()
    created = _running_browser(client, alice)
    for host in ('gpu"server\\\\lan', "gpü-server.lan"):
        answer = client.get("/v1/workstations", headers={**alice, "Host": host})
        if answer.status_code != 200:
            continue  # refused outright is safe too
        # Valid JSON whatever the Host held (Werkzeug leaves out a host it finds invalid).
        row = json.loads(answer.get_data(as_text=True))["data"][0]
        assert "/console/" + created["id"] in row["access"]["console"]["url"]
        assert "/cdp/" + created["id"] in row["access"]["browser"]["cdpUrl"]
        assert json.loads(client.get(f"/v1/workstations/{created['id']}", headers={**alice, "Host": host}).data)
