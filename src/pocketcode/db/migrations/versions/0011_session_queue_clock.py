"""sessions.last_queued_at: the queue time of the session's newest prompt

A prompt's place in its session's queue is its `created_at`, made strictly increasing within
the session: now, or just after the newest job's. That newest time was read with a query over
the session's jobs under the session's row lock. Kept on the session row instead, it is
updated where it is read (`GREATEST(now, last_queued_at + 1 µs)`), which lets PostgreSQL
store a prompt — the bump, the job, the user message — in one statement, and stays right
when two writers queue at once (the second waits for the row and reads the first's value).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pocketcode.db.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_TABLES = ("sessions", "archived_sessions")  # an archived session keeps its columns


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column(
                    "last_queued_at",
                    pocketcode.db.types.UTCDateTime(timezone=True),
                    nullable=True,
                )
            )
    op.execute(
        "UPDATE archived_sessions SET last_queued_at = (SELECT max(archived_jobs.created_at) "
        "FROM archived_jobs WHERE archived_jobs.session_id = archived_sessions.id)"
    )
    op.execute(
        "UPDATE sessions SET last_queued_at = "
        "(SELECT max(jobs.created_at) FROM jobs WHERE jobs.session_id = sessions.id)"
    )


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("last_queued_at")
