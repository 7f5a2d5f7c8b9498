"""Tool approvals: durable requests, answers from any thread, always-allow, expiry."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from pocketcode.agents.base import PermissionDecision
from pocketcode.db.engine import Database
from pocketcode.db.tables import PermissionRequestRow
from pocketcode.domain.errors import Conflict, InvalidInput, NotFound
from pocketcode.domain.states import PermissionStatus
from pocketcode.services.jobs import JobService
from pocketcode.services.permissions import Answer, PermissionEvent, PermissionService
from pocketcode.services.sessions import SessionService

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def session_id(db: Database, tmp_path: Path) -> uuid.UUID:
    return SessionService(db, [tmp_path]).create(str(tmp_path)).id


async def _ask(
    service: PermissionService, session_id: uuid.UUID, events: list[PermissionEvent]
) -> PermissionDecision:
    async def publish(event: PermissionEvent) -> None:
        events.append(event)

    return await service.request(
        session_id,
        None,
        "Write",
        {"file_path": "a.txt", "content": "x"},
        "toolu_1",
        publish=publish,
    )


async def _first_pending(service: PermissionService) -> str:
    with anyio.fail_after(5):
        while True:
            pending = await anyio.to_thread.run_sync(service.pending)
            if pending:
                return str(pending[0].id)
            await anyio.sleep(0.01)


async def test_an_answer_from_another_thread_wakes_the_run(
    db: Database, monkeypatch: pytest.MonkeyPatch, session_id: uuid.UUID
) -> None:
    # The fallback poll is made slow, so only the in-process wake-up can answer in time.
    monkeypatch.setattr("pocketcode.services.permissions._POLL_INTERVAL", 10.0)
    service = PermissionService(db, timeout=30)
    events: list[PermissionEvent] = []
    async with anyio.create_task_group() as group:
        result: list[PermissionDecision] = []

        async def ask() -> None:
            result.append(await _ask(service, session_id, events))

        group.start_soon(ask)
        request_id = await _first_pending(service)
        started = anyio.current_time()
        # Answered from a plain thread, as a web request handler would.
        thread = threading.Thread(target=service.answer, args=(request_id, Answer.ALLOW))
        thread.start()
        thread.join()
    assert anyio.current_time() - started < 2  # woken at once, not by the (10 s) poll
    decision = result[0]
    assert decision.allow is True
    assert events[0].data["status"] == "pending"
    assert events[0].data["toolName"] == "Write"
    assert service.get(request_id).status is PermissionStatus.ALLOWED
    assert service.pending() == []


async def test_deny_carries_the_users_reason(db: Database, session_id: uuid.UUID) -> None:
    service = PermissionService(db, timeout=30)
    async with anyio.create_task_group() as group:
        result: list[PermissionDecision] = []

        async def ask() -> None:
            result.append(await _ask(service, session_id, []))

        group.start_soon(ask)
        request_id = await _first_pending(service)
        await anyio.to_thread.run_sync(
            lambda: service.answer(request_id, Answer.DENY, reason="not that file")
        )
    assert result[0].allow is False
    assert result[0].message == "not that file"
    with pytest.raises(Conflict):
        service.answer(request_id, Answer.ALLOW)


async def test_an_answer_given_by_another_process_is_seen_by_polling(
    db: Database, session_id: uuid.UUID
) -> None:
    service = PermissionService(db, timeout=30)
    other_process = PermissionService(db, timeout=30)  # no waiter registered there
    async with anyio.create_task_group() as group:
        result: list[PermissionDecision] = []

        async def ask() -> None:
            result.append(await _ask(service, session_id, []))

        group.start_soon(ask)
        request_id = await _first_pending(service)
        await anyio.to_thread.run_sync(lambda: other_process.answer(request_id, Answer.ALLOW))
    assert result[0].allow is True


async def test_always_allows_the_tool_for_the_rest_of_the_session(
    db: Database, session_id: uuid.UUID
) -> None:
    service = PermissionService(db, timeout=30)
    async with anyio.create_task_group() as group:
        group.start_soon(_ask, service, session_id, [])
        request_id = await _first_pending(service)
        await anyio.to_thread.run_sync(lambda: service.answer(request_id, Answer.ALWAYS))
    events: list[PermissionEvent] = []
    with anyio.fail_after(2):
        decision = await _ask(service, session_id, events)
    assert decision.allow is True
    assert events == []  # not asked again
    assert service.get(request_id).scope == "session"


async def test_an_unanswered_request_expires_as_a_denial(
    db: Database, session_id: uuid.UUID
) -> None:
    service = PermissionService(db, timeout=0.3)
    events: list[PermissionEvent] = []
    expired: list[PermissionRequestRow] = []

    async def publish(event: PermissionEvent) -> None:
        events.append(event)

    async def on_expired(row: PermissionRequestRow) -> None:
        expired.append(row)

    decision = await service.request(
        session_id,
        None,
        "Bash",
        {"command": "rm -rf build"},
        None,  # type: ignore[arg-type]
        publish=publish,
        on_expired=on_expired,
    )
    assert decision.allow is False
    assert [event.data["status"] for event in events] == ["pending", "expired"]
    assert len(expired) == 1
    with pytest.raises(Conflict):
        service.answer(events[0].data["id"], Answer.ALLOW)


def test_bad_input(db: Database) -> None:
    service = PermissionService(db)
    with pytest.raises(NotFound):
        service.get("nope")
    with pytest.raises(InvalidInput):
        PermissionService(db, timeout=0)


async def test_pending_requests_expire_at_startup(db: Database, session_id: uuid.UUID) -> None:
    service = PermissionService(db, timeout=30)
    task = asyncio.ensure_future(_ask(service, session_id, []))
    await _first_pending(service)
    assert service.expire_pending_without_run("restarted") == 1
    with anyio.fail_after(3):
        decision = await task
    assert decision.allow is False


async def test_startup_leaves_the_requests_of_live_runs_pending(
    db: Database, session_id: uuid.UUID, tmp_path: Path
) -> None:
    """Another server (or `pocketcode run`) starting must not deny a tool a live run waits
    on: only requests whose job no longer runs are expired."""
    jobs = JobService(db)
    live = jobs.enqueue(session_id, "still running elsewhere")[0]
    assert jobs.claim_next("another-server:1:1") is not None
    project = tmp_path / "other"
    project.mkdir()
    ended_session = SessionService(db, [tmp_path]).create(str(project)).id
    ended = jobs.enqueue(ended_session, "its server died")[0]
    jobs.claim_next("dead-server:2:2")
    jobs.interrupt_processing({"dead-server:2:2"}, "the server stopped")
    service = PermissionService(db, timeout=30)
    asked: list[PermissionEvent] = []
    both_asked = asyncio.Event()

    async def publish(event: PermissionEvent) -> None:
        asked.append(event)
        if len(asked) == 2:
            both_asked.set()

    live_decision, ended_decision = (
        asyncio.ensure_future(
            service.request(sid, job.id, "Write", {"file_path": "a"}, f"toolu_{n}", publish=publish)
        )
        for n, (sid, job) in enumerate(((session_id, live), (ended_session, ended)))
    )
    with anyio.fail_after(5):
        await both_asked.wait()

    assert service.expire_pending_without_run("restarted") == 1

    with anyio.fail_after(3):
        assert (await ended_decision).allow is False
    [still] = service.pending(session_id)
    assert still.job_id == live.id
    service.answer(still.id, Answer.ALLOW)
    with anyio.fail_after(3):
        assert (await live_decision).allow is True


async def test_always_allows_the_sessions_other_pending_requests_of_that_tool(
    db: Database, session_id: uuid.UUID
) -> None:
    """Parallel tool uses ask at once: "always" for one Write allows the other Write waiting
    beside it (else it waits for an answer, or expires), not the Bash one."""
    service = PermissionService(db, timeout=30)
    asked: list[PermissionEvent] = []
    all_asked = asyncio.Event()

    async def publish(event: PermissionEvent) -> None:
        asked.append(event)
        if len(asked) == 3:
            all_asked.set()

    first, second, bash = (
        asyncio.ensure_future(service.request(session_id, None, tool, {}, use, publish=publish))
        for tool, use in (("Write", "toolu_a"), ("Write", "toolu_b"), ("Bash", "toolu_c"))
    )
    with anyio.fail_after(5):
        await all_asked.wait()
    by_use = {event.data["toolUseId"]: event.data["id"] for event in asked}

    answered = service.answer_all(by_use["toolu_a"], Answer.ALWAYS)

    assert [(row.tool_use_id, row.status, row.scope) for row in answered] == [
        ("toolu_a", PermissionStatus.ALLOWED, "session"),
        ("toolu_b", PermissionStatus.ALLOWED, "session"),
    ]
    with anyio.fail_after(3):
        assert (await first).allow is True
        assert (await second).allow is True
    assert [row.tool_name for row in service.pending(session_id)] == ["Bash"]
    service.answer(by_use["toolu_c"], Answer.DENY)
    with anyio.fail_after(3):
        assert (await bash).allow is False


async def test_an_answer_the_moment_the_request_is_stored_wakes_the_run(
    db: Database, monkeypatch: pytest.MonkeyPatch, session_id: uuid.UUID
) -> None:
    """The answer can come from another thread as soon as the request is committed, before
    the asking coroutine resumes: its wake-up must already be registered (the fallback poll
    is made slow, so only the wake-up answers in time)."""
    monkeypatch.setattr("pocketcode.services.permissions._POLL_INTERVAL", 10.0)
    service = PermissionService(db, timeout=30)
    create = service._create

    def create_then_answer(*args: Any) -> PermissionRequestRow:
        row = create(*args)
        service.answer(row.id, Answer.ALLOW)  # in the worker thread, right after the commit
        return row

    monkeypatch.setattr(service, "_create", create_then_answer)
    started = anyio.current_time()
    with anyio.fail_after(5):
        decision = await _ask(service, session_id, [])
    assert decision.allow is True
    assert anyio.current_time() - started < 2
