"""The sampler: reads every running workstation's VM process and writes the usage ledger.

One thread, started by ``cwhost serve`` once it holds an exclusive lock on a
file beside the database, so that there is one sampler per database however
many processes start; a second one waits and takes over when the first dies
(the kernel drops a dead process's lock).

CPU time comes from the process's cumulative counter, so a late or missed tick
loses nothing: the next reading takes the whole difference. A new pid or start
time is a new process (the VM restarted) and its whole counter is new usage.
The last counter values are stored with each tick, so a restart of cwhost
while VMs run neither loses nor repeats an interval.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import psutil

from cwhost.db import Database
from cwhost.errors import StorageUnavailable
from cwhost.metering import MeterRecorder, ProcessReading
from cwhost.workstations.model import RUNNING, domain_name
from drivers.base import DriverError, HypervisorDriver

log = logging.getLogger(__name__)


class ProcessReader:
    """Reads processes with psutil, keeping each ``Process`` between ticks.

    A cached ``Process`` remembers its start time, so a pid that was reused by
    another process is noticed (``is_running`` is False) rather than misread.
    """

    def __init__(self):
        self._cache: dict[int, psutil.Process] = {}
        self._denied_logged = False

    def read(self, pid: int) -> ProcessReading | None:
        try:
            process = self._cache.get(pid)
            if process is None:
                process = self._cache[pid] = psutil.Process(pid)
            with process.oneshot():
                # Inside oneshot the pid-reuse check and the CPU times share
                # one read of /proc/PID/stat.
                if not process.is_running():
                    del self._cache[pid]
                    return self.read(pid)
                times = process.cpu_times()
                rss = process.memory_info().rss
                started = process.create_time()
        except psutil.NoSuchProcess:
            self._cache.pop(pid, None)
            return None
        except psutil.AccessDenied:
            if not self._denied_logged:
                log.error("not allowed to read process %d; check the service's permissions", pid)
                self._denied_logged = True
            return None
        return ProcessReading(pid, started, times.user + times.system, rss)

    def keep_only(self, pids: set[int]) -> None:
        for pid in self._cache.keys() - pids:
            del self._cache[pid]


def normalize_pci_address(bus_id: str | bytes) -> str:
    """NVML's ``00000000:65:00.0`` as libvirt's ``0000:65:00.0``."""
    if isinstance(bus_id, bytes):
        bus_id = bus_id.decode()
    domain, bus, slot_function = bus_id.lower().split(":")
    return f"{int(domain, 16):04x}:{bus}:{slot_function}"


class GpuReader:
    """GPU utilisation by PCI address, from NVML where the host can see the GPU.

    A GPU passed through to a VM is invisible to the host's NVML; for those
    there is no utilisation, only attached time (from the ledger's segments).
    """

    def __init__(self, nvml=None):
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml = nvml
        self._ready: bool | None = None
        self._failures_logged: set[str] = set()

    def _log_once(self, what: str, error: Exception) -> None:
        if what not in self._failures_logged:
            self._failures_logged.add(what)
            log.warning("%s (%s); metering goes on without GPU utilisation", what, error)

    def utilization(self) -> dict[str, float]:
        return self._each_gpu(lambda handle: float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def names(self) -> dict[str, str]:
        """Model names by PCI address, for the GPUs the host's NVML sees."""

        def name(handle) -> str:
            value = self._nvml.nvmlDeviceGetName(handle)
            return value.decode() if isinstance(value, bytes) else value

        return self._each_gpu(name)

    def _each_gpu(self, read) -> dict:
        nvml = self._nvml
        if self._ready is None:
            try:
                nvml.nvmlInit()
                self._ready = True
            except nvml.NVMLError as exc:
                self._ready = False
                self._log_once("NVML is not available", exc)
        if not self._ready:
            return {}
        found: dict = {}
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self._log_once("NVML cannot count GPUs", exc)
            return found
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                found[normalize_pci_address(nvml.nvmlDeviceGetPciInfo(handle).busId)] = read(handle)
            except nvml.NVMLError as exc:
                self._log_once(f"NVML cannot read GPU {index}", exc)
        return found


@dataclass(frozen=True)
class TickResult:
    workstations: int
    read_seconds: float
    write_seconds: float


class Sampler:
    def __init__(
        self,
        db: Database,
        driver: HypervisorDriver,
        interval_seconds: float,
        retention_seconds: float,
        processes: ProcessReader | None = None,
        gpus: GpuReader | None = None,
        clock=time.time,
        metrics=None,
    ):
        self._db = db
        self._driver = driver
        self.interval = interval_seconds
        self._recorder = MeterRecorder(db, retention_seconds)
        self._processes = processes or ProcessReader()
        self._gpus = gpus or GpuReader()
        self._clock = clock
        self._metrics = metrics
        # A final reading before a stop and a tick must not both take one interval.
        self._tick_lock = threading.Lock()

    # -- one tick ------------------------------------------------------------

    def sample(self, only: set[str] | None = None) -> TickResult:
        """Read the running workstations (or ``only`` these) and record what they used."""
        with self._tick_lock:
            began = time.perf_counter()
            now = self._clock()
            readings = self._read(only)
            read_done = time.perf_counter()
            self._recorder.record(now, readings)
            result = TickResult(len(readings), read_done - began, time.perf_counter() - read_done)
        if self._metrics is not None:
            self._metrics.observe_tick(result)
        return result

    def _read(self, only: set[str] | None):
        rows = self._db.query(
            "SELECT id, gpu_address FROM workstations WHERE status = ? AND deleted_at IS NULL",
            [RUNNING],
        )
        if only is not None:
            rows = [r for r in rows if r["id"] in only]
        utilization = self._gpus.utilization() if any(r["gpu_address"] for r in rows) else {}
        readings = []
        for row in rows:
            try:
                pid = self._driver.pid(domain_name(row["id"]))
            except DriverError as exc:
                log.warning("no process id for %s this tick: %s", row["id"], exc)
                continue
            reading = self._processes.read(pid) if pid else None
            if reading is not None:
                readings.append((row["id"], reading, utilization.get(row["gpu_address"])))
        if only is None:
            self._processes.keep_only({reading.pid for _, reading, _ in readings})
        return readings

    # -- the thread ----------------------------------------------------------

    def run(self, stop: threading.Event, on_active=None) -> None:
        """Tick on a fixed schedule until ``stop`` is set.

        One sampler per database is ``cwhost serve``'s lock on the data
        directory (cwhost.serverlock), taken before this thread starts.
        """
        log.info("sampler active, every %.3gs", self.interval)
        if on_active is not None:
            on_active(self)
        self._loop(stop)

    def _loop(self, stop: threading.Event) -> None:
        deadline = time.monotonic()
        storage_fault = False
        while not stop.is_set():
            lag = time.monotonic() - deadline
            try:
                self.sample()
                if storage_fault:
                    log.warning("sampler writing again; this tick took what the failed ones missed")
                    storage_fault = False
            except StorageUnavailable as exc:
                # Once, not every tick: a full disk would otherwise fill the
                # journal too. Nothing is lost; meter_state was not advanced.
                if not storage_fault:
                    log.error("sampler cannot write: %s", exc.message)
                storage_fault = True
            except Exception:
                log.exception("sampler tick failed; the next one takes what it missed")
            if self._metrics is not None:
                self._metrics.observe_lag(lag)
            # Deadlines are fixed multiples of the interval, so ticks never
            # drift; deadlines already missed are skipped, not caught up.
            deadline += self.interval
            behind = time.monotonic() - deadline
            if behind > 0:
                deadline += math.ceil(behind / self.interval) * self.interval
            stop.wait(max(0.0, deadline - time.monotonic()))
