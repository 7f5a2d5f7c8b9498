"""`pocketcode config …`"""

from __future__ import annotations

import typer

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def show() -> None:
    """Print every setting's effective value (secrets masked) and where the config file is.

    One `NAME=value  # about` line per setting: never cut to the terminal's width, and easy to
    grep or to copy into an environment file.
    """
    from pocketcode.config import config_file_path, describe_settings, load_settings

    settings = load_settings()
    path = config_file_path()
    state = "found" if path.exists() else "not present"
    typer.echo(f"# environment, then the config file {path} ({state}), then defaults")
    for name, value, about in describe_settings(settings):
        typer.echo(f"POCKETCODE_{name.upper()}={value}  # {about}")
