"""How every answer is written: errors like successes, strict JSON, unknown parameters refused, every list paged."""

from __future__ import annotations

import json
import logging

import pytest

from tests.helpers import create_stopped


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


def test_json_answers_never_carry_nan_or_infinity(app):
    with app.app_context():
        with pytest.raises(ValueError):
            app.json.dumps({"balanceUSD": float("nan")})
        with pytest.raises(ValueError):
            app.json.dumps({"balanceUSD": float("inf")})


def test_json_bodies_of_errors_parse_strictly(client, alice):
    answer = client.get("/v1/workstations/ws-nothere", headers=alice)
    json.loads(answer.get_data(as_text=True), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


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
