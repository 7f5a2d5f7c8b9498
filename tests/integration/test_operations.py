"""Backup, restore, archive, maintenance and statistics against real SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import stat
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pocketcode.db import migrate
from pocketcode.db.engine import Database, create_db_engine
from pocketcode.db.tables import AppSettingRow, MessageRow, SessionRow, UserRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import (
    ConfigurationError,
    InvalidInput,
    NotFound,
    OperationFailed,
)
from pocketcode.domain.states import MessageType
from pocketcode.services import operations
from tests.operations_rows import (
    NOW,
    SESSION_TABLES,
    add_app_settings,
    add_session_tree,
    add_user,
    archived_rows,
    owned_by,
    snapshot,
)


def _backup_name(db: Database) -> str:
    return "backup.db" if db.is_sqlite else "backup.dump"


def _fill(db: Database) -> list[uuid.UUID]:
    user = add_user(db)
    ids = [
        add_session_tree(db, last_accessed_at=NOW - timedelta(days=200), decided_by=user),
        add_session_tree(db, last_accessed_at=NOW - timedelta(days=1), title="recent"),
    ]
    add_app_settings(db)
    return ids


# --- backup and restore ----------------------------------------------------------------------


def test_restore_gives_back_exactly_the_rows_of_the_backup(db: Database, tmp_path: Path) -> None:
    _, recent = _fill(db)
    original = snapshot(db)
    assert len(original["sessions"]) == 2
    assert len(original["session_messages"]) == 4
    assert len(original["app_settings"]) == 2

    backups = tmp_path / "backups"
    backups.mkdir()
    result = operations.backup(db, backups / _backup_name(db))
    assert result.path.is_file()
    assert result.size_bytes == result.path.stat().st_size > 0
    assert [path.name for path in backups.iterdir()] == [result.path.name]

    # Change everything a user could: delete a session, add one, edit a setting, archive.
    with db.write() as session:
        session.execute(sa.delete(SessionRow).where(SessionRow.id == recent))
        session.execute(sa.update(AppSettingRow).values(value="changed"))
    add_session_tree(db, last_accessed_at=NOW, title="added after the backup")
    operations.archive_sessions(db, timedelta(days=90), now=NOW)
    assert snapshot(db) != original

    restored = operations.restore(db, result.path)

    assert restored.revision == migrate.head_revision()
    assert snapshot(db) == original
    assert operations.revision_info(db).is_head
    # The restored database keeps working: sessions can be written again.
    add_session_tree(db, last_accessed_at=NOW, title="after restore")


def test_backup_refuses_to_overwrite_unless_forced(db: Database, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / _backup_name(db)
    target.write_bytes(b"precious")

    with pytest.raises(InvalidInput, match="already exists; use --force"):
        operations.backup(db, target)
    assert target.read_bytes() == b"precious"

    operations.backup(db, target, force=True)
    assert target.read_bytes() != b"precious"
    assert [path.name for path in backups.iterdir()] == [target.name]


def test_sqlite_backup_is_a_single_self_contained_file(
    tmp_path: Path, sqlite_template: Path
) -> None:
    live = tmp_path / "live.db"
    live.write_bytes(sqlite_template.read_bytes())
    db = Database(create_db_engine(f"sqlite:///{live}", pool_size=2))
    try:
        session_id = add_session_tree(db, last_accessed_at=NOW)
        result = operations.backup(db, tmp_path / "copy.db")
    finally:
        db.dispose()
    connection = sqlite3.connect(result.path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        ids = [row[0] for row in connection.execute("SELECT id FROM sessions")]
    finally:
        connection.close()
    assert ids == [session_id.hex]


def test_sqlite_backup_is_consistent_while_the_server_writes(
    tmp_path: Path, sqlite_template: Path
) -> None:
    live = tmp_path / "live.db"
    live.write_bytes(sqlite_template.read_bytes())
    db = Database(create_db_engine(f"sqlite:///{live}", pool_size=3))
    stop, wrote = threading.Event(), threading.Event()

    def write_sessions() -> None:
        # Each transaction adds a session with exactly one message.
        while not stop.is_set():
            with db.write() as session:
                row = SessionRow(project_path="/p", last_accessed_at=NOW)
                session.add(row)
                session.flush()
                session.add(MessageRow(session_id=row.id, seq=1, type=MessageType.USER))
            wrote.set()

    writer = threading.Thread(target=write_sessions)
    writer.start()
    try:
        assert wrote.wait(timeout=10)
        copies = [operations.backup(db, tmp_path / f"copy-{n}.db").path for n in range(3)]
    finally:
        stop.set()
        writer.join()
        db.dispose()
    for copy in copies:
        connection = sqlite3.connect(copy)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            sessions = connection.execute("SELECT count(*) FROM sessions").fetchone()[0]
            messages = connection.execute("SELECT count(*) FROM session_messages").fetchone()[0]
        finally:
            connection.close()
        assert sessions == messages > 0


def _fake_pg_dump(directory: Path, version: str, body: str = "exit 0") -> Path:
    directory.mkdir(exist_ok=True)
    script = directory / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) {version}"; exit 0; fi\n'
        f"{body}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def pg_db(pg_migrated_url: str) -> Iterator[Database]:
    database = Database(create_db_engine(pg_migrated_url, pool_size=2))
    yield database
    database.dispose()


def test_failed_pg_dump_leaves_no_file_behind(
    pg_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pg_dump that writes half an archive and then dies.
    bin_dir = tmp_path / "bin"
    _fake_pg_dump(
        bin_dir,
        "99.0",
        'for arg in "$@"; do case "$arg" in --file=*) printf PGDMP-half > "${arg#--file=}";; '
        "esac; done\necho 'pg_dump: error: the disk caught fire' >&2\nexit 1",
    )
    monkeypatch.setenv(operations.PG_BIN_DIR_ENV, str(bin_dir))
    backups = tmp_path / "backups"
    backups.mkdir()

    with pytest.raises(OperationFailed, match="pg_dump failed: pg_dump: error: the disk caught"):
        operations.backup(pg_db, backups / "backup.dump")
    assert list(backups.iterdir()) == []


def test_pg_dump_gets_the_password_from_the_environment_only(
    pg_migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server trusts local connections, so any password gets in; a recording pg_dump
    # shows where the password went.
    record = tmp_path / "record"
    bin_dir = tmp_path / "bin"
    _fake_pg_dump(
        bin_dir,
        "99.0",
        f'printf "%s\\n" "$@" > {record}.argv\nprintf "%s" "$PGPASSWORD" > {record}.env\n'
        'for arg in "$@"; do case "$arg" in --file=*) printf PGDMP > "${arg#--file=}";; '
        "esac; done",
    )
    monkeypatch.setenv(operations.PG_BIN_DIR_ENV, str(bin_dir))
    url = sa.engine.make_url(pg_migrated_url).set(password="s3cret-pw")
    db = Database(create_db_engine(url.render_as_string(hide_password=False), pool_size=1))
    try:
        operations.backup(db, tmp_path / "backup.dump")
    finally:
        db.dispose()

    argv = Path(f"{record}.argv").read_text()
    assert "s3cret-pw" not in argv
    dbname = [arg for arg in argv.splitlines() if arg.startswith("--dbname=")]
    assert len(dbname) == 1
    assert dbname[0].startswith("--dbname=postgresql://postgres@")
    assert f"/{url.database}" in dbname[0]
    assert "--format=custom" in argv.splitlines()
    assert Path(f"{record}.env").read_text() == "s3cret-pw"


def test_pg_tools_older_than_the_server_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "old"
    _fake_pg_dump(bin_dir, "9.6")
    monkeypatch.setenv(operations.PG_BIN_DIR_ENV, str(bin_dir))
    with pytest.raises(ConfigurationError, match=r"no suitable pg_dump.*PostgreSQL 15.*9\.6"):
        operations.find_pg_tool("pg_dump", server_major=15)

    monkeypatch.setenv(operations.PG_BIN_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(ConfigurationError, match="holds no pg_dump"):
        operations.find_pg_tool("pg_dump", server_major=15)

    new_dir = tmp_path / "new"
    script = _fake_pg_dump(new_dir, "17.2")
    monkeypatch.setenv(operations.PG_BIN_DIR_ENV, str(new_dir))
    tool = operations.find_pg_tool("pg_dump", server_major=15)
    assert (tool.path, tool.major) == (script, 17)


def test_restore_refuses_files_that_are_not_backups(db: Database, tmp_path: Path) -> None:
    session_id = add_session_tree(db, last_accessed_at=NOW)
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE things (x)")
    connection.commit()
    connection.close()
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(b"PGDMP\x01\x0e\x00garbage")

    cases = {
        text: "not a pocketcode backup",
        empty: "not a pocketcode backup",
        tmp_path / "missing.db": "does not exist",
        tmp_path: "is a directory",
    }
    if db.is_sqlite:
        cases[foreign] = "an SQLite database but not a pocketcode backup"
        cases[truncated] = "is a PostgreSQL backup; this database is SQLite"
    else:
        cases[foreign] = "is an SQLite backup; this database is PostgreSQL"
        cases[truncated] = "not a readable backup archive"
    for path, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            operations.restore(db, path)

    with db.read() as session:
        assert session.scalars(sa.select(SessionRow.id)).all() == [session_id]


def test_restore_refuses_an_sqlite_backup_from_a_newer_schema(
    tmp_path: Path, sqlite_template: Path
) -> None:
    live = tmp_path / "live.db"
    live.write_bytes(sqlite_template.read_bytes())
    newer = tmp_path / "newer.db"
    newer.write_bytes(sqlite_template.read_bytes())
    connection = sqlite3.connect(newer)
    connection.execute("UPDATE alembic_version SET version_num = '9999_future'")
    connection.commit()
    connection.close()
    db = Database(create_db_engine(f"sqlite:///{live}", pool_size=1))
    try:
        with pytest.raises(InvalidInput, match="revision 9999_future"):
            operations.restore(db, newer)
    finally:
        db.dispose()


def test_backup_rejects_unusable_targets(db: Database, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = {
        tmp_path: "is a directory",
        tmp_path / "missing" / "backup": "does not exist",
        a_file / "backup": "is not a directory",
        Path("/proc/pocketcode-backup"): "cannot write",
    }
    for target, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            operations.backup(db, target)


# --- archive ---------------------------------------------------------------------------------


def test_parse_age_accepts_hours_days_and_weeks_only() -> None:
    assert operations.parse_age("90d") == timedelta(days=90)
    assert operations.parse_age("12h") == timedelta(hours=12)
    assert operations.parse_age("2W") == timedelta(weeks=2)
    for bad in ["", "90", "d", "1.5d", "-5d", "5m", "5 days", "90d ago"]:
        with pytest.raises(InvalidInput, match="use a whole number of hours, days or weeks"):
            operations.parse_age(bad)
    with pytest.raises(InvalidInput, match="greater than zero"):
        operations.parse_age("0d")
    with pytest.raises(InvalidInput, match="too large"):
        operations.parse_age("99999999999999w")


def test_archive_moves_old_sessions_and_every_row_they_own(db: Database) -> None:
    user = add_user(db)
    old = add_session_tree(db, last_accessed_at=NOW - timedelta(days=91), decided_by=user)
    working = add_session_tree(db, last_accessed_at=NOW - timedelta(days=400), is_working=True)
    recent = add_session_tree(db, last_accessed_at=NOW - timedelta(days=89))
    before = snapshot(db, SESSION_TABLES)

    dry = operations.archive_sessions(db, timedelta(days=90), dry_run=True, now=NOW)
    expected_counts = {
        "sessions": 1,
        "jobs": 1,
        "session_messages": 2,
        "files": 1,
        "permission_requests": 1,
    }
    assert (dry.session_ids, dry.counts) == ([old], expected_counts)
    assert snapshot(db, SESSION_TABLES) == before

    result = operations.archive_sessions(db, timedelta(days=90), now=NOW)

    assert (result.session_ids, result.counts) == ([old], expected_counts)
    after = snapshot(db, SESSION_TABLES)
    for table in SESSION_TABLES:
        moved = owned_by(before[table], table, {old})
        assert moved, table
        archived = archived_rows(db, table)
        assert [row.pop("archived_at") for row in archived] == [NOW] * len(moved)
        assert archived == moved, table
        assert owned_by(after[table], table, {old}) == []
        # Working and recent sessions are untouched, value for value.
        kept = {working, recent}
        assert owned_by(after[table], table, kept) == owned_by(before[table], table, kept)


def test_unarchive_puts_every_row_back(db: Database) -> None:
    user = add_user(db)
    old = add_session_tree(db, last_accessed_at=NOW - timedelta(days=91), decided_by=user)
    before = snapshot(db, SESSION_TABLES)
    operations.archive_sessions(db, timedelta(days=90), now=NOW)

    result = operations.unarchive(db, [old])

    assert result.counts == {name: len(rows) for name, rows in before.items()}
    assert snapshot(db, SESSION_TABLES) == before
    for table in SESSION_TABLES:
        assert archived_rows(db, table) == []


def test_unarchive_clears_a_deleted_deciding_user(db: Database) -> None:
    user = add_user(db)
    old = add_session_tree(db, last_accessed_at=NOW - timedelta(days=91), decided_by=user)
    operations.archive_sessions(db, timedelta(days=90), now=NOW)
    with db.write() as session:
        session.execute(sa.delete(UserRow))

    operations.unarchive(db, [old])

    requests = snapshot(db, ["permission_requests"])["permission_requests"]
    assert [row["decided_by"] for row in requests] == [None]


def test_unarchive_rejects_unknown_ids(db: Database) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(NotFound, match=str(unknown)):
        operations.unarchive(db, [unknown])


def test_archive_with_nothing_old_enough_changes_nothing(db: Database) -> None:
    add_session_tree(db, last_accessed_at=utcnow())
    before = snapshot(db, SESSION_TABLES)
    result = operations.archive_sessions(db, timedelta(hours=1))
    assert result.session_ids == []
    assert set(result.counts.values()) == {0}
    assert snapshot(db, SESSION_TABLES) == before


def test_archive_needs_a_migrated_database(empty_database_url: str) -> None:
    db = Database(create_db_engine(empty_database_url, pool_size=1))
    try:
        with pytest.raises(ConfigurationError, match="pocketcode db upgrade"):
            operations.archive_sessions(db, timedelta(days=1))
    finally:
        db.dispose()


# --- maintenance and statistics --------------------------------------------------------------


def test_maintenance_runs_and_reports_sizes(db: Database) -> None:
    _fill(db)
    before = snapshot(db)
    result = operations.run_maintenance(db)
    if db.is_sqlite:
        assert result.steps == [
            "PRAGMA optimize",
            "ANALYZE",
            "REINDEX",
            "VACUUM",
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ]
    else:
        assert "VACUUM (ANALYZE) sessions" in result.steps
        assert "REINDEX TABLE session_messages" in result.steps
    assert result.size_before and result.size_after
    assert snapshot(db) == before


def test_stats_count_rows_and_sizes(db: Database) -> None:
    _fill(db)
    result = operations.database_stats(db)
    tables = {table.name: table for table in result.tables}
    assert tables["sessions"].rows == 2
    assert tables["session_messages"].rows == 4
    assert tables["archived_sessions"].rows == 0
    assert all(table.size_bytes and table.size_bytes > 0 for table in result.tables)
    assert result.size_bytes is not None
    assert result.size_bytes >= sum(table.size_bytes or 0 for table in result.tables)
    assert result.revision is not None and result.revision.is_head
    if db.is_sqlite:
        assert result.connections is None
        assert result.connections_note and "not applicable" in result.connections_note
    else:
        assert result.connections and sum(item.count for item in result.connections) >= 1
        assert result.slow_queries is None
        assert result.slow_queries_note == "pg_stat_statements is not installed in this database"


def test_stats_explain_pg_stat_statements_that_is_not_loaded(pg_db: Database) -> None:
    with pg_db.engine.begin() as connection:
        connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    try:
        result = operations.database_stats(pg_db)
    finally:
        with pg_db.engine.begin() as connection:
            connection.exec_driver_sql("DROP EXTENSION IF EXISTS pg_stat_statements")
    if result.slow_queries is None:
        assert result.slow_queries_note is not None
        assert "installed but not usable" in result.slow_queries_note
    else:  # a server that preloads it
        assert all(query.mean_exec_time_ms > 100 for query in result.slow_queries)
