"""Ids from the outside world (URLs, CLI arguments) turned into UUIDs."""

from __future__ import annotations

import uuid

from pocketcode.domain.errors import NotFound


def parse_id(value: uuid.UUID | str, what: str) -> uuid.UUID:
    """The UUID `value` names; a string that is no UUID names nothing: NotFound, not a 500."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"{what} {value!r} not found") from None
