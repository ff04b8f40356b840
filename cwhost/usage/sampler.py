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
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from cwhost.db.database import Database
from cwhost.db.outage import StorageOutage
from cwhost.errors import StorageUnavailable
from cwhost.model import Workstation
from cwhost.usage.metering import MeterRecorder, ProcessReading
from drivers.base import DriverError, HypervisorDriver

log = logging.getLogger(__name__)


class ProcessReader:
    """Reads each VM process's CPU time, start time and RSS from ``/proc/<pid>/stat`` and ``statm``.

    Both files stay open from one tick to the next and are read again from
    offset 0 (``pread``): two system calls a process, where opening them each
    time took six and psutil's ``Process`` more (its wrappers, and a pid-reuse
    check that read ``stat`` again). An open ``/proc/<pid>`` file belongs to
    that process: once it exits, reading answers ESRCH even if its pid is
    reused, so a reused pid is never misread as the old process.
    The start time is psutil's own formula (ticks since boot over CLK_TCK,
    plus the boot time psutil reads), so readings stored before compare equal.
    """

    def __init__(self, proc: str = "/proc"):
        self._proc = proc
        self._ticks_per_second = os.sysconf("SC_CLK_TCK")
        self._page_bytes = os.sysconf("SC_PAGE_SIZE")
        self._boot_time = psutil.boot_time()
        self._files: dict[int, tuple[int, int]] = {}
        # Ticks and stops' final readings read at once; a descriptor closed by one while another
        # reads it could be a new file's by then.
        self._lock = threading.Lock()
        self._denied_logged = False

    def read(self, pid: int) -> ProcessReading | None:
        try:
            with self._lock:
                stat, statm = self._contents(pid)
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError:
            if not self._denied_logged:
                log.error("not allowed to read process %d; check the service's permissions", pid)
                self._denied_logged = True
            return None
        # The command name, field 2, may hold spaces and parentheses: fields are counted after its last ")".
        fields = stat[stat.rindex(b")") + 2 :].split(maxsplit=20)
        ticks = self._ticks_per_second
        cpu_seconds = (int(fields[11]) + int(fields[12])) / ticks
        started = float(fields[19]) / ticks + self._boot_time
        return ProcessReading(pid, started, cpu_seconds, int(statm.split(maxsplit=2)[1]) * self._page_bytes)

    def _contents(self, pid: int) -> tuple[bytes, bytes]:
        files = self._files.get(pid)
        if files is not None:
            try:
                return os.pread(files[0], 4096, 0), os.pread(files[1], 4096, 0)
            except ProcessLookupError:
                # That process exited; the pid may already be another's, opened afresh below.
                self._close(pid)
        stat = os.open(f"{self._proc}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            statm = os.open(f"{self._proc}/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(stat)
            raise
        self._files[pid] = (stat, statm)
        return os.pread(stat, 4096, 0), os.pread(statm, 4096, 0)

    def keep_only(self, pids: set[int]) -> None:
        """Close the files of processes no longer asked about."""
        with self._lock:
            for pid in self._files.keys() - pids:
                self._close(pid)

    def _close(self, pid: int) -> None:
        for descriptor in self._files.pop(pid):
            os.close(descriptor)


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
        *,
        running: Callable[[], list[Workstation]],
        processes: ProcessReader | None = None,
        gpus: GpuReader | None = None,
        clock=time.time,
        metrics=None,
    ):
        self._driver = driver
        # The running workstations, from the store's rows in memory: no query per tick.
        self._running = running
        self.interval = interval_seconds
        self._recorder = MeterRecorder(db, retention_seconds)
        self._processes = processes or ProcessReader()
        self._gpus = gpus or GpuReader()
        self._clock = clock
        self._metrics = metrics

    # -- one tick ------------------------------------------------------------

    def sample(self, only: set[str] | None = None) -> TickResult:
        """Read the running workstations (or ``only`` these) and record what they used.

        A stop's final readings run beside the ticks, not behind one lock (under
        load they queued there for seconds). A tick and a final reading of one
        workstation may then record out of order; the meter drops the older,
        by its time and its counter, so no interval is counted twice.
        """
        began = time.perf_counter()
        now = self._clock()
        readings = self._read(only)
        read_done = time.perf_counter()
        if readings or only is None:
            self._recorder.record(now, readings)
        result = TickResult(len(readings), read_done - began, time.perf_counter() - read_done)
        if self._metrics is not None:
            self._metrics.observe_tick(result)
        return result

    def _read(self, only: set[str] | None):
        running = [ws for ws in self._running() if only is None or ws.id in only]
        utilization = self._gpus.utilization() if any(ws.gpu_address for ws in running) else {}
        readings = []
        for ws in running:
            try:
                pid = self._driver.pid(ws.domain_name)
            except DriverError as exc:
                log.warning("no process id for %s this tick: %s", ws.id, exc)
                continue
            reading = self._processes.read(pid) if pid else None
            if reading is not None:
                readings.append((ws.id, reading, utilization.get(ws.gpu_address) if ws.gpu_address else None))
        if only is None:
            self._processes.keep_only({reading.pid for _, reading, _ in readings})
        return readings

    # -- the thread ----------------------------------------------------------

    def run(self, stop: threading.Event, after_tick: Callable[[], None] | None = None) -> None:
        """Tick on a fixed schedule until ``stop`` is set; ``after_tick`` runs after each, on this thread
        (the credit check, which must follow a tick at once).

        One sampler per database is ``cwhost serve``'s lock on the data
        directory (cwhost.cli.serverlock), taken before this thread starts.
        """
        log.info("sampler active, every %.3gs", self.interval)
        deadline = time.monotonic()
        outage = StorageOutage(
            log, "sampler cannot write", "sampler writing again; this tick took what the failed ones missed"
        )
        while not stop.is_set():
            lag = time.monotonic() - deadline
            try:
                self.sample()
                if after_tick is not None:
                    after_tick()
                outage.wrote()
            except StorageUnavailable as exc:
                outage.failed(exc)  # nothing is lost: meter_state was not advanced
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
