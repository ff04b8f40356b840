"""Work that outlives the request that asked for it: provisioning, and the stops cwhost decides on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


class BackgroundWork:
    def __init__(self, workers: int = 4):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="provision")

    def submit(self, work, *args) -> None:
        self._executor.submit(work, *args)

    def wait_idle(self) -> None:
        """Finish what was submitted; at shut-down."""
        self._executor.shutdown(wait=True)
