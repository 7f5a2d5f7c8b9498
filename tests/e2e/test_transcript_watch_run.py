"""The live transcript watcher while pocketcode itself runs the real CLI (fake model) in the
watched config dir: the run writes the transcript that the watcher reads, and every message is
still stored once and published once, in seq order. Then the session is continued in a
terminal and the watcher brings the terminal's turn in live. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from pocketcode.db.tables import MessageRow
from pocketcode.devtools.fake_model import text, tool_use
from pocketcode.domain.states import MessageType
from pocketcode.services.transcript_watch import TranscriptWatcher
from tests.e2e.claude_runs import ClaudeCli
from tests.e2e.run_stack import RunStack
from tests.helpers import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

RunStackFactory = Callable[..., Awaitable[RunStack]]


async def test_a_run_and_the_watcher_store_and_publish_each_message_once(
    run_stack: RunStackFactory, tmp_path: Path, claude_executable: Path
) -> None:
    stack = await run_stack(
        tool_use("Write", {"file_path": "a.txt", "content": "a\n"}),
        text("Wrote a.txt."),
        tool_use("Bash", {"command": "cat a.txt"}),
        text("It holds a."),
        text("Answered in the terminal."),
    )
    watcher = TranscriptWatcher(
        stack.db, stack.bus, tmp_path / "home" / ".claude", poll_interval=0.1
    )
    await watcher.start()
    try:
        with stack.bus.subscribe(stack.session_id) as events:
            await stack.run("Write a.txt")
            await stack.run("Show it")
            session = await anyio.to_thread.run_sync(stack.session_row)
            # The watcher has seen the transcript the runs wrote by now, or sees it within a
            # second: give it that second, then continue the session from a terminal.
            await anyio.sleep(1.0)
            terminal = ClaudeCli(claude_executable, tmp_path / "home", stack.project)
            continued = await anyio.to_thread.run_sync(
                lambda: terminal.run(
                    stack.server,
                    "Now from the terminal",
                    "--resume",
                    str(session.provider_session_id),
                    "--permission-mode",
                    "bypassPermissions",
                )
            )
            assert continued.returncode == 0, continued.stderr[-2000:]
            published = []
            with anyio.fail_after(10):
                async for event in events:
                    if event.type == "message":
                        published.append(event)
                        if event.data["text"] == "Answered in the terminal.":
                            break
    finally:
        await watcher.stop()
    stored = await anyio.to_thread.run_sync(stack.stored)
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
    uuids = Counter(m.provider_message_uuid for m in stored if m.provider_message_uuid)
    assert all(count == 1 for count in uuids.values()), uuids.most_common(3)
    seqs = [event.seq for event in published]
    assert sorted(seqs) == [m.seq for m in stored], (seqs, len(stored))
    prompts = [m.text for m in stored if m.subtype == "prompt"]
    assert prompts == ["Write a.txt", "Show it", "Now from the terminal"]
    # Two turns run here (counted by the runs), one in the terminal (counted by the watcher).
    assert (await anyio.to_thread.run_sync(stack.session_row)).turn_count == 3
    assert [m.text for m in stored if m.subtype == "text"] == [
        "Wrote a.txt.",
        "It holds a.",
        "Answered in the terminal.",
    ]


async def test_a_sub_agents_messages_stay_under_its_call_when_the_watcher_reads_its_file(
    run_stack: RunStackFactory, tmp_path: Path
) -> None:
    call = {
        "description": "count files",
        "prompt": "Count the files",
        "subagent_type": "general-purpose",
        "run_in_background": False,
    }
    stack = await run_stack(tool_use("Agent", call), text("The agent counted them."))
    stack.server.add_turns(text("SUB-AGENT: there are no files."), subagent=True)
    config_dir = tmp_path / "home" / ".claude"
    watcher = TranscriptWatcher(stack.db, stack.bus, config_dir, poll_interval=0.1)

    def sub_agent_reply() -> MessageRow | None:
        return next(
            (
                m
                for m in stack.stored()
                if m.type is MessageType.ASSISTANT and m.text == "SUB-AGENT: there are no files."
            ),
            None,
        )

    await watcher.start()
    try:
        await stack.run("Count files with an agent")
        # The CLI writes the sub-agent's reply only to the sub-agent's own file.
        assert len(list((config_dir / "projects").rglob("subagents/agent-*.jsonl"))) == 1
        await eventually(lambda: sub_agent_reply() is not None, 10, "the sub-agent's reply")
    finally:
        await watcher.stop()
    stored = await anyio.to_thread.run_sync(stack.stored)
    call_id = next(m for m in stored if m.subtype == "tool_use").raw["message"]["content"][0]["id"]
    reply = await anyio.to_thread.run_sync(sub_agent_reply)
    assert reply is not None and reply.parent_tool_use_id == call_id
    sub_agent = {m.text for m in stored if m.parent_tool_use_id == call_id}
    assert {"Count the files", "SUB-AGENT: there are no files."} <= sub_agent
    assert [m.text for m in stored if m.subtype == "prompt"] == ["Count files with an agent"]
    session = await anyio.to_thread.run_sync(stack.session_row)
    assert session.turn_count == 1
