"""The sampler's cost and the usage query's speed.

1. One sampler tick for 200 running workstations backed by 200 real processes:
   median and p99 of the read phase (psutil) and the write phase (one SQLite
   transaction). Target: the whole tick under 50 ms (0.5 % of a 10 s interval).
2. The usage of a workstation with one year of 10 s samples (3.15 million rows,
   filled synthetically): the ledger's answer for that year (hourly rollups plus
   raw edges) against a raw SUM over the samples, in the same run. Target:
   under 5 ms and at least 80x faster than the raw scan.

    python benchmarks/sampler.py [--workstations 200] [--ticks 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from cwhost.config.server import build_config
from cwhost.db.database import Database
from cwhost.db.schema import ROLLUP_TABLES
from cwhost.model import RUNNING, domain_name
from cwhost.usage.figures import HOUR
from cwhost.usage.ledger import UsageLedger
from cwhost.usage.sampler import Sampler
from cwhost.workstations.store import WorkstationStore

YEAR = 365 * 86400


class ProcessTable:
    """Just enough of a driver for the sampler: which process runs which domain."""

    def __init__(self, pids: dict[str, int]):
        self._pids = pids

    def pid(self, name: str) -> int | None:
        return self._pids.get(name)


class NoGpus:
    def utilization(self):
        return {}


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def add_workstations(db: Database, count: int, status: str) -> list[str]:
    ids = [f"ws-bench{i:04d}" for i in range(count)]
    with db.write() as tx:
        tx["accounts"].insert({"id": "acct-bench", "name": "bench", "created_at": "2026-01-01T00:00:00Z"}, ignore=True)
        tx["workstations"].insert_all(
            {
                "id": ws_id,
                "account_id": "acct-bench",
                "name": ws_id,
                "status": status,
                "cpu_cores": 1,
                "memory_gb": 1,
                "storage_gb": 1,
                "region": "local",
                "created_at": "2026-01-01T00:00:00Z",
                "idle_timeout_minutes": 0,
                "running_timeout_minutes": 0,
            }
            for ws_id in ids
        )
    return ids


def read_directly(pids: list[int]) -> None:
    """The reference: the two files the tick needs of each process, read and nothing else."""
    for pid in pids:
        for name in ("stat", "statm"):
            descriptor = os.open(f"/proc/{pid}/{name}", os.O_RDONLY)
            os.read(descriptor, 4096)
            os.close(descriptor)


def bench_tick(workdir: Path, count: int, ticks: int, seconds: float) -> None:
    db = Database(workdir / "tick.db")
    db.migrate()
    ids = add_workstations(db, count, RUNNING)
    processes = [subprocess.Popen(["sleep", "600"]) for _ in ids]
    pids = [p.pid for p in processes]
    try:
        driver = ProcessTable({domain_name(ws_id): pid for ws_id, pid in zip(ids, pids, strict=True)})
        sampler = Sampler(db, driver, 10, 30 * 86400, running=WorkstationStore(db).running, gpus=NoGpus())
        sampler.sample()  # the first tick creates every meter state; later ticks update them
        results, direct = [], []
        for _ in range(ticks):
            results.append(sampler.sample())
            began = time.perf_counter()
            read_directly(pids)
            direct.append((time.perf_counter() - began) * 1000)
        busy = cpu_share_at_one_second(db, driver, seconds)
    finally:
        for p in processes:
            p.kill()
            p.wait()
    assert all(r.workstations == count for r in results)
    read = [r.read_seconds * 1000 for r in results]
    write = [r.write_seconds * 1000 for r in results]
    whole = [r + w for r, w in zip(read, write, strict=True)]
    print(f"sampler tick, {count} running workstations (real processes), {ticks} ticks:")
    for label, values in (("read", read), ("write", write), ("whole tick", whole), ("direct read", direct)):
        print(f"  {label:<11} median {statistics.median(values):7.2f} ms   p99 {percentile(values, 0.99):7.2f} ms")
    ratio = statistics.median(whole) / statistics.median(direct)
    print(f"  whole tick / direct read: {ratio:.2f}x (target 2x) -> {'met' if ratio <= 2 else 'NOT met'}")
    print(
        f"  at a 1 s interval for {seconds:.0f} s: {busy * 100:.2f} % of one core (target 3 %)"
        f" -> {'met' if busy < 0.03 else 'NOT met'}"
    )


def cpu_share_at_one_second(db: Database, driver: ProcessTable, seconds: float) -> float:
    """The sampler's thread ticking every second: its CPU time over the time it ran."""
    sampler = Sampler(db, driver, 1, 30 * 86400, running=WorkstationStore(db).running, gpus=NoGpus())
    stop = threading.Event()
    spent: list[float] = []

    def run() -> None:
        began = time.thread_time()
        sampler.run(stop)
        spent.append(time.thread_time() - began)

    thread = threading.Thread(target=run)
    began = time.monotonic()
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    return spent[0] / (time.monotonic() - began)


