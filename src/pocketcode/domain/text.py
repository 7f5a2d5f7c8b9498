"""What text can be stored and shown."""

from __future__ import annotations


def is_utf8(text: str) -> bool:
    """Whether `text` holds no lone surrogate, so encodes as UTF-8: JSON's `\\ud800` decodes to
    one, and `os` and our git wrapper decode bytes that are not UTF-8 in names to them. Such
    text can be neither stored (PostgreSQL refuses it) nor shown in JSON, and a name holding
    one cannot be sent back by a client (a query string decodes `%FF` to U+FFFD, never to the
    byte)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
