"""`pocketcode serve`"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pocketcode.config import Settings

console = Console(highlight=False, soft_wrap=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port to bind (default 3001)."),
) -> None:
    """Migrate the database, then run the server and print the URL to open."""
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
    try:
        migrate.upgrade(db)
        verify_keyring(db, load_keyring(settings))
        if not is_loopback(settings.host) and count_users(db) == 0:
            raise ConfigurationError(
                f"refusing to listen on {settings.host}: anyone who can reach it could run "
                "commands on this machine, and no owner account exists yet. Start on 127.0.0.1 "
                "first and create the owner account."
            )
        url = server_url(settings.host, settings.port)
        # First run: a one-time token lets the browser create the owner account. It goes in the
        # URL fragment, which browsers never send, so it reaches no request line or log; the
        # web client posts it in a request body.
        setup_token = secrets.token_urlsafe(32) if count_users(db) == 0 else None
        setup_file = settings.data_dir / SETUP_URL_FILE

        def announce() -> None:
            console.print(f"pocketcode is running at [bold]{url}[/]")
            if setup_token is not None:
                offer_setup(f"{url}#token={setup_token}", setup_file)
            console.print(
                f"database: {mask_url_password(settings.effective_database_url)}", style="dim"
            )

        try:
            run_server(
                create_app(settings, db, setup_token=setup_token), settings, on_listening=announce
            )
        finally:
            setup_file.unlink(missing_ok=True)  # its token dies with this server
    finally:
        db.dispose()
    console.print("pocketcode stopped")


# Where `serve` leaves the setup URL when its output is not a terminal.
SETUP_URL_FILE = "setup-url"


def offer_setup(link: str, file: Path) -> None:
    """Show the one-time setup link on the terminal. When the output is not a terminal (a
    service manager's journal, a redirect to a file: a log), the link goes to `file`, readable
    by this user only, and the output only says where it is."""
    if console.file.isatty():
        console.print(
            f"no account yet: open [bold]{link}[/] to create the owner account "
            "(or run `pocketcode user create`)"
        )
        return
    file.unlink(missing_ok=True)  # created anew: a file left there keeps its own mode
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(link + "\n")
    console.print(
        f"no account yet: the one-time link to create the owner account is in {file} (not "
        "printed: this output is not a terminal and may be kept in a log); or run "
        "`pocketcode user create`"
    )


def run_server(app: FastAPI, settings: Settings, *, on_listening: Callable[[], None]) -> None:
    """Run uvicorn until Ctrl+C or SIGTERM; `on_listening` runs once the port accepts
    connections (so the URL printed is one that answers)."""
    import uvicorn

    from pocketcode.domain.errors import OperationFailed

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_listening()

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises a caught SIGINT/SIGTERM after its graceful shutdown, which ends
            # `serve` in "Aborted!" and exit 1 (or death by SIGTERM). A stop is serve's normal
            # end: shut down gracefully, then return and exit 0.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    server = Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            server_header=False,
            # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise; we believe
            # it only from configured proxies, so the client address that throttling and the
            # trusted networks see cannot be claimed by whoever sends the header.
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=settings.forwarded_allow_ips or [],
        )
    )
    try:
        server.run()
    except SystemExit:
        # uvicorn exits when it cannot bind or the app's start-up fails; it has logged why.
        raise OperationFailed(
            f"the server could not start on {settings.host} port {settings.port} "
            "(the reason is logged above)"
        ) from None
