"""Workstations are read from memory (the store's read model); never a stale answer.

Each test compares what the API answers with what SQLite holds, after
concurrent writes, after a restart and after a failed read-back.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cwhost.app import create_app
from tests.helpers import GOOD_CONFIGURATION, create_stopped, make_config, wait_for_status


@pytest.fixture
def config(tmp_path):
    """Readers and writers as fast as they can go: no rate limit in their way."""
    return make_config(tmp_path / "data", server={"threads": 64, "max_in_flight": 60, "rate_limit_per_minute": 10**6})


def _answers(client, headers) -> dict[str, dict]:
    page = client.get("/v1/workstations?limit=200", headers=headers).get_json()
    return {ws["id"]: ws for ws in page["data"]}


def _in_sqlite(components) -> dict[str, tuple]:
    rows = components.db.query("SELECT id, name, status, cpu_cores FROM workstations WHERE deleted_at IS NULL")
    return {row["id"]: (row["name"], row["status"], row["cpu_cores"]) for row in rows}


def _as_shown(answers: dict[str, dict]) -> dict[str, tuple]:
    return {
        ws_id: (ws["name"], ws["status"], ws["configuration"]["cpuCores"]) for ws_id, ws in answers.items()
    }


def test_every_write_is_read_back_at_once_under_concurrent_writers_and_readers(app, components, alice):
    ids = [create_stopped(app.test_client(), alice, name=f"w{i}")["id"] for i in range(4)]
    stale = []
    done = threading.Event()

    def writer(n: int) -> None:
        client = app.test_client()
        for round_ in range(15):
            ws_id = ids[(n + round_) % len(ids)]
            body = {"name": f"by-{n}-{round_}", "configuration": {"cpuCores": 1 + (n + round_) % 4}}
            answer = client.patch(f"/v1/workstations/{ws_id}", json=body, headers=alice)
            assert answer.status_code == 200, answer.get_json()
            # Read-your-write, unless another writer renamed it since.
            seen = client.get(f"/v1/workstations/{ws_id}", headers=alice).get_json()["name"]
            if not seen.startswith("by-"):
                stale.append((ws_id, seen))

    def reader() -> None:
        client = app.test_client()
        # Reading between writes, not spinning: a spinning reader starves the writers of the GIL.
        while not done.wait(0.005):
            assert len(_answers(client, alice)) == len(ids)

    with ThreadPoolExecutor(8) as pool:
        readers = [pool.submit(reader) for _ in range(2)]
        writers = [pool.submit(writer, n) for n in range(6)]
        try:
            for future in writers:
                future.result()
        finally:
            done.set()
        for future in readers:
            future.result()
    assert stale == []
    assert _as_shown(_answers(app.test_client(), alice)) == _in_sqlite(components)


def test_launches_stops_and_deletions_show_at_once(client, components, alice):
    kept, removed = create_stopped(client, alice, name="kept"), create_stopped(client, alice, name="removed")
    assert client.post(f"/v1/workstations/{kept['id']}/launch", headers=alice).get_json()["status"] == "running"
    assert client.get(f"/v1/workstations/{kept['id']}", headers=alice).get_json()["status"] == "running"
    assert client.delete(f"/v1/workstations/{removed['id']}", headers=alice).status_code == 204
    assert client.get(f"/v1/workstations/{removed['id']}", headers=alice).status_code == 404
    assert list(_answers(client, alice)) == [kept["id"]]
    assert _as_shown(_answers(client, alice)) == _in_sqlite(components)


def test_an_archived_workspace_leaves_its_workstations_at_once(client, alice):
    workspace = client.post("/v1/workspaces", json={"name": "w"}, headers=alice).get_json()
    body = {"name": "with", "configuration": GOOD_CONFIGURATION, "workspaceId": workspace["id"]}
    holder = client.post("/v1/workstations", json=body, headers=alice).get_json()["id"]
    assert wait_for_status(client, alice, holder, "stopped")["workspace"]["id"] == workspace["id"]
    assert client.post(f"/v1/workspaces/{workspace['id']}/archive", headers=alice).status_code == 200
    assert client.get(f"/v1/workstations/{holder}", headers=alice).get_json()["workspace"] is None


def test_a_restart_reads_what_the_database_holds(config, app, components, alice):
    client = app.test_client()
    ws = create_stopped(client, alice)
    client.patch(f"/v1/workstations/{ws['id']}", json={"name": "renamed", "configuration": {}}, headers=alice)
    components.services.background.wait_idle()
    # What the service wrote last before going down, and a row written while it was down.
    with components.db.write() as tx:
        tx["workstations"].update(ws["id"], {"name": "written-while-down"})
    restarted = create_app(config)
    try:
        answer = restarted.test_client().get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()
        assert answer["name"] == "written-while-down"
        assert _as_shown(_answers(restarted.test_client(), alice)) == _in_sqlite(components)
    finally:
        restarted.extensions["cwhost"].services.background.wait_idle()


def test_a_failed_read_back_leaves_no_stale_answer(client, components, alice, monkeypatch):
    ws = create_stopped(client, alice)
    store = components.services.store
    real_query = components.db.query
    failing = {"once": True}

    def query(sql, params=()):
        if "row_number" in sql and failing.pop("once", False):
            raise OSError("disk went away for a moment")
        return real_query(sql, params)

    monkeypatch.setattr(components.db, "query", query)
    renamed = client.patch(f"/v1/workstations/{ws['id']}", json={"name": "after", "configuration": {}}, headers=alice)
    # The write committed: its answer and every later read say so.
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "after"
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["name"] == "after"
    assert store.find(ws["id"]).name == "after"


@pytest.mark.parametrize("status", ["running", "stopped"])
def test_a_list_filtered_by_status_pages_in_creation_order(client, alice, bob, status):
    mine = [create_stopped(client, alice, name=f"a{i}")["id"] for i in range(5)]
    create_stopped(client, bob, name="theirs")
    for ws_id in mine[1::2]:
        client.post(f"/v1/workstations/{ws_id}/launch", headers=alice)
    expected = [ws_id for n, ws_id in enumerate(mine) if (n % 2 == 1) == (status == "running")]
    seen, url = [], f"/v1/workstations?limit=1&status={status}"
    while url:
        page = client.get(url, headers=alice).get_json()
        seen += [ws["id"] for ws in page["data"]]
        url = f"/v1/workstations?limit=1&status={status}&after={page['nextCursor']}" if page["hasMore"] else None
    assert seen == expected
