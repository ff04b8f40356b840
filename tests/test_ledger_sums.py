"""Reports over any window equal a brute-force sum of the raw readings and segments.

Three workstations are metered for four days at irregular intervals (gaps of a
second to three hours, readings that cross hour and day boundaries, a restart
of the VM), with segments of different storage and GPUs. The ledger answers
from rollups, samples and segments; the reference spreads each raw reading
evenly over the interval it covers and each segment over its time, clipped to
the window, with nothing but the readings themselves. Nothing is pruned:
retention is a year.
"""

from __future__ import annotations

import random

import pytest

from cwhost.accounts.tokens import ensure_account
from cwhost.db.database import Database
from cwhost.ids import unix_to_rfc3339
from cwhost.usage.account_report import AccountUsageReports
from cwhost.usage.figures import DAY, HOUR
from drivers.base import GIB as GB
from cwhost.usage.ledger import UsageLedger, close_segment, open_segment
from cwhost.usage.metering import MeterRecorder, ProcessReading
from tests.helpers import make_config
from tests.test_metering import T0, Clock

DAYS = 4
GPU_RATES = {"NVIDIA L40S": 1.6, "Other": 1.0}


NOW = T0 + DAYS * DAY + 5 * HOUR + 17.25


def _clock_at_now():
    clock = Clock()
    clock.advance(NOW - T0)
    return clock


def _metered_workstation(db, recorder, rng, account_id, ws_id):
    with db.write() as tx:
        tx["workstations"].insert(
            {"id": ws_id, "account_id": account_id, "name": ws_id, "status": "running", "cpu_cores": 4,
             "memory_gb": 8, "storage_gb": 10, "region": "local", "created_at": unix_to_rfc3339(T0),
             "idle_timeout_minutes": 0, "running_timeout_minutes": 0}
        )
    readings = []
    pid, started, cpu, now = 100, T0 + rng.uniform(0, 600), 0.0, T0 + 700
    while now < NOW - 60:
        if rng.random() < 0.03:
            pid, started, cpu = pid + 1, now - rng.uniform(0, 30), 0.0  # the VM started again
        cpu += rng.uniform(0, 3) * (now - started if cpu == 0 else 1)
        reading = ProcessReading(pid, started, cpu, int(rng.uniform(0.5, 4) * GB))
        recorder.record(now, [(ws_id, reading, rng.choice([None, rng.uniform(0, 100)]))])
        readings.append(now)
        now += rng.choice([1, 10, 10, 10, 600, 3 * HOUR]) * rng.uniform(0.5, 1.5)
    return readings


def _segments(db, rng, ws_id):
    at = T0 + rng.uniform(0, 3600)
    with db.write() as tx:
        while at < NOW:
            close_segment(tx, ws_id, at)
            open_segment(tx, ws_id, at, rng.random() < 0.6, rng.choice([10, 25, 100]), rng.choice([None, *GPU_RATES]))
            at += rng.choice([rng.uniform(0.2, 3), rng.uniform(20, 60)]) * HOUR


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory):
    rng = random.Random(20261130)
    config = make_config(tmp_path_factory.mktemp("ledger") / "data", pricing={"gpu_hour_usd": GPU_RATES})
    db = Database(config.database_path)
    db.migrate()
    account_id = ensure_account(db, "team")
    recorder = MeterRecorder(db, retention_seconds=365 * DAY)
    ids = [f"ws-sum{n}" for n in range(3)]
    for ws_id in ids:
        _metered_workstation(db, recorder, rng, account_id, ws_id)
        _segments(db, rng, ws_id)
    yield db, config.pricing, account_id, ids
    db.close()


def _overlap(a_start, a_end, b_start, b_end):
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def _reference(db, pricing, ws_id, start, end, day):
    """cpu, memory GB-s, GPU-utilised s, storage GB-s, GPU s, GPU cost within [start, end) and the day."""
    lo, hi = max(start, day), min(end, day + DAY)
    figures = [0.0] * 6
    for row in db.query("SELECT * FROM usage_samples WHERE workstation_id = ?", [ws_id]):
        share = _overlap(row["since"], row["sampled_at"], lo, hi) / (row["sampled_at"] - row["since"])
        for n, name in enumerate(("cpu_seconds", "memory_gb_seconds", "gpu_utilized_seconds")):
            figures[n] += (row[name] or 0.0) * share
    for row in db.query("SELECT * FROM usage_segments WHERE workstation_id = ?", [ws_id]):
        seconds = _overlap(row["started_at"], row["ended_at"] or NOW, lo, hi)
        figures[3] += row["storage_gb"] * seconds
        if row["running"] and row["gpu"]:
            figures[4] += seconds
            figures[5] += seconds / HOUR * pricing.gpu_rate(row["gpu"])
    return figures


def _as_list(figures):
    return [figures.cpu_seconds, figures.memory_gb_seconds, figures.gpu_utilized_seconds,
            figures.storage_gb_seconds, figures.gpu_seconds, figures.gpu_cost_usd]


def _windows(db, rng):
    yield None, None
    # Ending in the gap before a restarted VM's first reading: that reading begins after the window.
    for row in db.query(
        "SELECT s.since FROM usage_samples s WHERE s.since > (SELECT MAX(p.sampled_at) FROM usage_samples p"
        " WHERE p.workstation_id = s.workstation_id AND p.sampled_at < s.sampled_at) LIMIT 3"
    ):
        yield row["since"] - 2 * HOUR, row["since"] - 0.5
    yield T0 + DAY, T0 + 3 * DAY  # whole days
    yield T0 + DAY + 3 * HOUR, T0 + 2 * DAY + 7 * HOUR  # whole hours
    yield T0 + 0.5, NOW  # all of it but half a second
    for _ in range(12):
        start = T0 + rng.uniform(0, DAYS * DAY)
        yield start, start + rng.choice([rng.uniform(1, 120), rng.uniform(HOUR, 2 * DAY)])


