"""The service's memory over a long run: 200 running workstations, the sampler at 1 s, clients reading.

Runs the real ``cwhost serve`` (fake driver: 200 real guest processes), launches
every workstation, then for --minutes keeps 8 clients listing, reading and
asking for usage while the sampler records every second. Prints the server's
RSS at the start of that run (after one minute of warm-up) and at its end,
and every --every seconds between. Target: flat (growth within the noise of
a few MiB).

RSS is also split into anonymous memory (the heap: what a leak grows),
file-backed pages (libraries, and SQLite's WAL index ``cwhost.db-shm``, which
grows with the log) and shared memory, from ``/proc/<pid>/status``, and the
largest changes are named by mapping (``/proc/<pid>/smaps``). The log's
length is printed too. ``--env NAME=VALUE`` sets a variable for the server
(for example ``PYTHONMALLOC=malloc``, to compare allocators).

    PYTHONPATH=. python benchmarks/memory.py [--workstations 200] [--minutes 10] [--every 30] [--env NAME=VALUE]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from tests.helpers import cli, power_off_fake_guests, start_server

CONFIG = """
[server]
threads = 16
max_in_flight = 12
rate_limit_per_minute = 1000000
[sampler]
interval_seconds = 1.0
[limits]
max_workstations = {many}
max_running_cpu_cores = {many}
max_running_memory_gb = {many}
[driver.fake]
cpu_cores = {many}
memory_gb = {many}
storage_gb = {many}
guest_cpu_share = 0.001
guest_memory_mb = 1
"""


def rss_parts(pid: int) -> dict[str, float]:
    """The process's resident memory by kind, in MiB."""
    wanted = ("RssAnon", "RssFile", "RssShmem")
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) / 1024 for name in wanted}


def rss_by_mapping(pid: int) -> dict[str, float]:
    """Resident MiB per mapped file ("[anon]" for anonymous memory), from ``/proc/<pid>/smaps``."""
    resident: dict[str, float] = {}
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):
                name = fields[5] if len(fields) > 5 else "[anon]"
            elif fields[0] == "Rss:":
                resident[name] = resident.get(name, 0.0) + int(fields[1]) / 1024
    return resident


def print_growth_by_mapping(before: dict[str, float], after: dict[str, float], shown: int = 6) -> None:
    growth = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in before.keys() | after.keys()}
    for name in sorted(growth, key=lambda name: -abs(growth[name]))[:shown]:
        print(f"  {growth[name]:+6.1f} MiB  {name}")


def launch_all(url: str, token: str, count: int) -> list[str]:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    body = {"configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}}
    ids = [http.post(url + "/v1/workstations", json={"name": f"m{i}", **body}).json()["id"] for i in range(count)]
    for ws_id in ids:
        while http.get(f"{url}/v1/workstations/{ws_id}").json()["status"] != "stopped":
            time.sleep(0.05)
        assert http.post(f"{url}/v1/workstations/{ws_id}/launch").status_code == 200
    return ids


def read_until(url: str, token: str, ids: list[str], stop: threading.Event, served: list[int]) -> None:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    paths = ["/v1/workstations?limit=200", "/v1/account", "/v1/account/usage?granularity=day"]
    n = 0
    while not stop.is_set():
        ws_id = ids[n % len(ids)]
        for path in (*paths, f"/v1/workstations/{ws_id}", f"/v1/workstations/{ws_id}/usage"):
            assert http.get(url + path).status_code == 200, path
            n += 1
    served.append(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workstations", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=30)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cwhost-bench-memory-", dir="/var/tmp"))
    extra_env = dict(setting.split("=", 1) for setting in args.env)
    server = start_server(work, CONFIG.format(many=args.workstations * 2), extra_env=extra_env)
    try:
        token = cli(server.env, "keys", "create", "--account", "team").stdout.split()[-1]
        ids = launch_all(server.url, token, args.workstations)
        process = psutil.Process(server.process.pid)
        stop, served = threading.Event(), []
        readers = [threading.Thread(target=read_until, args=(server.url, token, ids, stop, served)) for _ in range(8)]
        for reader in readers:
            reader.start()
        time.sleep(60)
        began, series, parts = time.monotonic(), [], [rss_parts(process.pid)]
        mappings = [rss_by_mapping(process.pid)]
        wal = work / "server-data" / "cwhost.db-wal"
        wal_sizes = [wal.stat().st_size / 2**20]
        while time.monotonic() - began < args.minutes * 60:
            series.append(process.memory_info().rss / 2**20)
            wal_sizes.append(wal.stat().st_size / 2**20)
            time.sleep(args.every)
        series.append(process.memory_info().rss / 2**20)
        parts.append(rss_parts(process.pid))
        mappings.append(rss_by_mapping(process.pid))
        stop.set()
        for reader in readers:
            reader.join()
        log = server.log()
    finally:
        server.stop()
        power_off_fake_guests(work / "server-data")
    ticks = log.count("sampler tick failed")
    print(
        f"{args.workstations} running workstations, sampler every 1 s, 8 clients: {sum(served)} requests"
        f" in {args.minutes:g} min after 1 min of warm-up; failed ticks: {ticks}"
    )
    print(
        f"service RSS: {series[0]:.1f} MiB at the start, {series[-1]:.1f} MiB at the end"
        f" ({series[-1] - series[0]:+.1f} MiB); every {args.every:g} s: {' '.join(f'{r:.0f}' for r in series)}"
    )
    for name in parts[0]:
        print(
            f"  {name:9s} {parts[0][name]:6.1f} MiB -> {parts[-1][name]:6.1f} MiB"
            f" ({parts[-1][name] - parts[0][name]:+.1f} MiB)"
        )
    print(f"database log (cwhost.db-wal): {wal_sizes[0]:.1f} MiB at the start, at most {max(wal_sizes):.1f} MiB")
    print("largest changes by mapping:")
    print_growth_by_mapping(*mappings)


if __name__ == "__main__":
    main()
