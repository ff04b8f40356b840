"""Workstation logs: every change and its reason, errors explained, the console when there is one."""

from __future__ import annotations

import pytest

from cwhost.model import domain_name
from cwhost.workstations.enforcer import SYSTEM
from drivers.base import ProvisioningError
from tests.helpers import GOOD_CONFIGURATION, create_stopped, wait_for_status


def _messages(client, headers, ws_id):
    listed = client.get(f"/v1/workstations/{ws_id}/logs", headers=headers).get_json()
    assert listed["object"] == "list"
    return [(entry["level"], entry["message"]) for entry in listed["data"]]


def test_each_transition_is_logged_in_order(client, alice, components):
    ws = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    components.driver.set_ignores_acpi(domain_name(ws["id"]), True)
    client.post(f"/v1/workstations/{ws['id']}/stop", headers=alice)
    client.patch(f"/v1/workstations/{ws['id']}", json={"configuration": {"cpuCores": 2}}, headers=alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    client.post(f"/v1/workstations/{ws['id']}/stop?force=true", headers=alice)
    messages = _messages(client, alice, ws["id"])
    assert [level for level, _ in messages] == ["info"] * 7
    assert messages[0][1].startswith("Created")
    assert messages[1][1].startswith("Provisioned")
    assert messages[2][1] == "Launched."
    assert "did not power off within 0.5 s, so it was forced" in messages[3][1]
    assert messages[4][1] == "Reconfigured: cpu_cores 4 -> 2."
    assert "powered off at once" in messages[6][1]


def test_a_workstation_in_error_has_an_error_log_saying_why(client, alice, components, monkeypatch):
    def refuse(spec):
        raise ProvisioningError("the disk pool is full")

    monkeypatch.setattr(components.driver, "define", refuse)
    created = client.post("/v1/workstations", json={"name": "w", "configuration": GOOD_CONFIGURATION}, headers=alice)
    wait_for_status(client, alice, created.get_json()["id"], "error")
    errors = [m for level, m in _messages(client, alice, created.get_json()["id"]) if level == "error"]
    assert errors and "the disk pool is full" in errors[0]


def test_reconciliation_findings_and_automatic_stops_are_logged(client, alice, components):
    ws = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    components.driver.destroy(domain_name(ws["id"]))
    components.services.reconciler.reconcile()
    assert ("warning", "Found not running on the hypervisor (its VM stopped); recorded as stopped.") in _messages(
        client, alice, ws["id"]
    )
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    components.services.lifecycle.stop(SYSTEM, ws["id"], reason="a test said so")
    assert any(level == "warning" and m.startswith("Stopped because a test said so.") for level, m in _messages(client, alice, ws["id"]))


def test_logs_page_and_download(client, alice):
    ws = create_stopped(client, alice)
    for _ in range(3):
        client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
        client.post(f"/v1/workstations/{ws['id']}/stop?force=true", headers=alice)
    first = client.get(f"/v1/workstations/{ws['id']}/logs?limit=3", headers=alice).get_json()
    assert len(first["data"]) == 3 and first["hasMore"]
    rest = client.get(f"/v1/workstations/{ws['id']}/logs?limit=50&after={first['nextCursor']}", headers=alice).get_json()
    assert len(rest["data"]) == 5 and not rest["hasMore"]
    entry = first["data"][2]
    content = client.get(entry["url"], headers=alice)
    assert content.status_code == 200 and content.mimetype == "text/plain"
    assert content.get_data(as_text=True).strip().endswith(entry["message"])
    assert entry["createdAt"] in content.get_data(as_text=True)
    for missing in ("log-999999", "console", "log-x", "../../etc/passwd"):
        response = client.get(f"/v1/workstations/{ws['id']}/logs/{missing}/content", headers=alice)
        assert response.status_code == 404, missing


@pytest.mark.parametrize("path", ["logs", "logs/log-1/content"])
def test_another_accounts_logs_are_404(client, alice, bob, path):
    ws = create_stopped(client, alice)
    assert client.get(f"/v1/workstations/{ws['id']}/{path}", headers=bob).status_code == 404


def test_a_workstations_log_keeps_its_newest_events_only(client, alice, components, monkeypatch):
    from cwhost.workstations import store

    monkeypatch.setattr(store, "MAX_EVENTS_PER_WORKSTATION", 20)
    monkeypatch.setattr(store, "PRUNE_EVERY", 5)
    ws = create_stopped(client, alice)
    other = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    for number in range(60):
        ran = client.post(f"/v1/workstations/{ws['id']}/exec", json={"command": ["echo", str(number)]}, headers=alice)
        assert ran.status_code == 200
    kept = components.db.query(
        "SELECT message FROM workstation_events WHERE workstation_id = ? ORDER BY id", [ws["id"]]
    )
    messages = [row["message"] for row in kept]
    assert 20 <= len(messages) <= 25 and messages[-1] == "Ran echo 59: exit code 0."
    # Another workstation's log is its own.
    assert [m for _, m in _messages(client, alice, other["id"])][0].startswith("Created")
    client.post(f"/v1/workstations/{ws['id']}/stop?force=true", headers=alice)


def test_a_deleted_workstations_log_keeps_only_its_last_entry(client, alice, components):
    ws = create_stopped(client, alice)
    for _ in range(3):
        client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
        client.post(f"/v1/workstations/{ws['id']}/stop?force=true", headers=alice)
    assert client.delete(f"/v1/workstations/{ws['id']}", headers=alice).status_code == 204
    kept = components.db.query("SELECT message FROM workstation_events WHERE workstation_id = ?", [ws["id"]])
    assert [row["message"] for row in kept] == ["Deleted, with its disk."]
