"""Every endpoint, with account B's token against account A's things: 404, and no list leaks.

The walk is driven by the OpenAPI document, so an endpoint added without a
place in this test makes it fail rather than go unchecked.
"""

from __future__ import annotations

from cwhost.workspaces.paths import file_id
from tests.helpers import create_stopped

BODIES = {
    ("patch", "/v1/workstations/{workstation_id}"): {"name": "mine-now"},
    ("put", "/v1/accounts/{name}/credits"): {"balanceUSD": 1000},
    ("patch", "/v1/accounts/{name}/limits"): {"maxWorkstations": 1000},
    ("post", "/v1/workstations/{workstation_id}/exec"): {"command": ["true"]},
    ("post", "/v1/workstations/{workstation_id}/live-views"): {},
    ("post", "/v1/workstations/{workstation_id}/input"): {"actions": [{"type": "text", "text": "x"}]},
    ("post", "/v1/workstations/{workstation_id}/processes"): {"command": ["true"]},
    ("post", "/v1/workstations/{workstation_id}/processes/{process_id}/stdin"): {"data": "x", "eof": True},
    ("post", "/v1/workstations/{workstation_id}/processes/{process_id}/signal"): {"signal": "KILL"},
    ("post", "/v1/workstations/{workstation_id}/fs/directories"): {"path": "made-by-b"},
    ("post", "/v1/workstations/{workstation_id}/terminals"): {},
    ("post", "/v1/workstations/{workstation_id}/recordings"): {},
    ("post", "/v1/workstations/{workstation_id}/audio/listen"): {"seconds": 1},
}
# The guest's files are named by a query argument: B names A's.
GUEST_PATH = {"path": "/home/dev/a.txt"}
ADMIN_ONLY = {("put", "/v1/accounts/{name}/credits"), ("patch", "/v1/accounts/{name}/limits"), ("get", "/metrics")}
# The same for every account: health, and the catalogue of types.
UNSCOPED = {("get", "/healthz"), ("get", "/v1/workstation-types")}
LISTS = {("get", "/v1/workstations"), ("get", "/v1/workspaces"), ("get", "/v1/account/ssh-keys")}
OWN_ACCOUNT = {("get", "/v1/account")}
OWN_USAGE = {("get", "/v1/account/usage")}
SHARED_HOST = {("get", "/v1/host")}
CREATES = {("post", "/v1/workstations"), ("post", "/v1/workspaces"), ("post", "/v1/account/ssh-keys")}
# Reached by a secret link only, which B never sees: any other token is 404.
SECRET_LINKS = {("get", "/console/{token}"), ("get", "/live/{token}")}


def test_account_b_can_reach_nothing_of_account_a(client, alice, bob, components):
    spec = client.get("/openapi.json").get_json()
    workspace = client.post("/v1/workspaces", json={}, headers=alice).get_json()
    client.put(f"/v1/workspaces/{workspace['id']}/files/a.txt", data=b"alice's", headers=alice)
    ws = create_stopped(client, alice, gpu="NVIDIA L40S")
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    guest = f"/v1/workstations/{ws['id']}"
    process = client.post(guest + "/processes", json={"command": ["sleep", "300"]}, headers=alice).get_json()
    client.put(guest + "/fs/content", query_string=GUEST_PATH, data=b"alice's guest file", headers=alice)
    recording = client.post(guest + "/recordings", json={}, headers=alice).get_json()
    public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH/I6CyJpex+Gh3+oYR2m+HorZHGM"
    key = client.post("/v1/account/ssh-keys", json={"name": "a", "publicKey": public_key}, headers=alice).get_json()
    values = {
        "key_id": key["id"],
        "workstation_id": ws["id"],
        "workspace_id": workspace["id"],
        "name": "alice",
        "log_id": "log-1",
        "file_id": file_id("a.txt"),
        "file_path": "a.txt",
        "token": "a-guessed-console-token",
        "view_id": "lv-000000000000",
        "process_id": process["id"],
        "terminal_id": "t-000000000000",
        "recording_id": recording["id"],
    }

    checked = set()
    for path, item in spec["paths"].items():
        for method in item:
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            operation = (method, path)
            url = path.format(**values)
            query = GUEST_PATH if "/fs" in path and not path.endswith("/directories") else None
            response = getattr(client, method)(url, json=BODIES.get(operation), query_string=query, headers=bob)
            if operation in ADMIN_ONLY:
                assert response.status_code == 403, operation
            elif "{workstation_id}" in path or "{workspace_id}" in path or "{key_id}" in path or operation in SECRET_LINKS:
                assert response.status_code == 404, operation
                assert response.get_json()["error"] == "not_found"
            elif operation in LISTS:
                assert response.status_code == 200
                assert response.get_json()["data"] == [], operation
            elif operation in OWN_ACCOUNT:
                assert response.get_json()["name"] == "bob"
            elif operation in OWN_USAGE:
                assert response.status_code == 200 and response.get_json()["workstations"] == []
            elif operation in SHARED_HOST:
                held = [g for g in response.get_json()["gpus"] if g["state"] == "assigned"]
                assert held and all(g["holder"] is None for g in held)
            elif operation in CREATES:
                continue  # creating is B's own business; B's list is checked above
            elif operation in UNSCOPED:
                assert response.status_code == 200
            else:
                raise AssertionError(f"{method.upper()} {path} has no place in the isolation walk")
            checked.add(operation)

    assert {("get", "/v1/workstations/{workstation_id}/usage"), ("delete", "/v1/workstations/{workstation_id}")} <= checked
    # Nothing B did changed A's workstation.
    after = client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()
    assert after["status"] == "running" and after["name"] == ws["name"]
    assert client.get("/v1/account", headers=alice).get_json()["balanceUSD"] is None
    # Nor A's workspace and its file.
    assert client.get(f"/v1/workspaces/{workspace['id']}", headers=alice).get_json()["status"] == "active"
    assert [k["id"] for k in client.get("/v1/account/ssh-keys", headers=alice).get_json()["data"]] == [key["id"]]
    with client.get(f"/v1/workspaces/{workspace['id']}/files/{file_id('a.txt')}/content", headers=alice) as kept:
        assert kept.get_data() == b"alice's"
    assert {("put", "/v1/workspaces/{workspace_id}/files/{file_path}")} <= checked
    # Nor A's process and guest file.
    assert client.get(f"{guest}/processes/{process['id']}", headers=alice).get_json()["status"] == "running"
    kept = client.get(guest + "/fs/content", query_string=GUEST_PATH, headers=alice)
    assert kept.data == b"alice's guest file"
    assert client.get(guest + "/fs", query_string={"path": "made-by-b"}, headers=alice).status_code == 404
    assert {("put", "/v1/workstations/{workstation_id}/fs/content")} <= checked
    assert client.get(f"{guest}/recordings/{recording['id']}", headers=alice).get_json()["status"] == "recording"
