"""The median of a request's time over some rounds, each answer checked: what the in-process benchmarks share."""

from __future__ import annotations

import statistics
import time


def median_ms(request, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        answer = request()
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    return statistics.median(times)
