"""Workspaces over HTTP: their life cycle, attachment to workstations, files, and who may see them."""

from __future__ import annotations

import os
import threading

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from cwhost.workspaces.paths import file_id
from tests.helpers import (
    GOOD_CONFIGURATION,
    make_config,
    wait_for_status,
)


def create_workspace(client, headers, **body):
    created = client.post("/v1/workspaces", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def create_with_workspace(client, headers, workspace_id, name="ws1"):
    body = {"name": name, "configuration": GOOD_CONFIGURATION, "workspaceId": workspace_id}
    created = client.post("/v1/workstations", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return wait_for_status(client, headers, created.get_json()["id"], "stopped")


def upload(client, headers, workspace_id, path, data: bytes, **extra):
    return client.put(f"/v1/workspaces/{workspace_id}/files/{path}", data=data, headers={**headers, **extra})


def fetch(client, headers, url):
    """GET, read whole and closed (a download holds its file open until then)."""
    with client.get(url, headers=headers) as answer:
        answer.get_data()
    return answer


def download(client, headers, workspace_id, path):
    return fetch(client, headers, f"/v1/workspaces/{workspace_id}/files/{file_id(path)}/content")


def names(listing) -> list[str]:
    return [f["name"] for f in listing.get_json()["data"]]


def test_a_workspace_is_created_listed_and_read(client, alice):
    created = client.post("/v1/workspaces", json={"name": "thesis"}, headers=alice)
    assert created.status_code == 201
    workspace = created.get_json()
    assert workspace["id"].startswith("wsp-") and workspace["status"] == "active"
    assert created.headers["Location"] == f"/v1/workspaces/{workspace['id']}"
    assert client.get(created.headers["Location"], headers=alice).get_json() == workspace
    unnamed = create_workspace(client, alice)
    assert unnamed["name"] is None
    listed = client.get("/v1/workspaces?limit=1", headers=alice).get_json()
    assert [w["id"] for w in listed["data"]] == [workspace["id"]] and listed["hasMore"]
    rest = client.get(f"/v1/workspaces?after={listed['nextCursor']}", headers=alice).get_json()
    assert [w["id"] for w in rest["data"]] == [unnamed["id"]] and not rest["hasMore"]


@pytest.mark.parametrize("body", [{"name": "a b"}, {"name": ""}, {"size": 3}, {"name": 7}])
def test_a_bad_workspace_body_is_400(client, alice, body):
    answer = client.post("/v1/workspaces", json=body, headers=alice)
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_request"
    assert client.get("/v1/workspaces", headers=alice).get_json()["data"] == []


def test_files_written_for_one_workstation_are_there_for_the_next(client, alice, components):
    workspace = create_workspace(client, alice, name="shared")
    first = create_with_workspace(client, alice, workspace["id"], "first")
    assert first["workspace"] == {
        "id": workspace["id"],
        "status": "active",
        "createdAt": workspace["createdAt"],
    }
    launched = client.post(f"/v1/workstations/{first['id']}/launch", headers=alice)
    assert launched.status_code == 200
    directory = components.services.workspaces.directory(workspace["id"])
    assert components.driver.shared_directory(f"cwhost-{first['id']}") == directory
    assert upload(client, alice, workspace["id"], "notes/day1.txt", b"written while first ran").status_code == 201
    client.post(f"/v1/workstations/{first['id']}/stop", headers=alice)
    assert client.delete(f"/v1/workstations/{first['id']}", headers=alice).status_code == 204
    assert client.get(f"/v1/workspaces/{workspace['id']}", headers=alice).status_code == 200

    second = create_with_workspace(client, alice, workspace["id"], "second")
    listed = client.get(f"/v1/workstations/{second['id']}/files", headers=alice).get_json()
    assert [(f["name"], f["size"]) for f in listed["data"]] == [("notes/day1.txt", 23)]
    assert fetch(client, alice, listed["data"][0]["url"]).data == b"written while first ran"
    client.post(f"/v1/workstations/{second['id']}/launch", headers=alice)
    assert components.driver.shared_directory(f"cwhost-{second['id']}") == directory


def test_a_workstation_without_a_workspace_lists_no_files(client, alice):
    body = {"name": "plain", "configuration": GOOD_CONFIGURATION}
    ws = client.post("/v1/workstations", json=body, headers=alice).get_json()
    assert ws["workspace"] is None
    listed = client.get(f"/v1/workstations/{ws['id']}/files", headers=alice)
    assert listed.status_code == 200 and listed.get_json()["data"] == []


def test_a_workspace_held_by_a_running_workstation_can_be_neither_deleted_nor_archived(
    client, alice, components
):
    workspace = create_workspace(client, alice)
    ws = create_with_workspace(client, alice, workspace["id"])
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    for attempt in (
        client.delete(f"/v1/workspaces/{workspace['id']}", headers=alice),
        client.post(f"/v1/workspaces/{workspace['id']}/archive", headers=alice),
    ):
        assert attempt.status_code == 400 and attempt.get_json()["error"] == "invalid_state"
        assert ws["id"] in attempt.get_json()["message"]
    assert client.get(f"/v1/workspaces/{workspace['id']}", headers=alice).get_json()["status"] == "active"
    assert components.services.workspaces.directory(workspace["id"]).is_dir()


def test_archiving_detaches_makes_read_only_and_refuses_attachment(client, alice, components):
    workspace = create_workspace(client, alice)
    upload(client, alice, workspace["id"], "kept.txt", b"still readable")
    ws = create_with_workspace(client, alice, workspace["id"])
    archived = client.post(f"/v1/workspaces/{workspace['id']}/archive", headers=alice)
    assert archived.status_code == 200 and archived.get_json()["status"] == "archived"

    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["workspace"] is None
    logs = client.get(f"/v1/workstations/{ws['id']}/logs", headers=alice).get_json()["data"]
    assert any(workspace["id"] in entry["message"] and entry["level"] == "warning" for entry in logs)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    assert components.driver.shared_directory(f"cwhost-{ws['id']}") is None

    assert download(client, alice, workspace["id"], "kept.txt").data == b"still readable"
    refused = upload(client, alice, workspace["id"], "new.txt", b"x")
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_state"
    body = {"name": "again", "configuration": GOOD_CONFIGURATION, "workspaceId": workspace["id"]}
    attach = client.post("/v1/workstations", json=body, headers=alice)
    assert attach.status_code == 400 and attach.get_json()["error"] == "invalid_state"
    assert "archived" in attach.get_json()["message"]


def test_deleting_a_workspace_removes_its_files_but_never_a_workstation(client, alice, components):
    workspace = create_workspace(client, alice)
    upload(client, alice, workspace["id"], "deep/er/file.bin", os.urandom(1000))
    ws = create_with_workspace(client, alice, workspace["id"])
    directory = components.services.workspaces.directory(workspace["id"])
    assert client.delete(f"/v1/workspaces/{workspace['id']}", headers=alice).status_code == 204
    assert not directory.exists()
    assert client.get(f"/v1/workspaces/{workspace['id']}", headers=alice).status_code == 404
    assert client.get(f"/v1/workspaces/{workspace['id']}/files", headers=alice).status_code == 404
    after = client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()
    assert after["status"] == "stopped" and after["workspace"] is None
    assert client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice).status_code == 200


def test_deleting_a_workstation_keeps_its_workspace(client, alice, components):
    workspace = create_workspace(client, alice)
    upload(client, alice, workspace["id"], "a.txt", b"a")
    ws = create_with_workspace(client, alice, workspace["id"])
    assert client.delete(f"/v1/workstations/{ws['id']}", headers=alice).status_code == 204
    assert download(client, alice, workspace["id"], "a.txt").data == b"a"


def test_another_accounts_workspace_is_unknown_at_create_and_404_on_its_paths(client, alice, bob, components):
    theirs = create_workspace(client, bob)
    upload(client, bob, theirs["id"], "secret.txt", b"bob's")
    body = {"name": "sneaky", "configuration": GOOD_CONFIGURATION, "workspaceId": theirs["id"]}
    refused = client.post("/v1/workstations", json=body, headers=alice)
    assert refused.status_code == 422 and refused.get_json()["error"] == "unknown_asset"
    assert client.get("/v1/workstations", headers=alice).get_json()["data"] == []
    base = f"/v1/workspaces/{theirs['id']}"
    for answer in (
        client.get(base, headers=alice),
        client.delete(base, headers=alice),
        client.post(f"{base}/archive", headers=alice),
        client.get(f"{base}/files", headers=alice),
        download(client, alice, theirs["id"], "secret.txt"),
        upload(client, alice, theirs["id"], "secret.txt", b"overwritten"),
    ):
        assert answer.status_code == 404 and answer.get_json()["error"] == "not_found"
    assert client.get("/v1/workspaces", headers=alice).get_json()["data"] == []
    assert download(client, bob, theirs["id"], "secret.txt").data == b"bob's"
    assert client.get(base, headers=bob).get_json()["status"] == "active"


def test_uploads_create_directories_replace_files_and_take_any_content_type(client, alice, components):
    workspace = create_workspace(client, alice)
    first = upload(client, alice, workspace["id"], "src/app/main.py", b"print(1)\n", **{"Content-Type": "text/x-python"})
    assert first.status_code == 201
    assert first.get_json()["name"] == "src/app/main.py" and first.get_json()["size"] == 9
    again = upload(client, alice, workspace["id"], "src/app/main.py", b"print(22)\n")
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    empty = upload(client, alice, workspace["id"], "empty", b"")
    assert empty.status_code == 201 and empty.get_json()["size"] == 0
    content = fetch(client, alice, again.get_json()["url"])
    assert content.data == b"print(22)\n"
    assert content.headers["Content-Type"] == "application/octet-stream"
    assert 'filename=main.py' in content.headers["Content-Disposition"]
    on_dir = upload(client, alice, workspace["id"], "src/app", b"not a directory")
    assert on_dir.status_code == 400 and "directory" in on_dir.get_json()["message"]
    assert not list(components.services.workspaces.root.joinpath(".staging").iterdir())


def test_listing_is_recursive_sorted_paged_and_shows_only_regular_files(client, alice, components, tmp_path):
    workspace = create_workspace(client, alice)
    for path in ("b.txt", "a/z.txt", "a/b/c.txt", "c.txt"):
        upload(client, alice, workspace["id"], path, path.encode())
    directory = components.services.workspaces.directory(workspace["id"])
    # What a guest might leave in its share: links out, and special files.
    (directory / "link-to-etc").symlink_to("/etc")
    (directory / "link-to-file").symlink_to("/etc/hostname")
    os.mkfifo(directory / "a" / "pipe")
    expected = ["a/b/c.txt", "a/z.txt", "b.txt", "c.txt"]
    pages, after = [], ""
    while True:
        page = client.get(f"/v1/workspaces/{workspace['id']}/files?limit=3{after}", headers=alice).get_json()
        pages.append(page)
        if not page["hasMore"]:
            break
        after = f"&after={page['nextCursor']}"
    assert [f["name"] for p in pages for f in p["data"]] == expected
    assert [len(p["data"]) for p in pages] == [3, 1]
    assert download(client, alice, workspace["id"], "a/pipe").status_code == 404
    bad_cursor = client.get(f"/v1/workspaces/{workspace['id']}/files?after=12", headers=alice)
    assert bad_cursor.status_code == 400


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(tmp_path):
    config = make_config(tmp_path / "data", workspaces={"max_upload_bytes": 4096})
    Database(config.database_path).migrate()
    app = create_app(config)
    client = app.test_client()
    alice = {"Authorization": "Bearer " + auth.create_key(app.extensions["cwhost"].db, "alice").token}
    workspace = create_workspace(client, alice)
    assert upload(client, alice, workspace["id"], "fits.bin", b"x" * 4096).status_code == 201
    declared = upload(client, alice, workspace["id"], "big.bin", b"x" * 4097)
    assert declared.status_code == 413 and declared.get_json()["error"] == "payload_too_large"
    assert "4096" in declared.get_json()["message"]

    workspaces = app.extensions["cwhost"].services.workspaces
    assert sorted(p.name for p in workspaces.directory(workspace["id"]).iterdir()) == ["fits.bin"]
    assert not list(workspaces.root.joinpath(".staging").iterdir())


def test_a_deletion_interrupted_by_a_crash_is_finished_at_start_up(client, alice, components):
    workspace = create_workspace(client, alice)
    upload(client, alice, workspace["id"], "left/behind.txt", b"x")
    directory = components.services.workspaces.directory(workspace["id"])
    # As if the process died after committing the deletion, before removing the files.
    with components.db.write() as tx:
        tx["workspaces"].update(workspace["id"], {"deleted_at": "2026-01-01T00:00:00Z"})
    staged = components.services.workspaces.root / ".staging" / "upload-crashed"
    staged.write_bytes(b"half an upload")
    assert client.get(f"/v1/workspaces/{workspace['id']}", headers=alice).status_code == 404
    components.services.reconciler.recover()
    assert not directory.exists() and not staged.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another uid needs root or CAP_CHOWN")
def test_workspace_files_belong_to_the_guests_user_as_virtiofs_shows_them(client, alice, components):
    from drivers.base import GUEST_UID

    workspace = create_workspace(client, alice)
    assert upload(client, alice, workspace["id"], "src/deep/main.py", b"print(1)\n").status_code == 201
    top = components.services.workspaces.directory(workspace["id"])
    for path in (top, top / "src", top / "src" / "deep", top / "src" / "deep" / "main.py"):
        status = path.stat()
        assert (status.st_uid, status.st_gid) == (GUEST_UID, GUEST_UID), path
    # The service still reads what it gave away.
    listed = client.get(f"/v1/workspaces/{workspace['id']}/files", headers=alice).get_json()["data"]
    assert [f["name"] for f in listed] == ["src/deep/main.py"]


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
