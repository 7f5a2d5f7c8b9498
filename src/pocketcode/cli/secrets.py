"""`pocketcode secrets …`: the key that encrypts stored secrets."""

from __future__ import annotations

import typer
from rich.console import Console

secrets_app = typer.Typer(
    help="Manage the key that encrypts secrets at rest.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)


@secrets_app.command("generate-key")
def generate_key_command() -> None:
    """Print a new random key (for POCKETCODE_SECRET_KEY)."""
    from pocketcode.services.secrets import generate_key

    typer.echo(generate_key())


@secrets_app.command("rotate")
def rotate(
    new_key: str | None = typer.Option(
        None,
        "--new-key",
        help="The new key; required when POCKETCODE_SECRET_KEY is set.",
        envvar="POCKETCODE_NEW_SECRET_KEY",
    ),
) -> None:
    """Re-encrypt every stored secret with a new key and retire the old one."""
    from pocketcode.config import load_settings
    from pocketcode.db import migrate
    from pocketcode.db.engine import Database
    from pocketcode.services.secrets import rotate_key

    settings = load_settings()
    db = Database.from_settings(settings)
    try:
        migrate.upgrade(db)
        _, count = rotate_key(db, settings, new_key)
    finally:
        db.dispose()
    console.print(f"re-encrypted {count} stored secret(s) with the new key")
    if settings.secret_key is not None:
        console.print("now set POCKETCODE_SECRET_KEY to the new key before the next start")
    else:
        console.print(f"{settings.effective_secret_key_file} now holds only the new key")
