"""The data model: one schema that holds every table and field of both seed designs.

docs/data-model.md maps each seed field to its home here and explains every rename and merge.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pocketcode.db.types import (
    CompressedJSONType,
    DecimalType,
    JSONType,
    UTCDateTime,
    enum_column_type,
    money,
    new_id,
    utcnow,
)
from pocketcode.domain.states import (
    JobStatus,
    LifecycleStatus,
    MessageType,
    PermissionMode,
    PermissionStatus,
    ProcessStatus,
    Provider,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CONTEXT_MAX_CHARS = 5000


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        uuid.UUID: sa.Uuid(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


def _created_at() -> Mapped[datetime]:
    return mapped_column(default=utcnow, server_default=sa.func.current_timestamp())


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.current_timestamp()
    )


def _counter() -> Mapped[int]:
    return mapped_column(sa.BigInteger, default=0, server_default="0")


def _cost() -> Mapped[Decimal]:
    return mapped_column(money(), default=Decimal(0), server_default="0")


class SessionRow(Base):
    """A conversation with an agent in one project folder (seed 000 `sessions` ∪ seed 004
    `claude_sessions`)."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    provider: Mapped[Provider] = mapped_column(
        enum_column_type(Provider, "provider"), default=Provider.CLAUDE_CODE
    )
    project_path: Mapped[str] = mapped_column(sa.Text)
    claude_directory_path: Mapped[str | None] = mapped_column(sa.Text)
    provider_session_id: Mapped[str | None] = mapped_column(sa.String(128))
    title: Mapped[str | None] = mapped_column(sa.String(255))
    context: Mapped[str | None] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.String(255))
    permission_mode: Mapped[PermissionMode | None] = mapped_column(
        enum_column_type(PermissionMode, "permission_mode")
    )
    # Tools the user chose "always allow" for, for the rest of this session.
    allowed_tools: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    status: Mapped[LifecycleStatus] = mapped_column(
        enum_column_type(LifecycleStatus, "status"), default=LifecycleStatus.ACTIVE
    )
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default="{}")
    is_working: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    current_job_id: Mapped[uuid.UUID | None] = mapped_column()
    last_job_status: Mapped[JobStatus | None] = mapped_column(
        enum_column_type(JobStatus, "last_job_status")
    )
    process_pid: Mapped[int | None] = mapped_column()
    # psutil's create_time of process_pid: with the pid it identifies the process safely
    # after a restart (pids are reused).
    process_create_time: Mapped[float | None] = mapped_column(sa.Float)
    process_status: Mapped[ProcessStatus] = mapped_column(
        enum_column_type(ProcessStatus, "process_status"), default=ProcessStatus.IDLE
    )
    turn_count: Mapped[int] = mapped_column(default=0, server_default="0")
    message_count: Mapped[int] = mapped_column(default=0, server_default="0")
    # The seq of the last stored message: the per-session counter that hands out seq numbers.
    last_message_index: Mapped[int] = mapped_column(default=0, server_default="0")
    input_tokens: Mapped[int] = _counter()
    output_tokens: Mapped[int] = _counter()
    cache_creation_tokens: Mapped[int] = _counter()
    cache_read_tokens: Mapped[int] = _counter()
    total_cost_usd: Mapped[Decimal] = _cost()
    cli_total_cost_usd: Mapped[Decimal] = _cost()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    last_accessed_at: Mapped[datetime] = _created_at()
    last_activity_at: Mapped[datetime | None] = mapped_column()
    last_message_sent_at: Mapped[datetime | None] = mapped_column()
    # The queue time (`created_at`) of the session's newest job: the next one is queued after
    # it even if the clock went back (services/jobs.py).
    last_queued_at: Mapped[datetime | None] = mapped_column()
    deleted_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        sa.CheckConstraint(
            f"context IS NULL OR length(context) <= {CONTEXT_MAX_CHARS}", name="context_length"
        ),
        sa.UniqueConstraint("provider", "provider_session_id"),
        # The session list: newest access first (id breaks ties), with or without a state
        # filter; partial, so a page, an offset and the count read only live sessions' entries.
        sa.Index(
            None,
            "last_accessed_at",
            "id",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
        sa.Index(
            None,
            "status",
            "last_accessed_at",
            "id",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
        sa.Index(None, "last_activity_at"),
        sa.Index(None, "project_path"),
        sa.Index(None, "process_status"),
    )

    @property
    def token_count(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )


class JobRow(Base):
    """A prompt waiting in a session's queue, and the run that answered it (Laravel `jobs` and
    `failed_jobs`: failed runs stay here with their error)."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    status: Mapped[JobStatus] = mapped_column(
        enum_column_type(JobStatus, "status"), default=JobStatus.PENDING
    )
    prompt: Mapped[str] = mapped_column(sa.Text)
    # Per-prompt run options: model, permission mode, allowed tools, max turns…
    options: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(default=1, server_default="1")
    error: Mapped[str | None] = mapped_column(sa.Text)
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    next_retry_at: Mapped[datetime | None] = mapped_column()
    worker_id: Mapped[str | None] = mapped_column(sa.String(128))
    claimed_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    num_turns: Mapped[int | None] = mapped_column()
    duration_ms: Mapped[int | None] = mapped_column()
    input_tokens: Mapped[int] = _counter()
    output_tokens: Mapped[int] = _counter()
    cache_creation_tokens: Mapped[int] = _counter()
    cache_read_tokens: Mapped[int] = _counter()
    cost_usd: Mapped[Decimal] = _cost()
    cli_cost_usd: Mapped[Decimal | None] = mapped_column(money())
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        sa.Index(None, "session_id", "status"),
        sa.Index(None, "status", "created_at"),
        # At most one run at a time per session, enforced by the database itself.
        sa.Index(
            "ix_jobs_session_id_processing",
            "session_id",
            unique=True,
            sqlite_where=sa.text("status = 'processing'"),
            postgresql_where=sa.text("status = 'processing'"),
        ),
    )


class MessageRow(Base):
    """One stored event of a conversation, numbered by a per-session monotonic `seq`."""

    __tablename__ = "session_messages"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    session_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column()
    type: Mapped[MessageType] = mapped_column(enum_column_type(MessageType, "type"))
    # Finer kind inside a type: text, thinking, tool_use, tool_result, init, cancelled…
    subtype: Mapped[str | None] = mapped_column(sa.String(64))
    text: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    raw: Mapped[dict[str, Any] | None] = mapped_column(CompressedJSONType)
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    provider_session_id: Mapped[str | None] = mapped_column(sa.String(128))
    provider_message_uuid: Mapped[str | None] = mapped_column(sa.String(64))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(128))
    parent_tool_use_id: Mapped[str | None] = mapped_column(sa.String(128))
    model: Mapped[str | None] = mapped_column(sa.String(255))
    input_tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    cache_creation_tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    cache_read_tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    cost_usd: Mapped[Decimal | None] = mapped_column(money())
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (
        sa.UniqueConstraint("session_id", "seq"),
        sa.UniqueConstraint("session_id", "provider_message_uuid"),
        sa.Index(None, "created_at"),
        # Most messages have no job (every imported one): only those with one are indexed.
        sa.Index(
            None,
            "job_id",
            sqlite_where=sa.text("job_id IS NOT NULL"),
            postgresql_where=sa.text("job_id IS NOT NULL"),
        ),
    )


class FileRow(Base):
    """A file tracked for a session (seed 000 `files`)."""

    __tablename__ = "files"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(sa.Text)
    content: Mapped[str | None] = mapped_column(sa.Text)
    encoding: Mapped[str] = mapped_column(sa.String(20), default="utf-8", server_default="utf-8")
    size: Mapped[int | None] = mapped_column(sa.BigInteger)
    mime_type: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        sa.UniqueConstraint("session_id", "path"),
        sa.Index(None, "updated_at"),
    )


class PermissionRequestRow(Base):
    """A tool use waiting for the user's approval, and the answer given."""

    __tablename__ = "permission_requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    tool_name: Mapped[str] = mapped_column(sa.String(128))
    tool_input: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    tool_use_id: Mapped[str | None] = mapped_column(sa.String(128))
    status: Mapped[PermissionStatus] = mapped_column(
        enum_column_type(PermissionStatus, "status"), default=PermissionStatus.PENDING
    )
    # "once" or "session" (allow this tool for the rest of the session).
    scope: Mapped[str | None] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime | None] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (sa.Index(None, "session_id", "status"), sa.Index(None, "job_id"))


