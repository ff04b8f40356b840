"""What a background loop says when the database cannot be written, and when it can again."""

from __future__ import annotations

import logging

from cwhost.errors import StorageUnavailable


class StorageOutage:
    """Logs a loop's first failed write and its first write after, not every failed round.

    A loop that runs each second would otherwise fill the journal of the very
    disk that is full.
    """

    def __init__(self, log: logging.Logger, cannot: str, again: str):
        self._log = log
        self._cannot = cannot
        self._again = again
        self._out = False

    def failed(self, exc: StorageUnavailable) -> None:
        if not self._out:
            self._log.error("%s: %s", self._cannot, exc.message)
        self._out = True

    def wrote(self) -> None:
        if self._out:
            self._log.warning("%s", self._again)
        self._out = False
