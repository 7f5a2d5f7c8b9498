"""session_messages: one index fewer, and the job index only where there is a job

Every stored message updated seven B-trees (the table and six indexes). Two of them cost more
than they give: `provider_session_id` was indexed though nothing looks messages up by it (a
session is found by its own `provider_session_id`), and `job_id` is NULL for every message
that no run of ours stored (every imported one), so its index was mostly NULL entries. The
first is dropped; the second covers the rows that have a job (the usage query asks for a job's
result: `job_id = …` implies NOT NULL, so both databases use the partial index).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_JOB = sa.text("job_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_session_messages_provider_session_id", table_name="session_messages")
    op.drop_index("ix_session_messages_job_id", table_name="session_messages")
    op.create_index(
        "ix_session_messages_job_id",
        "session_messages",
        ["job_id"],
        sqlite_where=_HAS_JOB,
        postgresql_where=_HAS_JOB,
    )


def downgrade() -> None:
    op.drop_index("ix_session_messages_job_id", table_name="session_messages")
    op.create_index("ix_session_messages_job_id", "session_messages", ["job_id"])
    op.create_index(
        "ix_session_messages_provider_session_id", "session_messages", ["provider_session_id"]
    )
