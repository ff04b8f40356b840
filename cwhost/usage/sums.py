"""The usage ledger summed over a set of workstations and a window [from, to).

Time-based quantities come from the segments. Metered ones come from daily
rollups for the whole days inside the window, hourly ones for the whole hours
left, minute ones for the whole minutes left, and raw samples for the partial
minutes at its edges; each spreads a reading evenly over the interval it
covers, so they agree with each other. A partial minute of the last day with
fewer readings outside the window than inside (a window to now, most often)
is its rollup less the readings outside. Minutes from before the minute
rollups began (a server upgraded since) come from the samples; partial edge
hours older than the raw samples' retention count nothing.

Each query covers the whole set and is summed in SQL, once per workstation
and once per bucket: an account's year by day is a dozen queries whatever the
number of its workstations, and Python adds hundreds of rows rather than tens
of thousands.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

from cwhost.db.database import Database
from cwhost.db.schema import ROLLUP_TABLES
from cwhost.usage.figures import DAY, HOUR, Figures, slot_of, split_by_step
from cwhost.usage.pricing import Pricing

IN_SET = "workstation_id IN (SELECT value FROM json_each(:ids))"
METERED = ("cpu_seconds", "memory_gb_seconds", "gpu_utilized_seconds")


def sample_shares(start: str, end: str) -> str:
    """Each sample's share inside (``:start``, ``:end``], and where that share begins.

    The samples are those read inside the window and each workstation's
    first read after it, whose interval may reach back into it. A sample of
    no duration has no share and is left out, as it holds nothing.
    """
    meeting = f"""
        SELECT workstation_id, since, sampled_at, cpu_seconds, memory_gb_seconds, gpu_utilized_seconds
          FROM usage_samples WHERE {IN_SET} AND sampled_at > :{start} AND sampled_at <= :{end}
        UNION ALL
        SELECT s.workstation_id, s.since, s.sampled_at, s.cpu_seconds, s.memory_gb_seconds, s.gpu_utilized_seconds
          FROM json_each(:ids) AS j JOIN usage_samples AS s ON s.rowid = (
               SELECT rowid FROM usage_samples WHERE workstation_id = j.value AND sampled_at > :{end}
                ORDER BY sampled_at LIMIT 1)"""
    return f"""
        SELECT workstation_id, cpu_seconds, memory_gb_seconds, gpu_utilized_seconds,
               MAX(since, :{start}) AS counted_from,
               (MIN(sampled_at, :{end}) - MAX(since, :{start})) / (sampled_at - since) AS share
          FROM ({meeting})"""


SAMPLE_SHARES = sample_shares("start", "end")
# The raw samples are kept at least a day (the configuration's least
# retention): those read after a slot that began an hour before that are all
# there, with some room for a tick that commits after a report's clock reading.
RECENT_SLOTS_SECONDS = DAY - HOUR


def held_by(segment: dict, pricing: Pricing) -> tuple[float, float, float]:
    """What a segment holds, as Figures.add_held takes it: its storage GB, its GPUs, their USD per hour."""
    gpus = 1 if segment["running"] and segment["gpu"] else 0
    return segment["storage_gb"], gpus, pricing.gpu_rate(segment["gpu"]) if gpus else 0.0


def _summed(factor: str = "") -> str:
    return ", ".join(f"SUM({name}{factor}) AS {name}" for name in METERED)


class LedgerSums:
    """Usage of a set of workstations over [start, end): per workstation, and per bucket of ``step`` seconds."""

    def __init__(self, db: Database, pricing: Pricing, ids, start: float | None, end: float, now: float, step):
        self.per_workstation: defaultdict[str, Figures] = defaultdict(Figures)
        self.buckets: defaultdict[int, Figures] = defaultdict(Figures)
        self._db = db
        self._pricing = pricing
        self._params = {"ids": json.dumps(list(ids)), "start": -math.inf if start is None else start, "end": end}
        self.end = end
        self._start, self._now, self._step = start, now, step
        self._rollup_starts: dict[str, int] = {}

    def buckets_in_order(self) -> list[tuple[float, Figures]]:
        return [(slot, self.buckets[slot]) for slot in sorted(self.buckets)]

    def add_segments(self) -> None:
        """Storage and GPU time, each part at its own configuration (an open segment runs to now)."""
        if not self._step:
            self._add_segment_totals()
            return
        held_by_slot = _HeldBySlot(self._step)
        for row in self._db.query(
            f"SELECT workstation_id, started_at, ended_at, running, storage_gb, gpu FROM usage_segments"
            f" WHERE {IN_SET} AND started_at < :end AND (ended_at IS NULL OR ended_at > :start)",
            self._params,
        ):
            held_from = row["started_at"] if self._start is None else max(row["started_at"], self._start)
            held_to = min(row["ended_at"] if row["ended_at"] is not None else self._now, self.end)
            if held_to <= held_from:
                continue
            held = held_by(row, self._pricing)
            self.per_workstation[row["workstation_id"]].add_held(held_to - held_from, *held)
            held_by_slot.add(self.buckets, held_from, held_to, held)
        held_by_slot.spread(self.buckets)

    def _add_segment_totals(self) -> None:
        """Without buckets, summed in SQL per workstation and GPU model: a list of 200 reads 200 rows or so,
        whatever the number of their launches."""
        for row in self._db.query(
            f"""SELECT workstation_id, gpu, SUM(held) AS seconds, SUM(held * storage_gb) AS storage_gb_seconds
                  FROM (SELECT workstation_id, storage_gb, CASE WHEN running THEN gpu END AS gpu,
                               MIN(COALESCE(ended_at, :now), :end) - MAX(started_at, :start) AS held
                          FROM usage_segments
                         WHERE {IN_SET} AND started_at < :end AND (ended_at IS NULL OR ended_at > :start))
                 WHERE held > 0 GROUP BY workstation_id, gpu""",
            {**self._params, "now": self._now},
        ):
            figures = self.per_workstation[row["workstation_id"]]
            figures.storage_gb_seconds += row["storage_gb_seconds"]
            if row["gpu"]:
                figures.add_held(row["seconds"], 0.0, 1, self._pricing.gpu_rate(row["gpu"]))

    def add_running_totals(self) -> None:
        """The meter's running totals: all that was metered, for a window from the start to now."""
        for row in self._db.query(f"SELECT * FROM meter_state WHERE {IN_SET}", self._params):
            self.per_workstation[row["workstation_id"]].add_metered(row)

    def add_metered(self) -> None:
        """Rollups of each level no coarser than the buckets asked for, so that a bucket sums rows within it."""
        levels = [(table, size) for table, size in ROLLUP_TABLES.items() if not self._step or size <= self._step]
        self._rollup_starts = {row["rollup"]: row["since"] for row in self._db.query("SELECT * FROM rollup_starts")}
        self._resolve(self._start, self.end, levels)

    def _resolve(self, start: float | None, end: float, levels: list[tuple[str, int]]) -> None:
        if not levels:
            self._add_samples(start, end)
            return
        (table, size), finer = levels[0], levels[1:]
        rollup_since = self._rollup_starts.get(table)
        if rollup_since is not None and (start is None or start < rollup_since):
            # It begins before this rollup was kept (a server upgraded since).
            self._resolve(start, end, finer)
            return
        first = None if start is None else math.ceil(start / size) * size
        last = slot_of(end, size)
        if start is not None and first is not None and first > last:
            # It starts after the start of the slot it ends in: only a part of one slot.
            self._add_part(table, size, start, end, finer)
            return
        if first is None or first < last:
            self._add_whole_slots(table, first, last)
        if first is not None and start is not None and start < first:
            self._add_part(table, size, start, first, finer)
        if last < end:
            self._add_part(table, size, last, end, finer)

    def _add_part(self, table: str, size: int, start: float, end: float, finer: list[tuple[str, int]]) -> None:
        """[start, end) within one slot: from finer levels, or from the samples it holds or those it leaves out.

        A recent slot's rollup is kept current every tick, so when the slot
        has fewer readings outside the part than inside (a report to now,
        most often), the rollup less those is the cheaper sum.
        """
        if finer:
            self._resolve(start, end, finer)
            return
        slot = slot_of(start, size)
        outside = (start - slot) + max(0.0, min(self._now, slot + size) - end)
        if slot >= self._now - RECENT_SLOTS_SECONDS and outside < end - start:
            self._add_slot_less_outside(table, size, slot, start, end)
        else:
            self._add_samples(start, end)

    def _add_whole_slots(self, table: str, first: int | None, last: int) -> None:
        where = f"{IN_SET} AND start < :last" + ("" if first is None else " AND start >= :first")
        self._add_grouped(
            lambda key: f"SELECT {key} AS key, {_summed()} FROM {table} WHERE {where} GROUP BY key",
            {**self._params, "first": first, "last": last},
            moment="start",
        )

    def _add_slot_less_outside(self, table: str, size: int, slot: int, start: float, end: float) -> None:
        """The slot's rollup less the shares of its readings before ``start`` and after ``end``.

        One statement, so the rollup and the samples come from one snapshot
        even while the sampler commits.
        """
        less = ", ".join(f"-{name} * share" for name in METERED)
        parts = [f"SELECT workstation_id, {', '.join(METERED)} FROM {table} WHERE {IN_SET} AND start = :slot"]
        # An empty side is left out: it would still look up each workstation's first reading after it.
        sides = ([("slot", "start")] if start > slot else []) + ([("end", "slot_end")] if end < slot + size else [])
        for side_start, side_end in sides:
            parts.append(f"SELECT workstation_id, {less} FROM ({sample_shares(side_start, side_end)}) WHERE share > 0")
        union = " UNION ALL ".join(parts)
        self._add_grouped(
            lambda key: f"SELECT {key} AS key, {_summed()} FROM ({union}) GROUP BY key",
            {**self._params, "slot": slot, "start": start, "end": end, "slot_end": slot + size},
            moment=":slot",
        )

    def _add_samples(self, start: float | None, end: float) -> None:
        self._add_grouped(
            lambda key: (
                f"SELECT {key} AS key, {_summed(' * share')} FROM ({SAMPLE_SHARES}) WHERE share > 0 GROUP BY key"
            ),
            {**self._params, "start": -math.inf if start is None else start, "end": end},
            moment="counted_from",
        )

    def _add_grouped(self, query_by, params: dict, moment: str) -> None:
        """Run a summing query grouped by workstation, and by the bucket of ``moment`` when buckets are asked for."""
        for row in self._db.query(query_by("workstation_id"), params):
            self.per_workstation[row["key"]].add_metered(row)
        if self._step:
            step = int(self._step)
            for row in self._db.query(query_by(f"CAST({moment} / {step} AS INTEGER) * {step}"), params):
                self.buckets[row["key"]].add_metered(row)


