"""An account's spend report over a year: per workstation and per day, for 50 workstations.

The database holds what a year of 10 s sampling leaves (default retention):
hourly and daily rollups for the whole year and the raw samples of the last
30 days, for 50 workstations that ran all year, with their segments and meter
state; filled synthetically, 30 days of raw samples take about a minute.
``GET /v1/account/usage?granularity=day`` over that year, through the WSGI
app in-process, is timed against its floor in the same run: one SQL
query per grouping summing the daily rollups by workstation, then by day
(no edges, no segments: less than the report must do). Target: the
report under 20 ms.

    python benchmarks/account_usage.py [--workstations 50] [--raw-days 30] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cwhost import auth
from cwhost.app import create_app
from cwhost.config import build_config
from cwhost.db import Database
from cwhost.ids import unix_to_rfc3339
from cwhost.usage_figures import DAY, HOUR

YEAR = 365 * DAY
INTERVAL = 10
# What one 10 s sample of a busy workstation holds: CPU-seconds, GB-seconds, GPU-utilised seconds.
PER_SAMPLE = (5.0, 40.0, 0.0)


def fill(db: Database, account_id: str, count: int, raw_days: int, end: float) -> list[str]:
    start = end - YEAR
    ids = [f"ws-year{i:04d}" for i in range(count)]
    conn = db.db.conn
    with db.write() as tx:
        for ws_id in ids:
            tx["workstations"].insert(
                {"id": ws_id, "account_id": account_id, "name": ws_id, "status": "running", "cpu_cores": 8,
                 "memory_gb": 32, "storage_gb": 100, "region": "local", "created_at": unix_to_rfc3339(start),
                 "started_at": unix_to_rfc3339(start), "idle_timeout_minutes": 0, "running_timeout_minutes": 0}
            )
            conn.execute(
                "INSERT INTO usage_segments (workstation_id, started_at, ended_at, running, storage_gb, gpu)"
                " VALUES (?, ?, NULL, 1, 100, NULL)",
                [ws_id, start],
            )
            for table, size in (("usage_hourly", HOUR), ("usage_daily", DAY)):
                per_slot = [value * size / INTERVAL for value in PER_SAMPLE]
                conn.executemany(
                    f"INSERT INTO {table} (workstation_id, start, cpu_seconds, memory_gb_seconds,"
                    " gpu_utilized_seconds) VALUES (?, ?, ?, ?, ?)",
                    ((ws_id, slot, *per_slot) for slot in range(int(start), int(end), size)),
                )
            conn.executemany(
                "INSERT INTO usage_samples (workstation_id, since, sampled_at, cpu_seconds, memory_gb_seconds,"
                " gpu_utilized_seconds) VALUES (?, ?, ?, ?, ?, ?)",
                ((ws_id, t - INTERVAL, t, *PER_SAMPLE) for t in range(int(end - raw_days * DAY), int(end), INTERVAL)),
            )
            conn.execute(
                "INSERT INTO meter_state (workstation_id, pid, process_started, cpu_seconds_counter, rss_bytes,"
                " sampled_at, cpu_seconds, memory_gb_seconds, gpu_utilized_seconds)"
                " VALUES (?, 1, ?, 0, 0, ?, ?, ?, ?)",
                [ws_id, start, end, *(value * YEAR / INTERVAL for value in PER_SAMPLE)],
            )
    return ids


def floor_query(db: Database, account_id: str, start: float, end: float) -> int:
    """The least a per-workstation and per-day report must read: the daily rollups, summed both ways in SQL."""
    rows = 0
    for group in ("d.workstation_id", "d.start"):
        rows += len(
            db.query(
                f"SELECT {group}, SUM(d.cpu_seconds), SUM(d.memory_gb_seconds), SUM(d.gpu_utilized_seconds)"
                " FROM usage_daily d JOIN workstations w ON w.id = d.workstation_id"
                f" WHERE w.account_id = ? AND d.start >= ? AND d.start < ? GROUP BY {group}",
                [account_id, start, end],
            )
        )
    return rows


def median_ms(work, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        work()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workstations", type=int, default=50)
    parser.add_argument("--raw-days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cwhost-bench-account-", dir="/var/tmp"))
    config = build_config({"data_dir": str(work / "data"), "server": {"rate_limit_per_minute": 10**6}})
    db = Database(config.database_path)
    db.migrate()
    key = auth.create_key(db, "team")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    # Now is mid-morning: the last day is partial, as a report's always is.
    end = today + 10 * HOUR + 1234
    began = time.perf_counter()
    fill(db, key.account_id, args.workstations, args.raw_days, end)
    print(f"filled {args.workstations} workstations x a year in {time.perf_counter() - began:.0f} s")
    app = create_app(config)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key.token}"}
    url = f"/v1/account/usage?granularity=day&from={unix_to_rfc3339(end - YEAR)}"
    answer = client.get(url, headers=headers).get_json()
    assert len(answer["workstations"]) == args.workstations, answer
    report = median_ms(lambda: client.get(url, headers=headers), args.rounds)
    floor = median_ms(lambda: floor_query(db, key.account_id, end - YEAR, end), args.rounds)
    print(f"account usage, {args.workstations} workstations, a year by day ({len(answer['periods'])} days),"
          f" {args.rounds} rounds:")
    print(f"  GET /v1/account/usage?granularity=day   median {report:7.2f} ms (target under 20 ms)"
          f" -> {'met' if report < 20 else 'NOT met'}")
    print(f"  the daily rollups summed in SQL        median {floor:7.2f} ms  ({report / floor:.1f}x)")
    print(f"  total {answer['costUSD']:.2f} USD over {answer['cpuHours']:.0f} CPU-hours")


if __name__ == "__main__":
    main()
