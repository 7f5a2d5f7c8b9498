"""`pocketcode config …`"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def show() -> None:
    """Print every setting's effective value (secrets masked) and where the config file is."""
    from pocketcode.config import config_file_path, describe_settings, load_settings

    settings = load_settings()
    table = Table(title="pocketcode configuration", show_lines=False)
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("about", style="dim")
    for name, value, about in describe_settings(settings):
        table.add_row(f"POCKETCODE_{name.upper()}", value, about)
    console = Console()
    console.print(table)
    path = config_file_path()
    console.print(f"config file: {path} ({'found' if path.exists() else 'not present'})")
