"""Minute rollups: reports equal the readings across the upgrade that began them, and old minutes go with the samples.

An upgraded server has readings but no minute rows for them: its reports
must take those minutes from the samples, and the minutes after the upgrade
from the rows. Each workstation is read at irregular intervals (a second to
ten minutes) for six hours, the server upgraded after three.
"""

from __future__ import annotations

import random

import pytest

from cwhost.accounts.tokens import ensure_account
from cwhost.db.database import Database
from cwhost.db.schema import migrations
from cwhost.ids import unix_to_rfc3339
from cwhost.usage.account_report import AccountUsageReports
from cwhost.usage.figures import DAY, HOUR
from drivers.base import GIB as GB
from cwhost.usage.ledger import UsageLedger
from cwhost.usage.metering import MeterRecorder, ProcessReading
from tests.helpers import make_config
from tests.test_ledger_sums import _days, _reference
from tests.test_metering import T0, Clock

IDS = ("ws-min0", "ws-min1")


def _add_workstations(db, account_id):
    with db.write() as tx:
        for ws_id in IDS:
            tx["workstations"].insert(
                {"id": ws_id, "account_id": account_id, "name": ws_id, "status": "running", "cpu_cores": 4,
                 "memory_gb": 8, "storage_gb": 10, "region": "local", "created_at": unix_to_rfc3339(T0),
                 "idle_timeout_minutes": 0, "running_timeout_minutes": 0}
            )


def _read(recorder, rng, state, until):
    """Read both workstations at irregular moments up to ``until``; ``state`` carries counters on."""
    while state["now"] < until:
        readings = []
        for n, ws_id in enumerate(IDS):
            state["cpu"][n] += rng.uniform(0, 2) * 10
            readings.append((ws_id, ProcessReading(100 + n, T0, state["cpu"][n], int(rng.uniform(1, 3) * GB)),
                             rng.choice([None, rng.uniform(0, 100)])))
        recorder.record(state["now"], readings)
        state["now"] += rng.choice([1, 1, 10, 10, 45, 600]) * rng.uniform(0.5, 1.5)


def _upgrade(db):
    """Take the database back to before minute rollups, as an older server left it, then migrate."""
    with db.write() as tx:
        tx.conn.execute("DROP TABLE usage_minutely")
        tx.conn.execute("DROP TABLE rollup_starts")
        tx.conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0011_usage_minutely'")
    migrations.apply(db.db)


def _metered(db, config, ws_id, start, end):
    """The readings spread by hand over [start, end): the reference of tests/test_ledger_sums.py, day by day."""
    by_day = [_reference(db, config.pricing, ws_id, start, end, day)[:3] for day in _days(start, end)]
    return [sum(column) for column in zip(*by_day, strict=True)]


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    rng = random.Random(11)
    config = make_config(tmp_path_factory.mktemp("minutes") / "data")
    db = Database(config.database_path)
    db.migrate()
    account_id = ensure_account(db, "team")
    _add_workstations(db, account_id)
    recorder = MeterRecorder(db, retention_seconds=365 * DAY)
    state = {"now": T0 + 600.5, "cpu": [0.0, 0.0]}
    _read(recorder, rng, state, T0 + 3 * HOUR)
    last_before = db.query_row("SELECT MAX(sampled_at) AS at FROM usage_samples")["at"]
    _upgrade(db)
    _read(recorder, rng, state, T0 + 6 * HOUR)
    yield db, config, account_id, last_before, state["now"]
    db.close()


def test_the_upgrade_begins_minute_rollups_at_the_minute_after_the_last_reading(upgraded):
    db, _, _, last_before, _ = upgraded
    since = db.query_row("SELECT since FROM rollup_starts WHERE rollup = 'usage_minutely'")["since"]
    assert since == (int(last_before) // 60 + 1) * 60
    assert db.query_row("SELECT MIN(start) AS start FROM usage_minutely")["start"] < since


def test_reports_across_the_upgrade_equal_the_readings(upgraded):
    db, config, account_id, last_before, last = upgraded
    rng = random.Random(5)
    windows = [(T0, last), (last_before - 100.25, last_before + 3000.5), (last_before + 61, last - 1)]
    windows += [(start, start + rng.uniform(30, 3 * HOUR)) for start in (rng.uniform(T0, last) for _ in range(30))]
    for now in (last, last - 1800.5):
        clock = Clock()
        clock.advance(now - T0)
        ledger = UsageLedger(db, config.pricing, clock)
        accounts = AccountUsageReports(db, ledger, clock)
        for start, end in windows:
            end = min(end, now)
            if end <= start:
                continue
            by_id = {usage.id: usage.figures for usage in accounts.report(account_id, start, end, "day").workstations}
            for ws_id in IDS:
                expected = _metered(db, config, ws_id, start, end)
                shown = by_id[ws_id]
                got = [shown.cpu_seconds, shown.memory_gb_seconds, shown.gpu_utilized_seconds]
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-6), (ws_id, now, start, end)
                own = ledger.report(ws_id, start, end, "hour").total
                got = [own.cpu_seconds, own.memory_gb_seconds, own.gpu_utilized_seconds]
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-6), (ws_id, now, start, end)


def test_minutes_older_than_the_samples_retention_are_removed_with_them(tmp_path):
    config = make_config(tmp_path / "data")
    db = Database(config.database_path)
    db.migrate()
    _add_workstations(db, ensure_account(db, "team"))
    recorder = MeterRecorder(db, retention_seconds=DAY)
    state = {"now": T0 + 0.5, "cpu": [0.0, 0.0]}
    _read(recorder, random.Random(3), state, T0 + 2 * DAY)
    cutoff = db.query_row("SELECT MAX(sampled_at) AS at FROM usage_samples")["at"] - DAY
    oldest_minute = db.query_row("SELECT MIN(start) AS at FROM usage_minutely")["at"]
    # Gone up to the minute before the samples' cutoff; kept from there (readings come at most 15 minutes apart).
    assert cutoff - 60 - 60 <= oldest_minute <= cutoff + 900
    hours = db.query_row("SELECT COUNT(*) AS n FROM usage_hourly")["n"]
    assert hours >= 2 * 48  # the hourly rollups are kept
