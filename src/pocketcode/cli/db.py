"""`pocketcode db …`: migrations and the database operations of seed 000."""

from __future__ import annotations

import typer
from rich.console import Console

db_app = typer.Typer(help="Migrate, back up, restore, archive and maintain the database.",
                     no_args_is_help=True)
console = Console()


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply schema migrations (serve does this at start-up too)."""
    from pocketcode.config import load_settings
    from pocketcode.db import migrate
    from pocketcode.db.engine import Database

    db = Database.from_settings(load_settings())
    try:
        migrate.upgrade(db, revision)
        console.print(f"database at revision {migrate.current_revision(db)}")
    finally:
        db.dispose()
