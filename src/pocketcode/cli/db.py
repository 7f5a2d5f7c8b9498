"""`pocketcode db …`: migrations and the database operations of seed 000.

The work happens in `pocketcode.services.operations`; these commands parse arguments, ask for
confirmation before destructive steps and print the results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pocketcode.config import Settings
    from pocketcode.db.engine import Database
    from pocketcode.services.operations import DatabaseStats
    from pocketcode.services.secrets import Keyring

db_app = typer.Typer(
    help="Migrate, back up, restore, archive and maintain the database.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)


@contextmanager
def open_database(settings: Settings | None = None) -> Iterator[Database]:
    """The configured database; any database failure becomes one readable error line."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    from pocketcode.config import load_settings, mask_url_password
    from pocketcode.db.engine import Database
    from pocketcode.domain.errors import ConfigurationError, OperationFailed
    from pocketcode.services.operations import first_line

    settings = settings or load_settings()
    try:
        db = Database.from_settings(settings)
    except OSError as exc:
        url = mask_url_password(settings.effective_database_url)
        raise ConfigurationError(f"cannot open the database {url}: {exc.strerror or exc}") from None
    try:
        yield db
    except OperationalError as exc:
        raise OperationFailed(f"cannot use the database: {first_line(exc)}") from None
    except SQLAlchemyError as exc:
        raise OperationFailed(f"database error: {first_line(exc)}") from None
    finally:
        db.dispose()


@contextmanager
def open_app_database() -> Iterator[tuple[Settings, Database, Keyring]]:
    """What a command that works on pocketcode's data needs: the settings, the database
    migrated to head, and the keyring checked against it."""
    from pocketcode.config import load_settings
    from pocketcode.db import migrate
    from pocketcode.services.secrets import load_keyring, verify_keyring

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open_database(settings) as db:
        migrate.upgrade(db)
        keyring = load_keyring(settings)
        verify_keyring(db, keyring)
        yield settings, db, keyring


def _size(count: int | None) -> str:
    if count is None:
        return "unknown"
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply schema migrations (serve does this at start-up too)."""
    from alembic.util.exc import CommandError

    from pocketcode.db import migrate
    from pocketcode.domain.errors import InvalidInput
    from pocketcode.services.operations import first_line

    with open_database() as db:
        try:
            migrate.upgrade(db, revision)
        except CommandError as exc:
            raise InvalidInput(f"cannot upgrade to {revision!r}: {first_line(exc)}") from None
        console.print(f"database at revision {migrate.current_revision(db)}")


@db_app.command("current")
def current() -> None:
    """Show the database's schema revision and whether it is the newest."""
    from pocketcode.services.operations import revision_info

    with open_database() as db:
        info = revision_info(db)
    if info.current is None:
        console.print(f"no schema yet (head is {info.head}); run `pocketcode db upgrade`")
    elif info.is_head:
        console.print(f"revision {info.current} (head)")
    else:
        console.print(
            f"revision {info.current}, not head ({info.head}); run `pocketcode db upgrade`"
        )


@db_app.command("downgrade")
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, or `base` to drop every table."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Migrate the schema down to an older revision (data in removed tables is lost)."""
    from pocketcode.services.operations import downgrade as downgrade_to

    if not yes:
        typer.confirm(
            f"Downgrade the database to {revision}? Data in removed tables and columns is lost.",
            abort=True,
        )
    with open_database() as db:
        info = downgrade_to(db, revision)
    console.print(f"database at revision {info.current or 'base (no schema)'}")


@db_app.command("backup")
def backup(
    file: Annotated[Path, typer.Argument(help="Backup file to write.", show_default=False)],
    force: bool = typer.Option(False, "--force", help="Overwrite FILE if it exists."),
) -> None:
    """Copy the database into FILE, safely while the server runs.

    SQLite: the online backup API. PostgreSQL: pg_dump's custom format (needs pg_dump as new
    as the server; POCKETCODE_PG_BIN_DIR picks its directory).
    """
    from pocketcode.services.operations import backup as backup_to

    with open_database() as db:
        result = backup_to(db, file, force=force)
    tool = f" with {result.tool}" if result.tool else ""
    console.print(
        f"backed up to {result.path}{tool}: {_size(result.size_bytes)} "
        f"in {result.duration_seconds:.2f} s"
    )


