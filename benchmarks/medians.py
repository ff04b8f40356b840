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


def medians_side_by_side(requests: dict, rounds: int) -> dict[str, float]:
    """Each request's median, the requests taking turns round by round so that a busy spell of a shared
    machine slows them all alike rather than the one that happened to be measuring."""
    times: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(rounds):
        for name, request in requests.items():
            began = time.perf_counter()
            answer = request()
            times[name].append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    return {name: statistics.median(taken) for name, taken in times.items()}
