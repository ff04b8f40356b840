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
from typing import NamedTuple

from cwhost import inventory
from cwhost.db.database import Database
from cwhost.db.schema import PRUNED_ROLLUP_TABLES, ROLLUP_TABLES
from cwhost.usage.figures import slot_of, split_by_step
from drivers.base import GIB


class ProcessReading(NamedTuple):
    """One process's counters; a tuple because 200 are made every tick (a frozen dataclass costs 5x more)."""

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
            previous = self._still_running(readings)
            for workstation_id, reading, utilization in readings:
                if workstation_id in previous:
                    _account(
                        now, workstation_id, reading, utilization, previous[workstation_id], samples, rollups, states
                    )
            _insert(tx.conn, samples, rollups, states)
            tx.conn.execute("DELETE FROM usage_samples WHERE sampled_at < ?", [now - self._retention])
            for table in PRUNED_ROLLUP_TABLES:
                # A slot goes with the last of its samples.
                tx.conn.execute(f"DELETE FROM {table} WHERE start < ?", [now - self._retention - ROLLUP_TABLES[table]])

    def _still_running(self, readings) -> dict[str, dict | None]:
        """The meter state of each workstation read that still runs, or None for one not metered yet.

        A workstation whose stop committed while the tick read it is left
        out: it had its final reading, and once it shows as stopped its usage
        is settled, so a reading that arrives later is not counted.
        """
        running = inventory.running_among(self._db, [workstation_id for workstation_id, _, _ in readings])
        states = self._db.query(
            "SELECT * FROM meter_state WHERE workstation_id IN (SELECT value FROM json_each(?))",
            [json.dumps(sorted(running))],
        )
        state_of = {row["workstation_id"]: row for row in states}
        return {workstation_id: state_of.get(workstation_id) for workstation_id in running}


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
    # An upsert, not INSERT OR REPLACE: REPLACE deletes the row and inserts it again.
    conn.executemany(
        """INSERT INTO meter_state (workstation_id, pid, process_started, cpu_seconds_counter, rss_bytes,
                                    sampled_at, cpu_seconds, memory_gb_seconds, gpu_utilized_seconds)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (workstation_id) DO UPDATE SET
               pid = excluded.pid, process_started = excluded.process_started,
               cpu_seconds_counter = excluded.cpu_seconds_counter, rss_bytes = excluded.rss_bytes,
               sampled_at = excluded.sampled_at, cpu_seconds = excluded.cpu_seconds,
               memory_gb_seconds = excluded.memory_gb_seconds, gpu_utilized_seconds = excluded.gpu_utilized_seconds""",
        states,
    )


def _account(now, workstation_id, reading, utilization, previous, samples, rollups, states) -> None:
    """Turn one reading into its sample, its shares of each rollup slot, and new meter state."""
    same_process = (
        previous is not None and previous["pid"] == reading.pid and previous["process_started"] == reading.started
    )
    if same_process:
        if reading.cpu_seconds < previous["cpu_seconds_counter"]:
            # Read before the reading already recorded (a tick and a stop's final reading crossed):
            # counting it would count the difference again at the next reading.
            return
        since = previous["sampled_at"]
        cpu = reading.cpu_seconds - previous["cpu_seconds_counter"]
        rss_gb = (reading.rss_bytes + previous["rss_bytes"]) / 2 / GIB
    else:
        # A process not seen before: everything on its counter is new, and
        # its memory is taken as held since it started.
        since = max(reading.started, previous["sampled_at"] if previous else -math.inf)
        cpu = reading.cpu_seconds
        rss_gb = reading.rss_bytes / GIB
    seconds = now - since
    if seconds <= 0:
        return
    gpu_seconds = (utilization or 0.0) / 100 * seconds
    figures = (cpu, rss_gb * seconds, gpu_seconds)
    samples.append((workstation_id, since, now, cpu, rss_gb * seconds, gpu_seconds))
    for table, step in ROLLUP_TABLES.items():
        slot = slot_of(since, step)
        if slot <= since and now <= slot + step:
            # Within one slot, as nearly every tick is: all of it there.
            rollups[table].append((workstation_id, slot, *figures))
            continue
        for slot, overlap in split_by_step(since, now, step):
            share = overlap / seconds
            rollups[table].append((workstation_id, slot, cpu * share, figures[1] * share, gpu_seconds * share))
    if previous is None:
        totals = figures
    else:
        totals = (
            previous["cpu_seconds"] + cpu,
            previous["memory_gb_seconds"] + figures[1],
            previous["gpu_utilized_seconds"] + gpu_seconds,
        )
    states.append((workstation_id, reading.pid, reading.started, reading.cpu_seconds, reading.rss_bytes, now, *totals))
