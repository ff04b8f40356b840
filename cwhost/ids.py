"""Identifiers and timestamps in the forms the API shows."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str) -> str:
    """``prefix-`` and 8 random characters, e.g. ``ws-8f3k2m9q`` (about 41 bits)."""
    return prefix + "-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 UTC with a ``Z`` suffix, to the second."""
    utc = moment.astimezone(UTC)
    # strftime's %Y does not pad years before 1000 on glibc ("391-02-11").
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%SZ}"


def unix_to_rfc3339(seconds: float) -> str:
    return rfc3339(datetime.fromtimestamp(seconds, UTC))


def rfc3339_to_unix(text: str) -> float:
    """A time ``rfc3339`` wrote; fromisoformat takes other ISO forms too, but is ten times faster than strptime."""
    return datetime.fromisoformat(text).timestamp()


def utc_now() -> str:
    return rfc3339(datetime.now(UTC))


# The last instant RFC 3339 (four-digit years) can write.
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
