"""Each workstation's cost since its month began, for lists that show it for every row, every few seconds.

It is the workstation's cost to now less what it had cost when the month began. That part no longer
changes once the month is an hour old (long after the sampler's last reading of the previous month has
been written), so it is computed once per workstation and month, and kept. The cost to now is the
meter's running totals (a row per workstation) and the time its segments held storage and GPUs. Its
segments change only with its record, and each change of the record is a new Workstation (the store
reads it back after the commit): the closed segments' cost is kept with the record, in its ``derived``,
and only the open one's grows with the clock.
"""

from __future__ import annotations

import threading
import time

from cwhost.ids import unix_to_rfc3339
from cwhost.model import Workstation
from cwhost.usage.account_report import month_of
from cwhost.usage.figures import HOUR, Figures
from cwhost.usage.ledger import UsageLedger
from cwhost.usage.pricing import Pricing
from cwhost.usage.sums import held_by

# How long after a month begins the cost before it is taken as settled.
SETTLED_AFTER_SECONDS = HOUR


class MonthToDateCosts:
    def __init__(self, ledger: UsageLedger, pricing: Pricing, clock=time.time):
        self._ledger = ledger
        self._pricing = pricing
        self._clock = clock
        self._lock = threading.Lock()
        self._month: float | None = None
        # Each workstation's cost when self._month began, in USD.
        self._before_month: dict[str, float] = {}

    def costs(self, workstations: list[Workstation]) -> dict[str, float]:
        now = self._clock()
        month = month_of(now)
        ids = [ws.id for ws in workstations]
        if now - month < SETTLED_AFTER_SECONDS:
            sums = self._ledger.sums(ids, month, now).per_workstation
            return {ws_id: sums[ws_id].cost_usd(self._pricing) for ws_id in ids}
        month_began = unix_to_rfc3339(month)  # the records' times are of this one form, which sorts as text
        before = self._before(month, [ws for ws in workstations if ws.created_at < month_began])
        metered = self._ledger.metered_to_now(ids)
        held = self._held(workstations)
        return {
            ws.id: metered[ws.id].cost_usd(self._pricing) + held[ws.id].cost_at(now) - before.get(ws.id, 0.0)
            for ws in workstations
        }

    def _before(self, month: float, older: list[Workstation]) -> dict[str, float]:
        with self._lock:
            if self._month != month:
                self._month, self._before_month = month, {}
            known = self._before_month
            missing = [ws.id for ws in older if ws.id not in known]
        found: dict[str, float] = {}
        if missing:
            sums = self._ledger.sums(missing, None, month).per_workstation
            found = {ws_id: sums[ws_id].cost_usd(self._pricing) for ws_id in missing}
            with self._lock:
                if self._month == month:
                    known.update(found)
        return {**{ws.id: known[ws.id] for ws in older if ws.id in known}, **found}

    def _held(self, workstations: list[Workstation]) -> dict[str, _HeldCost]:
        missing = {ws.id: ws for ws in workstations if "held-cost" not in ws.derived}
        if missing:
            made = {ws_id: _HeldCost(self._pricing) for ws_id in missing}
            for segment in self._ledger.segments(missing):
                made[segment["workstation_id"]].add(segment)
            for ws_id, held in made.items():
                missing[ws_id].derived["held-cost"] = held
        return {ws.id: ws.derived["held-cost"] for ws in workstations}


class _HeldCost:
    """What a workstation's segments cost: the closed ones summed, the open one's rate by the second."""

    def __init__(self, pricing: Pricing):
        self._pricing = pricing
        self._closed = Figures()
        self._open: list[tuple[float, float]] = []  # (since, USD per second)

    def add(self, segment: dict) -> None:
        storage_gb, gpus, gpu_usd_per_hour = held = held_by(segment, self._pricing)
        if segment["ended_at"] is None:
            per_hour = storage_gb * self._pricing.storage_gb_hour_usd + gpus * gpu_usd_per_hour
            self._open.append((segment["started_at"], per_hour / HOUR))
        else:
            self._closed.add_held(segment["ended_at"] - segment["started_at"], *held)

    def cost_at(self, now: float) -> float:
        return self._closed.cost_usd(self._pricing) + sum(
            max(now - since, 0.0) * per_second for since, per_second in self._open
        )
