"""What guards a workstation's transitions: one lock each."""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager


class WorkstationLocks:
    """One lock per workstation: its transitions, and the reconciler's look at it, one at a time."""

    def __init__(self):
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def of(self, workstation_id: str) -> threading.Lock:
        with self._guard:
            return self._locks[workstation_id]

    @contextmanager
    def held(self, workstation_id: str):
        with self.of(workstation_id):
            yield

    def forget(self, workstation_id: str) -> None:
        with self._guard:
            self._locks.pop(workstation_id, None)
