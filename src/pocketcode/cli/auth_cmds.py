"""`pocketcode user|totp|token …`: headless account administration.

Whoever runs these commands can read the database and the secret key, so they act without the
account's password (as an admin on the machine), but secrets still only go in through stdin or
a no-echo prompt, never through arguments (which other users can see in `ps`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pocketcode.services.auth import AuthService

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

user_app = typer.Typer(help="Create accounts and change passwords.", no_args_is_help=True)
totp_app = typer.Typer(help="Two-factor authentication (TOTP).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for scripts and mobile clients.", no_args_is_help=True)

USERNAME_HELP = "The account (default: the owner)."


@contextmanager
def auth_service() -> Iterator[AuthService]:
    from pocketcode.cli.db import open_app_database
    from pocketcode.services.auth import AuthService

    with open_app_database() as (_settings, db, keyring):
        yield AuthService(db, keyring)


def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """From a no-echo prompt on a terminal, else the first line of stdin (so
    `printf 'pw' | pocketcode user create` works and the value never is an argument)."""
    from pocketcode.domain.errors import InvalidInput

    if sys.stdin.isatty():
        value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
        return value
    line = sys.stdin.readline()
    value = line.removesuffix("\n").removesuffix("\r")
    if not value:
        raise InvalidInput(f"no {prompt.lower()} on stdin")
    return value


@user_app.command("create")
def user_create(
    username: str = typer.Option(
        None, "--username", "-u", help="The account name (default: your login name)."
    ),
) -> None:
    """Create an account; the first one is the owner. The password comes from stdin or a
    prompt (at least 12 characters)."""
    import getpass

    from pocketcode.services.auth import check_password, check_username

    name = check_username(username or getpass.getuser())
    password = read_secret("Password", confirm=True)
    check_password(password)
    with auth_service() as auth:
        user = auth.create_user(name, password)
    role = "owner" if user.is_owner else "user"
    console.print(f"created {role} account {user.username!r}")


@user_app.command("passwd")
def user_passwd(
    username: str = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
) -> None:
    """Set a new password (from stdin or a prompt); every login session of the account ends."""
    from pocketcode.services.auth import check_password

    with auth_service() as auth:
        user = auth.find_user(username)
        password = read_secret("New password", confirm=True)
        check_password(password)
        revoked = auth.change_password(user.id, password, current_password=None)
    console.print(f"password changed for {user.username!r}; {revoked} login session(s) ended")


@totp_app.command("enroll")
def totp_enroll(
    username: str = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
) -> None:
    """Print an otpauth:// URI for an authenticator app, then turn TOTP on with a code from it."""
    with auth_service() as auth:
        user = auth.find_user(username)
        enrollment = auth.enroll_totp(user.id)
        console.print("add this to your authenticator app (it holds the secret: keep it private):")
        console.print(enrollment.uri)
        if sys.stdin.isatty():
            code: str = typer.prompt("Code from the app")
        else:
            code = sys.stdin.readline().strip()
        codes = auth.confirm_totp(user.id, code)
    console.print(f"two-factor authentication is on for {user.username!r}")
    console.print("recovery codes (each works once; store them somewhere safe):")
    for recovery in codes:
        console.print(f"  {recovery}")


@totp_app.command("disable")
def totp_disable(
    username: str = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
) -> None:
    """Turn TOTP off (for an account whose authenticator is lost)."""
    with auth_service() as auth:
        user = auth.find_user(username)
        auth.disable_totp(user.id, password=None)
    console.print(f"two-factor authentication is off for {user.username!r}")


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="What the token is for, e.g. 'phone'."),
    username: str = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
) -> None:
    """Create an API token and print it once (send it as `Authorization: Bearer …`)."""
    with auth_service() as auth:
        user = auth.find_user(username)
        created = auth.create_token(user.id, name)
    typer.echo(created.token)  # alone on stdout, for `TOKEN=$(pocketcode token create …)`
    err_console.print(
        f"token {created.info.id} ({created.info.name!r}) for {user.username!r}: "
        "shown this once, store it now"
    )


@token_app.command("list")
def token_list(
    username: str = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
) -> None:
    """List the live tokens (id, prefix, name, created, last used); never the tokens."""
    from pocketcode.domain.timefmt import iso_z

    with auth_service() as auth:
        user = auth.find_user(username)
        tokens = auth.list_tokens(user.id)
    if not tokens:
        console.print("no tokens")
    for token in tokens:
        used = iso_z(token.last_used_at) if token.last_used_at else "never used"
        console.print(
            f"{token.id}  {token.prefix}…  {token.name}  created {iso_z(token.created_at)}  {used}"
        )


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The id `token list` shows."),
    username: str = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    with auth_service() as auth:
        user = auth.find_user(username)
        auth.revoke_token(user.id, token_id)
    console.print(f"revoked token {token_id}")
