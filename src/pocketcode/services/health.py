"""The database health check behind `/health` and `/health/ready`."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from pocketcode.db import migrate
from pocketcode.db.engine import Database


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    reason: str | None = None


def check_health(db: Database) -> HealthResult:
    """The database answers a query and its schema is at the revision this code expects."""
    try:
        with db.read() as session:
            session.execute(sa.text("SELECT 1"))
        revision = migrate.current_revision(db)
    except SQLAlchemyError as exc:
        first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return HealthResult(False, f"database unreachable: {first_line}")
    head = migrate.head_revision()
    if revision is None:
        return HealthResult(False, "database has no schema yet; run `pocketcode db upgrade`")
    if revision != head:
        return HealthResult(
            False,
            f"database schema at {revision}, expected {head}; run `pocketcode db upgrade`",
        )
    return HealthResult(True)
