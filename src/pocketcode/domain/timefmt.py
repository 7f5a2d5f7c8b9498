"""Timestamps in API JSON: UTC, millisecond precision, ending in `Z` (what JavaScript's
`Date.toISOString()` and Zod's `datetime()` expect)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_z(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def now_iso_z() -> str:
    return iso_z(datetime.now(UTC))
