"""402 and 403 through the real server, with real guest processes and a high price."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import cli, power_off_fake_guests, start_server, wait_over_http

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
