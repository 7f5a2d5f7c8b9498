"""session list indexes: (last_accessed_at, id) and (status, last_accessed_at, id), partial on
live sessions, replace the single-column status and last_accessed_at indexes

The list of sessions orders by last access then id, optionally filtered by state, and counts
the sessions that match. With one-column indexes both databases sorted every live session
for each page (and for an offset read them all); the composite partial indexes give the page
in index order and the count from the index alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.create_index(
        op.f("ix_sessions_last_accessed_at_id"),
        "sessions",
        ["last_accessed_at", "id"],
        unique=False,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_index(
        op.f("ix_sessions_status_last_accessed_at_id"),
        "sessions",
        ["status", "last_accessed_at", "id"],
        unique=False,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.drop_index(op.f("ix_sessions_status"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_last_accessed_at"), table_name="sessions")


def downgrade() -> None:
    op.create_index(op.f("ix_sessions_status"), "sessions", ["status"], unique=False)
    op.create_index(
        op.f("ix_sessions_last_accessed_at"), "sessions", ["last_accessed_at"], unique=False
    )
    op.drop_index(op.f("ix_sessions_status_last_accessed_at_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_last_accessed_at_id"), table_name="sessions")
