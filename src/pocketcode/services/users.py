"""User accounts (login, TOTP and tokens arrive with the HTTP API)."""

from __future__ import annotations

import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import UserRow


def count_users(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(UserRow)) or 0)