class ModelPricingRow(Base):
    """Price per million tokens of one model (seed 004 `model_pricing`)."""

    __tablename__ = "model_pricing"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    )
    model_name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    input_price_per_million: Mapped[Decimal | None] = mapped_column(DecimalType(10, 6))
    output_price_per_million: Mapped[Decimal | None] = mapped_column(DecimalType(10, 6))
    cache_write_multiplier: Mapped[Decimal] = mapped_column(
        DecimalType(5, 3), default=Decimal("1.25"), server_default="1.25"
    )
    cache_read_multiplier: Mapped[Decimal] = mapped_column(
        DecimalType(5, 3), default=Decimal("0.1"), server_default="0.1"
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class AppSettingRow(Base):
    """An encrypted key-value setting (seed 004 `app_settings`). `value` is Fernet ciphertext."""

    __tablename__ = "app_settings"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    value: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(255))
    password_hash: Mapped[str] = mapped_column(sa.Text)
    is_owner: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    totp_secret: Mapped[str | None] = mapped_column(sa.Text)  # encrypted like app_settings
    totp_enabled: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The last accepted TOTP time step: a code of that step or earlier is never accepted again.
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)
    recovery_code_hashes: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    password_changed_at: Mapped[datetime | None] = mapped_column()
    last_login_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class LoginSessionRow(Base):
    """A browser login, referenced by a cookie holding a token whose SHA-256 is stored here."""

    __tablename__ = "login_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    ip_address: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created_at()
    last_seen_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (sa.Index(None, "user_id"), sa.Index(None, "expires_at"))


