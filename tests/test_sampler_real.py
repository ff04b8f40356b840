"""The sampler on real processes: accuracy against the kernel, its schedule, its lock."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time

import psutil
import pytest

from cwhost.accounts.tokens import Principal, ensure_account
from cwhost.app import build_services
from cwhost.db.database import Database
from cwhost.model import domain_name
from drivers.base import GIB as GB
from cwhost.usage.sampler import ProcessReader, Sampler
from drivers.base import HostInfo
from drivers.fake.driver import FakeDriver, GuestLoad
from tests.helpers import (
    make_config,
    power_off_fake_guests,
)


@pytest.fixture
def burning(tmp_path):
    """A running workstation whose guest burns half a CPU and holds 64 MB."""
    config = make_config(tmp_path / "data")
    db = Database(config.database_path)
    db.migrate()
    fake = config.driver.fake
    driver = FakeDriver(
        config.data_dir / "fake-driver",
        HostInfo(fake.cpu_cores, fake.memory_gb, fake.storage_gb, fake.gpus),
        GuestLoad(cpu_share=0.5, memory_mb=64),
    )
    services = build_services(db, driver, config)
    principal = Principal(ensure_account(db, "alice"), "key-test", admin=False)
    ws = services.lifecycle.create(
        principal, "burn", {"cpu_cores": 1, "memory_gb": 1, "storage_gb": 1, "region": "us-west-2"}
    )
    deadline = time.monotonic() + 10
    while services.store.load(principal, ws.id).status != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    services.lifecycle.launch(principal, ws.id)
    yield db, driver, services, principal, ws.id
    services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


def test_cpu_and_memory_match_what_the_kernel_accounted(burning):
    db, driver, services, principal, ws_id = burning
    sampler = Sampler(db, driver, interval_seconds=0.1, retention_seconds=86400, running=services.store.running)
    guest = psutil.Process(driver.pid(domain_name(ws_id)))
    while guest.memory_info().rss < 64 * 1024 * 1024:
        time.sleep(0.01)
    sampler.sample()
    start = services.ledger.report(ws_id).total
    started_at = services.ledger.report(ws_id).last_updated

    # Ground truth for memory: the guest's RSS read every 10 ms and integrated.
    truth_gb_seconds, last = 0.0, (started_at, guest.memory_info().rss)
    next_tick = time.monotonic() + 0.1
    for _ in range(300):
        time.sleep(0.01)
        now, rss = time.time(), guest.memory_info().rss
        truth_gb_seconds += (rss + last[1]) / 2 / GB * (now - last[0])
        last = (now, rss)
        if time.monotonic() >= next_tick:
            sampler.sample()
            next_tick += 0.1
    cpu_before = sum(guest.cpu_times()[:2])
    sampler.sample()
    cpu_after = sum(guest.cpu_times()[:2])
    end = services.ledger.report(ws_id)

    assert cpu_after > 1.0  # it really burned: about half of 3 s
    assert cpu_before - 0.01 <= end.total.cpu_seconds <= cpu_after + 0.01
    assert end.total.cpu_seconds == pytest.approx(cpu_after, rel=0.01)
    # Compare memory over the same span: our integration ran to ``last``,
    # the ledger's to its final reading; extend ours at the last RSS.
    truth_gb_seconds += last[1] / GB * (end.last_updated - last[0])
    metered = end.total.memory_gb_seconds - start.memory_gb_seconds
    assert metered == pytest.approx(truth_gb_seconds, rel=0.02)


class _RecordingSampler(Sampler):
    def __init__(self, durations):
        self.interval = 0.05
        self._metrics = None
        self.ticks: list[float] = []
        self._durations = durations

    def sample(self, only=None):
        self.ticks.append(time.monotonic())
        time.sleep(self._durations(len(self.ticks)))


def test_ticks_keep_to_their_deadlines_and_stop_cleanly(tmp_path):
    # Ticks that take 0 to 30 ms must not push the schedule back: 20 ticks a second.
    sampler = _RecordingSampler(lambda n: 0.03 if n % 2 else 0.0)
    stop = threading.Event()
    thread = threading.Thread(target=sampler.run, args=(stop,))
    thread.start()
    time.sleep(1.0)
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()
    span = sampler.ticks[-1] - sampler.ticks[0]
    assert len(sampler.ticks) - 1 == pytest.approx(span / 0.05, abs=1.5)


def test_a_slow_tick_skips_missed_deadlines_instead_of_bursting(tmp_path):
    sampler = _RecordingSampler(lambda n: 0.22 if n == 3 else 0.0)
    stop = threading.Event()
    thread = threading.Thread(target=sampler.run, args=(stop,))
    thread.start()
    time.sleep(0.8)
    stop.set()
    thread.join(timeout=2)
    gaps = [b - a for a, b in zip(sampler.ticks, sampler.ticks[1:])]
    after_slow = gaps[3:]
    assert all(gap > 0.02 for gap in after_slow), gaps


def _samples(data_dir, ws_id):
    conn = sqlite3.connect(f"file:{data_dir / 'cwhost.db'}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute(
            "SELECT sampled_at FROM usage_samples WHERE workstation_id = ? ORDER BY sampled_at", [ws_id]
        )]
    finally:
        conn.close()


def test_the_proc_reader_agrees_with_psutil_whatever_the_command_is_called(tmp_path):
    """Readings stored by the psutil reader before must compare equal, and an odd command name parses."""
    odd = tmp_path / "a) b (c"
    shutil.copy("/bin/sleep", odd)
    process = subprocess.Popen([str(odd), "30"])
    try:
        reader = ProcessReader()
        deadline = time.monotonic() + 5
        # Asleep: done loading, its memory and CPU time stay as they are while both are read.
        while psutil.Process(process.pid).name() != odd.name[:15] or psutil.Process(process.pid).status() != "sleeping":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        reading = reader.read(process.pid)
        ps = psutil.Process(process.pid)
        assert reading.started == ps.create_time()
        assert reading.rss_bytes == ps.memory_info().rss
        times = ps.cpu_times()
        assert abs(reading.cpu_seconds - (times.user + times.system)) < 1e-9
    finally:
        process.kill()
        process.wait()
    assert reader.read(process.pid) is None


def test_a_reused_pid_is_read_as_the_new_process_never_the_old(tmp_path):
    """The reader keeps each process's files open: once it exits they answer ESRCH, whoever gets the pid."""
    reader = ProcessReader(proc=str(tmp_path))
    first = subprocess.Popen(["sleep", "30"])
    second = subprocess.Popen(["sleep", "31"])
    try:
        # /proc as the reader sees it: pid 4242 is first, then (first exited) second.
        (tmp_path / "4242").symlink_to(f"/proc/{first.pid}")
        old = reader.read(4242)
        first.kill()
        first.wait()
        (tmp_path / "4242").unlink()
        (tmp_path / "4242").symlink_to(f"/proc/{second.pid}")
        new = reader.read(4242)
        assert new is not None and new.started >= old.started
        assert new.started == psutil.Process(second.pid).create_time()
        reader.keep_only(set())
        second.kill()
        second.wait()
        assert reader.read(4242) is None
    finally:
        first.kill()
        second.kill()
