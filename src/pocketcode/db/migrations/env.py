"""Alembic environment: runs on the connection pocketcode hands it (see db/migrate.py)."""

from __future__ import annotations

from alembic import context

from pocketcode.db.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through `pocketcode db …`
    raise RuntimeError("run migrations through `pocketcode db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    compare_server_default=False,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
