"""Importing transcripts the real CLI wrote (against the fake model): terminal sessions become
sessions with their messages, title and tokens; re-scans read only new bytes; a session run by
pocketcode and continued in a terminal stays one history. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow, SessionRow
from pocketcode.devtools.fake_model import text, tool_use
from pocketcode.domain.states import MessageType, Provider
from pocketcode.services.messages import MessageService
from pocketcode.services.sessions import SessionService
from pocketcode.services.transcript_index import TranscriptIndexer
from tests.e2e.claude_runs import ClaudeCli
from tests.e2e.conftest import StartFakeModel
from tests.e2e.run_stack import RunStack

pytestmark = pytest.mark.timeout(120)

BYPASS = ("--permission-mode", "bypassPermissions")


def messages(db: Database, session_id: object) -> list[MessageRow]:
    return MessageService(db).page(session_id, limit=1000).messages  # type: ignore[arg-type]


def test_terminal_sessions_are_imported_then_only_new_lines_are_read(
    db: Database, claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(
        tool_use("Write", {"file_path": "notes.txt", "content": "one\n"}),
        text("Wrote notes.txt."),
        tool_use("Bash", {"command": "cat notes.txt"}),
        text("It says one."),
        text("Third answer."),
    )
    first = claude.run(server, "Write a notes file", *BYPASS)
    assert first.returncode == 0, first.stderr[-2000:]
    second = claude.run(server, "Show the notes", "--resume", first.session_id, *BYPASS)
    assert second.returncode == 0, second.stderr[-2000:]

    indexer = TranscriptIndexer(db, claude.home / ".claude")
    summary = indexer.scan()
    assert (summary.sessions_new, summary.files_scanned, summary.lines_skipped) == (1, 1, 0)
    row = SessionService(db, []).find_by_provider_session(Provider.CLAUDE_CODE, first.session_id)
    assert row is not None
    assert row.title == "Write a notes file"
    assert row.project_path == str(claude.project.resolve())
    stored = messages(db, row.id)
    prompts = [m.text for m in stored if m.subtype == "prompt"]
    assert prompts == ["Write a notes file", "Show the notes"]
    assert [m.text for m in stored if m.subtype == "text"] == ["Wrote notes.txt.", "It says one."]
    tool_results = [m for m in stored if m.subtype == "tool_result"]
    assert len(tool_results) == 2 and "one" in tool_results[1].text
    # The uuids are those of the stream-json lines: a message stored live de-duplicates.
    live_uuids = {
        line["uuid"] for line in first.lines + second.lines if line["type"] == "assistant"
    }
    assert live_uuids <= {m.provider_message_uuid for m in stored}
    # Usage: one count per API message id, as the CLI summed it in its result lines.
    results = [first.result["usage"], second.result["usage"]]
    assert row.output_tokens == sum(usage["output_tokens"] for usage in results)
    assert row.input_tokens == sum(usage["input_tokens"] for usage in results)
    assert row.total_cost_usd > 0 and row.cli_total_cost_usd > 0
    assert row.message_count == len(stored) == summary.messages_imported

    unchanged = indexer.scan()
    assert (unchanged.files_unchanged, unchanged.bytes_read) == (1, 0)

    transcript = next((claude.transcript_dir()).glob("*.jsonl"))
    size = transcript.stat().st_size
    third = claude.run(server, "One more", "--resume", first.session_id, *BYPASS)
    assert third.returncode == 0, third.stderr[-2000:]
    grown = indexer.scan()
    assert grown.bytes_read == transcript.stat().st_size - size
    assert (grown.sessions_new, grown.sessions_updated, grown.messages_imported) == (0, 1, 2)
    assert [m.text for m in messages(db, row.id)[-2:]] == ["One more", "Third answer."]


RunStackFactory = Callable[..., Awaitable[RunStack]]


@pytest.mark.anyio
async def test_a_session_run_here_then_continued_in_a_terminal_is_one_history(
    db: Database, run_stack: RunStackFactory, tmp_path: Path, claude_executable: Path
) -> None:
    stack = await run_stack(
        tool_use("Write", {"file_path": "a.txt", "content": "a\n"}),
        text("Wrote a.txt."),
        text("Answered in the terminal."),
    )
    await stack.run("Write a.txt")
    session = await anyio.to_thread.run_sync(stack.session_row)
    assert session.provider_session_id is not None
    live = await anyio.to_thread.run_sync(stack.stored)

    terminal = ClaudeCli(claude_executable, tmp_path / "home", stack.project)
    continued = await anyio.to_thread.run_sync(
        lambda: terminal.run(
            stack.server,
            "Now from the terminal",
            "--resume",
            str(session.provider_session_id),
            *BYPASS,
        )
    )
    assert continued.returncode == 0, continued.stderr[-2000:]

    indexer = TranscriptIndexer(db, tmp_path / "home" / ".claude")
    summary = await anyio.to_thread.run_sync(indexer.scan)
    assert (summary.sessions_new, summary.sessions_updated) == (0, 1)
    # Only the terminal's turn is new: the run's messages and its queued prompt are not repeated.
    assert summary.messages_imported == 2
    stored = await anyio.to_thread.run_sync(stack.stored)
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
    assert [m.id for m in stored[: len(live)]] == [m.id for m in live]
    prompts = [m.text for m in stored if m.type is MessageType.USER and m.subtype == "prompt"]
    assert prompts == ["Write a.txt", "Now from the terminal"]
    texts = [m.text for m in stored if m.subtype == "text"]
    assert texts == ["Wrote a.txt.", "Answered in the terminal."]
    with db.read() as read:
        count = read.scalar(sa.select(sa.func.count()).select_from(SessionRow))
    assert count == 1
    again = await anyio.to_thread.run_sync(indexer.scan)
    assert again.messages_imported == 0
