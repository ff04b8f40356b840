"""Storage faults under the running server, made for real, then undone.

The disk under the data directory fills up (a small tmpfs), then space comes
back; the database and its journal become unwritable (the immutable
attribute), then writable again. During: every write answers 503 with a
message that says so and changes nothing, reads go on, the sampler says once
that it cannot write. After: the same requests succeed, the database passes
its integrity check, and the usage the sampler could not write is not lost.
"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import time

import psutil
import pytest
import requests

from drivers.fake.processes import is_guest
from tests.helpers import cli, power_off_fake_guests, start_server, wait_over_http

CONFIGURATION = {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(directory) -> None:
    """Write until the disk refuses, as a runaway log or a big upload would."""
    # Unbuffered: a buffered file would try to write its rest again on close,
    # and fail again, depending on how the last block happened to split.
    with open(directory / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # Whatever the page cache still held is on the disk now: nothing is left.
    with pytest.raises(OSError):
        (directory / "probe").write_bytes(b"x" * 8192)


def table_counts(database) -> dict:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("workstations", "workstation_events", "idempotency_keys", "workspaces")
        }


def test_a_full_disk_is_503_changes_nothing_and_recovers(tmp_path, small_disk):
    data = small_disk / "data"
    server = start_server(
        tmp_path,
        "[server]\nrate_limit_per_minute = 100000\n[sampler]\ninterval_seconds = 0.2\n",
        extra_env={"CWHOST_DATA_DIR": str(data)},
    )
    try:
        token = cli(server.env, "keys", "create", "--account", "alice").stdout.split()[-1]
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"
        url = server.url + "/v1"

        def create(name):
            return api.post(url + "/workstations", json={"name": name, "configuration": CONFIGURATION})

        def wait_stopped(workstation_id):
            wait_over_http(api, f"{url}/workstations/{workstation_id}", "stopped")

        idle, busy = create("idle").json()["id"], create("busy").json()["id"]
        wait_stopped(idle), wait_stopped(busy)
        assert api.post(f"{url}/workstations/{busy}/launch").status_code == 200
        workspace = api.post(url + "/workspaces", json={}).json()["id"]
        time.sleep(0.5)  # a few sampler ticks on the running one
        usage_before = api.get(f"{url}/workstations/{busy}/usage").json()["cpuHours"]

        fill(small_disk)
        counts = table_counts(data / "cwhost.db")
        guests = _guest_pids()

        refused = [
            create("during"),
            api.patch(f"{url}/workstations/{idle}", json={"name": "renamed", "configuration": {"storageGB": 2}}),
            api.post(f"{url}/workstations/{idle}/launch"),
            api.put(f"{url}/workspaces/{workspace}/files/notes.txt", data=b"x" * 1_000_000),
            api.post(url + "/workspaces", json={}),
        ]
        for response in refused:
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"] == "unavailable"
            assert "full" in body["message"] or "unreachable" in body["message"], body
            assert int(response.headers["Retry-After"]) > 0
        assert "disk is full" in refused[0].json()["message"]
        assert "disk is full" in refused[3].json()["message"]

        # Reads go on, and nothing the refused writes touched has changed.
        assert api.get(f"{url}/workstations/{idle}").json()["status"] == "stopped"
        assert api.get(f"{url}/workstations/{idle}").json()["name"] == "idle"
        assert api.get(f"{url}/workstations/{busy}").json()["status"] == "running"
        assert api.get(f"{url}/workspaces/{workspace}/files").json()["data"] == []
        assert table_counts(data / "cwhost.db") == counts
        assert _guest_pids() == guests
        time.sleep(1)  # the sampler meets the full disk for a few ticks
        assert requests.get(server.url + "/healthz").status_code == 200

        (small_disk / "filler").unlink()

        wait_stopped(create("after").json()["id"])
        patched = api.patch(f"{url}/workstations/{idle}", json={"name": "renamed", "configuration": {"storageGB": 2}})
        assert patched.status_code == 200 and patched.json()["configuration"]["storageGB"] == 2
        assert api.post(f"{url}/workstations/{idle}/launch").status_code == 200
        assert api.put(f"{url}/workspaces/{workspace}/files/notes.txt", data=b"x" * 1_000_000).status_code == 201
        # The sampler finds the space at its next tick, whenever that falls
        # among the requests above. The ticks that could not be written were
        # not lost: that first one took the CPU time of the whole gap.
        log = server.wait_for_log("sampler writing again")
        assert log.count("sampler cannot write") == 1
        usage_after = api.get(f"{url}/workstations/{busy}/usage").json()["cpuHours"]
        assert usage_after > usage_before
        # A guest that said it was ready while the disk was full is recorded
        # ready once it has room again.
        ready = api.get(f"{url}/workstations/{busy}", params={"wait": "ready", "timeoutSeconds": 30}).json()
        assert ready["readyAt"] is not None, ready
        assert api.post(f"{url}/workstations/{busy}/stop").status_code == 200
        assert api.post(f"{url}/workstations/{idle}/stop").status_code == 200
        assert "Traceback" not in server.log()
        with sqlite3.connect(data / "cwhost.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        server.stop()
        power_off_fake_guests(data)


def _guest_pids() -> set[int]:
    return {
        p.pid for p in psutil.process_iter(["cmdline"]) if is_guest(p.info["cmdline"] or [])
    }


@pytest.fixture
def immutable(tmp_path):
    """Mark files immutable (chattr +i), as an operator or a failing mount can; undone at the end."""
    marked = []
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute (needs root on ext4 or xfs)")
    subprocess.run(["chattr", "-i", str(probe)], check=True)

    def mark(*paths):
        for path in paths:
            subprocess.run(["chattr", "+i", str(path)], check=True)
            marked.append(path)

    def unmark():
        while marked:
            subprocess.run(["chattr", "-i", str(marked.pop())], check=True)

    yield mark, unmark
    unmark()


def test_a_database_that_cannot_be_written_is_503_and_recovers(tmp_path, immutable):
    """The database and its journal become unwritable under the running server, then writable again.

    (Its shared-memory index stays writable: SQLite maps it, and a mapping
    that cannot be written kills the process with SIGBUS, whatever it does.)
    """
    mark, unmark = immutable
    server = start_server(tmp_path, "[server]\nrate_limit_per_minute = 100000\n[sampler]\ninterval_seconds = 0.2\n")
    data = tmp_path / "server-data"
    try:
        token = cli(server.env, "keys", "create", "--account", "alice").stdout.split()[-1]
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"
        url = server.url + "/v1"
        created = api.post(url + "/workstations", json={"name": "before", "configuration": CONFIGURATION})
        assert created.status_code == 201
        before = created.json()["id"]
        wait_over_http(api, f"{url}/workstations/{before}", "stopped")
        counts = table_counts(data / "cwhost.db")

        mark(data / "cwhost.db", data / "cwhost.db-wal")
        refused = [
            api.post(url + "/workstations", json={"name": "during", "configuration": CONFIGURATION}),
            api.patch(f"{url}/workstations/{before}", json={"name": "renamed", "configuration": {}}),
            api.post(url + "/workspaces", json={}),
        ]
        for response in refused:
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "unavailable"
            assert "nothing was changed" in response.json()["message"]
            assert int(response.headers["Retry-After"]) > 0
        assert api.get(f"{url}/workstations/{before}").json()["name"] == "before"
        assert api.get(url + "/workstations").status_code == 200
        time.sleep(0.5)  # sampler ticks meet it too
        assert requests.get(server.url + "/healthz").status_code == 200
        unmark()

        assert table_counts(data / "cwhost.db") == counts
        assert api.post(url + "/workstations", json={"name": "after", "configuration": CONFIGURATION}).status_code == 201
        renamed = api.patch(f"{url}/workstations/{before}", json={"name": "renamed", "configuration": {}})
        assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
        assert "Traceback" not in server.log()
        assert server.process.poll() is None
    finally:
        unmark()
        server.stop()
        power_off_fake_guests(data)
    with sqlite3.connect(data / "cwhost.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
