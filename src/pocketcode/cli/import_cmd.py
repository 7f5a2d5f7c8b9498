"""`pocketcode import [PATH]`: index Claude Code's transcripts into the database.

The work is `pocketcode.services.transcript_index`; running it again reads only what changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(highlight=False, soft_wrap=True)


def import_transcripts(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Claude's config dir (default: $CLAUDE_CONFIG_DIR or ~/.claude), its "
            "projects/ folder, one project's folder, or one .jsonl transcript.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-j",
            min=1,
            help="Processes that parse and store at once (default: one per CPU, at most 4). "
            "Used when there is at least 64 MiB to read.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import terminal Claude Code sessions (incremental: unchanged files are not read)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from pocketcode.cli.db import open_database
    from pocketcode.db import migrate
    from pocketcode.domain.errors import InvalidInput
    from pocketcode.services.sessions import claude_config_dir
    from pocketcode.services.transcript_index import (
        TranscriptIndexer,
        default_workers,
        transcript_files,
    )

    target = (path or claude_config_dir()).expanduser().resolve()
    files: list[Path] | None
    if target.is_file():
        config_dir, files = target.parent, [target]
    elif (target / "projects").is_dir():
        config_dir, files = target, None
    elif target.is_dir():
        config_dir, files = target, transcript_files(target)
    else:
        raise InvalidInput(f"{target} is not a folder or a transcript file")

    with open_database() as db:
        migrate.upgrade(db)
        indexer = TranscriptIndexer(db, config_dir)
        with Progress(
            TextColumn("[bold]Importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[name]}"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("import", total=None, name="")

            def advance(current: Path, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, name=current.name[:40])

            summary = indexer.scan(
                files, progress=advance, pause_gc=True, workers=workers or default_workers()
            )

    table = Table(title="Import summary", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (
        ("files scanned", summary.files_scanned),
        ("files unchanged", summary.files_unchanged),
        ("files skipped", summary.files_skipped),
        ("files gone (messages kept)", summary.files_gone),
        ("sessions new", summary.sessions_new),
        ("sessions updated", summary.sessions_updated),
        ("messages imported", summary.messages_imported),
        ("lines skipped", summary.lines_skipped),
    ):
        table.add_row(label, str(value))
    console.print(table)
