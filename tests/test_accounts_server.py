"""402 and 403 through the real server, with real guest processes and a high price."""

from __future__ import annotations

import sqlite3
import time

import pytest
import requests

from tests.helpers import cli, power_off_fake_guests, start_server, wait_over_http

CONFIG = """
[sampler]
interval_seconds = 0.2
[driver]
stop_timeout_seconds = 1
reconcile_interval_seconds = 0.2
[driver.fake]
guest_cpu_share = 0.5
[pricing]
cpu_hour_usd = 3600.0      # one dollar per CPU-second
memory_gb_hour_usd = 0.0
storage_gb_hour_usd = 0.0
[limits]
max_workstations = 2
"""


@pytest.fixture
def priced_server(tmp_path):
    server = start_server(tmp_path, CONFIG)
    yield server
    if server.process.poll() is None:
        server.stop()
    power_off_fake_guests(tmp_path / "server-data")


def test_a_balance_runs_out_the_workstation_stops_and_cost_stays_consistent(priced_server):
    server = priced_server
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + cli(server.env, "keys", "create", "--account", "team").stdout.split()[-1]
    base = server.url + "/v1/workstations"
    body = {"name": "w", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}}
    ids = [http.post(base, json=body).json()["id"] for _ in range(2)]
    third = http.post(base, json=body)
    assert (third.status_code, third.json()["error"]) == (403, "quota_exceeded")
    assert "max_workstations" in third.json()["message"]
    for ws_id in ids:
        wait_over_http(http, f"{base}/{ws_id}", "stopped")

    granted = cli(server.env, "accounts", "set-credits", "team", "0.5")
    assert granted.returncode == 0 and "balance 0.50 USD" in granted.stdout
    assert http.post(f"{base}/{ids[0]}/launch").status_code == 200

    deadline = time.monotonic() + 20
    while http.get(f"{base}/{ids[0]}").json()["status"] != "stopped":
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert "its account's credits are used up" in server.log()

    account = http.get(server.url + "/v1/account").json()
    # Used up: CPU time comes in ticks of 10 ms, so a stop at the very moment
    # of exhaustion leaves exactly 0.
    assert account["balanceUSD"] <= 0
    costs = [http.get(f"{base}/{ws_id}/usage").json()["costUSD"] for ws_id in ids]
    assert costs[0] >= 0.5
    assert account["spentUSD"] == pytest.approx(sum(costs), rel=1e-9)
    assert account["burnRateUSDPerHour"] == 0  # nothing runs, storage is free here

    refused = http.post(f"{base}/{ids[1]}/launch")
    assert (refused.status_code, refused.json()["error"]) == (402, "payment_required")
    assert refused.json()["balanceUSD"] == pytest.approx(account["balanceUSD"], abs=1e-6)
    assert http.post(base, json=body).status_code == 402
    listed = cli(server.env, "accounts", "list")
    assert "team" in listed.stdout


ONE_SECOND_SAMPLER = CONFIG.replace("[sampler]\ninterval_seconds = 0.2", "[sampler]\ninterval_seconds = 1").replace(
    "reconcile_interval_seconds = 0.2", "reconcile_interval_seconds = 600"
)
assert "interval_seconds = 1\n" in ONE_SECOND_SAMPLER and "= 600" in ONE_SECOND_SAMPLER


def test_at_a_one_second_interval_a_workstation_stops_within_two_seconds_of_running_out(tmp_path):
    """Only the sampler's tick can notice here (the reconciler's round is 10 minutes away)."""
    server = start_server(tmp_path, ONE_SECOND_SAMPLER)
    try:
        http = requests.Session()
        http.headers["Authorization"] = "Bearer " + cli(server.env, "keys", "create", "--account", "t").stdout.split()[-1]
        base = server.url + "/v1/workstations"
        body = {"name": "w", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}}
        ws_id = http.post(base, json=body).json()["id"]
        wait_over_http(http, f"{base}/{ws_id}", "stopped")
        credits = 2.0  # USD: about 4 s of a guest burning half a CPU at a dollar a CPU-second
        assert cli(server.env, "accounts", "set-credits", "t", str(credits)).returncode == 0
        assert http.post(f"{base}/{ws_id}/launch").status_code == 200
        wait_over_http(http, f"{base}/{ws_id}", "stopped", timeout=30)
    finally:
        server.stop()
        power_off_fake_guests(tmp_path / "server-data")
    with sqlite3.connect(tmp_path / "server-data" / "cwhost.db") as db:
        samples = db.execute(
            "SELECT since, sampled_at, cpu_seconds FROM usage_samples WHERE workstation_id = ? ORDER BY sampled_at",
            [ws_id],
        ).fetchall()
        (billing_ended,) = db.execute(
            "SELECT ended_at FROM usage_segments WHERE workstation_id = ? AND running = 1", [ws_id]
        ).fetchone()
    spent, ran_out = 0.0, None
    for since, sampled_at, cpu_seconds in samples:
        if spent + cpu_seconds >= credits:
            # Within this reading's interval, as the guest burned at an even pace through it.
            ran_out = since + (credits - spent) / cpu_seconds * (sampled_at - since)
            break
        spent += cpu_seconds
    assert ran_out is not None, samples
    assert 0 < billing_ended - ran_out <= 2.0, (billing_ended - ran_out, samples)
