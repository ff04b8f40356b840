"""An account's usage: per workstation and per day or month, agreeing with each workstation's own usage."""

from __future__ import annotations

import pytest

from cwhost.usage.account_report import month_of
from cwhost.usage.figures import DAY, HOUR
from drivers.base import GIB as GB
from tests.helpers import create_stopped
from tests.test_metering import T0, Meter


@pytest.fixture
def meter(tmp_path):
    meter = Meter(tmp_path)
    yield meter
    meter.close()


def _run(meter, ws_id, cpu_seconds):
    """Launch, burn ``cpu_seconds`` over an hour by the scripted counter, stop."""
    meter.services.lifecycle.launch(meter.principal, ws_id)
    pid = meter.pid(ws_id)
    meter.processes.set(pid, started=meter.clock.now, cpu_seconds=0.0, rss_bytes=GB)
    meter.sampler.sample()
    meter.clock.advance(HOUR)
    meter.processes.set(pid, started=meter.clock.now - HOUR, cpu_seconds=cpu_seconds, rss_bytes=GB)
    meter.sampler.sample()
    meter.services.lifecycle.stop(meter.principal, ws_id, force=True)


def test_per_workstation_and_per_day_agree_with_each_workstations_usage(meter):
    first, second = meter.create(), meter.create()
    _run(meter, first, 36.0)
    meter.clock.advance(DAY)
    _run(meter, second, 72.0)
    meter.services.lifecycle.delete(meter.principal, second)
    usage = meter.services.account_usage.report(meter.principal.account_id, None, None, "day")
    by_id = {w.id: w for w in usage.workstations}
    assert set(by_id) == {first, second} and by_id[second].deleted and not by_id[first].deleted
    for ws_id in (first, second):
        own = meter.usage(ws_id).total
        assert by_id[ws_id].figures.cpu_seconds == pytest.approx(own.cpu_seconds)
        assert by_id[ws_id].figures.storage_gb_seconds == pytest.approx(own.storage_gb_seconds, rel=1e-6)
    assert usage.total.cpu_seconds == pytest.approx(36.0 + 72.0)
    per_day = [(start, figures.cpu_seconds) for start, figures in usage.periods if figures.cpu_seconds]
    assert [round(cpu) for _, cpu in per_day] == [36, 72]
    assert per_day[1][0] - per_day[0][0] == DAY
    monthly = meter.services.account_usage.report(meter.principal.account_id, None, None, "month")
    assert {start for start, _ in monthly.periods} == {month_of(T0), month_of(T0 + DAY + 2 * HOUR)}
    assert sum(f.cpu_seconds for _, f in monthly.periods) == pytest.approx(108.0)


def test_a_window_leaves_out_what_was_gone_before_it(meter):
    old = meter.create()
    meter.services.lifecycle.delete(meter.principal, old)
    meter.clock.advance(DAY)
    new = meter.create()
    meter.clock.advance(HOUR)
    usage = meter.services.account_usage.report(meter.principal.account_id, T0 + DAY / 2, None, None)
    assert [w.id for w in usage.workstations] == [new] and usage.periods == []


def test_the_endpoint_answers_in_the_api_s_units_for_the_callers_account_only(client, alice, bob):
    ws = create_stopped(client, alice)
    answer = client.get("/v1/account/usage?granularity=day", headers=alice)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert [w["id"] for w in body["workstations"]] == [ws["id"]]
    assert body["storageGBHours"] > 0 and body["costUSD"] == pytest.approx(body["workstations"][0]["costUSD"])
    assert body["periods"] and body["from"] == ws["createdAt"]
    assert client.get("/v1/account/usage", headers=bob).get_json()["workstations"] == []
    for bad in ("granularity=hour", "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "colour=red"):
        assert client.get(f"/v1/account/usage?{bad}", headers=alice).status_code == 400


def test_figures_add_every_quantity_they_hold():
    """Figures.add names each field; a quantity added to Figures later must be added too."""
    from dataclasses import fields

    from cwhost.usage.figures import Figures

    one = Figures(**{spec.name: float(n + 1) for n, spec in enumerate(fields(Figures))})
    total = Figures()
    total.add(one)
    total.add(one)
    assert total == Figures(**{spec.name: 2.0 * (n + 1) for n, spec in enumerate(fields(Figures))})


@pytest.mark.parametrize(
    "window",
    ["from=0001-01-01T00:00:00%2B01:00", "from=9999-12-31T23:59:59-23:59", "to=0001-01-01T00:30:00%2B01:00"],
)
def test_a_window_outside_the_calendar_is_400(client, alice, window):
    ws = create_stopped(client, alice)
    answer = client.get(f"/v1/workstations/{ws['id']}/usage?{window}", headers=alice)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == "invalid_request"
