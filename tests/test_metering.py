"""The usage ledger's arithmetic, with a controlled clock and scripted process counters."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from cwhost.accounts.tokens import Principal, create_key, ensure_account
from cwhost.app import build_services
from cwhost.db.database import Database
from cwhost.model import domain_name
from cwhost.usage.figures import DAY, HOUR
from drivers.base import GIB as GB
from cwhost.usage.metering import MeterRecorder, ProcessReading
from cwhost.usage.sampler import GpuReader, Sampler, normalize_pci_address
from drivers.base import HostInfo
from drivers.fake.driver import FakeDriver
from tests.helpers import make_config, power_off_fake_guests

T0 = 1_700_000_000.0 - (1_700_000_000.0 % DAY)  # the start of a UTC day


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class ScriptedProcesses:
    """Counters the test sets, standing in for psutil, keyed by the real guest pid."""

    def __init__(self):
        self.by_pid: dict[int, ProcessReading] = {}

    def set(self, pid, started, cpu_seconds, rss_bytes):
        self.by_pid[pid] = ProcessReading(pid, started, cpu_seconds, rss_bytes)

    def read(self, pid):
        return self.by_pid.get(pid)

    def keep_only(self, pids):
        """Nothing is held open between ticks here."""


class NoGpus:
    def utilization(self):
        return {}


class Meter:
    """A service and a sampler sharing one database, driver and clock."""

    def __init__(self, tmp_path, **config_overrides):
        self.clock = Clock()
        self.config = make_config(tmp_path / "data", **config_overrides)
        self.db = Database(self.config.database_path)
        self.db.migrate()
        fake = self.config.driver.fake
        self.driver = FakeDriver(
            self.config.data_dir / "fake-driver",
            HostInfo(fake.cpu_cores, fake.memory_gb, fake.storage_gb, fake.gpus),
        )
        self.processes = ScriptedProcesses()
        self.gpus = NoGpus()
        self.services = build_services(
            self.db, self.driver, self.config, clock=self.clock, processes=self.processes, gpus=self.gpus
        )
        self.sampler = self.services.sampler
        self.principal = Principal(ensure_account(self.db, "alice"), "key-test", admin=False)

    def new_sampler(self):
        return Sampler(
            self.db,
            self.driver,
            interval_seconds=10,
            retention_seconds=self.config.sampler.retention_days * 86400,
            running=self.services.store.running,
            processes=self.processes,
            gpus=self.gpus,
            clock=self.clock,
        )

    def create(self, storage_gb=100, gpu=None):
        ws = self.services.lifecycle.create(
            self.principal,
            "w",
            {"cpu_cores": 2, "memory_gb": 4, "storage_gb": storage_gb, "gpu": gpu, "region": "us-west-2"},
        )
        deadline = time.monotonic() + 10
        while self.services.store.load(self.principal, ws.id).status != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return ws.id

    def pid(self, ws_id):
        return self.driver.pid(domain_name(ws_id))

    def accounts_use(self):
        return self.services.accounts.use(self.principal.account_id)

    def usage(self, ws_id, **window):
        return self.services.ledger.report(ws_id, window.get("start"), window.get("end"), window.get("granularity"))

    def close(self):
        self.services.background.wait_idle()
        power_off_fake_guests(self.config.data_dir)


@pytest.fixture
def meter(tmp_path):
    meter = Meter(tmp_path)
    yield meter
    meter.close()


def test_cpu_comes_from_counter_deltas_and_missed_ticks_lose_nothing(meter):
    ws = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    meter.processes.set(pid, started=T0, cpu_seconds=5.0, rss_bytes=2 * GB)
    meter.clock.advance(10)
    meter.sampler.sample()
    meter.processes.set(pid, started=T0, cpu_seconds=35.0, rss_bytes=2 * GB)
    meter.clock.advance(30)  # two ticks missed
    meter.sampler.sample()
    total = meter.usage(ws).total
    assert total.cpu_seconds == pytest.approx(35.0)
    assert total.memory_gb_seconds == pytest.approx(2 * 40)
    assert meter.usage(ws).last_updated == T0 + 40


def test_memory_is_the_time_integral_of_rss(meter):
    ws = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    for second, rss_gb in ((10, 1), (20, 3), (30, 3)):
        meter.clock.now = T0 + second
        meter.processes.set(pid, started=T0, cpu_seconds=second, rss_bytes=rss_gb * GB)
        meter.sampler.sample()
    # First reading: 1 GB held since start; then trapezoids (1+3)/2*10 and 3*10.
    assert meter.usage(ws).total.memory_gb_seconds == pytest.approx(10 + 20 + 30)


def test_a_new_process_is_a_counter_reset_not_a_negative_delta(meter):
    ws = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    meter.clock.advance(10)
    meter.processes.set(pid, started=T0, cpu_seconds=8.0, rss_bytes=GB)
    meter.sampler.sample()
    # The VM restarted behind our back: same pid, a new start time, a small counter.
    meter.clock.advance(10)
    meter.processes.set(pid, started=T0 + 15, cpu_seconds=2.0, rss_bytes=GB)
    meter.sampler.sample()
    assert meter.usage(ws).total.cpu_seconds == pytest.approx(10.0)


def test_a_restart_of_the_service_mid_run_loses_and_repeats_nothing(meter):
    ws = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    meter.clock.advance(10)
    meter.processes.set(pid, started=T0, cpu_seconds=4.0, rss_bytes=GB)
    meter.sampler.sample()
    # cwhost restarts: a new sampler with nothing in memory; the VM ran on.
    meter.sampler = meter.new_sampler()
    meter.clock.advance(50)
    meter.processes.set(pid, started=T0, cpu_seconds=20.0, rss_bytes=GB)
    meter.sampler.sample()
    total = meter.usage(ws).total
    assert total.cpu_seconds == pytest.approx(20.0)
    assert total.memory_gb_seconds == pytest.approx(60.0)


def test_a_final_reading_at_stop_keeps_the_last_interval(meter):
    ws = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    meter.clock.advance(10)
    meter.processes.set(pid, started=T0, cpu_seconds=10.0, rss_bytes=GB)
    meter.sampler.sample()
    meter.clock.advance(5)
    meter.processes.set(pid, started=T0, cpu_seconds=15.0, rss_bytes=GB)
    meter.services.lifecycle.stop(meter.principal, ws)
    assert meter.usage(ws).total.cpu_seconds == pytest.approx(15.0)
    meter.clock.advance(100)
    meter.sampler.sample()
    assert meter.usage(ws).total.cpu_seconds == pytest.approx(15.0)


def test_a_tick_and_a_final_reading_that_cross_count_nothing_twice(meter):
    """Readings are recorded outside one lock: the older of two that cross is dropped, by time or counter."""
    ws = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    recorder = MeterRecorder(meter.db, retention_seconds=86400)
    meter.clock.advance(10)
    recorder.record(T0 + 10, [(ws, ProcessReading(pid, T0, 4.0, GB), None)])
    # A tick stamped at +20 read the counter late, at 9; a final reading stamped at +21 read 8 and landed first.
    recorder.record(T0 + 21, [(ws, ProcessReading(pid, T0, 8.0, GB), None)])
    recorder.record(T0 + 20, [(ws, ProcessReading(pid, T0, 9.0, GB), None)])
    assert meter.usage(ws).total.cpu_seconds == pytest.approx(8.0)
    # Stamped later but read earlier than what is recorded: dropped too.
    recorder.record(T0 + 22, [(ws, ProcessReading(pid, T0, 7.5, GB), None)])
    recorder.record(T0 + 30, [(ws, ProcessReading(pid, T0, 12.0, GB), None)])
    total = meter.usage(ws).total
    assert total.cpu_seconds == pytest.approx(12.0)
    assert total.memory_gb_seconds == pytest.approx(30.0)


def test_a_reading_that_lands_after_the_stop_committed_changes_nothing(meter):
    """A tick that read the process just before its stop must not bill after the stop is visible."""
    ws = meter.create()
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    meter.clock.advance(10)
    meter.processes.set(pid, started=T0, cpu_seconds=10.0, rss_bytes=GB)
    read_late = threading.Event()
    stopped = threading.Event()
    original_read = meter.sampler._read

    def read_then_wait_for_the_stop(only):
        readings = original_read(only)
        if only is None:
            read_late.set()
            assert stopped.wait(10)
        return readings

    meter.sampler._read = read_then_wait_for_the_stop
    meter.processes.set(pid, started=T0, cpu_seconds=12.0, rss_bytes=GB)
    late_tick = threading.Thread(target=meter.sampler.sample)
    late_tick.start()
    assert read_late.wait(10)
    # The stop's final reading would wait for the tick's lock; without it the
    # stop commits while the tick still holds its reading.
    meter.sampler._read = original_read
    meter.sampler.sample = lambda only=None: None  # no final reading: the stop commits at once
    meter.services.lifecycle.stop(meter.principal, ws, force=True)
    settled = meter.usage(ws).total.cpu_seconds
    stopped.set()
    late_tick.join(10)
    assert meter.usage(ws).total.cpu_seconds == settled


def test_a_patch_mid_hour_prices_each_part_at_its_own_configuration(meter):
    pricing = meter.config.pricing
    ws = meter.create(storage_gb=100, gpu="NVIDIA RTX A5000")
    meter.services.lifecycle.launch(meter.principal, ws)
    meter.clock.advance(HOUR / 2)
    meter.services.lifecycle.stop(meter.principal, ws, force=True)
    meter.services.lifecycle.patch(meter.principal, ws, None, {"storage_gb": 200, "gpu": "NVIDIA L40S"})
    meter.services.lifecycle.launch(meter.principal, ws)
    meter.clock.advance(HOUR / 2)
    meter.services.lifecycle.stop(meter.principal, ws, force=True)
    report = meter.usage(ws)
    assert report.total.storage_gb_seconds / HOUR == pytest.approx(100 * 0.5 + 200 * 0.5)
    assert report.total.gpu_seconds / HOUR == pytest.approx(1.0)
    assert report.total.gpu_cost_usd == pytest.approx(
        0.5 * pricing.gpu_rate("NVIDIA RTX A5000") + 0.5 * pricing.gpu_rate("NVIDIA L40S")
    )
    assert report.total.cost_usd(pricing) == pytest.approx(
        150 * pricing.storage_gb_hour_usd + report.total.gpu_cost_usd
    )


def test_storage_is_billed_from_creation_to_deletion_and_usage_outlives_deletion(meter):
    ws = meter.create(storage_gb=10)
    meter.clock.advance(2 * HOUR)
    meter.services.lifecycle.delete(meter.principal, ws)
    meter.clock.advance(5 * HOUR)
    report = meter.usage(ws)
    assert report.total.storage_gb_seconds / HOUR == pytest.approx(20)


def test_windows_and_buckets_split_usage_exactly(meter):
    ws = meter.create(storage_gb=10)
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    cpu = 0.0
    for _ in range(3 * 360):  # three hours of 10 s ticks, 1 CPU-second each
        meter.clock.advance(10)
        cpu += 1.0
        meter.processes.set(pid, started=T0, cpu_seconds=cpu, rss_bytes=GB)
        meter.sampler.sample()
    whole = meter.usage(ws, granularity="hour")
    assert whole.total.cpu_seconds == pytest.approx(1080)
    assert [start for start, _ in whole.buckets] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert [b.cpu_seconds for _, b in whole.buckets] == pytest.approx([360, 360, 360])
    assert [b.storage_gb_seconds / HOUR for _, b in whole.buckets] == pytest.approx([10, 10, 10])
    assert sum(b.cost_usd(meter.config.pricing) for _, b in whole.buckets) == pytest.approx(
        whole.total.cost_usd(meter.config.pricing)
    )
    # A window with partial hours at both edges: raw samples there, rollups between.
    window = meter.usage(ws, start=T0 + 1800, end=T0 + 2 * HOUR + 600)
    assert window.total.cpu_seconds == pytest.approx((1800 + HOUR + 600) / 10)
    assert window.total.storage_gb_seconds == pytest.approx(10 * (1800 + HOUR + 600))
    day = meter.usage(ws, granularity="day")
    assert len(day.buckets) == 1 and day.buckets[0][1].cpu_seconds == pytest.approx(1080)


def test_raw_samples_expire_but_rollups_and_totals_stay(tmp_path):
    meter = Meter(tmp_path, sampler={"retention_days": 1})
    try:
        ws = meter.create()
        meter.services.lifecycle.launch(meter.principal, ws)
        pid = meter.pid(ws)
        meter.clock.advance(10)
        meter.processes.set(pid, started=T0, cpu_seconds=7.0, rss_bytes=GB)
        meter.sampler.sample()
        meter.clock.advance(2 * 86400)
        meter.processes.set(pid, started=T0, cpu_seconds=9.0, rss_bytes=GB)
        meter.sampler.sample()
        samples = meter.db.query("SELECT sampled_at FROM usage_samples")
        assert [s["sampled_at"] for s in samples] == [meter.clock.now]
        assert meter.usage(ws).total.cpu_seconds == pytest.approx(9.0)
        assert meter.usage(ws, start=T0, granularity="hour").total.cpu_seconds == pytest.approx(9.0)
    finally:
        meter.close()


def test_a_domain_that_died_unwatched_stops_billing_its_gpu_at_its_last_reading(meter):
    ws = meter.create(gpu="NVIDIA L40S")
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    meter.clock.advance(600)
    meter.processes.set(pid, started=T0, cpu_seconds=1.0, rss_bytes=GB)
    meter.sampler.sample()
    meter.driver.destroy(domain_name(ws))
    meter.clock.advance(3 * HOUR)  # cwhost was down meanwhile
    meter.services.reconciler.recover()
    assert meter.usage(ws).total.gpu_seconds == pytest.approx(600)


class StubNvml:
    class NVMLError(Exception):
        pass

    def __init__(self, fail_init=False):
        self.fail_init = fail_init
        self.init_calls = 0

    def nvmlInit(self):
        self.init_calls += 1
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        if index == 1:
            raise self.NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetPciInfo(self, handle):
        return type("PciInfo", (), {"busId": b"00000000:CA:00.0"})()

    def nvmlDeviceGetUtilizationRates(self, handle):
        return type("Utilization", (), {"gpu": 75})()


def test_nvml_utilisation_by_pci_address_and_degradation_logged_once(caplog):
    assert normalize_pci_address("00000000:65:00.0") == "0000:65:00.0"
    reader = GpuReader(StubNvml())
    with caplog.at_level(logging.WARNING):
        assert reader.utilization() == {"0000:ca:00.0": 75.0}
        assert reader.utilization() == {"0000:ca:00.0": 75.0}
    assert len([r for r in caplog.records if "GPU 1" in r.getMessage()]) == 1

    caplog.clear()
    missing = StubNvml(fail_init=True)
    reader = GpuReader(missing)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert reader.utilization() == {}
    assert missing.init_calls == 1
    assert len([r for r in caplog.records if "NVML is not available" in r.getMessage()]) == 1


def test_visible_gpu_utilisation_weights_gpu_hours(meter):
    class HalfBusy:
        def utilization(self):
            return {"0000:ca:00.0": 50.0}

    meter.sampler._gpus = HalfBusy()
    ws = meter.create(gpu="NVIDIA L40S")
    meter.services.lifecycle.launch(meter.principal, ws)
    pid = meter.pid(ws)
    for second in (10, 20):
        meter.clock.now = T0 + second
        meter.processes.set(pid, started=T0, cpu_seconds=1.0, rss_bytes=GB)
        meter.sampler.sample()
    assert meter.usage(ws).total.gpu_utilized_seconds == pytest.approx(10)


def test_metrics_need_an_admin_token_and_show_usage(client, alice, admin, components):
    from tests.helpers import create_stopped

    ws = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    sampler = Sampler(
        components.db,
        components.driver,
        10,
        86400,
        running=components.services.store.running,
        metrics=components.services.sampler_metrics,
    )
    sampler.sample()
    assert client.get("/metrics").status_code == 401
    forbidden = client.get("/metrics", headers=alice)
    assert (forbidden.status_code, forbidden.get_json()["error"]) == (403, "forbidden")
    text = client.get("/metrics", headers=admin).get_data(as_text=True)
    lines = {l.split("{")[0]: l for l in text.splitlines() if l.startswith("cwhost_workstation_")}
    assert set(lines) == {
        "cwhost_workstation_cpu_seconds_total",
        "cwhost_workstation_memory_gb_seconds_total",
        "cwhost_workstation_gpu_seconds_total",
    }
    memory = lines["cwhost_workstation_memory_gb_seconds_total"]
    assert ws["id"] in memory and 'account="alice"' in memory
    assert float(memory.rsplit(" ", 1)[1]) > 0
    assert 'cwhost_sampler_tick_seconds_count{phase="read"} 1.0' in text


def test_usage_endpoint_shapes_windows_and_rejects_empty_ones(client, alice, components):
    from tests.helpers import create_stopped

    ws = create_stopped(client, alice)
    usage = client.get(f"/v1/workstations/{ws['id']}/usage?granularity=hour", headers=alice).get_json()
    assert usage["from"] == ws["createdAt"]
    assert usage["storageGBHours"] > 0 and usage["costUSD"] > 0
    assert usage["buckets"] and set(usage["buckets"][0]) >= {"start", "cpuHours", "costUSD"}
    bad = client.get(
        f"/v1/workstations/{ws['id']}/usage?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        headers=alice,
    )
    assert (bad.status_code, bad.get_json()["error"]) == (400, "invalid_request")
    naive = client.get(f"/v1/workstations/{ws['id']}/usage?from=2026-01-01T00:00:00", headers=alice)
    assert naive.status_code == 400
    client.delete(f"/v1/workstations/{ws['id']}", headers=alice)
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).status_code == 404
    after = client.get(f"/v1/workstations/{ws['id']}/usage", headers=alice)
    assert after.status_code == 200 and after.get_json()["storageGBHours"] >= usage["storageGBHours"]
    other = create_key(components.db, "mallory").token
    hidden = client.get(f"/v1/workstations/{ws['id']}/usage", headers={"Authorization": f"Bearer {other}"})
    assert hidden.status_code == 404
