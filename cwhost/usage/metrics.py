"""Prometheus metrics: per-workstation usage counters and the sampler's own health.

Usage counters are read from the ledger at scrape time, so they are the same
figures the usage API reports and they survive restarts of the service.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from cwhost.usage.ledger import UsageLedger


class SamplerMetrics:
    def __init__(self, registry: CollectorRegistry):
        self._tick_seconds = Histogram(
            "cwhost_sampler_tick_seconds",
            "Duration of one sampler tick, by phase (reading processes, writing the ledger).",
            ["phase"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self._lag_seconds = Gauge(
            "cwhost_sampler_lag_seconds",
            "How late the last tick started after its deadline.",
            registry=registry,
        )
        self._workstations = Gauge(
            "cwhost_sampler_workstations", "Workstations read by the last tick.", registry=registry
        )

    def observe_tick(self, result) -> None:
        self._tick_seconds.labels("read").observe(result.read_seconds)
        self._tick_seconds.labels("write").observe(result.write_seconds)
        self._workstations.set(result.workstations)

    def observe_lag(self, seconds: float) -> None:
        self._lag_seconds.set(seconds)


class UsageCollector:
    def __init__(self, ledger: UsageLedger):
        self._ledger = ledger

    def collect(self):
        labels = ["workstation", "account"]
        cpu = CounterMetricFamily("cwhost_workstation_cpu_seconds", "CPU time its VM process used.", labels=labels)
        memory = CounterMetricFamily(
            "cwhost_workstation_memory_gb_seconds",
            "Resident memory of its VM process integrated over time.",
            labels=labels,
        )
        gpu = CounterMetricFamily(
            "cwhost_workstation_gpu_seconds", "Time a GPU was attached while running.", labels=labels
        )
        for row in self._ledger.totals_by_workstation():
            key = [row["workstation_id"], row["account"]]
            cpu.add_metric(key, row["cpu_seconds"])
            memory.add_metric(key, row["memory_gb_seconds"])
            gpu.add_metric(key, row["gpu_seconds"])
        yield from (cpu, memory, gpu)


def build_registry(ledger: UsageLedger) -> tuple[CollectorRegistry, SamplerMetrics]:
    registry = CollectorRegistry()
    registry.register(UsageCollector(ledger))
    return registry, SamplerMetrics(registry)
