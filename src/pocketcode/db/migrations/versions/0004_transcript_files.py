"""transcript_files: the incremental index of Claude Code's JSONL transcripts

One row per transcript file: its inode, size and mtime when last scanned, and the byte offset
parsed up to, so an unchanged file is skipped without being opened and a grown one is read only
from where the previous scan stopped.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pocketcode.db.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transcript_files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("parsed_offset", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("provider_session_id", sa.String(length=128), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("is_subagent", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("lines_skipped", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gone_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_scanned_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            UTCDateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            UTCDateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_transcript_files_session_id_sessions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_files")),
        sa.UniqueConstraint("path", name=op.f("uq_transcript_files_path")),
    )
    op.create_index(
        op.f("ix_transcript_files_session_id"), "transcript_files", ["session_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_transcript_files_session_id"), table_name="transcript_files")
    op.drop_table("transcript_files")
