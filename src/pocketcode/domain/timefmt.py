"""Timestamps in API JSON: UTC, millisecond precision, ending in `Z` (what JavaScript's
`Date.toISOString()` and Zod's `datetime()` expect)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_z(value: datetime) -> str:
    """A naive value is taken as UTC. (`isoformat` truncates to the millisecond, as `Date`
    does; it is C code — this runs for every timestamp of every session and message listed.)"""
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def now_iso_z() -> str:
    return iso_z(datetime.now(UTC))
