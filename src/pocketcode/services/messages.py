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
from pocketcode.db.types import utcnow
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


def append_in(
    session: Session, session_id: uuid.UUID, message: NewMessage
) -> tuple[MessageRow, bool]:
    """Append inside the caller's write transaction. Returns the row and whether it is new
    (False when a message with the same provider uuid was already stored)."""
    now = utcnow()
    values: dict[str, Any] = {
        "last_message_index": SessionRow.last_message_index + 1,
        "message_count": SessionRow.message_count + 1,
        "last_activity_at": now,
        "updated_at": now,
    }
    if message.type is MessageType.USER:
        values["last_message_sent_at"] = now
    if message.provider_message_uuid is not None:
        # Lock the session row before looking for a duplicate, so two appenders of the same
        # uuid cannot both miss it (SQLite's BEGIN IMMEDIATE already serialises writers).
        locked = session.scalar(
            sa.select(SessionRow.id).where(SessionRow.id == session_id).with_for_update()
        )
        if locked is None:
            raise NotFound(f"session {session_id} not found")
        existing = _existing_by_uuid(session, session_id, message.provider_message_uuid)
        if existing is not None:
            return existing, False
    seq = session.scalar(
        sa.update(SessionRow)
        .where(SessionRow.id == session_id, SessionRow.deleted_at.is_(None))
        .values(**values)
        .returning(SessionRow.last_message_index)
    )
    if seq is None:
        raise NotFound(f"session {session_id} not found")
    row = MessageRow(
        session_id=session_id,
        seq=int(seq),
        type=message.type,
        subtype=message.subtype,
        text=message.text,
        raw=message.raw,
        job_id=message.job_id,
        provider_session_id=message.provider_session_id,
        provider_message_uuid=message.provider_message_uuid,
        provider_message_id=message.provider_message_id,
        parent_tool_use_id=message.parent_tool_use_id,
        model=message.model,
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        cache_creation_tokens=message.cache_creation_tokens,
        cache_read_tokens=message.cache_read_tokens,
        cost_usd=message.cost_usd,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row, True


class MessageService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, session_id: uuid.UUID, message: NewMessage) -> MessageRow:
        with self.db.write() as session:
            row, _ = append_in(session, session_id, message)
        return row

    def append_many(self, session_id: uuid.UUID, messages: list[NewMessage]) -> list[MessageRow]:
        """Append several messages in one transaction; duplicates (by uuid) are skipped."""
        stored: list[MessageRow] = []
        with self.db.write() as session:
            for message in messages:
                row, is_new = append_in(session, session_id, message)
                if is_new:
                    stored.append(row)
        return stored

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