@db_app.command("restore")
def restore(
    file: Annotated[
        Path, typer.Argument(help="Backup file written by `db backup`.", show_default=False)
    ],
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Replace the database's content with a backup, then migrate it to the newest schema.

    Stop the server first: sessions it holds in memory would not match the restored data.
    """
    from pocketcode.config import mask_url_password
    from pocketcode.services.operations import check_backup_file
    from pocketcode.services.operations import restore as restore_from

    with open_database() as db:
        source = check_backup_file(db, file)
        if not yes:
            target = mask_url_password(db.engine.url.render_as_string(hide_password=False))
            typer.confirm(
                f"Replace everything in {target} with {source}? Current data is lost.",
                abort=True,
            )
        result = restore_from(db, source)
    migrated = (
        f", migrated from {result.restored_revision}"
        if result.restored_revision and result.restored_revision != result.revision
        else ""
    )
    console.print(
        f"restored {result.path} in {result.duration_seconds:.2f} s; "
        f"database at revision {result.revision}{migrated}"
    )


@db_app.command("archive")
def archive(
    older_than: str = typer.Option(
        ..., "--older-than", help="Age like 90d, 12h or 2w since the session was last used."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would move."),
) -> None:
    """Move sessions not used for a while, with all their rows, into the archive tables.

    Sessions that are working are never moved. `db unarchive` brings sessions back.
    """
    from pocketcode.services.operations import archive_sessions, parse_age

    age = parse_age(older_than)
    with open_database() as db:
        result = archive_sessions(db, age, dry_run=dry_run)
    cutoff = result.cutoff.strftime("%Y-%m-%d %H:%M:%SZ")
    details = ", ".join(f"{count} {name}" for name, count in result.counts.items())
    verb = "would archive" if dry_run else "archived"
    console.print(
        f"{verb} {len(result.session_ids)} session(s) last used before {cutoff} ({details})"
    )


@db_app.command("unarchive")
def unarchive(
    session_ids: Annotated[list[str], typer.Argument(help="Ids of archived sessions.")],
) -> None:
    """Bring archived sessions, and all their rows, back into the live tables."""
    import uuid

    from pocketcode.domain.errors import InvalidInput
    from pocketcode.services.operations import unarchive as unarchive_sessions

    ids: list[uuid.UUID] = []
    for raw in session_ids:
        try:
            ids.append(uuid.UUID(raw))
        except ValueError:
            raise InvalidInput(f"{raw!r} is not a session id") from None
    with open_database() as db:
        result = unarchive_sessions(db, ids)
    details = ", ".join(f"{count} {name}" for name, count in result.counts.items())
    console.print(f"unarchived {len(result.session_ids)} session(s) ({details})")


@db_app.command("maintenance")
def maintenance() -> None:
    """Vacuum, analyze and reindex (SQLite also checkpoints its write-ahead log)."""
    from pocketcode.services.operations import run_maintenance

    with open_database() as db:
        result = run_maintenance(db)
    for step in result.steps:
        console.print(f"done: {step}")
    console.print(
        f"size {_size(result.size_before)} → {_size(result.size_after)} "
        f"in {result.duration_seconds:.2f} s"
    )


@db_app.command("stats")
def stats(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Row counts and sizes per table, connections by state, and slow queries."""
    import json

    from pocketcode.services.operations import database_stats

    with open_database() as db:
        result = database_stats(db)
    if as_json:
        typer.echo(json.dumps(_stats_as_dict(result), indent=2))
        return
    _print_stats(result)


def _stats_as_dict(result: DatabaseStats) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(result)
    if result.revision is not None:
        data["revision"]["is_head"] = result.revision.is_head
    return data


def _print_stats(result: DatabaseStats) -> None:
    from rich.table import Table

    revision = result.revision
    head = " (head)" if revision and revision.is_head else ""
    console.print(f"{result.backend} database {result.database}")
    if revision:
        console.print(f"schema revision {revision.current}{head}")
    console.print(f"total size {_size(result.size_bytes)}")
    tables = Table(title="tables")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    tables.add_column("size", justify="right")
    for table in result.tables:
        tables.add_row(table.name, str(table.rows), _size(table.size_bytes))
    console.print(tables)
    if result.size_note:
        console.print(result.size_note)
    if result.connections is None:
        console.print(f"connections: {result.connections_note}")
    else:
        connections = Table(title="connections")
        connections.add_column("state")
        connections.add_column("count", justify="right")
        for item in result.connections:
            connections.add_row(item.state, str(item.count))
        console.print(connections)
    if result.slow_queries is None:
        console.print(f"slow queries: {result.slow_queries_note}")
    elif not result.slow_queries:
        console.print("slow queries: none with a mean time over 100 ms")
    else:
        slow = Table(title="slow queries (mean over 100 ms)")
        slow.add_column("mean ms", justify="right")
        slow.add_column("calls", justify="right")
        slow.add_column("query", overflow="fold")
        for query in result.slow_queries:
            slow.add_row(f"{query.mean_exec_time_ms:.1f}", str(query.calls), query.query)
        console.print(slow)
