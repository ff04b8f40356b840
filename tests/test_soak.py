"""A bounded soak on loopback: many clients driving life cycles and reads against the real server.

CI runs it for 30 s. The long form, whose figures docs/reliability-and-performance.md gives:

    CWHOST_SOAK_SECONDS=300 CWHOST_SOAK_CLIENTS=32 python3 -m pytest tests/test_soak.py -s

Every client is its own account and checks that each acknowledged action
took effect (a created workstation is there, a launched one runs, a deleted
one is gone); no answer may be a 5xx; the service's memory must stay flat.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil
import requests

from cwhost.accounts import tokens as auth
from cwhost.config.server import build_config
from cwhost.db.database import Database
from tests.helpers import power_off_fake_guests, start_server

SECONDS = float(os.environ.get("CWHOST_SOAK_SECONDS", "30"))
CLIENTS = int(os.environ.get("CWHOST_SOAK_CLIENTS", "32"))
# Memory is measured from the end of the warm-up: by then every server thread
# has served requests and opened its SQLite connection.
WARM_UP_SECONDS = max(15.0, SECONDS / 4)
# Growth allowed over a run; a leak of even a few KB per request exceeds it
# in the long form (which serves well over 100 000 requests).
RSS_GROWTH_LIMIT_MIB = 16

SERVER_CONFIG = """
[server]
# Room for every client at once (none is shed), and a few threads more.
threads = 40
max_in_flight = 36
rate_limit_per_minute = 1000000
[sampler]
interval_seconds = 1.0
[driver]
stop_timeout_seconds = 2.0
[driver.fake]
cpu_cores = 256
memory_gb = 1024
storage_gb = 100000
# The soak measures the service: its guests barely use the CPU it needs.
guest_cpu_share = 0.002
"""


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)
    latencies: list = field(default_factory=list)
    by_action: dict = field(default_factory=dict)
    lost: list = field(default_factory=list)
    life_cycles: int = 0

    def record(self, action: str, response: requests.Response, seconds: float) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            self.latencies.append(seconds)
            self.by_action.setdefault(action, []).append(seconds)


class Client:
    def __init__(self, url: str, token: str, tally: Tally, stop_at: float, seed: int):
        self.url, self.tally, self.stop_at = url + "/v1", tally, stop_at
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.random = random.Random(seed)

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        started = time.perf_counter()
        response = self.session.request(method, self.url + path, timeout=60, **kwargs)
        action = method + " " + ("/".join("{id}" if part.startswith("ws-") else part for part in path.split("/")))
        self.tally.record(action, response, time.perf_counter() - started)
        return response

    def lose(self, what: str) -> None:
        with self.tally.lock:
            self.tally.lost.append(what)

    def expect(self, response: requests.Response, status: int, what: str) -> bool:
        if response.status_code != status:
            self.lose(f"{what}: {response.status_code} {response.text[:200]}")
            return False
        return True

    def status_of(self, workstation_id: str) -> str:
        return self.call("GET", f"/workstations/{workstation_id}").json()["status"]

    def reads(self, workstation_id: str) -> None:
        for _ in range(self.random.randint(1, 4)):
            path = self.random.choice(
                ["/workstations", f"/workstations/{workstation_id}", f"/workstations/{workstation_id}/usage",
                 f"/workstations/{workstation_id}/logs", "/account", "/workstation-types"]
            )
            self.expect(self.call("GET", path), 200, f"GET {path}")

    def life_cycle(self, number: int) -> None:
        created = self.call(
            "POST", "/workstations",
            json={"name": f"soak-{number}", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}},
        )
        if not self.expect(created, 201, "create"):
            return
        ws = created.json()["id"]
        deadline = time.monotonic() + 30
        while self.status_of(ws) == "provisioning" and time.monotonic() < deadline:
            time.sleep(0.05)
        for round_number in range(2):
            if not self.expect(self.call("POST", f"/workstations/{ws}/launch"), 200, "launch"):
                return
            if self.status_of(ws) != "running":
                self.lose(f"{ws} not running after launch")
            self.reads(ws)
            if not self.expect(self.call("POST", f"/workstations/{ws}/stop"), 200, "stop"):
                return
            if self.status_of(ws) != "stopped":
                self.lose(f"{ws} not stopped after stop")
            if round_number == 0:
                patched = self.call(
                    "PATCH", f"/workstations/{ws}", json={"name": f"soak-{number}-b", "configuration": {"storageGB": 2}}
                )
                if self.expect(patched, 200, "patch") and patched.json()["configuration"]["storageGB"] != 2:
                    self.lose(f"{ws} patch not applied")
        if self.expect(self.call("DELETE", f"/workstations/{ws}"), 204, "delete"):
            self.expect(self.call("GET", f"/workstations/{ws}"), 404, "read after delete")
        with self.tally.lock:
            self.tally.life_cycles += 1

    def run(self) -> None:
        number = 0
        while time.monotonic() < self.stop_at:
            number += 1
            self.life_cycle(number)


def test_soak(tmp_path):
    data = tmp_path / "server-data"
    Database(build_config({"data_dir": str(data)}).database_path).migrate()
    tokens = [auth.create_key(Database(data / "cwhost.db"), f"team-{n}").token for n in range(CLIENTS)]
    server = start_server(tmp_path, SERVER_CONFIG)
    tally = Tally()
    try:
        process = psutil.Process(server.process.pid)
        rss_at_start_mib = process.memory_info().rss / 2**20
        stop_at = time.monotonic() + SECONDS
        clients = [Client(server.url, token, tally, stop_at, seed) for seed, token in enumerate(tokens)]
        threads = [threading.Thread(target=client.run) for client in clients]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        rss_series_mib = []
        rss_after_warm_up_mib = None
        while any(thread.is_alive() for thread in threads):
            rss_series_mib.append(process.memory_info().rss / 2**20)
            if rss_after_warm_up_mib is None and time.monotonic() - started >= WARM_UP_SECONDS:
                rss_after_warm_up_mib = rss_series_mib[-1]
            time.sleep(SECONDS / 20)
        for thread in threads:
            thread.join()
        rss_at_end_mib = process.memory_info().rss / 2**20
        log = server.log()
    finally:
        server.stop()
        power_off_fake_guests(data)

    requests_served = sum(tally.statuses.values())
    latencies_ms = sorted(1000 * seconds for seconds in tally.latencies)
    p99 = latencies_ms[int(0.99 * (len(latencies_ms) - 1))]
    print(
        f"\nsoak: {SECONDS:.0f} s, {CLIENTS} clients, {requests_served} requests"
        f" ({requests_served / SECONDS:.0f}/s), {tally.life_cycles} life cycles,"
        f" statuses {dict(sorted(tally.statuses.items()))}\n"
        f"latency p50 {statistics.median(latencies_ms):.1f} ms, p99 {p99:.1f} ms, max {latencies_ms[-1]:.1f} ms\n"
        f"service RSS {rss_at_start_mib:.1f} MiB at start, {rss_after_warm_up_mib:.1f} after {WARM_UP_SECONDS:.0f} s of warm-up,"
        f" {rss_at_end_mib:.1f} at the end; every {SECONDS / 20:.0f} s:"
        f" {' '.join(f'{rss:.0f}' for rss in rss_series_mib)}"
    )
    for action, seconds in sorted(tally.by_action.items()):
        ordered = sorted(seconds)
        print(f"  {action:<40} n={len(ordered):>6} p50 {1000 * statistics.median(ordered):8.1f} ms"
              f" p99 {1000 * ordered[int(0.99 * (len(ordered) - 1))]:8.1f} ms")
    assert not [status for status in tally.statuses if status >= 500], tally.statuses
    assert tally.lost == []
    assert tally.life_cycles >= CLIENTS
    assert rss_at_end_mib - rss_after_warm_up_mib < RSS_GROWTH_LIMIT_MIB
    assert "Traceback" not in log
