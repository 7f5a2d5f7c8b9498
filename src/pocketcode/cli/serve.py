"""`pocketcode serve`"""

from __future__ import annotations

import ipaddress

import typer
from rich.console import Console

console = Console()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port to bind (default 3001)."),
) -> None:
    """Migrate the database, then run the server and print the URL to open."""
    import uvicorn

    from pocketcode.config import load_settings, mask_url_password
    from pocketcode.db import migrate
    from pocketcode.db.engine import Database
    from pocketcode.domain.errors import ConfigurationError
    from pocketcode.services.secrets import load_keyring, verify_keyring
    from pocketcode.services.users import count_users
    from pocketcode.web.app import create_app

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.from_settings(settings)
    migrate.upgrade(db)
    verify_keyring(db, load_keyring(settings))
    if not is_loopback(settings.host) and count_users(db) == 0:
        raise ConfigurationError(
            f"refusing to listen on {settings.host}: anyone who can reach it could run commands "
            "on this machine, and no owner account exists yet. Start on 127.0.0.1 first and "
            "create the owner account."
        )
    url_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    console.print(f"pocketcode is running at [bold]http://{url_host}:{settings.port}/[/]")
    console.print(f"database: {mask_url_password(settings.effective_database_url)}", style="dim")
    app = create_app(settings, db)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
    )
