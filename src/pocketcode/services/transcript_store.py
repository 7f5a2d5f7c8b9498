"""Storing many transcript messages fast: the indexer's insert path.

`MessageService` appends what a run produces, a few messages at a time, as `NewMessage`s with
their `raw` line as a dict. An import stores hundreds of thousands of messages whose raw line is
already JSON text (the transcript line itself), so this path
- takes the raw JSON as the line's own bytes and never serialises it again (PostgreSQL gets it
  as text and casts it to jsonb; SQLite gets the bytes zstd-compressed, as `CompressedJSONType`
  stores them);
- binds plain tuples through one prepared statement per dialect (`executemany`), with the
  column types' own bind processors, instead of building ORM objects or Core expressions per row;
- keeps the store's rules: per-session seq numbers from `sessions.last_message_index` (bumped
  with one `UPDATE … RETURNING`, so concurrent appenders get contiguous numbers), and a message
  whose provider uuid is stored already in its session is skipped — looked up after locking the
  session row (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), with the
  `(session_id, provider_message_uuid)` unique constraint as the last word.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from pocketcode.db.tables import MessageRow, SessionRow
from pocketcode.db.types import UTCDateTime, compress_json, new_id
from pocketcode.domain.errors import NotFound
from pocketcode.domain.states import MessageType
from pocketcode.services.messages import NewMessage

STORED_COLUMNS = (
    "id",
    "session_id",
    "seq",
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
    "created_at",
)
_MESSAGE_FIELDS = STORED_COLUMNS[3:-1]
_RAW = STORED_COLUMNS.index("raw")

_LOCK_SESSION = (
    sa.select(SessionRow.id).where(SessionRow.id == sa.bindparam("session_id")).with_for_update()
)
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
_WHERE_LIVE = sa.and_(SessionRow.id == sa.bindparam("session_id"), SessionRow.deleted_at.is_(None))
_BUMP_SEQ = (
    sa.update(SessionRow)
    .where(_WHERE_LIVE)
    .values(**_COUNTERS)
    .returning(SessionRow.last_message_index)
)
_BUMP_SEQ_USER = (
    sa.update(SessionRow)
    .where(_WHERE_LIVE)
    .values(**_COUNTERS, last_message_sent_at=sa.bindparam("now", type_=UTCDateTime()))
    .returning(SessionRow.last_message_index)
)
NUL_REPLACEMENT = "\ufffd"
# Lookups of stored uuids go in slices: SQLite allows 32,766 variables per statement.
LOOKUP_SLICE = 5000


@dataclass
class RawMessage:
    """A message to store, its row as the driver takes it (session id, seq and time are filled
    in when it is stored) and, when its stored row is wanted back, its raw line as UTF-8 JSON
    (else None, so a batch does not hold the raw lines twice)."""

    message: NewMessage
    raw_json: bytes | None
    id: uuid.UUID
    row: list[Any]


def raw_json_of(
    message: NewMessage, line: dict[str, Any], line_bytes: bytes
) -> bytes | memoryview | None:
    """The raw JSON of a message mapped from `line` (parsed from `line_bytes`): when the raw is
    the whole line, a view of the line's own bytes without its newline, so it is never
    serialised again, nor decoded (the parser checked it is UTF-8) or copied."""
    if message.raw is None:
        return None
    if b"\\u0000" in line_bytes:
        # PostgreSQL text and jsonb cannot hold NUL (a tool's binary output): both databases
        # store U+FFFD instead.
        return orjson.dumps(_without_nul(message.raw))
    if message.raw is line:
        end = len(line_bytes)
        while end and line_bytes[end - 1] in b"\r\n":
            end -= 1
        return memoryview(line_bytes)[:end]
    return orjson.dumps(message.raw)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT)
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


class Statement:
    """One INSERT of every message column for a dialect, and rows for it: plain lists of values
    already passed through the column types' bind processors."""

    def __init__(self, dialect: Dialect) -> None:
        table = MessageRow.__table__
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        values = [
            f"CAST({marker} AS JSONB)" if name == "raw" and dialect.name == "postgresql" else marker
            for name in STORED_COLUMNS
        ]
        names, markers = ", ".join(STORED_COLUMNS), ", ".join(values)
        self.sql = f"INSERT INTO {MessageRow.__tablename__} ({names}) VALUES ({markers})"  # noqa: S608
        self.processors: dict[str, Callable[[Any], Any] | None] = {
            name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in STORED_COLUMNS
            if name != "raw"
        }
        self._fields = [(name, self.processors[name]) for name in _MESSAGE_FIELDS if name != "raw"]
        self._compress_raw = dialect.name == "sqlite"

    def bound(self, name: str, value: Any) -> Any:
        process = self.processors[name]
        return value if process is None or value is None else process(value)

    def prepare(
        self, message: NewMessage, raw_json: bytes | memoryview | None, *, keep_raw: bool = False
    ) -> RawMessage:
        """The message with its row (built where the lines are read, off the writer);
        `keep_raw` for a message whose stored row is wanted back (`store_messages`'s
        `keep_rows`)."""
        message_id = new_id()
        if "\x00" in message.text:
            message.text = message.text.replace("\x00", NUL_REPLACEMENT)
        row: list[Any] = [self.bound("id", message_id), None, None]
        for name, process in self._fields:
            value = getattr(message, name)
            row.append(value if process is None or value is None else process(value))
        if raw_json is None:
            row.insert(_RAW, None)
        elif self._compress_raw:
            row.insert(_RAW, compress_json(raw_json))
        else:
            row.insert(_RAW, str(raw_json, "utf-8"))
        row.append(None)
        kept = bytes(raw_json) if keep_raw and raw_json is not None else None
        return RawMessage(message, kept, message_id, row)


