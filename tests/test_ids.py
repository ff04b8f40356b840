"""Timestamps as API.md writes them: RFC 3339, UTC, to the second."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cwhost.ids import rfc3339_to_unix, unix_to_rfc3339


@pytest.mark.parametrize(
    "moment,text",
    [
        (datetime(391, 2, 11, 13, 17, 52, tzinfo=timezone.utc), "0391-02-11T13:17:52Z"),
        (datetime(1, 1, 1, tzinfo=timezone.utc), "0001-01-01T00:00:00Z"),
        (datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc), "1969-12-31T23:59:59Z"),
        (datetime(2026, 11, 22, 9, 5, 7, tzinfo=timezone.utc), "2026-11-22T09:05:07Z"),
    ],
)
def test_every_year_has_four_digits_and_reads_back(moment, text):
    assert unix_to_rfc3339(moment.timestamp()) == text
    assert rfc3339_to_unix(text) == moment.timestamp()
