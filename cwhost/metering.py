"""The ledger's writer for the sampler's readings: samples, rollups and meter state, one transaction a tick.

A reading is a process's cumulative counters. The meter state keeps the last
counters read, so each reading adds exactly what the process used since the
one before: a late or missed tick loses nothing, a restart of cwhost neither
loses nor repeats an interval, and a new pid or start time (the VM started
again) is all new usage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from cwhost.db import ROLLUP_TABLES, Database
from cwhost.usage import GB, split_by_step
from cwhost.workstations.model import RUNNING


@dataclass(frozen=True)
class ProcessReading:
    pid: int
    started: float
    cpu_seconds: float
    rss_bytes: int


class MeterRecorder:
    def __init__(self, db: Database, retention_seconds: float):
        self._db = db
        self._retention = retention_seconds

    def record(self, now: float, readings) -> None:
        """Record ``readings``: (workstation id, ProcessReading, GPU utilisation or None) each."""
        samples: list = []
        states: list = []
        rollups: dict[str, list] = {table: [] for table in ROLLUP_TABLES}
        with self._db.write() as tx:
            readings = self._of_running(readings)
            previous = self._meter_states([workstation_id for workstation_id, _, _ in readings])
            for workstation_id, reading, utilization in readings:
                _account(
                    now, workstation_id, reading, utilization, previous.get(workstation_id), samples, rollups, states
                )
            _insert(tx.conn, samples, rollups, states)
            tx.conn.execute("DELETE FROM usage_samples WHERE sampled_at < ?", [now - self._retention])

    def _of_running(self, readings) -> list:
        """Drop readings of workstations whose stop committed while the tick read them.

        Such a workstation had its final reading; once it shows as stopped
        its usage is settled, so a reading that arrives later is not counted.
        """
        ids = json.dumps([workstation_id for workstation_id, _, _ in readings])
        still_running = {
            row["id"]
            for row in self._db.query(
                "SELECT id FROM workstations WHERE status = ? AND id IN (SELECT value FROM json_each(?))",
                [RUNNING, ids],
            )
        }
        return [r for r in readings if r[0] in still_running]

    def _meter_states(self, ids: list[str]) -> dict[str, dict]:
        rows = self._db.query(
            "SELECT * FROM meter_state WHERE workstation_id IN (SELECT value FROM json_each(?))", [json.dumps(ids)]
        )
        return {row["workstation_id"]: row for row in rows}


def _insert(conn, samples: list, rollups: dict[str, list], states: list) -> None:
    conn.executemany(
        "INSERT INTO usage_samples (workstation_id, since, sampled_at, cpu_seconds,"
        " memory_gb_seconds, gpu_utilized_seconds) VALUES (?, ?, ?, ?, ?, ?)",
        samples,
    )
    for table, rows in rollups.items():
        conn.executemany(
            f"""INSERT INTO {table}
                   (workstation_id, start, cpu_seconds, memory_gb_seconds, gpu_utilized_seconds)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (workstation_id, start) DO UPDATE SET
                   cpu_seconds = cpu_seconds + excluded.cpu_seconds,
                   memory_gb_seconds = memory_gb_seconds + excluded.memory_gb_seconds,
                   gpu_utilized_seconds = gpu_utilized_seconds + excluded.gpu_utilized_seconds""",
            rows,
        )
    conn.executemany(
        "INSERT OR REPLACE INTO meter_state (workstation_id, pid, process_started,"
        " cpu_seconds_counter, rss_bytes, sampled_at, cpu_seconds, memory_gb_seconds,"
        " gpu_utilized_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        states,
    )


def _account(now, workstation_id, reading, utilization, previous, samples, rollups, states) -> None:
    """Turn one reading into its sample, its shares of each rollup slot, and new meter state."""
    same_process = (
        previous is not None and previous["pid"] == reading.pid and previous["process_started"] == reading.started
    )
    if same_process:
        since = previous["sampled_at"]
        cpu = max(0.0, reading.cpu_seconds - previous["cpu_seconds_counter"])
        rss_gb = (reading.rss_bytes + previous["rss_bytes"]) / 2 / GB
    else:
        # A process not seen before: everything on its counter is new, and
        # its memory is taken as held since it started.
        since = max(reading.started, previous["sampled_at"] if previous else -math.inf)
        cpu = reading.cpu_seconds
        rss_gb = reading.rss_bytes / GB
    seconds = now - since
    if seconds <= 0:
        return
    figures = (cpu, rss_gb * seconds, (utilization or 0.0) / 100 * seconds)
    samples.append((workstation_id, since, now, *figures))
    for table, step in ROLLUP_TABLES.items():
        for slot, overlap in split_by_step(since, now, step):
            rollups[table].append((workstation_id, slot, *(value * overlap / seconds for value in figures)))
    totals = (
        (previous[key] if previous else 0.0) + value
        for key, value in zip(("cpu_seconds", "memory_gb_seconds", "gpu_utilized_seconds"), figures, strict=True)
    )
    states.append((workstation_id, reading.pid, reading.started, reading.cpu_seconds, reading.rss_bytes, now, *totals))
