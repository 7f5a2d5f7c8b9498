"""Messages: stored with a per-session monotonic `seq`, paged in ascending order.

The seq counter is `sessions.last_message_index`: appending bumps it with one
`UPDATE … RETURNING`, which takes the session row's write lock on PostgreSQL and runs inside a
BEGIN IMMEDIATE transaction on SQLite, so concurrent appenders get contiguous, unique numbers
and a rolled-back append never leaves a gap.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow, SessionRow
from pocketcode.db.types import UTCDateTime, utcnow
from pocketcode.domain.errors import InvalidInput, NotFound
from pocketcode.domain.states import MessageType

DEFAULT_PAGE = 50
MAX_PAGE = 1000


@dataclass
class NewMessage:
    type: MessageType
    text: str = ""
    subtype: str | None = None
    raw: dict[str, Any] | None = None
    job_id: uuid.UUID | None = None
    provider_session_id: str | None = None
    provider_message_uuid: str | None = None
    provider_message_id: str | None = None
    parent_tool_use_id: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cache_read_tokens: int | None = None
    cost_usd: Decimal | None = None


@dataclass(frozen=True)
class MessagePage:
    messages: list[MessageRow]
    has_next_page: bool
    next_cursor: str | None


def _existing_by_uuid(
    session: Session, session_id: uuid.UUID, message_uuid: str
) -> MessageRow | None:
    return session.scalar(
        sa.select(MessageRow).where(
            MessageRow.session_id == session_id,
            MessageRow.provider_message_uuid == message_uuid,
        )
    )


_MESSAGE_FIELDS = (
    "type",
    "subtype",
    "text",
    "raw",
    "job_id",
    "provider_session_id",
    "provider_message_uuid",
    "provider_message_id",
    "parent_tool_use_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "cost_usd",
)


# The statements of the hot path, built once: every agent event goes through them, and
# building SQLAlchemy expressions per call cost more than the database work itself.
_SESSION_FILTER = sa.and_(
    SessionRow.id == sa.bindparam("session_id"), SessionRow.deleted_at.is_(None)
)
_LOCK_SESSION = sa.select(SessionRow.id).where(_SESSION_FILTER).with_for_update()
_STORED_UUIDS = sa.select(MessageRow.provider_message_uuid).where(
    MessageRow.session_id == sa.bindparam("session_id"),
    MessageRow.provider_message_uuid.in_(sa.bindparam("uuids", expanding=True)),
)
_COUNTERS: dict[str, Any] = {
    "last_message_index": SessionRow.last_message_index + sa.bindparam("count", type_=sa.Integer),
    "message_count": SessionRow.message_count + sa.bindparam("count", type_=sa.Integer),
    "last_activity_at": sa.bindparam("now", type_=UTCDateTime()),
    "updated_at": sa.bindparam("now", type_=UTCDateTime()),
}
_BUMP_SEQ = (
    sa.update(SessionRow)
    .where(_SESSION_FILTER)
    .values(**_COUNTERS)
    .returning(SessionRow.last_message_index)
)
_BUMP_SEQ_USER = (
    sa.update(SessionRow)
    .where(_SESSION_FILTER)
    .values(**_COUNTERS, last_message_sent_at=sa.bindparam("now", type_=UTCDateTime()))
    .returning(SessionRow.last_message_index)
)
_INSERT = sa.insert(MessageRow)

Executor = Session | sa.Connection


def _dialect_name(executor: Executor) -> str:
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    return bind.dialect.name


def append_batch_in(
    executor: Executor, session_id: uuid.UUID, messages: list[NewMessage]
) -> list[MessageRow]:
    """Append messages, in order, inside the caller's write transaction (an ORM session or a
    Core connection); returns the rows stored. A message whose provider uuid is already
    stored (or repeats one earlier in the batch) is skipped. Three or four statements per
    batch whatever its size."""
    if not messages:
        return []
    uuids = [m.provider_message_uuid for m in messages if m.provider_message_uuid is not None]
    if uuids:
        # Lock the session row before looking for duplicates, so two appenders of the same
        # uuid cannot both miss it (SQLite's BEGIN IMMEDIATE already serialises writers).
        if (
            _dialect_name(executor) != "sqlite"
            and executor.scalar(_LOCK_SESSION, {"session_id": session_id}) is None
        ):
            raise NotFound(f"session {session_id} not found")
        seen = set(executor.scalars(_STORED_UUIDS, {"session_id": session_id, "uuids": uuids}))
        fresh: list[NewMessage] = []
        for message in messages:
            if message.provider_message_uuid is not None:
                if message.provider_message_uuid in seen:
                    continue
                seen.add(message.provider_message_uuid)
            fresh.append(message)
        messages = fresh
        if not messages:
            return []
    now = utcnow()
    count = len(messages)
    bump = _BUMP_SEQ_USER if any(m.type is MessageType.USER for m in messages) else _BUMP_SEQ
    last = executor.scalar(bump, {"session_id": session_id, "count": count, "now": now})
    if last is None:
        raise NotFound(f"session {session_id} not found")
    first = int(last) - count + 1
    values = [
        {
            "id": uuid.uuid4(),
            "session_id": session_id,
            "seq": first + index,
            "created_at": now,
            **{name: getattr(message, name) for name in _MESSAGE_FIELDS},
        }
        for index, message in enumerate(messages)
    ]
    executor.execute(_INSERT, values)
    return [MessageRow(**row) for row in values]


def append_in(
    session: Session, session_id: uuid.UUID, message: NewMessage
) -> tuple[MessageRow, bool]:
    """Append one message inside the caller's write transaction. Returns the row and whether
    it is new (False: a message with the same provider uuid was already stored; that one is
    returned)."""
    rows = append_batch_in(session, session_id, [message])
    if rows:
        return rows[0], True
    assert message.provider_message_uuid is not None
    existing = _existing_by_uuid(session, session_id, message.provider_message_uuid)
    assert existing is not None
    return existing, False


class MessageService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, session_id: uuid.UUID, message: NewMessage) -> MessageRow:
        with self.db.write() as session:
            row, _ = append_in(session, session_id, message)
        return row

    def append_many(self, session_id: uuid.UUID, messages: list[NewMessage]) -> list[MessageRow]:
        """Append several messages in one transaction; duplicates (by uuid) are skipped."""
        with self.db.write_connection() as connection:
            return append_batch_in(connection, session_id, messages)

    def page(
        self,
        session_id: uuid.UUID,
        *,
        after_seq: int | None = None,
        after_id: uuid.UUID | str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> MessagePage:
        """Messages in ascending seq order after a cursor (a seq, or a message id as
        PokéCode's `after` query parameter gives)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        with self.db.read() as session:
            if after_id is not None:
                after_seq = self._seq_of(session, session_id, after_id)
            query = sa.select(MessageRow).where(MessageRow.session_id == session_id)
            if after_seq is not None:
                query = query.where(MessageRow.seq > after_seq)
            rows = list(session.scalars(query.order_by(MessageRow.seq).limit(limit + 1)).all())
        has_next = len(rows) > limit
        rows = rows[:limit]
        return MessagePage(rows, has_next, str(rows[-1].id) if has_next and rows else None)

    def since(self, session_id: uuid.UUID, seq: int, limit: int = MAX_PAGE) -> list[MessageRow]:
        """Messages with seq greater than `seq`: what a reconnecting client missed."""
        return self.page(session_id, after_seq=seq, limit=limit).messages

    def count(self, session_id: uuid.UUID) -> int:
        with self.db.read() as session:
            return int(
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(MessageRow)
                    .where(MessageRow.session_id == session_id)
                )
                or 0
            )

    @staticmethod
    def _seq_of(session: Session, session_id: uuid.UUID, message_id: uuid.UUID | str) -> int:
        try:
            parsed = message_id if isinstance(message_id, uuid.UUID) else uuid.UUID(message_id)
        except ValueError:
            raise InvalidInput(f"cursor {message_id!r} is not a message id") from None
        seq = session.scalar(
            sa.select(MessageRow.seq).where(
                MessageRow.session_id == session_id, MessageRow.id == parsed
            )
        )
        if seq is None:
            raise InvalidInput(f"cursor {message_id} is not a message of this session")
        return int(seq)
