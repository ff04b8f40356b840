"""What the dashboard shows of workstations: a list row (uptime, cost this month) and the usage charts.

Every figure is the ledger's, priced as the usage API prices it
(``PricedReport``), so the page and ``GET /v1/workstations/{id}/usage`` for
the same window agree to the last digit.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from markupsafe import Markup

from cwhost.config.server import Config
from cwhost.ids import rfc3339_to_unix, unix_to_rfc3339
from cwhost.model import Workstation
from cwhost.usage.figures import DAY, HOUR
from cwhost.usage.ledger import Priced, PricedReport, UsageLedger
from cwhost.usage.month_to_date import MonthToDateCosts

# The two charts of a workstation's page: by hour over the last day, by day over the last month.
WINDOWS = {"day": ("hour", DAY), "month": ("day", 30 * DAY)}
# The account chart's series, by their JSON names, from Priced.figures' names.
SERIES = {"cpuHours": "cpu_hours", "memoryGBHours": "memory_gb_hours", "gpuHours": "gpu_hours", "costUSD": "cost_usd"}


class Row(NamedTuple):  # not a frozen dataclass, whose fields are set one call each: 200 a list
    ws: Workstation
    uptime: str
    month_cost: str  # USD, to the hundredth of a cent
    # The row's HTML before the uptime and after the cost (RowParts).
    head: Markup
    tail: Markup


class RowParts(Protocol):
    """A list row's HTML that depends on the workstation's record alone (and the session's CSRF token)."""

    def __call__(self, ws: Workstation) -> tuple[Markup, Markup]: ...


def uptime(ws: Workstation, now: float) -> str:
    if ws.status != "running" or not ws.started_at:
        return ""
    minutes = int(now - rfc3339_to_unix(ws.started_at)) // 60
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def rows(workstations: list[Workstation], parts: RowParts, month_costs: MonthToDateCosts, now: float) -> list[Row]:
    """Each workstation with its uptime and its cost since the month began."""
    costs = month_costs.costs(workstations)
    return [Row(ws, uptime(ws, now), f"{costs[ws.id]:.4f}", *parts(ws)) for ws in workstations]


def chart(ws: Workstation, ledger: UsageLedger, config: Config, window: str, now: float) -> dict:
    """A window's buckets and total, as the usage API answers them for the same from, to and granularity."""
    granularity, span = WINDOWS[window]
    start = float(int((now - span) // HOUR * HOUR))
    end = float(int(now))
    report = PricedReport.of(
        ledger.report(ws.id, start, end, granularity), config.pricing, created_at=rfc3339_to_unix(ws.created_at)
    )
    return {
        "window": window,
        "granularity": granularity,
        "from": unix_to_rfc3339(start),
        "to": unix_to_rfc3339(end),
        "starts": [bucket.start for bucket in report.buckets],
        "cpuHours": [bucket.cpu_hours for bucket in report.buckets],
        "memoryGBHours": [bucket.memory_gb_hours for bucket in report.buckets],
        "gpuHours": [bucket.gpu_hours for bucket in report.buckets],
        "costUSD": [bucket.cost_usd for bucket in report.buckets],
        "total": {
            "cpuHours": report.cpu_hours,
            "memoryGBHours": report.memory_gb_hours,
            "gpuHours": report.gpu_hours,
            "costUSD": report.cost_usd,
        },
    }


def daily_by_workstation(domain, config: Config, account_id: str, start: float, now: float) -> dict:
    """Each of the account's workstations (deleted ones too) that existed since ``start``, by day, priced."""
    days = [start + i * DAY for i in range(int((now - start - 1) // DAY) + 1)]
    series = []
    for row in domain.account_usage.existed(account_id, start, now):
        report = domain.ledger.report(row["id"], start, now, "day")
        by_day = {bucket_start: Priced.figures(figures, config.pricing) for bucket_start, figures in report.buckets}
        priced = [by_day.get(day, {}) for day in days]
        series.append(
            {
                "id": row["id"],
                "name": row["name"],
                **{key: [day.get(name, 0.0) for day in priced] for key, name in SERIES.items()},
            }
        )
    return {"days": days, "end": now, "workstations": series}
