"""Messages: stored with a per-session monotonic `seq`, paged in ascending order.

The seq counter is `sessions.last_message_index`: appending bumps it with one
`UPDATE … RETURNING`, which takes the session row's write lock on PostgreSQL and runs inside a
BEGIN IMMEDIATE transaction on SQLite, so concurrent appenders get contiguous, unique numbers
and a rolled-back append never leaves a gap. On PostgreSQL the bump and the insert of the
messages numbered after it are one statement, itself a transaction when it stores one
session's messages (see `MessageService.append_grouped`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.orm import Session

from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow, SessionRow
from pocketcode.db.types import UTCDateTime, new_id, utcnow
from pocketcode.domain.errors import InvalidInput, NotFound
from pocketcode.domain.states import MessageType
from pocketcode.services.sessions import SessionWithPending, load_with_pending

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


class MessageLine(NamedTuple):
    """What a view of a stored message reads (PokéCode's `Message`), without the rest of the
    row: a page of these is read with Core, without ORM objects."""

    id: uuid.UUID
    type: MessageType
    subtype: str | None
    text: str
    raw: dict[str, Any] | None
    parent_tool_use_id: str | None


Message = TypeVar("Message", MessageRow, MessageLine)


@dataclass(frozen=True)
class MessagePage(Generic[Message]):
    messages: list[Message]
    has_next_page: bool
    next_cursor: str | None


@dataclass(frozen=True)
class ChatPage:
    """A session as the chat shows it, and a page of its messages, read together."""

    session: SessionWithPending
    page: MessagePage[MessageLine]


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
_LOCK_SESSIONS = (
    sa.select(SessionRow.id)
    .where(SessionRow.id.in_(sa.bindparam("session_ids", expanding=True)))
    .order_by(SessionRow.id)
    .with_for_update()
)
_STORED_UUIDS = sa.select(MessageRow.session_id, MessageRow.provider_message_uuid).where(
    MessageRow.session_id.in_(sa.bindparam("session_ids", expanding=True)),
    MessageRow.provider_message_uuid.in_(sa.bindparam("uuids", expanding=True)),
)
_COUNTERS: dict[str, Any] = {
    "last_message_index": SessionRow.last_message_index + sa.bindparam("count", type_=sa.Integer),
    "message_count": SessionRow.message_count + sa.bindparam("count", type_=sa.Integer),
    "last_activity_at": sa.bindparam("now", type_=UTCDateTime()),
    "updated_at": sa.bindparam("now", type_=UTCDateTime()),
}
_SESSION_FILTER = sa.and_(
    SessionRow.id == sa.bindparam("session_id"), SessionRow.deleted_at.is_(None)
)
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
# Up to this many rows, insert first and look duplicates up only if the insert met one.
_OPTIMISTIC_UP_TO = 32
# SQLite (PostgreSQL numbers and inserts in one statement: `_numbered_insert`).
_INSERT_SKIPPING_STORED = (
    sqlite_dialect.insert(MessageRow)
    .on_conflict_do_nothing(index_elements=["session_id", "provider_message_uuid"])
    .returning(MessageRow.id)
)


def _numbered_insert(user: bool, skip_conflicts: bool) -> sa.Select[int | None, int]:
    """PostgreSQL: one session's seq bump and the insert of its messages numbered after it,
    as one statement (data-modifying CTEs), which answers the seq before the first message
    (None: no such session, nothing inserted) and how many rows it inserted. Outside a
    transaction it is a transaction of its own: storing what an agent said is one round trip
    instead of BEGIN, the bump, the insert and COMMIT. The messages come as one array per
    column (`new_<column>`), so it is one statement, compiled once, for any number of them.

    With `skip_conflicts`, a message whose provider uuid is stored already is skipped (the
    caller takes the batch back: its seqs were counted); without, it fails the statement, bump
    included."""
    columns = MessageRow.__table__.c
    counters = {**_COUNTERS, "last_message_sent_at": _COUNTERS["updated_at"]} if user else _COUNTERS
    before = SessionRow.last_message_index - sa.bindparam("count", type_=sa.Integer)
    bumped = (
        sa.update(SessionRow)
        .where(_SESSION_FILTER)
        .values(**counters)
        .returning(before.label("before"))
        .cte("bumped")
    )
    names = ["id", *_MESSAGE_FIELDS]
    # Named `new_…`: parameters named after a column of `sessions` would be SET by the update.
    arrays = [
        sa.bindparam(f"new_{name}", type_=postgresql_dialect.ARRAY(columns[name].type))
        for name in names
    ]
    messages = (
        sa.func.unnest(*arrays)
        .table_valued(*(sa.column(name, columns[name].type) for name in names), with_ordinality="n")
        .render_derived(name="m")
    )
    numbered = sa.select(
        messages.c.id,
        sa.bindparam("session_id", type_=columns.session_id.type),
        bumped.c.before + messages.c.n,
        sa.bindparam("now", type_=UTCDateTime()),
        *(messages.c[name] for name in _MESSAGE_FIELDS),
    ).select_from(bumped.join(messages, sa.true()))
    insert = postgresql_dialect.insert(MessageRow).from_select(
        ["id", "session_id", "seq", "created_at", *_MESSAGE_FIELDS], numbered
    )
    if skip_conflicts:
        insert = insert.on_conflict_do_nothing(
            index_elements=["session_id", "provider_message_uuid"]
        )
    inserted = insert.returning(MessageRow.id).cte("inserted")
    return sa.select(
        sa.select(bumped.c.before).scalar_subquery(),
        sa.select(sa.func.count()).select_from(inserted).scalar_subquery(),
    )


_NUMBERED_INSERT = {
    (user, skip): _numbered_insert(user, skip) for user in (False, True) for skip in (False, True)
}


# A page of messages, built once (a page is the most frequent read): after a seq, or after
# the seq of a message id (PokéCode's cursor) in the same query.
_SEQ_OF_MESSAGE = (
    sa.select(MessageRow.seq)
    .where(
        MessageRow.session_id == sa.bindparam("session_id"),
        MessageRow.id == sa.bindparam("message_id"),
    )
    .scalar_subquery()
)
_LINE_COLUMNS = [getattr(MessageRow, name) for name in MessageLine._fields]
_PAGE: dict[tuple[str, str], sa.Select[Any]] = {
    (cursor, columns): sa.select(*(selected or [MessageRow]))
    .where(MessageRow.session_id == sa.bindparam("session_id"), MessageRow.seq > after)
    .order_by(MessageRow.seq)
    .limit(sa.bindparam("limit"))
    for cursor, after in (("seq", sa.bindparam("after_seq")), ("id", _SEQ_OF_MESSAGE))
    for columns, selected in (("rows", None), ("lines", _LINE_COLUMNS))
}

Executor = Session | sa.Connection


def _dialect_name(executor: Executor) -> str:
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    return bind.dialect.name


def _without_stored(
    executor: Executor, grouped: dict[uuid.UUID, list[NewMessage]]
) -> dict[uuid.UUID, list[NewMessage]]:
    """Drop messages whose provider uuid is stored already or repeats one earlier."""
    uuids = [
        m.provider_message_uuid
        for messages in grouped.values()
        for m in messages
        if m.provider_message_uuid is not None
    ]
    if not uuids:
        return grouped
    session_ids = sorted(grouped, key=str)
    # Lock the session rows (in one fixed order) before looking for duplicates, so two
    # appenders of the same uuid cannot both miss it. SQLite's BEGIN IMMEDIATE already
    # serialises writers.
    if _dialect_name(executor) != "sqlite":
        executor.execute(_LOCK_SESSIONS, {"session_ids": session_ids})
    seen = {
        (row[0], row[1])
        for row in executor.execute(_STORED_UUIDS, {"session_ids": session_ids, "uuids": uuids})
    }
    fresh: dict[uuid.UUID, list[NewMessage]] = {}
    for session_id, messages in grouped.items():
        kept = fresh.setdefault(session_id, [])
        for message in messages:
            key = message.provider_message_uuid
            if key is not None:
                if (session_id, key) in seen:
                    continue
                seen.add((session_id, key))
            kept.append(message)
    return fresh


def _dedupe_within(grouped: dict[uuid.UUID, list[NewMessage]]) -> dict[uuid.UUID, list[NewMessage]]:
    """Keep the first of messages that share a provider uuid inside one session's batch."""
    result: dict[uuid.UUID, list[NewMessage]] = {}
    for session_id, messages in grouped.items():
        seen: set[str] = set()
        kept = result.setdefault(session_id, [])
        for message in messages:
            key = message.provider_message_uuid
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            kept.append(message)
    return result


def _has_user_message(messages: list[NewMessage]) -> bool:
    return any(message.type is MessageType.USER for message in messages)


def _row_values(
    session_id: uuid.UUID, first: int, now: datetime, messages: list[NewMessage]
) -> list[dict[str, Any]]:
    """The columns of the rows of `messages`, numbered from `first`."""
    return [
        {
            "id": new_id(),
            "session_id": session_id,
            "seq": first + index,
            "created_at": now,
            **{name: getattr(message, name) for name in _MESSAGE_FIELDS},
        }
        for index, message in enumerate(messages)
    ]


def _insert_numbered(
    executor: Executor, grouped: dict[uuid.UUID, list[NewMessage]], *, skip_conflicts: bool
) -> tuple[dict[uuid.UUID, list[MessageRow]], bool]:
    """`_insert` on PostgreSQL."""
    stored: dict[uuid.UUID, list[MessageRow]] = {}
    skipped = False
    for session_id in sorted(grouped, key=str):
        messages = grouped[session_id]
        if not messages:
            stored[session_id] = []
            continue
        now = utcnow()
        rows = _row_values(session_id, 1, now, messages)
        params: dict[str, Any] = {"session_id": session_id, "count": len(rows), "now": now}
        for name in ("id", *_MESSAGE_FIELDS):
            params[f"new_{name}"] = [row[name] for row in rows]
        statement = _NUMBERED_INSERT[_has_user_message(messages), skip_conflicts]
        before, inserted = executor.execute(statement, params).one()
        if before is None:
            raise NotFound(f"session {session_id} not found")
        stored[session_id] = [
            MessageRow(**{**row, "seq": before + index}) for index, row in enumerate(rows, 1)
        ]
        skipped = skipped or inserted != len(rows)
    return stored, skipped


def _is_unique_violation(error: sa.exc.IntegrityError) -> bool:
    return isinstance(error.orig, psycopg.errors.UniqueViolation)


def _insert(
    executor: Executor, grouped: dict[uuid.UUID, list[NewMessage]], *, skip_conflicts: bool
) -> tuple[dict[uuid.UUID, list[MessageRow]], bool]:
    """Number and insert the messages; returns the rows and whether any was skipped because
    its provider uuid was stored already (only with `skip_conflicts`; without, such a message
    raises IntegrityError). PostgreSQL: one statement per session (`_numbered_insert`)."""
    if _dialect_name(executor) == "postgresql":
        return _insert_numbered(executor, grouped, skip_conflicts=skip_conflicts)
    now = utcnow()
    stored: dict[uuid.UUID, list[MessageRow]] = {}
    values: list[dict[str, Any]] = []
    for session_id in sorted(grouped, key=str):
        messages = grouped[session_id]
        if not messages:
            stored[session_id] = []
            continue
        count = len(messages)
        bump = _BUMP_SEQ_USER if _has_user_message(messages) else _BUMP_SEQ
        last = executor.scalar(bump, {"session_id": session_id, "count": count, "now": now})
        if last is None:
            raise NotFound(f"session {session_id} not found")
        rows = _row_values(session_id, int(last) - count + 1, now, messages)
        values.extend(rows)
        stored[session_id] = [MessageRow(**row) for row in rows]
    if not values:
        return stored, False
    if not skip_conflicts:
        executor.execute(_INSERT, values)
        return stored, False
    inserted = set(executor.scalars(_INSERT_SKIPPING_STORED, values))
    return stored, len(inserted) != len(values)


def _undo(executor: Executor, stored: dict[uuid.UUID, list[MessageRow]]) -> None:
    """Take back an insert that met duplicates, inside the same transaction."""
    ids = [row.id for rows in stored.values() for row in rows]
    executor.execute(sa.delete(MessageRow).where(MessageRow.id.in_(ids)))
    for session_id, rows in stored.items():
        if rows:
            executor.execute(
                sa.update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(
                    last_message_index=SessionRow.last_message_index - len(rows),
                    message_count=SessionRow.message_count - len(rows),
                )
            )


def append_grouped_in(
    executor: Executor, grouped: dict[uuid.UUID, list[NewMessage]]
) -> dict[uuid.UUID, list[MessageRow]]:
    """Append messages of one or more sessions inside the caller's write transaction (an ORM
    session or a Core connection); returns the rows stored per session, in order. A message
    whose provider uuid is already stored in its session (or repeats one earlier) is skipped.

    The common case — a few live events — costs one counter update per session and one
    insert: the insert skips rows whose uuid is stored already (a unique constraint), and only
    when it did skip some (a transcript recovered over live messages) is the batch taken back
    and redone after looking the duplicates up, so seq numbers never have gaps. A big batch
    looks its duplicates up first."""
    grouped = _dedupe_within({k: v for k, v in grouped.items() if v})
    with_uuids = sum(m.provider_message_uuid is not None for ms in grouped.values() for m in ms)
    if with_uuids > _OPTIMISTIC_UP_TO:
        # A big batch: two statements up front cost less than the per-row conflict checks.
        grouped = _without_stored(executor, grouped)
    stored, skipped = _insert(executor, grouped, skip_conflicts=0 < with_uuids <= _OPTIMISTIC_UP_TO)
    if not skipped:
        return stored
    _undo(executor, stored)
    stored, _ = _insert(executor, _without_stored(executor, grouped), skip_conflicts=False)
    return stored


def append_batch_in(
    executor: Executor, session_id: uuid.UUID, messages: list[NewMessage]
) -> list[MessageRow]:
    """`append_grouped_in` for one session."""
    if not messages:
        return []
    return append_grouped_in(executor, {session_id: messages}).get(session_id, [])


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


def _parse_message_id(message_id: uuid.UUID | str) -> uuid.UUID:
    try:
        return message_id if isinstance(message_id, uuid.UUID) else uuid.UUID(message_id)
    except ValueError:
        raise InvalidInput(f"cursor {message_id!r} is not a message id") from None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")


PageColumns = Literal["rows", "lines"]


def _page_rows(
    session: Session,
    columns: PageColumns,
    session_id: uuid.UUID,
    after_seq: int | None,
    after_id: uuid.UUID | str | None,
    limit: int,
) -> Sequence[Any]:
    """Up to `limit + 1` messages after the cursor: ORM rows (`columns="rows"`) or the
    columns of a `MessageLine` (`"lines"`)."""
    fetch = session.scalars if columns == "rows" else session.execute
    if after_id is None:
        params = {"session_id": session_id, "after_seq": after_seq or 0, "limit": limit + 1}
        return fetch(_PAGE["seq", columns], params).all()
    message_id = _parse_message_id(after_id)
    params = {"session_id": session_id, "message_id": message_id, "limit": limit + 1}
    rows = fetch(_PAGE["id", columns], params).all()
    if not rows:  # the end of the session, or a cursor that is not one of its own
        MessageService._seq_of(session, session_id, message_id)
    return rows


def _paged(rows: list[Message], limit: int) -> MessagePage[Message]:
    has_next = len(rows) > limit
    rows = rows[:limit]
    return MessagePage(rows, has_next, str(rows[-1].id) if has_next and rows else None)


class MessageService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, session_id: uuid.UUID, message: NewMessage) -> MessageRow:
        """Append one message; if its provider uuid is stored already, that message."""
        rows = self.append_many(session_id, [message])
        if rows:
            return rows[0]
        assert message.provider_message_uuid is not None
        with self.db.read() as session:
            existing = _existing_by_uuid(session, session_id, message.provider_message_uuid)
        assert existing is not None
        return existing

    def append_many(self, session_id: uuid.UUID, messages: list[NewMessage]) -> list[MessageRow]:
        """Append several messages in one transaction; duplicates (by uuid) are skipped."""
        return self.append_grouped({session_id: messages}).get(session_id, [])

    def append_grouped(
        self, grouped: dict[uuid.UUID, list[NewMessage]]
    ) -> dict[uuid.UUID, list[MessageRow]]:
        """Append the messages of several sessions in one transaction (one commit for all).
        Sessions are handled in a fixed order, so concurrent writers lock their rows in the
        same order and cannot deadlock.

        On PostgreSQL each session's messages are numbered and inserted by one statement, and
        a batch of one session is that statement alone, without BEGIN and COMMIT (it commits
        by itself): one round trip to store what an agent just said. If a provider uuid was
        stored already (a transcript recovered over live messages), the statement failed as a
        whole, and the batch is stored again the careful way: duplicates looked up first."""
        grouped = _dedupe_within({k: v for k, v in grouped.items() if v})
        if not grouped:
            return {}
        with_uuids = sum(m.provider_message_uuid is not None for ms in grouped.values() for m in ms)
        if self.db.is_sqlite or with_uuids > _OPTIMISTIC_UP_TO:
            with self.db.write_connection() as connection:
                return append_grouped_in(connection, grouped)
        try:
            if len(grouped) == 1:
                # One statement (PostgreSQL), committed by itself: no BEGIN, no COMMIT.
                with self.db.autocommit_connection() as connection:
                    return _insert(connection, grouped, skip_conflicts=False)[0]
            with self.db.write_connection() as connection:
                return _insert(connection, grouped, skip_conflicts=False)[0]
        except sa.exc.IntegrityError as error:
            if not _is_unique_violation(error):
                raise
        with self.db.write_connection() as connection:
            stored, _ = _insert(
                connection, _without_stored(connection, grouped), skip_conflicts=False
            )
        return stored

    def page(
        self,
        session_id: uuid.UUID,
        *,
        after_seq: int | None = None,
        after_id: uuid.UUID | str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> MessagePage[MessageRow]:
        """Messages in ascending seq order after a cursor (a seq, or a message id as
        PokéCode's `after` query parameter gives)."""
        _check_limit(limit)
        with self.db.read() as session:
            rows = _page_rows(session, "rows", session_id, after_seq, after_id, limit)
        return _paged(list(rows), limit)

    def chat_page(
        self, session_id: uuid.UUID | str, *, after_id: uuid.UUID | str | None, limit: int
    ) -> ChatPage:
        """The session (NotFound if it is not there), its pending permission count and a page
        of its messages as `MessageLine`s, in one read transaction: what the chat view reads
        on every poll."""
        _check_limit(limit)
        with self.db.read() as session:
            found = load_with_pending(session, session_id)
            rows = _page_rows(session, "lines", found.row.id, None, after_id, limit)
            lines = [MessageLine(*row) for row in rows]
        return ChatPage(found, _paged(lines, limit))

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

    # -- positions, for the live event streams ---------------------------------------------

    def last_seq(self, session_id: uuid.UUID) -> int | None:
        """The session's last seq, None if it does not exist (or was deleted)."""
        return self.last_seqs([session_id]).get(session_id)

    def last_seqs(self, session_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The last seq of each of these sessions that exists (and is not deleted)."""
        if not session_ids:
            return {}
        with self.db.read() as session:
            rows = session.execute(
                sa.select(SessionRow.id, SessionRow.last_message_index).where(
                    SessionRow.id.in_(list(session_ids)), SessionRow.deleted_at.is_(None)
                )
            )
            return {session_id: int(seq or 0) for session_id, seq in rows}

    def recent_sessions(self, since: datetime) -> set[uuid.UUID]:
        """Sessions with a message created at or after `since`."""
        with self.db.read() as session:
            return set(
                session.scalars(
                    sa.select(MessageRow.session_id)
                    .where(MessageRow.created_at >= since)
                    .distinct()
                )
            )

    def recent_positions(self, since: datetime) -> dict[uuid.UUID, int]:
        """The last seq of every session with a message created at or after `since`."""
        recent = (
            sa.select(MessageRow.session_id).where(MessageRow.created_at >= since).distinct()
        ).scalar_subquery()
        with self.db.read() as session:
            rows = session.execute(
                sa.select(SessionRow.id, SessionRow.last_message_index).where(
                    SessionRow.id.in_(recent)
                )
            )
            return {row[0]: int(row[1]) for row in rows}

    def seq_before(self, session_id: uuid.UUID, since: datetime) -> int:
        """The last seq of the session's messages created before `since` (0 if none)."""
        with self.db.read() as session:
            seq = session.scalar(
                sa.select(sa.func.max(MessageRow.seq)).where(
                    MessageRow.session_id == session_id, MessageRow.created_at < since
                )
            )
        return int(seq or 0)

    @staticmethod
    def _seq_of(session: Session, session_id: uuid.UUID, message_id: uuid.UUID | str) -> int:
        parsed = _parse_message_id(message_id)
        seq = session.scalar(
            sa.select(MessageRow.seq).where(
                MessageRow.session_id == session_id, MessageRow.id == parsed
            )
        )
        if seq is None:
            raise InvalidInput(f"cursor {message_id} is not a message of this session")
        return int(seq)
