"""An account's usage and cost over a window: per workstation, and per day or per calendar month.

What a team lead asks first. Each workstation's figures are summed by the
usage ledger as its own usage endpoint's are (deleted workstations included),
so the two agree, but for all of the account's workstations in one pass;
periods are UTC days, or UTC calendar months made of those days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cwhost import inventory
from cwhost.db.database import Database
from cwhost.ids import rfc3339_to_unix
from cwhost.usage.figures import Figures
from cwhost.usage.ledger import Priced, PricedBucket, UsageLedger
from cwhost.usage.pricing import Pricing


@dataclass(frozen=True)
class WorkstationUsage:
    id: str
    name: str
    deleted: bool
    figures: Figures


@dataclass(frozen=True)
class AccountUsage:
    start: float
    end: float
    total: Figures
    workstations: list[WorkstationUsage]
    periods: list[tuple[float, Figures]]


def month_of(moment: float) -> float:
    day = datetime.fromtimestamp(moment, UTC)
    return datetime(day.year, day.month, 1, tzinfo=UTC).timestamp()


class AccountUsageReports:
    def __init__(self, db: Database, ledger: UsageLedger, clock=time.time):
        self._db = db
        self._ledger = ledger
        self._clock = clock

    def existed(self, account_id: str, start: float, end: float) -> list[dict]:
        """The account's workstations, deleted ones too, that existed at some moment of [start, end)."""
        return [row for row in inventory.ever_of_account(self._db, account_id) if _existed_within(row, start, end)]

    def report(self, account_id: str, start: float | None, end: float | None, granularity: str | None) -> AccountUsage:
        """Usage over [start, end) (from the account's first workstation to now by default)."""
        rows = inventory.ever_of_account(self._db, account_id)
        now = self._clock()
        end = now if end is None else min(end, now)
        if start is None:
            start = min((rfc3339_to_unix(r["created_at"]) for r in rows), default=end)
        kept = [row for row in rows if _existed_within(row, start, end)]
        sums = self._ledger.sums([row["id"] for row in kept], start, end, "day" if granularity else None)
        total, periods = Figures(), dict[float, Figures]()
        workstations = []
        for row in kept:
            figures = sums.per_workstation[row["id"]]
            total.add(figures)
            workstations.append(WorkstationUsage(row["id"], row["name"], row["deleted_at"] is not None, figures))
        for day, figures in sums.buckets_in_order():
            period = month_of(day) if granularity == "month" else day
            periods.setdefault(period, Figures()).add(figures)
        return AccountUsage(start, end, total, workstations, sorted(periods.items()))


def _existed_within(row: dict, start: float, end: float) -> bool:
    created = rfc3339_to_unix(row["created_at"])
    deleted = rfc3339_to_unix(row["deleted_at"]) if row["deleted_at"] else None
    return created < end and (deleted is None or deleted > start)


@dataclass(frozen=True)
class PricedWorkstationUsage(Priced):
    id: str
    name: str
    deleted: bool


@dataclass(frozen=True)
class PricedAccountUsage(Priced):
    """An account's usage as the API answers it (AccountUsageSchema serializes it)."""

    from_: float
    to: float
    workstations: list[PricedWorkstationUsage]
    periods: list[PricedBucket]

    @classmethod
    def of(cls, usage: AccountUsage, pricing: Pricing) -> PricedAccountUsage:
        return cls(
            **Priced.figures(usage.total, pricing),
            from_=usage.start,
            to=usage.end,
            workstations=[
                PricedWorkstationUsage(**Priced.figures(w.figures, pricing), id=w.id, name=w.name, deleted=w.deleted)
                for w in usage.workstations
            ],
            periods=[PricedBucket(**Priced.figures(f, pricing), start=start) for start, f in usage.periods],
        )
