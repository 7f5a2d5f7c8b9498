"""Schema migrations (Alembic, shipped inside the package)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from pocketcode.db.engine import Database

SCRIPT_LOCATION = "pocketcode.db:migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    _run(db, command.upgrade, revision)


def downgrade(db: Database, revision: str) -> None:
    _run(db, command.downgrade, revision)


def is_up_to_date(db: Database) -> bool:
    return current_revision(db) == head_revision()


def _run(db: Database, action: object, revision: str) -> None:
    config = alembic_config()
    with db.write_connection() as connection:
        config.attributes["connection"] = connection
        action(config, revision)  # type: ignore[operator]
