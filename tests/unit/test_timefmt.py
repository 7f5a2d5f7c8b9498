"""API timestamps: UTC, millisecond precision (truncated, as JavaScript's `Date`), ending in Z."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from pocketcode.domain.timefmt import iso_z

MOMENT = datetime(2026, 12, 5, 23, 59, 59, 999_999)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (MOMENT.replace(tzinfo=UTC), "2026-12-05T23:59:59.999Z"),
        (MOMENT, "2026-12-05T23:59:59.999Z"),  # naive: taken as UTC
        (MOMENT.replace(tzinfo=ZoneInfo("UTC")), "2026-12-05T23:59:59.999Z"),
        (
            MOMENT.replace(tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2026-12-05T18:29:59.999Z",
        ),
        (MOMENT.replace(tzinfo=ZoneInfo("America/New_York")), "2026-12-06T04:59:59.999Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
    ],
)
def test_iso_z(value: datetime, expected: str) -> None:
    assert iso_z(value) == expected
    assert datetime.fromisoformat(expected).tzinfo == UTC
