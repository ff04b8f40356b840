"""The dashboard list's cost this month: its kept part (the cost before the month began) gives the same
figure as the ledger summed over the month, in the month's first hour and after, and across a new month."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cwhost.usage.account_report import month_of
from cwhost.usage.figures import HOUR
from cwhost.usage.month_to_date import MonthToDateCosts
from drivers.base import GIB as GB
from tests.test_metering import Meter

DECEMBER = datetime(2023, 12, 1, tzinfo=UTC).timestamp()


@pytest.fixture
def meter(tmp_path):
    meter = Meter(tmp_path)
    meter.clock.now = DECEMBER - 2 * HOUR
    yield meter
    meter.close()


def _run_until(meter, ws_id, launched, moment):
    """Sample every 10 minutes until ``moment``, the guest using half a core and 2 GB since its launch."""
    pid = meter.pid(ws_id)
    while meter.clock.now < moment:
        meter.clock.advance(600)
        used = (meter.clock.now - launched) * 0.5
        meter.processes.set(pid, started=launched, cpu_seconds=used, rss_bytes=2 * GB)
        meter.sampler.sample()


def _ledger_month_cost(meter, ws_id) -> float:
    now = meter.clock.now
    sums = meter.services.ledger.sums([ws_id], month_of(now), now)
    return sums.per_workstation[ws_id].cost_usd(meter.config.pricing)


def test_the_cost_this_month_is_the_ledger_s_before_and_after_the_kept_part_settles(meter):
    ws_id = meter.create(gpu="NVIDIA L40S")
    meter.services.lifecycle.launch(meter.principal, ws_id)
    costs = MonthToDateCosts(meter.services.ledger, meter.config.pricing, meter.clock)
    ws = meter.services.store.load(meter.principal, ws_id)
    _run_until(meter, ws_id, DECEMBER - 2 * HOUR, DECEMBER - HOUR)
    november = costs.costs([ws])[ws_id]
    assert november == pytest.approx(_ledger_month_cost(meter, ws_id)) and november > 0
    for moment in (DECEMBER + HOUR / 2, DECEMBER + 2 * HOUR, DECEMBER + 5 * HOUR):
        _run_until(meter, ws_id, DECEMBER - 2 * HOUR, moment)
        december = costs.costs([ws])[ws_id]
        assert december == pytest.approx(_ledger_month_cost(meter, ws_id), rel=1e-9)
    # Five hours of December at half a core, 2 GB and a GPU, with the disk: less than the whole run so far.
    all_time = meter.services.ledger.sums([ws_id]).per_workstation[ws_id].cost_usd(meter.config.pricing)
    assert 0 < december < all_time
    # Stopped for an hour (the disk alone costs), then launched again: each record counts its own segments.
    meter.services.lifecycle.stop(meter.principal, ws_id, force=True)
    meter.clock.advance(HOUR)
    stopped = meter.services.store.load(meter.principal, ws_id)
    assert costs.costs([stopped])[ws_id] == pytest.approx(_ledger_month_cost(meter, ws_id), rel=1e-9)
    meter.services.lifecycle.launch(meter.principal, ws_id)
    relaunched_at = meter.clock.now
    _run_until(meter, ws_id, relaunched_at, relaunched_at + HOUR)
    running = meter.services.store.load(meter.principal, ws_id)
    assert costs.costs([running])[ws_id] == pytest.approx(_ledger_month_cost(meter, ws_id), rel=1e-9)


def test_a_workstation_made_this_month_counts_from_its_creation(meter):
    meter.clock.now = DECEMBER + 3 * HOUR
    ws_id = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws_id)
    _run_until(meter, ws_id, DECEMBER + 3 * HOUR, DECEMBER + 4 * HOUR)
    costs = MonthToDateCosts(meter.services.ledger, meter.config.pricing, meter.clock)
    ws = meter.services.store.load(meter.principal, ws_id)
    assert costs.costs([ws])[ws_id] == pytest.approx(_ledger_month_cost(meter, ws_id), rel=1e-9)