def bench_usage_query(workdir: Path) -> None:
    db = Database(workdir / "year.db")
    db.migrate()
    (ws_id,) = add_workstations(db, 1, "stopped")
    end = time.time() - (time.time() % HOUR)
    start = end - YEAR
    conn = db.db.conn
    print("\nfilling one year of 10 s samples...", flush=True)
    batch = []
    with db.write():
        for i in range(YEAR // 10):
            t = start + 10 * (i + 1)
            batch.append((ws_id, t - 10, t, 0.5, 0.02, 0.0))
            if len(batch) == 100_000:
                conn.executemany("INSERT INTO usage_samples VALUES (?, ?, ?, ?, ?, ?)", batch)
                batch.clear()
        conn.executemany("INSERT INTO usage_samples VALUES (?, ?, ?, ?, ?, ?)", batch)
        for table, size in ROLLUP_TABLES.items():
            conn.execute(
                f"""INSERT INTO {table}
                    SELECT workstation_id, CAST(since / {size} AS INTEGER) * {size}, SUM(cpu_seconds),
                           SUM(memory_gb_seconds), SUM(gpu_utilized_seconds)
                      FROM usage_samples GROUP BY 1, 2"""
            )
    rows = conn.execute("SELECT COUNT(*) FROM usage_samples").fetchone()[0]
    config = build_config({"data_dir": str(workdir)})
    ledger = UsageLedger(db, config.pricing, clock=lambda: end + 1800)
    window = (start + 1234, end + 1800)

    def ledger_query():
        return ledger.report(ws_id, *window).total.cpu_seconds

    def raw_scan():
        return conn.execute(
            "SELECT SUM(cpu_seconds) FROM usage_samples WHERE workstation_id = ?"
            " AND sampled_at > ? AND sampled_at <= ?",
            [ws_id, *window],
        ).fetchone()[0]

    timings = {"ledger": [], "raw SUM": []}
    for _ in range(7):  # interleaved rounds
        for name, query in (("ledger", ledger_query), ("raw SUM", raw_scan)):
            began = time.perf_counter()
            answer = query()
            timings[name].append((time.perf_counter() - began) * 1000)
    ledger_ms = statistics.median(timings["ledger"])
    raw_ms = statistics.median(timings["raw SUM"])
    print(f"usage of one workstation over a year ({rows:,} raw samples), 7 interleaved rounds:")
    print(f"  ledger (day/hour rollups + raw edges)  median {ledger_ms:8.2f} ms")
    print(f"  raw SUM over the samples             median {raw_ms:8.2f} ms")
    print(
        f"  speed-up {raw_ms / ledger_ms:.0f}x; targets: under 5 ms and at least 80x"
        f" -> {'met' if ledger_ms < 5 and raw_ms / ledger_ms >= 80 else 'NOT met'}"
    )
    print(f"  (both answer about {answer:.0f} CPU-seconds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workstations", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60, help="how long the 1 s sampler runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cwhost-bench-") as workdir:
        bench_tick(Path(workdir), args.workstations, args.ticks, args.seconds)
        bench_usage_query(Path(workdir))


if __name__ == "__main__":
    main()
