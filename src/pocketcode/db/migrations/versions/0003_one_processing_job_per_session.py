"""at most one processing job per session, enforced by a partial unique index

The job queue already claims at most one job per session; this index makes the database refuse
a second `processing` job of a session whatever the code does (two server processes, a bug).
A database that somehow holds several processing jobs of one session keeps one of them and
marks the others interrupted first, so the index can be built.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_jobs_session_id_processing"
_PROCESSING = sa.text("status = 'processing'")


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE jobs SET status = 'interrupted', finished_at = CURRENT_TIMESTAMP, "
            "error = 'interrupted while the database was upgraded' "
            "WHERE status = 'processing' AND EXISTS ("
            "SELECT 1 FROM jobs AS other WHERE other.session_id = jobs.session_id "
            "AND other.status = 'processing' AND other.id > jobs.id)"
        )
    )
    op.create_index(
        _INDEX,
        "jobs",
        ["session_id"],
        unique=True,
        sqlite_where=_PROCESSING,
        postgresql_where=_PROCESSING,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="jobs")
