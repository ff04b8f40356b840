"""Slots per account for operations that may last long (a command in a guest runs up to an hour; a
wait for readiness up to a minute).

An account past its count is answered 429 at once, not queued: the request
slots it would wait in are everyone's. Where the operation has a bound in
all too, past it is 503 with Retry-After.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cwhost.errors import TooManyRequests, Unavailable

# How soon to try again: about as long as a short command takes.
RETRY_SECONDS = 2


class AccountSlots:
    def __init__(self, per_account: int, what: str, setting: str, in_all: int | None = None):
        self._per_account = per_account
        self._in_all = in_all
        # For the refusals: what is counted, and the setting that bounds it per account.
        self._what, self._setting = what, setting
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    @contextmanager
    def held(self, account_id: str) -> Iterator[None]:
        release = self.take(account_id)
        try:
            yield
        finally:
            release()

    def take(self, account_id: str) -> Callable[[], None]:
        """A slot of ``account_id``'s, and the call that gives it back (once, however often called):
        for what outlives the call that took it, such as a streamed answer."""
        with self._lock:
            held = self._held.get(account_id, 0)
            if held >= self._per_account:
                raise TooManyRequests(
                    f"This account already has {held} {self._what} under way, the most it may"
                    f" ({self._setting}); retry when one ends.",
                    retry_after=RETRY_SECONDS,
                )
            if self._in_all is not None and sum(self._held.values()) >= self._in_all:
                raise Unavailable(f"The server has as many {self._what} under way as it takes.", retry_after=5)
            self._held[account_id] = held + 1
        given_back = threading.Event()

        def release() -> None:
            with self._lock:
                if given_back.is_set():
                    return
                given_back.set()
                left = self._held[account_id] - 1
                if left:
                    self._held[account_id] = left
                else:
                    del self._held[account_id]

        return release
