"""`pocketcode sessions …`: list sessions and show one, with the command that continues it in
a terminal."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pocketcode.db.tables import SessionRow

sessions_app = typer.Typer(help="List the stored sessions and show one.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)


def _when(row: SessionRow) -> str:
    moment = row.last_activity_at or row.created_at
    return moment.strftime("%Y-%m-%d %H:%M")


def resume_command(row: SessionRow) -> str | None:
    """The shell command that continues the session in a terminal, or None before the CLI
    gave it a session id."""
    if not row.provider_session_id:
        return None
    return (
        f"cd {shlex.quote(row.project_path)} && "
        f"claude --resume {shlex.quote(row.provider_session_id)}"
    )


@sessions_app.command("list")
def list_sessions(
    limit: Annotated[int, typer.Option(help="How many sessions to show (1–100).")] = 20,
) -> None:
    """Sessions, most recently used first."""
    from rich.markup import escape
    from rich.table import Table

    from pocketcode.cli.db import open_database
    from pocketcode.services.sessions import SessionService

    with open_database() as db:
        rows, total = SessionService(db, []).list_sessions(limit=limit)
    table = Table(title=f"Sessions ({len(rows)} of {total})")
    for name in ("id", "title", "project", "messages", "last activity", "cost"):
        table.add_column(name, justify="right" if name in ("messages", "cost") else "left")
    for row in rows:
        table.add_row(
            str(row.id),
            escape(row.title or "—"),
            escape(row.project_path),
            str(row.message_count),
            _when(row),
            f"${row.total_cost_usd:.4f}",
        )
    console.print(table)


@sessions_app.command("show")
def show_session(session_id: Annotated[str, typer.Argument(help="The session's id.")]) -> None:
    """One session's details and how to continue it in a terminal."""
    from rich.markup import escape
    from rich.table import Table

    from pocketcode.cli.db import open_database
    from pocketcode.services.sessions import SessionService

    with open_database() as db:
        row = SessionService(db, []).get(session_id)
    table = Table(show_header=False, title=escape(row.title or str(row.id)))
    table.add_column("field")
    table.add_column("value")
    for label, value in (
        ("id", str(row.id)),
        ("provider", row.provider.value),
        ("provider session id", row.provider_session_id or "—"),
        ("project", row.project_path),
        ("transcripts folder", row.claude_directory_path or "—"),
        ("messages", str(row.message_count)),
        ("turns", str(row.turn_count)),
        ("tokens in / out", f"{row.input_tokens} / {row.output_tokens}"),
        ("cache write / read", f"{row.cache_creation_tokens} / {row.cache_read_tokens}"),
        ("cost", f"${row.total_cost_usd:.4f} (Claude Code: ${row.cli_total_cost_usd:.4f})"),
        ("created", row.created_at.strftime("%Y-%m-%d %H:%M")),
        ("last activity", _when(row)),
    ):
        table.add_row(label, escape(value))
    console.print(table)
    command = resume_command(row)
    if command is not None:
        console.print("Continue it in a terminal:")
        console.print(f"  {escape(command)}")
