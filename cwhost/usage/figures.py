"""The quantities the usage ledger sums, and the UTC slots it sums them by."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cwhost.usage.pricing import Pricing

HOUR = 3600
DAY = 86400
BUCKET_SECONDS = {"hour": HOUR, "day": DAY}


@dataclass
class Figures:
    """Raw quantities in seconds; hours and cost are derived on output."""

    cpu_seconds: float = 0.0
    memory_gb_seconds: float = 0.0
    gpu_utilized_seconds: float = 0.0
    storage_gb_seconds: float = 0.0
    gpu_seconds: float = 0.0
    gpu_cost_usd: float = 0.0

    def add(self, more: Figures) -> None:
        """Every quantity of ``more`` added to this one's (spelled out: an account's year by day adds 20 000)."""
        self.cpu_seconds += more.cpu_seconds
        self.memory_gb_seconds += more.memory_gb_seconds
        self.gpu_utilized_seconds += more.gpu_utilized_seconds
        self.storage_gb_seconds += more.storage_gb_seconds
        self.gpu_seconds += more.gpu_seconds
        self.gpu_cost_usd += more.gpu_cost_usd

    def add_metered(self, row: dict, share: float = 1.0) -> None:
        self.cpu_seconds += (row["cpu_seconds"] or 0.0) * share
        self.memory_gb_seconds += (row["memory_gb_seconds"] or 0.0) * share
        self.gpu_utilized_seconds += (row["gpu_utilized_seconds"] or 0.0) * share

    def add_held(self, seconds: float, storage_gb: float, gpus: float, gpu_usd_per_hour: float) -> None:
        """What a configuration held for ``seconds`` adds: its storage, and its GPUs' time and cost."""
        self.storage_gb_seconds += storage_gb * seconds
        if gpus:
            self.gpu_seconds += gpus * seconds
            self.gpu_cost_usd += seconds / HOUR * gpu_usd_per_hour

    def cost_usd(self, pricing: Pricing) -> float:
        return (
            self.cpu_seconds / HOUR * pricing.cpu_hour_usd
            + self.memory_gb_seconds / HOUR * pricing.memory_gb_hour_usd
            + self.storage_gb_seconds / HOUR * pricing.storage_gb_hour_usd
            + self.gpu_cost_usd
        )


def slot_of(moment: float, step: int) -> int:
    """The start of the step-aligned slot ``moment`` falls in."""
    return int(math.floor(moment / step) * step)


def split_by_step(start: float, end: float, step: int):
    """Yield (step_start, overlap_seconds) for each step-aligned slot [start, end) touches."""
    slot = slot_of(start, step)
    while slot < end:
        overlap = min(end, slot + step) - max(start, slot)
        if overlap > 0:
            yield slot, overlap
        slot += step
