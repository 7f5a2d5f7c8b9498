"""`pocketcode db …` as a user runs it: real databases, output and exit status."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pocketcode.db import migrate
from pocketcode.db.engine import Database
from pocketcode.db.tables import SessionRow
from tests.helpers import run_cli
from tests.operations_rows import NOW, add_session_tree, snapshot

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"


def fails_with(capsys: pytest.CaptureFixture[str], message: str, *args: str) -> None:
    """The command exits 1 with one `error:` message and no traceback."""
    code, out, err = run_cli(capsys, *args)
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    text = " ".join(err.split())
    assert text.startswith("error:"), err
    assert message in text


@pytest.fixture
def use_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", database_url)
    return database_url


def _session_ids(db: Database) -> list[uuid.UUID]:
    with db.read() as session:
        return list(session.scalars(sa.select(SessionRow.id).order_by(SessionRow.id)))


def _suffix(db: Database) -> str:
    return ".db" if db.is_sqlite else ".dump"


# --- what a user does ------------------------------------------------------------------------


@pytest.mark.usefixtures("use_db")
def test_current_says_the_revision_is_head(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "db", "current")
    assert code == 0
    assert out.strip() == f"revision {migrate.head_revision()} (head)"


@pytest.mark.usefixtures("use_db")
def test_backup_and_restore_from_the_command_line(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = add_session_tree(db, last_accessed_at=NOW)
    before = snapshot(db)
    target = tmp_path / f"backup{_suffix(db)}"

    code, out, _ = run_cli(capsys, "db", "backup", str(target))
    assert code == 0
    assert f"backed up to {target}" in out
    assert out.rstrip().endswith(" s")

    add_session_tree(db, last_accessed_at=NOW, title="made after the backup")
    code, out, _ = run_cli(capsys, "db", "restore", str(target), "--yes")
    assert code == 0, out
    assert f"restored {target}" in out
    assert f"revision {migrate.head_revision()}" in out
    assert _session_ids(db) == [kept]
    assert snapshot(db) == before


@pytest.mark.usefixtures("use_db")
def test_restore_asks_first_and_a_no_changes_nothing(
    db: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / f"backup{_suffix(db)}"
    assert run_cli(capsys, "db", "backup", str(target))[0] == 0
    session_id = add_session_tree(db, last_accessed_at=NOW)

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, out, err = run_cli(capsys, "db", "restore", str(target))

    assert code == 1
    assert "Current data is lost" in out
    assert "Aborted" in err
    assert _session_ids(db) == [session_id]


@pytest.mark.usefixtures("use_db")
def test_downgrade_asks_first_then_removes_the_schema(
    db: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, _, err = run_cli(capsys, "db", "downgrade", "base")
    assert code == 1
    assert "Aborted" in err
    assert migrate.current_revision(db) == migrate.head_revision()

    try:
        code, out, _ = run_cli(capsys, "db", "downgrade", "base", "--yes")
        assert code == 0
        assert "base (no schema)" in out
        code, out, _ = run_cli(capsys, "db", "current")
        assert "no schema yet" in out
    finally:
        code, out, _ = run_cli(capsys, "db", "upgrade")
    assert code == 0
    assert out.strip() == f"database at revision {migrate.head_revision()}"


@pytest.mark.usefixtures("use_db")
def test_archive_dry_run_then_archive_then_unarchive(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    old = add_session_tree(db, last_accessed_at=NOW - timedelta(days=3650))
    recent = add_session_tree(db, last_accessed_at=NOW + timedelta(days=3650))
    before = snapshot(db)

    code, out, _ = run_cli(capsys, "db", "archive", "--older-than", "90d", "--dry-run")
    assert code == 0
    assert out.startswith("would archive 1 session(s) last used before ")
    assert "1 jobs, 2 session_messages, 1 files, 1 permission_requests" in out
    assert snapshot(db) == before

    code, out, _ = run_cli(capsys, "db", "archive", "--older-than", "12w")
    assert code == 0
    assert out.startswith("archived 1 session(s)")
    assert _session_ids(db) == [recent]

    code, out, _ = run_cli(capsys, "db", "unarchive", str(old))
    assert code == 0
    assert out.startswith("unarchived 1 session(s)")
    assert snapshot(db) == before


@pytest.mark.usefixtures("use_db")
def test_maintenance_reports_each_step_and_the_size(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    add_session_tree(db, last_accessed_at=NOW)
    code, out, _ = run_cli(capsys, "db", "maintenance")
    assert code == 0
    if db.is_sqlite:
        assert "done: VACUUM" in out
        assert "done: PRAGMA wal_checkpoint(TRUNCATE)" in out
    else:
        assert "done: VACUUM (ANALYZE) sessions" in out
        assert "done: REINDEX TABLE sessions" in out
    assert "size " in out and "→" in out


@pytest.mark.usefixtures("use_db")
def test_stats_as_tables_and_as_json(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    add_session_tree(db, last_accessed_at=NOW)

    code, out, _ = run_cli(capsys, "db", "stats")
    assert code == 0
    assert "session_messages" in out
    assert "slow queries:" in out
    if db.is_sqlite:
        assert "connections: not applicable to SQLite" in out
    else:
        assert "connections" in out
        assert "pg_stat_statements is not installed" in out

    code, out, _ = run_cli(capsys, "db", "stats", "--json")
    assert code == 0
    data = json.loads(out)
    rows = {table["name"]: table["rows"] for table in data["tables"]}
    assert rows["sessions"] == 1
    assert rows["session_messages"] == 2
    assert data["backend"] == db.dialect
    assert data["revision"]["is_head"] is True
    if db.is_sqlite:
        assert data["connections"] is None
    else:
        assert sum(item["count"] for item in data["connections"]) >= 1


# --- bad input: one line, exit status 1, never a traceback -----------------------------------


@pytest.mark.usefixtures("use_db")
def test_restore_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    fails_with(capsys, f"{missing} does not exist", "db", "restore", str(missing), "--yes")


@pytest.mark.usefixtures("use_db")
def test_restore_of_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, "is a directory, not a backup file", "db", "restore", str(tmp_path))


@pytest.mark.usefixtures("use_db")
def test_restore_of_a_file_that_is_not_a_backup(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = add_session_tree(db, last_accessed_at=NOW)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    fails_with(capsys, "is not a pocketcode backup", "db", "restore", str(notes), "--yes")
    assert _session_ids(db) == [session_id]


@pytest.mark.usefixtures("use_db")
def test_backup_onto_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, "is a directory; give a file name", "db", "backup", str(tmp_path))


@pytest.mark.usefixtures("use_db")
def test_backup_onto_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "existing.bak"
    existing.write_text("keep me")
    fails_with(capsys, "already exists; use --force", "db", "backup", str(existing))
    assert existing.read_text() == "keep me"


@pytest.mark.usefixtures("use_db")
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/proc/pocketcode.bak", "cannot write /proc/pocketcode.bak"),
        ("{tmp}/no/such/dir/backup", "directory {tmp}/no/such/dir does not exist"),
        ("{tmp}/a_file/backup", "{tmp}/a_file is not a directory"),
    ],
)
def test_backup_onto_an_unwritable_path(
    target: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("x")
    path = target.format(tmp=tmp_path)
    fails_with(capsys, message.format(tmp=tmp_path), "db", "backup", path)


@pytest.mark.parametrize(
    ("age", "message"),
    [
        ("90", "invalid age '90'"),
        ("abc", "invalid age 'abc'"),
        ("5m", "invalid age '5m'"),
        ("1.5d", "invalid age '1.5d'"),
        ("-5d", "invalid age '-5d'"),
        ("0d", "must be greater than zero"),
        ("99999999999999w", "too large"),
    ],
)
def test_archive_with_a_bad_age(age: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, message, "db", "archive", f"--older-than={age}")


@pytest.mark.usefixtures("use_db")
def test_archive_with_a_negative_age_as_a_separate_word(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fails_with(capsys, "invalid age '-5d'", "db", "archive", "--older-than", "-5d", "--dry-run")


@pytest.mark.usefixtures("use_db")
@pytest.mark.parametrize(
    "args", [["downgrade", "nope", "--yes"], ["upgrade", "nope"]], ids=["downgrade", "upgrade"]
)
def test_unknown_revision(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    message = f"cannot {args[0]} to 'nope': Can't locate revision identified by 'nope'"
    fails_with(capsys, message, "db", *args)


@pytest.mark.usefixtures("use_db")
def test_unarchive_of_unknown_or_malformed_ids(capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, "'not-a-uuid' is not a session id", "db", "unarchive", "not-a-uuid")
    unknown = str(uuid.uuid4())
    fails_with(capsys, f"no archived session {unknown}", "db", "unarchive", unknown)


@pytest.mark.parametrize(
    "args",
    [
        ["current"],
        ["upgrade"],
        ["downgrade", "base", "--yes"],
        ["backup", "{tmp}/backup.dump"],
        ["restore", "{tmp}/old.dump", "--yes"],
        ["archive", "--older-than", "90d"],
        ["unarchive", "6f1c5b0e-8a4e-4c36-9d59-0b8f3f6f8a11"],
        ["maintenance"],
        ["stats"],
        ["stats", "--json"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_unreachable_database(
    args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", UNREACHABLE)
    (tmp_path / "old.dump").write_bytes(b"PGDMP\x01\x0e\x00")
    argv = [arg.format(tmp=tmp_path) for arg in args]
    fails_with(capsys, "cannot use the database: ", "db", *argv)
    assert not (tmp_path / "backup.dump").exists()


def test_sqlite_database_in_an_unusable_place(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", "sqlite:////proc/pocketcode/db.sqlite")
    fails_with(
        capsys, "cannot open the database sqlite:////proc/pocketcode/db.sqlite", "db", "stats"
    )
