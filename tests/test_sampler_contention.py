"""Clients reading and writing while the sampler writes at a hundred times its default rate.

SQLite allows one writer at a time; a reader or writer that meets the lock
must wait its turn (WAL, busy timeout), never answer "database is locked".
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.helpers import cli, power_off_fake_guests, start_server, wait_over_http

TICKS = 50
READERS = 16
WRITERS = 2
RUNNING = 8
INTERVAL = 0.1  # the default is 10 s


def test_no_client_meets_a_locked_database_while_the_sampler_writes_fast(tmp_path):
    server = start_server(
        tmp_path,
        "[server]\nthreads = 64\nmax_in_flight = 60\nrate_limit_per_minute = 1000000\n"
        f"[sampler]\ninterval_seconds = {INTERVAL}\n"
        "[driver.fake]\ncpu_cores = 64\nmemory_gb = 256\nstorage_gb = 10000\n",
    )
    try:
        token = cli(server.env, "keys", "create", "--account", "alice").stdout.split()[-1]
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        ids = []
        for index in range(RUNNING + WRITERS):
            created = session.post(
                server.url + "/v1/workstations",
                json={"name": f"w{index}", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}},
            )
            assert created.status_code == 201
            ids.append(created.json()["id"])
        for workstation_id in ids:
            wait_over_http(session, f"{server.url}/v1/workstations/{workstation_id}", "stopped", timeout=20)
        for workstation_id in ids[:RUNNING]:
            assert session.post(f"{server.url}/v1/workstations/{workstation_id}/launch").status_code == 200
        samples_before = _count_samples(tmp_path)

        failures: list[str] = []
        answered = []
        done = threading.Event()

        def sampler_ticks() -> float:
            return (_count_samples(tmp_path) - samples_before) / RUNNING

        def until_enough_ticks() -> None:
            # Counted in the sampler's writes, not in seconds, so that a slow
            # machine runs longer rather than proving less.
            give_up = time.monotonic() + 120
            while sampler_ticks() < TICKS and time.monotonic() < give_up:
                time.sleep(0.2)
            done.set()

        def read(worker: int) -> None:
            own = requests.Session()
            own.headers.update(session.headers)
            paths = ["/v1/workstations", f"/v1/workstations/{ids[worker % RUNNING]}/usage",
                     f"/v1/workstations/{ids[worker % RUNNING]}", "/v1/account"]
            while not done.is_set():
                response = own.get(server.url + paths[len(answered) % len(paths)])
                answered.append(response.status_code)
                if response.status_code != 200 or "locked" in response.text:
                    failures.append(f"{response.status_code} {response.text[:200]}")

        def write(worker: int) -> None:
            own = requests.Session()
            own.headers.update(session.headers)
            url = f"{server.url}/v1/workstations/{ids[RUNNING + worker]}"
            count = 0
            while not done.is_set():
                count += 1
                response = own.patch(url, json={"name": f"renamed-{worker}-{count}", "configuration": {}})
                answered.append(response.status_code)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")

        with ThreadPoolExecutor(READERS + WRITERS + 1) as pool:
            for future in (
                [pool.submit(read, n) for n in range(READERS)]
                + [pool.submit(write, n) for n in range(WRITERS)]
                + [pool.submit(until_enough_ticks)]
            ):
                future.result()

        assert failures == []
        assert sampler_ticks() >= TICKS
        assert len(answered) > 10 * TICKS
        log = server.log()
        assert "database is locked" not in log and "sampler tick failed" not in log
    finally:
        server.stop()
        power_off_fake_guests(tmp_path / "server-data")


def _count_samples(tmp_path) -> int:
    with sqlite3.connect(f"file:{tmp_path / 'server-data' / 'cwhost.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM usage_samples").fetchone()[0]
