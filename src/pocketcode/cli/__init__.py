"""The `pocketcode` command line. Heavy imports stay inside commands so `--help` is instant."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

from pocketcode.cli.auth_cmds import token_app, totp_app, user_app
from pocketcode.cli.config_cmd import config_app
from pocketcode.cli.db import db_app
from pocketcode.cli.dev import dev_app
from pocketcode.cli.import_cmd import import_transcripts
from pocketcode.cli.run import run
from pocketcode.cli.secrets import secrets_app
from pocketcode.cli.serve import serve
from pocketcode.cli.sessions_cmd import sessions_app
from pocketcode.domain.errors import PocketcodeError

app = typer.Typer(
    name="pocketcode",
    help="Drive Claude Code sessions on your own machine from a phone or browser.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(serve)
app.command()(run)
app.command("import")(import_transcripts)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(secrets_app, name="secrets")
app.add_typer(dev_app, name="dev")
app.add_typer(sessions_app, name="sessions")
app.add_typer(user_app, name="user")
app.add_typer(totp_app, name="totp")
app.add_typer(token_app, name="token")

err_console = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(1)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every error a user can cause ends as one readable line and exit status 1."""
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    try:
        app(args=argv, prog_name="pocketcode")
    except PocketcodeError as exc:
        _fail(exc.message)
    except ValidationError as exc:
        # Never the whole pydantic dump: it quotes the input, which may be a secret.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        _fail(f"invalid input: {problems}")
    except OperationalError as exc:
        _fail(f"cannot use the database: {_first_line(exc)}")
    except SQLAlchemyError as exc:
        _fail(f"database error: {_first_line(exc)}")