class _HeldBySlot:
    """Segments' storage and GPU time spread over buckets.

    A segment adds its partial buckets directly, and a change of rate at each
    end of the whole buckets between; one sweep then applies the rates, so a
    year of days costs one pass for the whole set rather than one per segment.
    """

    def __init__(self, step: int):
        self._step = step
        # Per slot: the change of storage GB, GPUs, GPU USD per hour, and of the number of segments held.
        self._changes: defaultdict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])

    def add(self, buckets, start: float, end: float, held: tuple[float, float, float]) -> None:
        step = self._step
        first, last = math.ceil(start / step) * step, slot_of(end, step)
        if first >= last:
            for slot, seconds in split_by_step(start, end, step):
                buckets[slot].add_held(seconds, *held)
            return
        if start < first:
            buckets[first - step].add_held(first - start, *held)
        if last < end:
            buckets[last].add_held(end - last, *held)
        for slot, sign in ((first, 1), (last, -1)):
            change = self._changes[slot]
            for n, rate in enumerate((*held, 1)):
                change[n] += sign * rate

    def spread(self, buckets) -> None:
        rates = [0.0, 0.0, 0.0, 0.0]
        slots = sorted(self._changes)
        for here, following in zip(slots, slots[1:], strict=False):
            rates = [rate + change for rate, change in zip(rates, self._changes[here], strict=True)]
            if not rates[3]:
                # Nothing held: start again from exact zeros rather than a float's remainder.
                rates = [0.0, 0.0, 0.0, 0.0]
                continue
            for slot in range(here, following, self._step):
                buckets[slot].add_held(self._step, *rates[:3])
