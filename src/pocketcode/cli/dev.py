"""`pocketcode dev …`: tools for development and demos."""

from __future__ import annotations

import typer

dev_app = typer.Typer(help="Development and demo tools.", no_args_is_help=True)
