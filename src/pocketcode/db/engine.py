"""Engines and transactions for SQLite and PostgreSQL.

SQLite: WAL (readers never block the writer), foreign keys on, a busy timeout, and write
transactions opened with BEGIN IMMEDIATE so two writers queue on the lock instead of failing
with "database is locked" when a reader tries to upgrade. PostgreSQL: psycopg 3 with a bounded
pool whose connections are dropped after an idle timeout (the seed's pool settings).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from pocketcode.config import Settings
from pocketcode.db.types import load_json
from pocketcode.domain.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_INTERVAL = 1.0  # seconds between background WAL checkpoints after writes
_IMMEDIATE = "pocketcode_immediate"


def normalise_url(raw: str) -> URL:
    """Pick our drivers: psycopg 3 for PostgreSQL, the standard library for SQLite."""
    url = make_url(raw)
    backend = url.get_backend_name()
    if backend == "postgresql" and url.drivername != "postgresql+psycopg":
        url = url.set(drivername="postgresql+psycopg")
    elif backend == "sqlite" and url.drivername != "sqlite":
        url = url.set(drivername="sqlite")
    elif backend not in {"sqlite", "postgresql"}:
        raise ConfigurationError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return url


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook issue BEGIN itself (pysqlite's own handling is wrong).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "memory":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints run on the Database's own thread (see _Checkpointer), not inside the
        # commit of whichever write crossed the threshold: that commit took 5+ ms, the p99
        # of storing an agent event.
        cursor.execute("PRAGMA wal_autocheckpoint = 0")
    finally:
        cursor.close()


class _Checkpointer:
    """Copies the SQLite write-ahead log back into the database file in the background,
    shortly after writes, so the log stays small without slowing any commit. SQLite also
    checkpoints when the last connection closes."""

    def __init__(self, engine: Engine, interval: float) -> None:
        self._engine = engine
        self._interval = interval
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wrote(self) -> None:
        self._dirty.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="sqlite-checkpoint", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._dirty.is_set():
                continue
            self._dirty.clear()
            try:
                with self._engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # the next round retries; a failed checkpoint loses nothing
                logging.getLogger(__name__).debug("WAL checkpoint failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)


def _on_sqlite_begin(conn: sa.Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _install_idle_timeout(engine: Engine, idle_timeout: float) -> None:
    """Drop pooled connections that sat idle longer than `idle_timeout` seconds."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > idle_timeout:
            # The pool discards this connection and retries with a fresh one.
            raise exc.DisconnectionError("connection idle past the pool idle timeout")


def create_db_engine(
    url: str | URL,
    *,
    pool_size: int = 20,
    idle_timeout: float = 30.0,
    connect_timeout: float = 2.0,
    checkout_timeout: float = 10.0,
) -> Engine:
    url = normalise_url(url.render_as_string(hide_password=False) if isinstance(url, URL) else url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=checkout_timeout,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            json_deserializer=load_json,
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    else:
        engine = sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=checkout_timeout,
            pool_pre_ping=False,
            json_deserializer=load_json,  # psycopg's loader for json/jsonb columns
            connect_args={
                # libpq takes whole seconds and treats anything under 2 as 2.
                "connect_timeout": max(2, round(connect_timeout)),
                "application_name": "pocketcode",
            },
        )
    _install_idle_timeout(engine, idle_timeout)
    return engine


def insert_or_update(dialect: str, table: Any, key: str, columns: list[str]) -> Any:
    """`INSERT … ON CONFLICT (key) DO UPDATE SET columns = excluded.columns` for SQLite or
    PostgreSQL (each has its own construct): a row written whether or not it exists, in one
    statement, so two writers of a new key at once cannot both insert it."""
    module = sqlite_dialect if dialect == "sqlite" else postgresql_dialect
    insert = module.insert(table)
    return insert.on_conflict_do_update(
        index_elements=[key], set_={name: insert.excluded[name] for name in columns}
    )


class Database:
    """The one way into the database: a read session or a write transaction."""

    def __init__(self, engine: Engine, *, process_lock: Path | None = None) -> None:
        """`process_lock`: a lock file that processes writing the same SQLite database at
        once take around each write transaction (`pocketcode import`'s workers): they take
        turns at once instead of polling SQLite's busy handler, whose back-off sleeps would
        leave the database idle. Not needed by PostgreSQL, which locks rows."""
        self.engine = engine
        self._read = sessionmaker(bind=engine, expire_on_commit=False)
        self._write = sessionmaker(
            bind=engine.execution_options(**{_IMMEDIATE: True}), expire_on_commit=False
        )
        # SQLite has one writer at a time. Threads of this process queue on this lock instead
        # of on SQLite's busy handler, whose back-off sleeps (up to 100 ms) dominated the
        # latency of concurrent writers; other processes still wait on the busy timeout.
        self._sqlite_write_lock: threading.RLock | None = (
            threading.RLock() if engine.dialect.name == "sqlite" else None
        )
        self._checkpointer: _Checkpointer | None = (
            _Checkpointer(engine, CHECKPOINT_INTERVAL) if engine.dialect.name == "sqlite" else None
        )
        self._process_lock: int | None = None
        if process_lock is not None and engine.dialect.name == "sqlite":
            self._process_lock = os.open(process_lock, os.O_RDWR | os.O_CREAT, 0o600)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            create_db_engine(
                settings.effective_database_url,
                pool_size=settings.pool_size,
                idle_timeout=settings.pool_idle_timeout,
                connect_timeout=settings.pool_connect_timeout,
                checkout_timeout=settings.pool_checkout_timeout,
            )
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries. Closing it rolls back whatever it did, so it cannot write by
        mistake, and leaves the rows it loaded readable after the block."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back on error."""
        with self._write_lock(), self._write() as session, session.begin():
            yield session

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        if self._sqlite_write_lock is None:
            yield
            return
        with self._sqlite_write_lock:
            if self._process_lock is None:
                yield
            else:
                fcntl.flock(self._process_lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(self._process_lock, fcntl.LOCK_UN)
        assert self._checkpointer is not None
        self._checkpointer.wrote()

    @contextmanager
    def write_connection(self) -> Iterator[sa.Connection]:
        """A Core connection in one write transaction (BEGIN IMMEDIATE on SQLite), for DDL
        such as migrations that must not fail against a concurrent writer."""
        with (
            self._write_lock(),
            self.engine.execution_options(**{_IMMEDIATE: True}).begin() as connection,
        ):
            yield connection

    @contextmanager
    def autocommit_connection(self) -> Iterator[sa.Connection]:
        """A Core connection without transaction blocks: each statement commits by itself. For
        a write that is one statement (on PostgreSQL: one round trip, no BEGIN and COMMIT) and
        for statements that refuse a transaction block (VACUUM). Takes no write lock: not for
        SQLite writes."""
        with self.engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        if self._process_lock is not None:
            os.close(self._process_lock)
            self._process_lock = None