def _days(start, end):
    return range(int(start // DAY * DAY), int(end), DAY)


def test_each_workstations_report_and_the_accounts_equal_the_readings_spread_by_hand(ledger_db):
    db, pricing, account_id, ids = ledger_db
    ledger = UsageLedger(db, pricing, _clock_at_now())
    accounts = AccountUsageReports(db, ledger, _clock_at_now())
    for start, end in _windows(db, random.Random(7)):
        lo, hi = start if start is not None else T0, min(end if end is not None else NOW, NOW)
        expected = {ws_id: {day: _reference(db, pricing, ws_id, lo, hi, day) for day in _days(lo, hi)} for ws_id in ids}
        account = accounts.report(account_id, start, end, "day")
        by_id = {usage.id: usage.figures for usage in account.workstations}
        for ws_id in ids:
            whole = [sum(column) for column in zip(*expected[ws_id].values(), strict=True)]
            assert _as_list(by_id[ws_id]) == pytest.approx(whole, rel=1e-9, abs=1e-6), (ws_id, start, end)
            own = ledger.report(ws_id, start, end, "day")
            assert _as_list(own.total) == pytest.approx(whole, rel=1e-9, abs=1e-6), (ws_id, start, end)
            own_days = {day: _as_list(figures) for day, figures in own.buckets}
            for day, figures in expected[ws_id].items():
                assert own_days.get(day, [0.0] * 6) == pytest.approx(figures, rel=1e-9, abs=1e-6), (ws_id, day)
        account_days = {day: _as_list(figures) for day, figures in account.periods}
        for day in _days(lo, hi):
            summed = [sum(column) for column in zip(*(expected[ws_id][day] for ws_id in ids), strict=True)]
            assert account_days.get(day, [0.0] * 6) == pytest.approx(summed, rel=1e-9, abs=1e-6), (day, start, end)


def test_a_workstations_running_total_equals_its_report_from_the_start(ledger_db):
    db, pricing, _, ids = ledger_db
    ledger = UsageLedger(db, pricing, _clock_at_now())
    for ws_id in ids:
        running_total = ledger.report(ws_id).total
        from_the_start = ledger.report(ws_id, T0 - DAY, None).total
        assert _as_list(running_total) == pytest.approx(_as_list(from_the_start), rel=1e-9)


def _moments_with_readings_after_them_in_their_hour(db):
    """Moments late, midway and early in hours that have readings both before and after them."""
    moments = []
    for row in db.query(
        "SELECT CAST(sampled_at / 3600 AS INTEGER) * 3600 AS hour FROM usage_samples"
        " GROUP BY hour HAVING COUNT(*) > 3 ORDER BY hour"
    )[::4]:
        for into in (3599.25, 2400.5, 1800.75, 7.5):
            moment = row["hour"] + into
            before, after = (
                db.query_row(f"SELECT COUNT(*) AS n FROM usage_samples WHERE since < ? AND sampled_at {op} ?",
                             [row["hour"] + HOUR, moment])["n"]
                for op in ("<=", ">")
            )
            if before and after:
                moments.append(moment)
    return moments


def test_windows_inside_recent_hours_equal_the_readings_though_some_came_after_now(ledger_db):
    """A partial minute with few readings outside the window is its rollup less those: they must come off exactly.

    Readings after a window's end are what a tick committed after the
    request began; here, the clock is set back into the data, so most hours
    have many. The windows start and end early, midway and late in hours.
    """
    db, pricing, account_id, ids = ledger_db
    moments = _moments_with_readings_after_them_in_their_hour(db)
    assert len(moments) >= 20
    for moment in moments:
        clock = Clock()
        clock.advance(moment - T0)
        ledger = UsageLedger(db, pricing, clock)
        accounts = AccountUsageReports(db, ledger, clock)
        hour = moment // HOUR * HOUR
        for start, end in ((None, None), (moment - 1.5 * DAY, None), (moment - 3 * HOUR, moment - 3.25),
                           (moment - 2 * HOUR, moment + DAY), (moment - 100, None), (hour, None),
                           (hour + 5.5, None), (hour + 5.5, moment - 2), (hour - 2 * HOUR + 30, hour - HOUR + 20)):
            lo, hi = start if start is not None else T0, moment if end is None else min(end, moment)
            if hi <= lo:
                continue
            expected = {ws_id: {day: _reference(db, pricing, ws_id, lo, hi, day) for day in _days(lo, hi)}
                        for ws_id in ids}
            by_id = {usage.id: usage.figures for usage in accounts.report(account_id, start, end, "day").workstations}
            for ws_id in ids:
                whole = [sum(column) for column in zip(*expected[ws_id].values(), strict=True)]
                # The account's report leaves out a workstation made after the window.
                shown = _as_list(by_id[ws_id]) if ws_id in by_id else [0.0] * 6
                assert shown == pytest.approx(whole, rel=1e-9, abs=1e-6), (ws_id, moment, start)
                own = ledger.report(ws_id, start, end, "hour")
                assert _as_list(own.total) == pytest.approx(whole, rel=1e-9, abs=1e-6), (ws_id, moment, start)
