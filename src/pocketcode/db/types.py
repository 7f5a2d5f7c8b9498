"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa
import zstandard
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from uuid_utils.compat import uuid7


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes: `timestamptz` on PostgreSQL, naive UTC text on SQLite.

    Naive datetimes are refused on the way in, so a local time can never be stored by mistake.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A time-ordered id (UUIDv7) for a row of a big, growing table (sessions, messages).

    Its index is a B-tree on both databases: with random ids (v4) every insert lands on a
    random leaf page, and each commit rewrites a page of the index per row (an import of 420,000
    messages wrote 4 GB of SQLite WAL for a 1.8 GB database); ids that grow with time append to
    the index's last pages. Unique like v4: 74 random bits beside the millisecond timestamp."""
    return uuid7()


# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def load_json(document: str | bytes | memoryview) -> Any:
    """Stored JSON (the messages' raw lines are most of what a page reads) parsed by orjson,
    several times faster than `json`; what orjson refuses but `json` wrote (NaN, Infinity)
    falls back to `json`. (orjson reads an integer past 64 bits as a float.)"""
    try:
        return orjson.loads(document)
    except orjson.JSONDecodeError:
        return json.loads(bytes(document) if isinstance(document, memoryview) else document)


def dump_json(value: Any) -> bytes:
    """JSON bytes of a value; what orjson refuses (integers past 64 bits, non-string keys)
    goes through `json`."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, ensure_ascii=False).encode()


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_LEVEL = 1
"""zstd's fastest regular level: ~300 MB/s here and most of the ratio of the slower ones on
transcript JSON."""
_codecs = threading.local()
SMALL_JSON = 1024
"""Documents shorter than this are stored as they are: zstd shrinks them by a third at best,
and a call costs several microseconds (an import compresses 400,000 raw lines; leaving the
small ones alone took its CPU from 35.5 to 33 s for a database 3 % bigger)."""


def compress_json(document: bytes | memoryview) -> bytes:
    """A JSON document compressed with zstd (one compressor per thread: they are not
    thread-safe), or as it is when shorter than `SMALL_JSON` (JSON never starts with zstd's
    magic number, so the reader tells them apart)."""
    if len(document) < SMALL_JSON:
        return bytes(document)
    compressor = getattr(_codecs, "compressor", None)
    if compressor is None:
        compressor = _codecs.compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    return compressor.compress(document)


def load_stored_json(value: str | bytes | memoryview) -> Any:
    """A stored document: zstd-compressed JSON bytes, JSON bytes (a small document), or JSON
    text written before the column was compressed."""
    if isinstance(value, bytes | memoryview) and bytes(value[:4]) == ZSTD_MAGIC:
        decompressor = getattr(_codecs, "decompressor", None)
        if decompressor is None:
            decompressor = _codecs.decompressor = zstandard.ZstdDecompressor()
        # The frame records its size (compress() writes it), so one call restores it.
        return load_json(decompressor.decompress(value))
    return load_json(value)


class _CompressedJSON(sa.TypeDecorator[Any]):
    """JSON stored as zstd-compressed bytes in SQLite's JSON column (a BLOB value: SQLite
    keeps what it is given). SQLite compresses nothing, and the messages' raw lines were most
    of a database's bytes and most of an import's time writing them. The processors replace
    the JSON type's own (the column stays JSON for the schema and migrations)."""

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], bytes | None]:
        def process(value: Any) -> bytes | None:
            if value is None or value is sa.JSON.NULL:
                return None
            return compress_json(dump_json(value))

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any]:
        def process(value: Any) -> Any:
            return None if value is None else load_stored_json(value)

        return process


CompressedJSONType = _CompressedJSON().with_variant(postgresql.JSONB(), "postgresql")
"""For big documents (a message's raw line): JSONB on PostgreSQL, which compresses big values
itself (TOAST), zstd-compressed JSON on SQLite (under `SMALL_JSON`, the JSON bytes). Rows
written as JSON text still read back."""


def enum_column_type(enum_cls: type[StrEnum], name: str) -> sa.Enum:
    """A VARCHAR with a CHECK constraint holding the enum's values (not names)."""
    return sa.Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum_cls),
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class DecimalType(sa.TypeDecorator[Any]):
    """Exact decimals: NUMERIC(p, s) on PostgreSQL, REAL on SQLite.

    SQLite has no decimal type; a float keeps ~15 significant digits, plenty for prices and
    costs, and SUM() keeps working in SQL. Values come back as Decimal on both.
    """

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision, scale)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(
                sa.Float(asdecimal=True, decimal_return_scale=self.scale)
            )
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return float(value) if dialect.name == "sqlite" else value


def money() -> DecimalType:
    """US dollars to 10 decimal places (a cache-read token of a cheap model costs 1e-7 $)."""
    return DecimalType(20, 10)
