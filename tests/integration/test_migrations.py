"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and
every step can be undone and redone."""

from __future__ import annotations

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
