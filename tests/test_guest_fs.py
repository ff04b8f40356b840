"""The guest's files through the API, on the fake driver: its simulated guest service keeps them under
the fake driver's state directory, never elsewhere on the host. tests/test_real_vm_image.py runs them
in a real guest, as the guest user."""

from __future__ import annotations

import pytest

from tests.helpers import app_with, bearer
from tests.test_processes import events


def put(client, alice, running_url, path, data: bytes):
    return client.put(running_url + "/fs/content", query_string={"path": path}, data=data, headers=alice)


def test_a_file_written_is_read_back_listed_and_deleted(client, alice, running_url):
    written = put(client, alice, running_url, "notes/today.txt", b"x")
    assert (written.status_code, written.get_json()["error"]) == (404, "not_found")  # no such directory yet
    made = client.post(running_url + "/fs/directories", json={"path": "notes"}, headers=alice)
    assert made.status_code == 201 and made.get_json()["type"] == "directory"
    again = client.post(running_url + "/fs/directories", json={"path": "notes"}, headers=alice)
    assert (again.status_code, again.get_json()["error"]) == (409, "conflict")
    payload = bytes(range(256)) * 4096  # 1 MiB, not text
    written = put(client, alice, running_url, "notes/today.bin", payload)
    assert written.status_code == 200, written.get_json()
    assert written.get_json()["size"] == len(payload) and written.get_json()["path"].endswith("/notes/today.bin")
    read = client.get(running_url + "/fs/content", query_string={"path": written.get_json()["path"]}, headers=alice)
    assert read.status_code == 200 and read.data == payload
    listed = client.get(running_url + "/fs", query_string={"path": "notes"}, headers=alice).get_json()
    assert listed["type"] == "directory" and [e["name"] for e in listed["entries"]] == ["today.bin"]
    assert listed["entries"][0]["mode"] == "0644" and listed["truncated"] is False
    home = client.get(running_url + "/fs", query_string={"path": "/home/dev"}, headers=alice).get_json()
    assert "notes" in [e["name"] for e in home["entries"]]
    not_empty = client.delete(running_url + "/fs", query_string={"path": "notes"}, headers=alice)
    assert (not_empty.status_code, not_empty.get_json()["error"]) == (409, "conflict")
    everything = {"path": "notes", "recursive": "true"}
    assert client.delete(running_url + "/fs", query_string=everything, headers=alice).status_code == 204
    gone = client.get(running_url + "/fs", query_string={"path": "notes/today.bin"}, headers=alice)
    assert gone.status_code == 404


def test_a_write_over_the_limit_changes_nothing(make_fs_client):
    client, alice, url = make_fs_client
    assert put(client, alice, url, "kept.txt", b"old").status_code == 200
    refused = put(client, alice, url, "kept.txt", b"y" * 5000)
    assert refused.status_code == 413
    assert client.get(url + "/fs/content", query_string={"path": "kept.txt"}, headers=alice).data == b"old"
    names = [
        e["name"]
        for e in client.get(url + "/fs", query_string={"path": "/home/dev"}, headers=alice).get_json()["entries"]
    ]
    assert names == ["kept.txt"]  # no partial file left beside it


@pytest.fixture
def make_fs_client(tmp_path):
    from cwhost.accounts import tokens as auth
    from tests.test_processes import launched

    with app_with(tmp_path / "data", guest_files={"max_write_bytes": 4096}) as app:
        client = app.test_client()
        alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
        yield client, alice, launched(client, alice, "files")


def test_a_watch_sees_a_file_appear_change_and_go(client, alice, running_url):
    client.post(running_url + "/fs/directories", json={"path": "inbox"}, headers=alice)
    stream = client.get(running_url + "/fs/watch", query_string={"path": "inbox"}, headers=alice, buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    put(client, alice, running_url, "inbox/a.txt", b"1")
    seen = events(stream, until="created")
    assert seen[-1][:2] == ("created", {"path": "/home/dev/inbox/a.txt", "type": "file"})
    client.delete(running_url + "/fs", query_string={"path": "inbox/a.txt"}, headers=alice)
    assert events(stream, until="deleted")[-1][:2] == ("deleted", {"path": "/home/dev/inbox/a.txt", "type": "file"})
    stream.close()


def test_paths_follow_the_workspace_rules_and_the_root_is_kept(client, alice, running_url, config):
    for bad in ("", "a/../b", "a//b", "//etc", "a\\b", "a\x01b", "./a", "a/"):
        answer = client.get(running_url + "/fs", query_string={"path": bad}, headers=alice)
        assert answer.status_code == 400, bad
    refused = client.delete(running_url + "/fs", query_string={"path": "/"}, headers=alice)
    assert refused.status_code == 400
    # The fake guest's files live under its own directory: / is that directory, never the host's.
    root = client.get(running_url + "/fs", query_string={"path": "/"}, headers=alice).get_json()
    assert [e["name"] for e in root["entries"]] == ["home"]


def test_files_are_the_owners_alone_and_need_a_running_workstation(client, alice, bob, running_url):
    for method, path, extra in (
        ("get", "/fs", {"query_string": {"path": "/"}}),
        ("get", "/fs/content", {"query_string": {"path": "x"}}),
        ("put", "/fs/content", {"query_string": {"path": "x"}, "data": b"x"}),
        ("post", "/fs/directories", {"json": {"path": "x"}}),
        ("delete", "/fs", {"query_string": {"path": "x"}}),
        ("get", "/fs/watch", {"query_string": {"path": "/"}}),
    ):
        assert getattr(client, method)(running_url + path, headers=bob, **extra).status_code == 404, (method, path)
    client.post(running_url + "/stop", headers=alice, query_string={"force": "true"})
    stopped = client.get(running_url + "/fs", query_string={"path": "/"}, headers=alice)
    assert (stopped.status_code, stopped.get_json()["error"]) == (400, "invalid_state")
