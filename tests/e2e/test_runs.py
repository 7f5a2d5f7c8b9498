"""The whole run flow: a prompt queued through the run manager becomes a real Claude Code run
(the bundled CLI against the scripted fake model); every message is stored with a contiguous
seq, then published; the session and the job follow the run. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import anyio
import pytest

from pocketcode.agents import processes
from pocketcode.devtools.fake_model import error, slow, text, tool_use
from pocketcode.domain.states import JobStatus, MessageType, PermissionMode, ProcessStatus
from pocketcode.services.events import Event
from pocketcode.services.permissions import Answer
from tests.e2e.run_stack import RunStack
from tests.helpers import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

StartStack = Callable[..., Awaitable[RunStack]]


def _message_events(events: list[Event]) -> list[Event]:
    return [event for event in events if event.type == "message"]


async def test_an_answer_is_stored_and_streamed_in_order(run_stack: StartStack) -> None:
    stack = await run_stack(text("Hello from the fake model."))
    job, events = await stack.run("Say hello")

    assert job.status is JobStatus.COMPLETED
    stored = await anyio.to_thread.run_sync(stack.stored)
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
    kinds = [(m.type, m.subtype) for m in stored]
    assert kinds[0] == (MessageType.USER, "prompt")
    assert (MessageType.SYSTEM, "init") in kinds
    assert (MessageType.ASSISTANT, "text") in kinds
    assert kinds[-1][0] is MessageType.RESULT
    answer = next(m for m in stored if m.subtype == "text")
    assert answer.text == "Hello from the fake model."
    # Subscribers heard every stored message, in seq order, exactly once.
    published = [event.seq for event in _message_events(events)]
    assert published == [m.seq for m in stored]
    assert events[-1].type == "done"
    assert events[-1].data["status"] == "completed"

    session = await anyio.to_thread.run_sync(stack.session_row)
    assert session.is_working is False
    assert session.process_status is ProcessStatus.COMPLETED
    assert session.last_job_status is JobStatus.COMPLETED
    assert session.current_job_id is None
    assert session.provider_session_id is not None
    assert session.turn_count == 1
    assert session.message_count == len(stored)
    assert session.input_tokens + session.cache_creation_tokens + session.cache_read_tokens > 0
    assert session.output_tokens > 0
    assert job.input_tokens + job.cache_creation_tokens + job.cache_read_tokens > 0
    # Our cost (model_pricing) and the CLI's own figure are both kept.
    assert session.total_cost_usd > Decimal(0)
    assert job.cost_usd == session.total_cost_usd
    assert job.cli_cost_usd is not None and job.cli_cost_usd > 0
    # A live screen ends the run showing what a reload would: tokens and cost together.
    last_state = [event for event in events if event.type == "state"][-1].data
    assert last_state["tokens"] == {
        "input": session.input_tokens,
        "output": session.output_tokens,
        "cacheCreation": session.cache_creation_tokens,
        "cacheRead": session.cache_read_tokens,
    }
    assert last_state["totalCostUsd"] == float(session.total_cost_usd)


async def test_tools_really_change_the_project(run_stack: StartStack) -> None:
    stack = await run_stack(
        tool_use("Write", {"file_path": "notes.txt", "content": "one\n"}),
        tool_use("Read", {"file_path": "notes.txt"}),
        tool_use("Edit", {"file_path": "notes.txt", "old_string": "one", "new_string": "two"}),
        tool_use("Bash", {"command": "echo ran > bash.txt", "description": "write a file"}),
        text("All done."),
    )
    job, _ = await stack.run("Do the work")

    assert job.status is JobStatus.COMPLETED
    assert (stack.project / "notes.txt").read_text() == "two\n"
    assert (stack.project / "bash.txt").read_text() == "ran\n"
    stored = await anyio.to_thread.run_sync(stack.stored)
    uses = [m for m in stored if m.subtype == "tool_use"]
    results = [m for m in stored if m.subtype == "tool_result"]
    assert [m.raw["message"]["content"][0]["name"] for m in uses if m.raw] == [
        "Write",
        "Read",
        "Edit",
        "Bash",
    ]
    use_ids = [m.raw["message"]["content"][0]["id"] for m in uses if m.raw]
    assert [m.parent_tool_use_id for m in results] == use_ids


async def test_a_second_prompt_resumes_the_same_provider_session(run_stack: StartStack) -> None:
    stack = await run_stack(text("The secret word is pelican."), text("You said pelican."))
    await stack.run("Remember a word")
    first = await anyio.to_thread.run_sync(stack.session_row)
    job, _ = await stack.run("What was the word?")

    assert job.status is JobStatus.COMPLETED
    second = await anyio.to_thread.run_sync(stack.session_row)
    assert second.provider_session_id == first.provider_session_id
    assert second.turn_count == 2
    last_request = stack.server.main_requests[-1]
    assert "The secret word is pelican." in last_request.texts
    assert "Remember a word" in last_request.texts


@pytest.mark.parametrize("answer", [Answer.DENY, Answer.ALLOW])
async def test_a_write_waits_for_approval(run_stack: StartStack, answer: Answer) -> None:
    stack = await run_stack(
        tool_use("Write", {"file_path": "approved.txt", "content": "yes\n"}),
        text("Finished."),
        permission_mode=PermissionMode.DEFAULT,
    )
    with stack.bus.subscribe(stack.session_id) as subscription:
        job = await stack.manager.submit(stack.session_id, "Write the file")
        with anyio.fail_after(30):
            async for event in subscription:
                if event.type == "permission" and event.data["status"] == "pending":
                    break
        assert event.data["toolName"] == "Write"
        assert not (stack.project / "approved.txt").exists()
        pending = await anyio.to_thread.run_sync(stack.permissions.pending, stack.session_id)
        assert [str(row.id) for row in pending] == [event.data["id"]]
        await anyio.to_thread.run_sync(
            lambda: stack.permissions.answer(event.data["id"], answer, reason="not now")
        )
        after = await stack.collect_until_done(subscription, job.id)

    # Every screen learns at once that nothing waits for an answer any more: a state event
    # comes before the run goes on (the tool's result), not only when the run ends.
    answered = next(
        i for i, e in enumerate(after) if e.type == "state" and e.data["pendingPermissions"] == 0
    )
    first_message = next(i for i, e in enumerate(after) if e.type == "message")
    assert answered < first_message, [e.type for e in after]

    written = stack.project / "approved.txt"
    if answer is Answer.ALLOW:
        assert written.read_text() == "yes\n"
    else:
        assert not written.exists()
        assert any("not now" in text for text in stack.server.main_requests[-1].texts) or any(
            "not now" in str(r) for r in stack.server.main_requests[-1].tool_results
        )
    assert (await anyio.to_thread.run_sync(stack.job, job.id)).status is JobStatus.COMPLETED


async def test_cancel_stops_the_run_and_the_next_prompt_runs(run_stack: StartStack) -> None:
    stack = await run_stack(slow("word " * 400, delay_per_chunk=0.05), text("Second answer."))
    with stack.bus.subscribe(stack.session_id) as subscription:
        first = await stack.manager.submit(stack.session_id, "Talk for a long time")
        second = await stack.manager.submit(stack.session_id, "Then answer briefly")
        with anyio.fail_after(30):
            async for event in subscription:
                if event.type == "delta":
                    break
        pid = (await anyio.to_thread.run_sync(stack.session_row)).process_pid
        assert pid is not None
        started = anyio.current_time()
        cancelled = await stack.manager.cancel_job(first.id)
        elapsed = anyio.current_time() - started
        assert elapsed < 2, f"cancel took {elapsed:.2f} s"
        assert cancelled.status is JobStatus.CANCELLED
        await stack.collect_until_done(subscription, second.id)

    assert (await anyio.to_thread.run_sync(stack.job, second.id)).status is JobStatus.COMPLETED
    stored = await anyio.to_thread.run_sync(stack.stored)
    assert any(m.subtype == "cancelled" for m in stored)
    assert any(m.text == "Second answer." for m in stored)
    session = await anyio.to_thread.run_sync(stack.session_row)
    assert session.is_working is False


async def test_cancel_kills_the_commands_the_run_started(run_stack: StartStack) -> None:
    stack = await run_stack(
        tool_use(
            "Bash",
            {"command": "echo up > started.txt; sleep 60; echo never", "description": "wait"},
        ),
        text("not reached"),
    )
    job = await stack.manager.submit(stack.session_id, "Run the long command")
    await eventually((stack.project / "started.txt").exists, 30, "the command to start")
    cli_pid = (await anyio.to_thread.run_sync(stack.session_row)).process_pid
    started = anyio.current_time()
    cancelled = await stack.manager.cancel_job(job.id)
    assert cancelled.status is JobStatus.CANCELLED

    def tool_processes() -> list[int]:
        marked = processes.find_marked_processes(processes.MARKER_SESSION_ID, str(stack.session_id))
        return [p.pid for p in marked if p.pid != cli_pid]

    await eventually(lambda: not tool_processes(), 2, "the command to be killed")
    assert anyio.current_time() - started < 2.5
    session = await anyio.to_thread.run_sync(stack.session_row)
    assert (session.is_working, session.process_status) == (False, ProcessStatus.CANCELLED)


async def test_a_queued_prompt_can_be_cancelled(run_stack: StartStack) -> None:
    stack = await run_stack(slow("a " * 100, delay_per_chunk=0.02), text("never used"))
    with stack.bus.subscribe(stack.session_id) as subscription:
        first = await stack.manager.submit(stack.session_id, "First")
        queued = await stack.manager.submit(stack.session_id, "Second")
        cancelled = await stack.manager.cancel_job(queued.id)
        assert cancelled.status is JobStatus.CANCELLED
        await stack.collect_until_done(subscription, first.id)
    await anyio.sleep(0.5)
    assert (await anyio.to_thread.run_sync(stack.job, queued.id)).status is JobStatus.CANCELLED
    assert len(stack.server.main_requests) == 1


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (401, "api_401", "credentials"),
        (429, "api_429", "rate"),
        (500, "api_500", "server"),
        (529, "api_overloaded", "overloaded"),
    ],
)
async def test_api_errors_fail_the_job_with_a_readable_message(
    run_stack: StartStack, status: int, code: str, words: str
) -> None:
    stack = await run_stack(error(status))
    job, events = await stack.run("Hello?")

    assert job.status is JobStatus.FAILED
    assert job.error_code == code
    assert job.error and words in job.error.lower()
    stored = await anyio.to_thread.run_sync(stack.stored)
    assert stored[-1].type is MessageType.ERROR
    assert stored[-1].text == job.error
    session = await anyio.to_thread.run_sync(stack.session_row)
    assert session.is_working is False
    assert session.process_status is ProcessStatus.FAILED
    assert events[-1].data["status"] == "failed"


async def test_a_missing_project_folder_fails_readably(run_stack: StartStack) -> None:
    stack = await run_stack(text("unused"))
    stack.project.rename(stack.project.with_name("moved"))
    job, _ = await stack.run("Hello?")
    assert job.status is JobStatus.FAILED
    assert (job.error and "folder" in job.error.lower()) or "directory" in (job.error or "").lower()
    assert (await anyio.to_thread.run_sync(stack.session_row)).is_working is False
