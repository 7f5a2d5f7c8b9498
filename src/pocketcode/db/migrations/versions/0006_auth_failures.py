"""auth_failures: failed login, password and one-time-code attempts, shared by every server
process on the database

The throttle counted failures in each process's memory, so two servers behind one proxy gave
an attacker twice the tries, and a restart forgot them. Each row is one failure under the
SHA-256 of a key (user and address, or address); rows older than the window are swept.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pocketcode.db.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("failed_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_failures")),
    )
    op.create_index(
        op.f("ix_auth_failures_key_hash_failed_at"),
        "auth_failures",
        ["key_hash", "failed_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_auth_failures_failed_at"), "auth_failures", ["failed_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_failures_failed_at"), table_name="auth_failures")
    op.drop_index(op.f("ix_auth_failures_key_hash_failed_at"), table_name="auth_failures")
    op.drop_table("auth_failures")
