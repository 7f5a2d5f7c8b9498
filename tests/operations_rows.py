"""Rows for the database-operations tests: a session with something in every child table, and
snapshots of whole tables to compare before and after an operation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import (
    ARCHIVED_TABLES,
    AppSettingRow,
    Base,
    FileRow,
    JobRow,
    MessageRow,
    PermissionRequestRow,
    SessionRow,
    UserRow,
    archived_tables,
)
from pocketcode.domain.states import (
    JobStatus,
    MessageType,
    PermissionMode,
    PermissionStatus,
)

NOW = datetime(2026, 11, 20, 12, 30, 45, 123456, tzinfo=UTC)
SESSION_TABLES = list(ARCHIVED_TABLES)


def add_user(db: Database, username: str = "owner") -> uuid.UUID:
    with db.write() as session:
        user = UserRow(username=username, password_hash="argon2-hash", is_owner=True)
        session.add(user)
        session.flush()
        return user.id


def add_session_tree(
    db: Database,
    *,
    last_accessed_at: datetime,
    is_working: bool = False,
    decided_by: uuid.UUID | None = None,
    title: str = "a session",
) -> uuid.UUID:
    """A session with a job, two messages, a file and a decided permission request, every
    optional column filled so a lost value shows up in a comparison."""
    with db.write() as session:
        row = SessionRow(
            project_path="/home/me/project",
            claude_directory_path="/home/me/.claude/projects/project",
            provider_session_id=f"provider-{uuid.uuid4().hex[:8]}",
            title=title,
            context="notes about ünïcode and 'quotes'",
            model="claude-sonnet-4-5",
            permission_mode=PermissionMode.DEFAULT,
            allowed_tools=["Read", "Grep"],
            metadata_={"source": "test", "nested": {"n": 1}},
            is_working=is_working,
            last_job_status=JobStatus.COMPLETED,
            process_pid=4242,
            process_create_time=1_763_600_000.25,
            turn_count=3,
            message_count=2,
            last_message_index=2,
            input_tokens=1200,
            output_tokens=340,
            cache_creation_tokens=50,
            cache_read_tokens=7000,
            total_cost_usd=Decimal("0.0123456789"),
            cli_total_cost_usd=Decimal("0.0123"),
            created_at=last_accessed_at - timedelta(days=3),
            updated_at=last_accessed_at,
            last_accessed_at=last_accessed_at,
            last_activity_at=last_accessed_at - timedelta(minutes=5),
            last_message_sent_at=last_accessed_at - timedelta(minutes=6),
        )
        session.add(row)
        session.flush()
        job = JobRow(
            session_id=row.id,
            status=JobStatus.COMPLETED,
            prompt="explain the code",
            options={"model": "claude-sonnet-4-5", "max_turns": 4},
            attempts=1,
            worker_id="worker-1",
            claimed_at=last_accessed_at - timedelta(minutes=7),
            heartbeat_at=last_accessed_at - timedelta(minutes=6),
            finished_at=last_accessed_at - timedelta(minutes=5),
            num_turns=3,
            duration_ms=61_000,
            input_tokens=1200,
            output_tokens=340,
            cost_usd=Decimal("0.0123456789"),
            cli_cost_usd=Decimal("0.0123"),
            created_at=last_accessed_at - timedelta(minutes=8),
            updated_at=last_accessed_at - timedelta(minutes=5),
        )
        session.add(job)
        session.flush()
        for seq, (kind, text) in enumerate(
            [(MessageType.USER, "explain the code"), (MessageType.ASSISTANT, "It parses…")],
            start=1,
        ):
            session.add(
                MessageRow(
                    session_id=row.id,
                    seq=seq,
                    type=kind,
                    subtype="text",
                    text=text,
                    raw={"type": kind.value, "content": [{"text": text}]},
                    job_id=job.id,
                    provider_session_id=row.provider_session_id,
                    provider_message_uuid=str(uuid.uuid4()),
                    model="claude-sonnet-4-5",
                    input_tokens=10 * seq,
                    output_tokens=20 * seq,
                    cost_usd=Decimal("0.0000001"),
                    created_at=last_accessed_at - timedelta(minutes=8 - seq),
                )
            )
        session.add(
            FileRow(
                session_id=row.id,
                path="src/app.py",
                content="print('hello')\n",
                size=15,
                mime_type="text/x-python",
                created_at=last_accessed_at - timedelta(days=1),
                updated_at=last_accessed_at - timedelta(hours=1),
            )
        )
        session.add(
            PermissionRequestRow(
                session_id=row.id,
                job_id=job.id,
                tool_name="Bash",
                tool_input={"command": "ls -la"},
                tool_use_id="toolu_01",
                status=PermissionStatus.ALLOWED,
                scope="once",
                reason="looks safe",
                decided_by=decided_by,
                created_at=last_accessed_at - timedelta(minutes=7),
                expires_at=last_accessed_at + timedelta(minutes=3),
                decided_at=last_accessed_at - timedelta(minutes=6),
            )
        )
        return row.id


def add_app_settings(db: Database) -> None:
    with db.write() as session:
        session.add_all(
            [
                AppSettingRow(key="anthropic_api_key", value="gAAAAAB-ciphertext-1"),
                AppSettingRow(key="default_model", value="gAAAAAB-ciphertext-2"),
            ]
        )


def table_rows(db: Database, table: sa.Table) -> list[dict[str, Any]]:
    """Every row of `table`, each as {column: value}, in primary key order."""
    with db.read() as session:
        rows = session.execute(sa.select(table).order_by(*table.primary_key.columns)).mappings()
        return [dict(row) for row in rows]


def snapshot(db: Database, names: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows of the named tables (default: every table of the schema)."""
    tables = [Base.metadata.tables[name] for name in names] if names else _all_tables()
    return {table.name: table_rows(db, table) for table in tables}


def _all_tables() -> list[sa.Table]:
    return list(Base.metadata.sorted_tables)


def owned_by(rows: list[dict[str, Any]], table: str, ids: set[uuid.UUID]) -> list[dict[str, Any]]:
    key = "id" if table == "sessions" else "session_id"
    return [row for row in rows if row[key] in ids]


def archived_rows(db: Database, table: str) -> list[dict[str, Any]]:
    return table_rows(db, archived_tables[table])
