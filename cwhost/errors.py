"""Errors the service raises on purpose; the API turns each into its JSON answer."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class ServiceError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, details: dict | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.retry_after = retry_after
        # Fields an error adds to its JSON body, such as a 402's balance.
        self.extra: dict = {}


class InvalidRequest(ServiceError):
    status = 400
    code = "invalid_request"


class InvalidState(ServiceError):
    status = 400
    code = "invalid_state"


class PaymentRequired(ServiceError):
    status = 402
    code = "payment_required"

    def __init__(self, message: str, balance_usd: float):
        super().__init__(message)
        self.extra = {"balance_usd": round(balance_usd, 6)}


class QuotaExceeded(ServiceError):
    status = 403
    code = "quota_exceeded"


class Forbidden(ServiceError):
    """The token is valid but may not do this (an operator's endpoint)."""

    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The resource's state refuses it (a file that exists already, a directory that is not empty)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnknownAsset(ServiceError):
    status = 422
    code = "unknown_asset"


class TooManyRequests(ServiceError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, retry_after=retry_after)


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message, retry_after=retry_after)


class StorageUnavailable(Unavailable):
    """The database or the disk under it cannot take a write now (full, read-only, failing, busy)."""


_DISK_FAULTS = {
    errno.ENOSPC: "The server's disk is full",
    errno.EDQUOT: "The server's disk quota is used up",
    errno.EROFS: "The server's disk is read-only",
    errno.EIO: "The server's disk is failing",
}


@contextmanager
def disk_faults() -> Iterator[None]:
    """A file the service writes, on a disk that fails it: the client's 503, with nothing stored."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FAULTS:
            raise
        raise StorageUnavailable(
            f"{_DISK_FAULTS[exc.errno]}; nothing was stored. Try again once an operator has fixed it.",
            retry_after=30,
        ) from exc
