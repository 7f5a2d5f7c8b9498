"""Fixtures: every database test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pocketcode.config import Settings
from pocketcode.db import migrate
from pocketcode.db.engine import Database, create_db_engine
from pocketcode.db.tables import Base
from tests import databases

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's real data dir, config file, secret key or Claude
    transcripts (a server watches them)."""
    for name in ("DATA_DIR", "DATABASE_URL", "SECRET_KEY", "SECRET_KEY_FILE", "CONFIG_FILE"):
        monkeypatch.delenv(f"POCKETCODE_{name}", raising=False)
    monkeypatch.setenv("POCKETCODE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return databases.find_admin_url()


SeedRows = dict[str, list[dict[str, object]]]


@pytest.fixture(scope="session")
def pg_migrated(pg_admin_url: str) -> Iterator[tuple[str, SeedRows]]:
    """A migrated PostgreSQL database and the rows the migrations seeded into it."""
    url = databases.create_database(pg_admin_url)
    engine = create_db_engine(url, pool_size=2)
    migrate.upgrade(Database(engine))
    with engine.connect() as conn:
        seeded = {
            table.name: [dict(row._mapping) for row in conn.execute(table.select())]
            for table in Base.metadata.sorted_tables
        }
    engine.dispose()
    yield url, {name: rows for name, rows in seeded.items() if rows}
    databases.drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def pg_migrated_url(pg_migrated: tuple[str, SeedRows]) -> str:
    return pg_migrated[0]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}", pool_size=1)
    migrate.upgrade(Database(engine))
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _reset(url: str, seeded: SeedRows) -> None:
    """Back to the state right after migrations: empty tables but the seeded rows."""
    engine = create_db_engine(url, pool_size=1)
    names = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
        for name, rows in seeded.items():
            conn.execute(Base.metadata.tables[name].insert(), rows)
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        path = tmp_path / "pocketcode.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    url, seeded = request.getfixturevalue("pg_migrated")
    _reset(url, seeded)
    return str(url)


@pytest.fixture
def postgresql_url(pg_migrated: tuple[str, SeedRows]) -> str:
    """A migrated, empty PostgreSQL database, for what only PostgreSQL does (several server
    processes on one database)."""
    url, seeded = pg_migrated
    _reset(url, seeded)
    return url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin: str = request.getfixturevalue("pg_admin_url")
    url = databases.create_database(admin, prefix="pocketcode_empty")
    yield url
    databases.drop_database(admin, url)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(create_db_engine(database_url, pool_size=5))
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if {"database_url", "empty_database_url", "postgresql_url"} & set(names):
            item.add_marker(pytest.mark.db)
