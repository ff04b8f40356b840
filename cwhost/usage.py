"""The usage ledger: what each workstation used, and what it cost.

Two kinds of quantity, recorded two ways:

- Time-based ones (storage GB-hours, GPU-hours) come from *segments*: intervals
  in which a workstation's billable configuration was constant. Every
  transition (create, launch, stop, PATCH, delete) closes the open segment and
  opens the next in the same transaction as the state change, so they are
  exact to the transition and each part is priced at its own configuration.
- Metered ones (CPU time, memory GB-hours, GPU utilisation) come from the
  sampler: a row per reading in ``usage_samples`` (kept for the retention
  period), the same figures summed per UTC day and hour in ``usage_daily`` and
  ``usage_hourly`` (kept forever) and running totals in ``meter_state``.

A window [from, to) is answered from daily rollups for the whole days inside
it, hourly ones for the whole hours left, and raw samples for the partial hours
at its edges; each spreads a reading evenly over the interval it covers, so
they agree with each other. Partial edge hours older than the raw samples'
retention count nothing.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import sqlite_utils

from cwhost.config import Pricing
from cwhost.db import ROLLUP_TABLES, Database

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

    def add(self, more: Figures) -> None:
        """Every quantity of ``more`` added to this one's (spelled out: an account's year by day adds 20 000)."""
        self.cpu_seconds += more.cpu_seconds
        self.memory_gb_seconds += more.memory_gb_seconds
        self.gpu_utilized_seconds += more.gpu_utilized_seconds
        self.storage_gb_seconds += more.storage_gb_seconds
        self.gpu_seconds += more.gpu_seconds
        self.gpu_cost_usd += more.gpu_cost_usd

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


@dataclass(frozen=True)
class Priced:
    """Figures as a bill shows them: hours, and their cost at the configured rates."""

    cpu_hours: float
    gpu_hours: float
    gpu_utilized_hours: float
    memory_gb_hours: float
    storage_gb_hours: float
    cost_usd: float

    @staticmethod
    def figures(figures: Figures, pricing: Pricing) -> dict:
        return {
            "cpu_hours": figures.cpu_seconds / HOUR,
            "gpu_hours": figures.gpu_seconds / HOUR,
            "gpu_utilized_hours": figures.gpu_utilized_seconds / HOUR,
            "memory_gb_hours": figures.memory_gb_seconds / HOUR,
            "storage_gb_hours": figures.storage_gb_seconds / HOUR,
            "cost_usd": figures.cost_usd(pricing),
        }


@dataclass(frozen=True)
class PricedBucket(Priced):
    start: float


@dataclass(frozen=True)
class PricedReport(Priced):
    """A usage report as the API answers it (UsageSchema serializes it)."""

    last_updated: float | None
    from_: float
    to: float
    buckets: list[PricedBucket]

    @classmethod
    def of(cls, report: UsageReport, pricing: Pricing, created_at: float) -> PricedReport:
        return cls(
            **Priced.figures(report.total, pricing),
            last_updated=report.last_updated,
            from_=report.start if report.start is not None else created_at,
            to=report.end,
            buckets=[PricedBucket(**Priced.figures(f, pricing), start=start) for start, f in report.buckets],
        )


# -- segments (written by the service inside its transactions) ----------------


def open_segment(
    tx: sqlite_utils.Database,
    workstation_id: str,
    at: float,
    running: bool,
    storage_gb: int,
    gpu: str | None,
) -> None:
    tx.table("usage_segments").insert(
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
        "UPDATE usage_segments SET ended_at = MAX(started_at, ?) WHERE workstation_id = ? AND ended_at IS NULL",
        [at, workstation_id],
    )


# -- reading ------------------------------------------------------------------


def slot_of(moment: float, step: int) -> int:
    """The start of the step-aligned slot ``moment`` falls in."""
    return int(math.floor(moment / step) * step)


def split_by_step(start: float, end: float, step: int):
    """Yield (step_start, overlap_seconds) for each step-aligned slot [start, end) touches."""
    slot = slot_of(start, step)
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

    def last_seen_running(self, workstation_id: str) -> float | None:
        """When the workstation was last known to run: its last reading, or the start of its last segment."""
        state = self._db.query_one("SELECT sampled_at FROM meter_state WHERE workstation_id = ?", [workstation_id])
        started = self._db.query_one(
            "SELECT MAX(started_at) AS at FROM usage_segments WHERE workstation_id = ?", [workstation_id]
        )
        candidates = [v for v in (state and state["sampled_at"], started and started["at"]) if v]
        return max(candidates) if candidates else None

    def busiest_over(self, workstation_id: str, since: float) -> float | None:
        """The most cores the VM used in any reading since ``since``; None unless readings cover all of it."""
        window = self._db.query_row(
            "SELECT MIN(since) AS since, MAX(cpu_seconds / (sampled_at - since)) AS busiest"
            " FROM usage_samples WHERE workstation_id = ? AND sampled_at > ?",
            [workstation_id, since],
        )
        if window["since"] is None or window["since"] > since:
            return None
        return window["busiest"]

    def report(
        self,
        workstation_id: str,
        start: float | None = None,
        end: float | None = None,
        granularity: str | None = None,
    ) -> UsageReport:
        now = self._clock()
        end = now if end is None else min(end, now)
        state = self._db.query_one("SELECT * FROM meter_state WHERE workstation_id = ?", [workstation_id])
        step = BUCKET_SECONDS.get(granularity or "")
        buckets: dict[int, Figures] = defaultdict(Figures)
        total = Figures()

        def bucket_for(moment: float) -> Figures | None:
            return buckets[slot_of(moment, step)] if step else None

        self._add_segments(workstation_id, start, end, now, total, step, buckets)
        if start is None and step is None and end == now:
            if state:
                total.add_metered(state)
        else:
            self._add_metered(workstation_id, start, end, total, bucket_for, step)
        ordered: list[tuple[float, Figures]] = [(slot, buckets[slot]) for slot in sorted(buckets)] if step else []
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

    def _add_metered(self, workstation_id, start, end, total, bucket_for, step) -> None:
        """Whole days from daily rollups, the hours left over from hourly ones, and
        the partial hours left at either edge from raw samples.

        A level coarser than the buckets asked for is skipped, so that each
        bucket is summed from rows no larger than itself.
        """
        levels = [(table, size) for table, size in ROLLUP_TABLES.items() if step is None or size <= step]
        self._resolve(workstation_id, start, end, levels, total, bucket_for, step)

    def _resolve(self, workstation_id, start, end, levels, total, bucket_for, step) -> None:
        if not levels:
            self._add_samples(workstation_id, start, end, total, bucket_for)
            return
        (table, size), finer = levels[0], levels[1:]
        first = None if start is None else math.ceil(start / size) * size
        last = slot_of(end, size)
        if first is not None and first >= last:
            self._resolve(workstation_id, start, end, finer, total, bucket_for, step)
            return
        clauses, params = ["workstation_id = ?", "start < ?"], [workstation_id, last]
        if first is not None:
            clauses.append("start >= ?")
            params.append(first)
        # Summed in SQL, per bucket when buckets are asked for: rows are many
        # (a year is 8760 hours) and Python is slow at adding them one by one.
        slot = f"(start / {int(step)}) * {int(step)}" if step else "0"
        for row in self._db.query(
            f"SELECT {slot} AS slot, SUM(cpu_seconds) AS cpu_seconds,"
            " SUM(memory_gb_seconds) AS memory_gb_seconds,"
            " SUM(gpu_utilized_seconds) AS gpu_utilized_seconds"
            f" FROM {table} WHERE " + " AND ".join(clauses) + " GROUP BY slot",
            params,
        ):
            total.add_metered(row)
            bucket = bucket_for(row["slot"])
            if bucket is not None:
                bucket.add_metered(row)
        if first is not None and start < first:
            self._resolve(workstation_id, start, first, finer, total, bucket_for, step)
        if last < end:
            self._resolve(workstation_id, last, end, finer, total, bucket_for, step)

    def _add_samples(self, workstation_id, start, end, total, bucket_for) -> None:
        for row in self._samples_overlapping(workstation_id, start, end):
            since = row["since"] if start is None else max(row["since"], start)
            overlap = min(row["sampled_at"], end) - since
            if overlap <= 0:
                continue
            share = overlap / (row["sampled_at"] - row["since"])
            total.add_metered(row, share)
            bucket = bucket_for(since)
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
            "SELECT * FROM usage_samples WHERE workstation_id = ? AND sampled_at > ? ORDER BY sampled_at LIMIT 1",
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
