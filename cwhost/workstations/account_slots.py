"""Slots per account for operations that may last long (a command in a guest runs up to an hour).

An account past its count is answered 429 at once, not queued: the request
slots it would wait in are everyone's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cwhost.errors import TooManyRequests

# How soon to try again: about as long as a short command takes.
RETRY_SECONDS = 2


class AccountSlots:
    def __init__(self, per_account: int):
        self._per_account = per_account
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    @contextmanager
    def held(self, account_id: str) -> Iterator[None]:
        with self._lock:
            held = self._held.get(account_id, 0)
            if held >= self._per_account:
                raise TooManyRequests(
                    f"This account already has {held} guest operations under way, the most it may"
                    f" (exec.max_per_account); retry when one ends.",
                    retry_after=RETRY_SECONDS,
                )
            self._held[account_id] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._held[account_id] - 1
                if left:
                    self._held[account_id] = left
                else:
                    del self._held[account_id]
