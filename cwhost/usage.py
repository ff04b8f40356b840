"""The usage ledger: what each workstation used, and what it cost.

Two kinds of quantity, recorded two ways:

- Time-based ones (storage GB-hours, GPU-hours) come from *segments*: intervals
  in which a workstation's billable configuration was constant. Every
  transition (create, launch, stop, PATCH, delete) closes the open segment and
  opens the next in the same transaction as the state change, so they are
  exact to the transition and each part is priced at its own configuration.
- Metered ones (CPU time, memory GB-hours, GPU utilisation) come from the
  sampler: a row per reading in ``usage_samples`` (kept for the retention
  period), the same figures summed per hour in ``usage_hourly`` (kept forever)
  and running totals in ``meter_state``.

A window [from, to) is answered from hourly rollups for the whole hours inside
it and from raw samples for the partial hours at its edges; both spread a
reading evenly over the interval it covers, so they agree with each other. Edge
hours older than the raw samples' retention count nothing.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import sqlite_utils

from cwhost.config import Pricing
from cwhost.db import Database

HOUR = 3600
DAY = 86400
GB = 1024**3
BUCKET_SECONDS = {"hour": HOUR, "day": DAY}


@dataclass
class Figures:
    """Raw quantities in seconds; hours and cost are derived on output."""

    cpu_seconds: float = 0.0
    memory_gb_seconds: float = 0.0
    gpu_utilized_seconds: float = 0.0
    storage_gb_seconds: float = 0.0
    gpu_seconds: float = 0.0
    gpu_cost_usd: float = 0.0

    def add_metered(self, row: dict, share: float = 1.0) -> None:
        self.cpu_seconds += (row["cpu_seconds"] or 0.0) * share
        self.memory_gb_seconds += (row["memory_gb_seconds"] or 0.0) * share
        self.gpu_utilized_seconds += (row["gpu_utilized_seconds"] or 0.0) * share

    def cost_usd(self, pricing: Pricing) -> float:
        return (
            self.cpu_seconds / HOUR * pricing.cpu_hour_usd
            + self.memory_gb_seconds / HOUR * pricing.memory_gb_hour_usd
            + self.storage_gb_seconds / HOUR * pricing.storage_gb_hour_usd
            + self.gpu_cost_usd
        )


@dataclass
class UsageReport:
    total: Figures
    last_updated: float | None
    start: float | None
    end: float
    buckets: list[tuple[float, Figures]] = field(default_factory=list)


# -- segments (written by the service inside its transactions) ----------------


def open_segment(
    tx: sqlite_utils.Database,
    workstation_id: str,
    at: float,
    running: bool,
    storage_gb: int,
    gpu: str | None,
) -> None:
    tx["usage_segments"].insert(
        {
            "workstation_id": workstation_id,
            "started_at": at,
            "ended_at": None,
            "running": int(running),
            "storage_gb": storage_gb,
            "gpu": gpu if running else None,
        }
    )


def close_segment(tx: sqlite_utils.Database, workstation_id: str, at: float) -> None:
    tx.execute(
        "UPDATE usage_segments SET ended_at = MAX(started_at, ?)"
        " WHERE workstation_id = ? AND ended_at IS NULL",
        [at, workstation_id],
    )


# -- reading ------------------------------------------------------------------


def _floor(moment: float, step: int) -> int:
    return int(math.floor(moment / step) * step)


def split_by_step(start: float, end: float, step: int):
    """Yield (step_start, overlap_seconds) for each step-aligned slot [start, end) touches."""
    slot = _floor(start, step)
    while slot < end:
        overlap = min(end, slot + step) - max(start, slot)
        if overlap > 0:
            yield slot, overlap
        slot += step


class UsageLedger:
    def __init__(self, db: Database, pricing: Pricing, clock=time.time):
        self._db = db
        self._pricing = pricing
        self._clock = clock

    def report(
        self,
        workstation_id: str,
        start: float | None = None,
        end: float | None = None,
        granularity: str | None = None,
    ) -> UsageReport:
        now = self._clock()
        end = now if end is None else min(end, now)
        state = self._db.query_one(
            "SELECT * FROM meter_state WHERE workstation_id = ?", [workstation_id]
        )
        step = BUCKET_SECONDS.get(granularity or "")
        buckets: dict[int, Figures] = defaultdict(Figures)
        total = Figures()

        def bucket_for(moment: float) -> Figures | None:
            return buckets[_floor(moment, step)] if step else None

        self._add_segments(workstation_id, start, end, now, total, step, buckets)
        if start is None and step is None and end == now:
            if state:
                total.add_metered(state)
        else:
            self._add_metered(workstation_id, start, end, total, bucket_for)
        ordered = [(slot, buckets[slot]) for slot in sorted(buckets)] if step else []
        return UsageReport(
            total=total,
            last_updated=state["sampled_at"] if state else None,
            start=start,
            end=end,
            buckets=ordered,
        )

    def _add_segments(self, workstation_id, start, end, now, total, step, buckets) -> None:
        rows = self._db.query(
            "SELECT * FROM usage_segments WHERE workstation_id = ? AND started_at < ?"
            " AND (ended_at IS NULL OR ended_at > ?)",
            [workstation_id, end, start if start is not None else float("-inf")],
        )
        for row in rows:
            seg_start = row["started_at"] if start is None else max(row["started_at"], start)
            seg_end = min(row["ended_at"] if row["ended_at"] is not None else now, end)
            if seg_end <= seg_start:
                continue
            pieces = split_by_step(seg_start, seg_end, step) if step else [(None, seg_end - seg_start)]
            for slot, seconds in pieces:
                for figures in (total, buckets[slot]) if step else (total,):
                    figures.storage_gb_seconds += row["storage_gb"] * seconds
                    if row["running"] and row["gpu"]:
                        figures.gpu_seconds += seconds
                        figures.gpu_cost_usd += seconds / HOUR * self._pricing.gpu_rate(row["gpu"])

    def _add_metered(self, workstation_id, start, end, total, bucket_for) -> None:
        """Whole hours from rollups; the partial hours at either edge from raw samples."""
        first_whole = _floor(start, HOUR) + (HOUR if start % HOUR else 0) if start is not None else None
        last_whole = _floor(end, HOUR)  # exclusive
        if first_whole is not None and first_whole >= last_whole:
            edges = [(start, end)]
            hourly = []
        else:
            edges = [(start, first_whole)] if first_whole is not None and start < first_whole else []
            if last_whole < end:
                edges.append((last_whole, end))
            clauses, params = ["workstation_id = ?", "hour < ?"], [workstation_id, last_whole]
            if first_whole is not None:
                clauses.append("hour >= ?")
                params.append(first_whole)
            hourly = self._db.query(
                "SELECT * FROM usage_hourly WHERE " + " AND ".join(clauses), params
            )
        for row in hourly:
            total.add_metered(row)
            bucket = bucket_for(row["hour"])
            if bucket is not None:
                bucket.add_metered(row)
        for edge_start, edge_end in edges:
            for row in self._samples_overlapping(workstation_id, edge_start, edge_end):
                overlap = min(row["sampled_at"], edge_end) - max(row["since"], edge_start)
                if overlap <= 0:
                    continue
                share = overlap / (row["sampled_at"] - row["since"])
                total.add_metered(row, share)
                bucket = bucket_for(max(row["since"], edge_start))
                if bucket is not None:
                    bucket.add_metered(row, share)

    def _samples_overlapping(self, workstation_id: str, start: float | None, end: float) -> list[dict]:
        """Samples whose interval meets (start, end]: those read inside it, and the
        first read after it, whose interval may reach back into it."""
        inside = self._db.query(
            "SELECT * FROM usage_samples WHERE workstation_id = ? AND sampled_at > ? AND sampled_at <= ?",
            [workstation_id, start if start is not None else float("-inf"), end],
        )
        straddling = self._db.query(
            "SELECT * FROM usage_samples WHERE workstation_id = ? AND sampled_at > ?"
            " ORDER BY sampled_at LIMIT 1",
            [workstation_id, end],
        )
        return inside + straddling

    def totals_by_workstation(self) -> list[dict]:
        """Running metered totals and GPU seconds of every workstation, for /metrics."""
        now = self._clock()
        return self._db.query(
            """SELECT w.id AS workstation_id, a.name AS account,
                      COALESCE(m.cpu_seconds, 0) AS cpu_seconds,
                      COALESCE(m.memory_gb_seconds, 0) AS memory_gb_seconds,
                      (SELECT COALESCE(SUM(COALESCE(s.ended_at, ?) - s.started_at), 0)
                         FROM usage_segments s
                        WHERE s.workstation_id = w.id AND s.running = 1 AND s.gpu IS NOT NULL)
                        AS gpu_seconds
                 FROM workstations w
                 JOIN accounts a ON a.id = w.account_id
                 LEFT JOIN meter_state m ON m.workstation_id = w.id
                ORDER BY w.rowid""",
            [now],
        )
