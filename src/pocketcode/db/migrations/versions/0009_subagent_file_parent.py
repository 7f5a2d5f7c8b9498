"""transcript_files.parent_tool_use_id: the Agent (Task) call a sub-agent file answers

A sub-agent's transcript (`<session>/subagents/agent-*.jsonl`) says nothing of the call that
started it, so its messages were stored as messages of the main conversation: the chat showed
a sub-agent's replies twice, once in its call's card and once outside it. The call is found
when the file is first read and kept here for the lines appended later.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transcript_files") as batch:
        batch.add_column(sa.Column("parent_tool_use_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transcript_files") as batch:
        batch.drop_column("parent_tool_use_id")