_statements: dict[str, Statement] = {}


def statement_for(dialect: Dialect) -> Statement:
    key = f"{dialect.name}:{dialect.paramstyle}"
    if key not in _statements:
        _statements[key] = Statement(dialect)
    return _statements[key]


def store_messages(
    connection: sa.Connection,
    session_id: uuid.UUID,
    messages: Sequence[RawMessage],
    now: datetime,
    *,
    keep_rows: bool = False,
    stored_uuids: set[str] | None = None,
) -> tuple[list[RawMessage], list[MessageRow]]:
    """Append the messages to the session inside the caller's write transaction, skipping
    those whose provider uuid is stored already (or repeats an earlier one). Returns the
    messages stored and, with `keep_rows`, their rows (for publishing).

    `stored_uuids`: every provider uuid the session holds, when the caller knows them (a
    session an import created and alone writes to): they are not looked up, and the set gets
    the uuids stored now."""
    fresh = _without_stored(connection, session_id, messages, stored_uuids)
    if not fresh:
        return [], []
    count = len(fresh)
    bump = (
        _BUMP_SEQ_USER
        if any(item.message.type is MessageType.USER for item in fresh)
        else _BUMP_SEQ
    )
    last = connection.scalar(bump, {"session_id": session_id, "count": count, "now": now})
    if last is None:
        raise NotFound(f"session {session_id} not found")
    first = int(last) - count + 1
    statement = statement_for(connection.dialect)
    bound_session = statement.bound("session_id", session_id)
    bound_now = statement.bound("created_at", now)
    rows = []
    for index, item in enumerate(fresh):
        row = item.row
        row[1] = bound_session
        row[2] = first + index
        row[-1] = bound_now
        rows.append(tuple(row))
    if connection.dialect.name == "postgresql":
        _copy_rows(connection, rows)
    else:
        connection.exec_driver_sql(statement.sql, rows)
    if not keep_rows:
        return fresh, []
    return fresh, [_message_row(item, session_id, first + i, now) for i, item in enumerate(fresh)]


_COPY = f"COPY {MessageRow.__tablename__} ({', '.join(STORED_COLUMNS)}) FROM STDIN"


def _copy_rows(connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """The rows into PostgreSQL with COPY, in the caller's transaction: one statement streaming
    every row, where INSERTs make the server parse and plan one statement per row (the JSON
    text is parsed into jsonb as it arrives, like the CAST of the INSERT)."""
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
        for row in rows:
            copy.write_row(row)


def _message_row(item: RawMessage, session_id: uuid.UUID, seq: int, now: datetime) -> MessageRow:
    fields = {name: getattr(item.message, name) for name in _MESSAGE_FIELDS}
    fields["raw"] = orjson.loads(item.raw_json) if item.raw_json else None
    return MessageRow(id=item.id, session_id=session_id, seq=seq, created_at=now, **fields)


def _without_stored(
    connection: sa.Connection,
    session_id: uuid.UUID,
    messages: Sequence[RawMessage],
    stored_uuids: set[str] | None,
) -> list[RawMessage]:
    uuids = [
        item.message.provider_message_uuid
        for item in messages
        if item.message.provider_message_uuid is not None
    ]
    seen: set[str] = set() if stored_uuids is None else stored_uuids
    if uuids and stored_uuids is None:
        if connection.dialect.name != "sqlite":
            connection.execute(_LOCK_SESSION, {"session_id": session_id})
        for start in range(0, len(uuids), LOOKUP_SLICE):
            seen.update(
                connection.scalars(
                    _STORED_UUIDS,
                    {"session_id": session_id, "uuids": uuids[start : start + LOOKUP_SLICE]},
                )
            )
    fresh: list[RawMessage] = []
    for item in messages:
        key = item.message.provider_message_uuid
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        fresh.append(item)
    return fresh
