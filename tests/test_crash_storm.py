"""kill -9 the real server in the middle of a storm of life-cycle calls, again and again.

After each restart: every workstation the API acknowledged is there (or gone,
if its deletion was acknowledged), its state agrees with the driver, nothing
is left half-way, no domain lacks a workstation, usage never goes down, no
interval is billed twice, and SQLite's own integrity check passes.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import psutil
import requests

from drivers.fake.processes import is_guest
from tests.helpers import cli, power_off_fake_guests, start_server

ROUNDS = 20
STORM_THREADS = 4
CONFIG = """
[sampler]
interval_seconds = 0.1
[driver]
stop_timeout_seconds = 0.2
reconcile_interval_seconds = 0.3
[driver.fake]
cpu_cores = 256
memory_gb = 1024
guest_cpu_share = 0.01
[limits]
max_workstations = 1000
max_running_cpu_cores = 1000
max_running_memory_gb = 1000
"""
SMALL = {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}


class Ledger:
    """What the API acknowledged, as the clients saw it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.created: set[str] = set()
        self.deleted: set[str] = set()
        # Deletions sent whose answer never came (the server died): either outcome is right.
        self.deleting: set[str] = set()
        self.usage: dict[str, tuple[float, float]] = {}


def storm(url: str, token: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    while not stop.is_set():
        with ledger.lock:
            known = sorted(ledger.created - ledger.deleted)
        action = rng.choice(["create", "create", "launch", "launch", "stop", "patch", "delete"])
        target = rng.choice(known) if known else None
        try:
            if action == "create" or target is None:
                answer = session.post(f"{url}/v1/workstations", json={"name": "s", "configuration": SMALL}, timeout=10)
                if answer.status_code == 201:
                    with ledger.lock:
                        ledger.created.add(answer.json()["id"])
            elif action == "launch":
                session.post(f"{url}/v1/workstations/{target}/launch", timeout=10)
            elif action == "stop":
                session.post(f"{url}/v1/workstations/{target}/stop?force={rng.choice(['true', 'false'])}", timeout=10)
            elif action == "patch":
                session.patch(f"{url}/v1/workstations/{target}", json={"configuration": {"cpuCores": rng.randint(1, 3)}}, timeout=10)
            else:
                with ledger.lock:
                    ledger.deleting.add(target)
                if session.delete(f"{url}/v1/workstations/{target}", timeout=10).status_code == 204:
                    with ledger.lock:
                        ledger.deleted.add(target)
        except requests.RequestException:
            return  # the server was killed under us


def fake_domains(data_dir: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in (data_dir / "fake-driver" / "domains").glob("*.json")}


def guest_alive(domain: dict) -> bool:
    try:
        process = psutil.Process(domain["pid"])
        return process.create_time() == domain["pid_started"] and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, TypeError):
        return False


def check_invariants(url: str, admin: dict, data_dir: Path, ledger: Ledger) -> None:
    session = requests.Session()
    session.headers.update(admin)
    deadline = time.monotonic() + 20
    while True:
        listed = []
        after = ""
        while True:
            page = session.get(f"{url}/v1/workstations?limit=200{after}", timeout=10).json()
            listed += page["data"]
            if not page["hasMore"]:
                break
            after = f"&after={page['nextCursor']}"
        if all(ws["status"] != "provisioning" for ws in listed) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by_id = {ws["id"]: ws for ws in listed}
    assert not [ws for ws in listed if ws["status"] == "provisioning"], "stuck provisioning"
    assert not [ws for ws in listed if ws["status"] == "error"], [ws for ws in listed if ws["status"] == "error"]

    with ledger.lock:
        acknowledged, deleted, deleting = set(ledger.created), set(ledger.deleted), set(ledger.deleting)
    assert acknowledged - deleting <= set(by_id), "an acknowledged workstation was lost"
    assert not deleted & set(by_id), "a workstation whose deletion was acknowledged came back"

    domains = fake_domains(data_dir)
    for ws in listed:
        domain = domains.get(f"cwhost-{ws['id']}")
        assert domain is not None, f"{ws['id']} has no domain"
        running = domain["state"] == "running" and guest_alive(domain)
        assert running == (ws["status"] == "running"), (ws, domain)
    owner = str((data_dir / "fake-driver").resolve())
    recorded = {d["pid"] for d in domains.values() if d["state"] == "running"}
    guests = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if is_guest(p.info["cmdline"] or []) and owner in (p.info["cmdline"] or [])
    ]
    assert set(guests) <= recorded, "a guest process runs that no domain records"
    workstation_domains = {f"cwhost-{ws_id}" for ws_id in by_id}
    assert set(domains) <= workstation_domains, set(domains) - workstation_domains

    for ws_id in by_id:
        usage = session.get(f"{url}/v1/workstations/{ws_id}/usage", timeout=10).json()
        figures = (usage["cpuHours"], usage["memoryGBHours"])
        previous = ledger.usage.get(ws_id, (0.0, 0.0))
        assert figures[0] >= previous[0] - 1e-12 and figures[1] >= previous[1] - 1e-12, (ws_id, previous, figures)
        ledger.usage[ws_id] = figures

    with sqlite3.connect(data_dir / "cwhost.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for table, start, end in (("usage_samples", "since", "sampled_at"), ("usage_segments", "started_at", "ended_at")):
            rows = db.execute(f"SELECT workstation_id, {start}, {end} FROM {table} ORDER BY workstation_id, {start}").fetchall()
            for (ws_a, _, end_a), (ws_b, start_b, _) in zip(rows, rows[1:]):
                if ws_a == ws_b:
                    assert end_a is not None and start_b >= end_a - 1e-9, f"{table}: {ws_a} billed twice"


def test_kill_9_during_a_storm_loses_and_doubles_nothing(tmp_path):
    server = start_server(tmp_path, CONFIG)
    data_dir = tmp_path / "server-data"
    token = cli(server.env, "keys", "create", "--account", "storm").stdout.split()[-1]
    admin = {"Authorization": "Bearer " + cli(server.env, "keys", "create", "--account", "ops", "--admin").stdout.split()[-1]}
    ledger = Ledger()
    rng = random.Random(7)
    try:
        for round_number in range(ROUNDS):
            stop = threading.Event()
            threads = [
                threading.Thread(target=storm, args=(server.url, token, ledger, stop, round_number * 100 + i))
                for i in range(STORM_THREADS)
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.3, 1.5))
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=10)
            stop.set()
            for thread in threads:
                thread.join(timeout=20)
            server = start_server(tmp_path, CONFIG)
            check_invariants(server.url, admin, data_dir, ledger)
        assert len(ledger.created) >= ROUNDS, "the storm barely ran"
    finally:
        if server.process.poll() is None:
            server.stop()
        power_off_fake_guests(data_dir)