class AuthFailureRow(Base):
    """A failed login, password or one-time-code attempt, under the SHA-256 of each key it
    counts against (user and address, address); rows older than the throttle window are swept."""

    __tablename__ = "auth_failures"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    failed_at: Mapped[datetime] = mapped_column()

    __table_args__ = (sa.Index(None, "key_hash", "failed_at"), sa.Index(None, "failed_at"))


class ApiTokenRow(Base):
    """A bearer token for the CLI and mobile clients; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(128))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(sa.String(16))  # shown in lists to tell tokens apart
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (sa.Index(None, "user_id"),)


class DeviceRow(Base):
    """A mobile client that reported in through `POST /api/connect` (PokéCode's devices)."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    device_name: Mapped[str] = mapped_column(sa.String(128))
    platform: Mapped[str | None] = mapped_column(sa.String(16))
    app_version: Mapped[str | None] = mapped_column(sa.String(64))
    last_connected_at: Mapped[datetime] = _created_at()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (sa.Index(None, "last_connected_at"),)


class TranscriptFileRow(Base):
    """The index watermark of one Claude Code transcript file: what was parsed of it, so an
    unchanged file is never opened again and a grown one is read from where the last scan
    stopped."""

    __tablename__ = "transcript_files"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    path: Mapped[str] = mapped_column(sa.Text, unique=True)
    inode: Mapped[int | None] = mapped_column(sa.BigInteger)
    size: Mapped[int] = _counter()
    mtime_ns: Mapped[int] = _counter()
    # Bytes parsed so far: always the end of a complete line.
    parsed_offset: Mapped[int] = _counter()
    provider_session_id: Mapped[str | None] = mapped_column(sa.String(128))
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("sessions.id", ondelete="SET NULL")
    )
    is_subagent: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # A sub-agent file's Agent (Task) call: its messages are stored under it.
    parent_tool_use_id: Mapped[str | None] = mapped_column(sa.String(128))
    lines_skipped: Mapped[int] = _counter()
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    gone_at: Mapped[datetime | None] = mapped_column()
    last_scanned_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (sa.Index(None, "session_id"),)


# Seed 000's archive strategy: old sessions move, with everything that hangs off them, into
# tables of the same shape (plus archived_at) that nothing references and no cascade reaches.
ARCHIVED_TABLES: dict[str, str] = {
    "sessions": "archived_sessions",
    "jobs": "archived_jobs",
    "session_messages": "archived_session_messages",
    "files": "archived_files",
    "permission_requests": "archived_permission_requests",
}


def _archive_table(source: sa.Table, name: str) -> sa.Table:
    columns: list[sa.Column[Any]] = []
    for column in source.columns:
        copy = sa.Column(
            column.name,
            column.type,
            primary_key=column.primary_key,
            nullable=column.nullable,
            autoincrement=False,
        )
        columns.append(copy)
    columns.append(
        sa.Column(
            "archived_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()
        )
    )
    extra: list[Any] = [sa.Index(None, "archived_at")]
    if "session_id" in source.columns:
        extra.append(sa.Index(None, "session_id"))
    return sa.Table(name, Base.metadata, *columns, *extra)


archived_tables: dict[str, sa.Table] = {
    source: _archive_table(Base.metadata.tables[source], target)
    for source, target in ARCHIVED_TABLES.items()
}
