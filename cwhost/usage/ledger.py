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

How a window is answered from them is in ``usage_sums``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import sqlite_utils

from cwhost import inventory
from cwhost.db.database import Database
from cwhost.usage.figures import BUCKET_SECONDS, HOUR, Figures
from cwhost.usage.pricing import Pricing
from cwhost.usage.sums import IN_SET, LedgerSums


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
    tx.execute(
        "INSERT INTO usage_segments (workstation_id, started_at, ended_at, running, storage_gb, gpu)"
        " VALUES (?, ?, NULL, ?, ?, ?)",
        [workstation_id, at, int(running), storage_gb, gpu if running else None],
    )


def close_segment(tx: sqlite_utils.Database, workstation_id: str, at: float) -> None:
    tx.execute(
        "UPDATE usage_segments SET ended_at = MAX(started_at, ?) WHERE workstation_id = ? AND ended_at IS NULL",
        [at, workstation_id],
    )


# -- reading ------------------------------------------------------------------


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
        sums = self.sums([workstation_id], start, end, granularity)
        state = self._db.query_one("SELECT sampled_at FROM meter_state WHERE workstation_id = ?", [workstation_id])
        return UsageReport(
            total=sums.per_workstation[workstation_id],
            last_updated=state["sampled_at"] if state else None,
            start=start,
            end=sums.end,
            buckets=sums.buckets_in_order(),
        )

    def sums(
        self, ids, start: float | None = None, end: float | None = None, granularity: str | None = None
    ) -> LedgerSums:
        """Usage of the workstations ``ids`` over [start, end) (to now by default), per workstation and bucket."""
        now = self._clock()
        end = now if end is None else min(end, now)
        step = BUCKET_SECONDS.get(granularity or "")
        sums = LedgerSums(self._db, self._pricing, ids, start, end, now, step)
        sums.add_segments()
        if start is None and step is None and end == now:
            sums.add_running_totals()
        else:
            sums.add_metered()
        return sums

    def segments(self, ids) -> list[dict]:
        """Every billing segment of the workstations ``ids``, an open one with no ``ended_at``."""
        return self._db.query(
            f"SELECT workstation_id, started_at, ended_at, running, storage_gb, gpu FROM usage_segments WHERE {IN_SET}",
            {"ids": json.dumps(list(ids))},
        )

    def metered_to_now(self, ids) -> dict[str, Figures]:
        """All that the meter has read of each of the workstations ``ids``: its running totals."""
        now = self._clock()
        sums = LedgerSums(self._db, self._pricing, ids, None, now, now, None)
        sums.add_running_totals()
        return sums.per_workstation

    def totals_by_workstation(self) -> list[dict]:
        """Running metered totals and GPU seconds of every workstation, for /metrics."""
        owners = inventory.owners(self._db)
        totals = self._db.query(
            """SELECT w.workstation_id,
                      COALESCE(m.cpu_seconds, 0) AS cpu_seconds,
                      COALESCE(m.memory_gb_seconds, 0) AS memory_gb_seconds,
                      (SELECT COALESCE(SUM(COALESCE(s.ended_at, ?) - s.started_at), 0)
                         FROM usage_segments s
                        WHERE s.workstation_id = w.workstation_id AND s.running = 1 AND s.gpu IS NOT NULL)
                        AS gpu_seconds
                 FROM (SELECT value AS workstation_id FROM json_each(?)) w
                 LEFT JOIN meter_state m ON m.workstation_id = w.workstation_id""",
            [self._clock(), json.dumps([owner["workstation_id"] for owner in owners])],
        )
        account_of = {owner["workstation_id"]: owner["account"] for owner in owners}
        return [{**row, "account": account_of[row["workstation_id"]]} for row in totals]
