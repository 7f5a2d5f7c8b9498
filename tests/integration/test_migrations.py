"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and
every step can be undone and redone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from importlib import resources

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from pocketcode.cli import main
from pocketcode.db import migrate
from pocketcode.db.engine import Database, create_db_engine
from pocketcode.db.tables import Base


@pytest.fixture
def empty_db(empty_database_url: str) -> Iterator[Database]:
    database = Database(create_db_engine(empty_database_url, pool_size=2))
    yield database
    database.dispose()


def _differences(db: Database) -> list[object]:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "render_as_batch": db.is_sqlite},
        )
        return list(compare_metadata(context, Base.metadata))


def _tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def _revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def test_upgrade_builds_exactly_the_models(empty_db: Database) -> None:
    migrate.upgrade(empty_db)

    assert migrate.current_revision(empty_db) == migrate.head_revision()
    assert _differences(empty_db) == []
    assert _tables(empty_db) == {*Base.metadata.tables, "alembic_version"}


def test_upgrade_downgrade_upgrade(empty_db: Database) -> None:
    migrate.upgrade(empty_db)
    migrate.downgrade(empty_db, "base")

    assert _tables(empty_db) <= {"alembic_version"}
    assert migrate.current_revision(empty_db) is None

    migrate.upgrade(empty_db)
    assert migrate.current_revision(empty_db) == migrate.head_revision()
    assert _differences(empty_db) == []


def test_every_revision_downgrades_and_upgrades_again(empty_db: Database) -> None:
    revisions = _revisions_oldest_first()
    assert revisions[-1] == migrate.head_revision()

    for position, revision in enumerate(revisions):
        previous = revisions[position - 1] if position else None
        migrate.upgrade(empty_db, revision)
        assert migrate.current_revision(empty_db) == revision

        migrate.downgrade(empty_db, previous or "base")
        assert migrate.current_revision(empty_db) == previous

        migrate.upgrade(empty_db, revision)
        assert migrate.current_revision(empty_db) == revision
    assert _differences(empty_db) == []


def test_the_migration_scripts_ship_inside_the_package() -> None:
    versions = resources.files("pocketcode.db").joinpath("migrations", "versions")
    scripts = {item.name for item in versions.iterdir() if item.name.endswith(".py")}
    assert "0001_initial_schema.py" in scripts
    assert resources.files("pocketcode.db").joinpath("migrations", "env.py").is_file()
    # Every revision alembic knows is one of those files.
    assert len([name for name in scripts if name[:4].isdigit()]) == len(_revisions_oldest_first())


def test_db_upgrade_twice_changes_nothing_the_second_time(
    empty_database_url: str,
    empty_db: Database,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", empty_database_url)
    head = migrate.head_revision()

    for _ in range(2):
        with pytest.raises(SystemExit) as exit_info:
            main(["db", "upgrade"])
        assert exit_info.value.code in (0, None)
        assert capsys.readouterr().out.strip() == f"database at revision {head}"

    assert migrate.current_revision(empty_db) == head
    assert _differences(empty_db) == []


def test_message_bodies_use_lz4_on_postgresql(empty_db: Database) -> None:
    migrate.upgrade(empty_db)
    if empty_db.is_sqlite:
        pytest.skip("SQLite compresses raw in the application (db/types.py)")
    with empty_db.engine.connect() as connection:
        has_lz4 = connection.exec_driver_sql(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).scalar()
        methods = dict(
            connection.exec_driver_sql(
                "SELECT attname, attcompression FROM pg_attribute"
                " WHERE attrelid = 'session_messages'::regclass AND attname IN ('text', 'raw')"
            ).all()
        )
    assert methods == ({"text": "l", "raw": "l"} if has_lz4 else {"text": "", "raw": ""})


def test_the_queue_clock_starts_at_each_sessions_newest_job(empty_db: Database) -> None:
    """0011 fills `sessions.last_queued_at` from the jobs already queued: the next prompt of
    a session with jobs goes after its newest one; a session without jobs has none."""
    migrate.upgrade(empty_db, "0010")
    newest = "2026-12-05 07:00:00.000002"
    with empty_db.engine.begin() as connection:
        for session_id in ("a", "b"):
            connection.execute(
                sa.text(
                    "INSERT INTO sessions (id, provider, project_path, status, is_working,"
                    " process_status, turn_count, message_count, last_message_index,"
                    " input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,"
                    " total_cost_usd, cli_total_cost_usd, created_at, updated_at,"
                    " last_accessed_at, metadata, allowed_tools) VALUES (:id, 'claude-code',"
                    " '/p', 'active', false, 'idle', 0, 0, 0, 0, 0, 0, 0, 0, 0, :t, :t, :t,"
                    " '{}', '[]')"
                ),
                {"id": _uuid(session_id), "t": "2026-12-05 06:00:00"},
            )
        for number, created in enumerate(["2026-12-05 06:59:59", newest]):
            connection.execute(
                sa.text(
                    "INSERT INTO jobs (id, session_id, status, prompt, options, attempts,"
                    " max_attempts, input_tokens, output_tokens, cache_creation_tokens,"
                    " cache_read_tokens, cost_usd, created_at, updated_at) VALUES (:id, :s,"
                    " 'completed', 'p', '{}', 1, 1, 0, 0, 0, 0, 0, :t, :t)"
                ),
                {"id": _uuid(f"job{number}"), "s": _uuid("a"), "t": created},
            )
    migrate.upgrade(empty_db)
    with empty_db.engine.connect() as connection:
        kept = dict(
            connection.execute(
                sa.text("SELECT id, CAST(last_queued_at AS VARCHAR) FROM sessions")
            ).all()
        )
    assert {str(key): value for key, value in kept.items()} == {
        _uuid("a"): (newest if empty_db.is_sqlite else f"{newest}+00"),
        _uuid("b"): None,
    }


def _uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))
