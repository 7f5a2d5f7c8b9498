"""What the run manager records and publishes as a run goes, with a scripted runner in place of
the CLI (the real CLI's runs are in tests/e2e/test_runs.py). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pocketcode.agents.base import AgentEvent, EventKind, RunOutcome, RunRequest, RunStatus
from pocketcode.db.engine import Database
from pocketcode.services.events import Event, EventBus
from pocketcode.services.runs import RunManager
from pocketcode.services.sessions import SessionService

Emit = Callable[[AgentEvent], Awaitable[None]]


class ReportingRunner:
    """Starts "a process" that reports the provider session id given, then completes (the
    outcome names none: only the process's report can tell)."""

    provider = "claude-code"

    def __init__(self, reported: Callable[[RunRequest], str]) -> None:
        self.reported = reported
        self.requests: list[RunRequest] = []

    async def run(self, request: RunRequest, emit: Emit, ask: object) -> RunOutcome:
        self.requests.append(request)
        reported = self.reported(request)
        await emit(AgentEvent(EventKind.PROCESS, pid=os.getpid(), provider_session_id=reported))
        return RunOutcome(RunStatus.COMPLETED, None)

    async def cancel(self, session_id: uuid.UUID) -> None: ...

    async def close_idle(self) -> int:
        return 0

    async def aclose(self) -> None: ...


async def _run_once(db: Database, session_id: uuid.UUID, runner: ReportingRunner) -> list[Event]:
    bus = EventBus(db)
    await bus.start()
    manager = RunManager(db, bus, runner, poll_interval=0.05)
    await manager.start()
    try:
        with bus.subscribe(session_id) as events:
            await manager.submit(session_id, "go")
            seen: list[Event] = []
            async with asyncio.timeout(10):
                async for event in events:
                    seen.append(event)
                    if event.type == "done":
                        return seen
    finally:
        await manager.stop()
        await bus.stop()
    raise AssertionError("the run did not end")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_provider_session_id_a_process_reports_is_recorded(
    db: Database, tmp_path: Path, anyio_backend: str
) -> None:
    """The id chosen before the process started is the session's; a process that reports
    another one (a CLI that picked its own) has it recorded, so `--resume` finds it."""
    project = tmp_path / "project"
    project.mkdir()
    sessions = SessionService(db, [tmp_path])
    session_id = sessions.create(str(project)).id

    same = ReportingRunner(lambda request: request.new_provider_session_id)
    seen = await _run_once(db, session_id, same)
    chosen = same.requests[0].new_provider_session_id
    assert sessions.get(session_id).provider_session_id == chosen
    streaming = [e for e in seen if e.type == "state" and e.data["processStatus"] == "streaming"]
    assert streaming and streaming[0].data["pendingPermissions"] == 0

    other = ReportingRunner(lambda request: "cli-chose-its-own")
    await _run_once(db, session_id, other)
    assert other.requests[0].resume_provider_session_id == chosen
    assert sessions.get(session_id).provider_session_id == "cli-chose-its-own"
