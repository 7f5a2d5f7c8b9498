"""What the run manager records and publishes as a run goes, with a scripted runner in place of
the CLI (the real CLI's runs are in tests/e2e/test_runs.py). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pocketcode.agents.base import AgentEvent, EventKind, RunOutcome, RunRequest, RunStatus
from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, SessionRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import Conflict
from pocketcode.domain.states import JobStatus, ProcessStatus
from pocketcode.services.events import Event, EventBus
from pocketcode.services.jobs import JobService
from pocketcode.services.pricing import TokenUsage
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


class OutcomeRunner:
    """Starts "a process", then ends each run with the next of the given outcomes."""

    provider = "claude-code"

    def __init__(self, *outcomes: RunOutcome) -> None:
        self.outcomes = list(outcomes)

    async def run(self, request: RunRequest, emit: Emit, ask: object) -> RunOutcome:
        await emit(AgentEvent(EventKind.PROCESS, pid=os.getpid()))
        return self.outcomes.pop(0)

    async def cancel(self, session_id: uuid.UUID) -> None: ...

    async def close_idle(self) -> int:
        return 0

    async def aclose(self) -> None: ...


async def _run_all(
    db: Database,
    session_id: uuid.UUID,
    runner: Any,
    prompts: int,
    after_start: Callable[[], None] = lambda: None,
) -> None:
    bus = EventBus(db)
    await bus.start()
    manager = RunManager(db, bus, runner, poll_interval=0.01)
    await manager.start()
    after_start()
    try:
        with bus.subscribe(session_id) as events:
            for number in range(prompts):
                await manager.submit(session_id, f"prompt {number}")
            done = 0
            async with asyncio.timeout(20):
                async for event in events:
                    done += event.type == "done"
                    if done == prompts:
                        return
    finally:
        await manager.stop()
        await bus.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_no_commit_shows_a_finished_run_on_a_working_session(
    db: Database, tmp_path: Path, anyio_backend: str
) -> None:
    """A session's next prompt is claimable once its job stops processing; had the job's end
    and the session's been recorded apart, the next run could start on a session still
    "streaming" and fail (seen in CI after a cancel). Every commit is checked."""
    project = tmp_path / "project"
    project.mkdir()
    sessions = SessionService(db, [tmp_path])
    session_id = sessions.create(str(project)).id
    checking = threading.local()
    broken: list[str] = []

    def check(_session: Session) -> None:
        if getattr(checking, "now", False):
            return
        checking.now = True
        try:
            # One statement: on PostgreSQL (read committed) two would each see their own
            # snapshot, and a run ending between them would look like the bug this looks for.
            with db.read() as session:
                seen = session.execute(
                    sa.select(JobRow.status, SessionRow.process_status)
                    .join(JobRow, JobRow.id == SessionRow.current_job_id)
                    .where(SessionRow.id == session_id)
                ).one_or_none()
            if seen is not None and seen[0] is not JobStatus.PROCESSING:
                broken.append(f"job {seen[0].value}, session {seen[1].value}")
        finally:
            checking.now = False

    outcomes = [
        RunOutcome(RunStatus.CANCELLED, None),
        RunOutcome(RunStatus.FAILED, None, error="boom", error_code="cli_crashed"),
        RunOutcome(RunStatus.COMPLETED, None, num_turns=1),
    ]
    sa.event.listen(Session, "after_commit", check)
    try:
        await _run_all(db, session_id, OutcomeRunner(*outcomes), len(outcomes))
    finally:
        sa.event.remove(Session, "after_commit", check)

    assert broken == []
    with db.read() as session:
        jobs = session.scalars(
            sa.select(JobRow).where(JobRow.session_id == session_id).order_by(JobRow.created_at)
        ).all()
    assert [job.status for job in jobs] == [
        JobStatus.CANCELLED,
        JobStatus.FAILED,
        JobStatus.COMPLETED,
    ]
    row = sessions.get(session_id)
    assert (row.is_working, row.current_job_id, row.process_status) == (
        False,
        None,
        ProcessStatus.COMPLETED,
    )
    assert row.turn_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_run_reporting_another_sessions_provider_id_still_ends(
    db: Database, tmp_path: Path, anyio_backend: str
) -> None:
    """The provider session id is unique: a run whose outcome names one another session holds
    is recorded all the same (its session keeps its own id) and its usage is counted."""
    project = tmp_path / "project"
    project.mkdir()
    sessions = SessionService(db, [tmp_path])
    holder = sessions.create(str(project)).id
    with db.write() as session:
        session.execute(
            sa.update(SessionRow).where(SessionRow.id == holder).values(provider_session_id="held")
        )
    session_id = sessions.create(str(project)).id
    usage = TokenUsage(input_tokens=11, output_tokens=7)
    runner = OutcomeRunner(RunOutcome(RunStatus.COMPLETED, "held", usage=usage, num_turns=1))

    await _run_all(db, session_id, runner, 1)

    row = sessions.get(session_id)
    assert row.provider_session_id not in (None, "held")
    assert (row.input_tokens, row.output_tokens, row.turn_count) == (11, 7, 1)
    assert row.process_status is ProcessStatus.COMPLETED
    with db.read() as session:
        job = session.scalars(sa.select(JobRow).where(JobRow.session_id == session_id)).one()
    assert (job.status, job.input_tokens, job.output_tokens) == (JobStatus.COMPLETED, 11, 7)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_run_starts_on_a_session_an_ended_run_left_streaming(
    db: Database, tmp_path: Path, anyio_backend: str
) -> None:
    """Another server process interrupts a dead server's run, then resets its session in a
    later transaction; a prompt claimed in between finds the session still streaming with a
    job that is over. The claim decides: the run starts."""
    project = tmp_path / "project"
    project.mkdir()
    sessions = SessionService(db, [tmp_path])
    session_id = sessions.create(str(project)).id
    jobs = JobService(db)
    dead, _ = jobs.enqueue(session_id, "the dead server's prompt")
    jobs.cancel_pending(dead.id)

    def left_streaming() -> None:  # after the run manager's own start-up recovery
        with db.write() as session:
            session.execute(
                sa.update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(
                    is_working=True, current_job_id=dead.id, process_status=ProcessStatus.STREAMING
                )
            )

    runner = OutcomeRunner(RunOutcome(RunStatus.COMPLETED, None))
    await _run_all(db, session_id, runner, 1, after_start=left_streaming)

    with db.read() as session:
        statuses = session.scalars(
            sa.select(JobRow.status).where(JobRow.session_id == session_id, JobRow.id != dead.id)
        ).all()
    assert statuses == [JobStatus.COMPLETED]
    row = sessions.get(session_id)
    assert (row.is_working, row.process_status) == (False, ProcessStatus.COMPLETED)


async def _one_run_racing(
    db: Database, session_id: uuid.UUID, runner: OutcomeRunner, race: Callable[[RunManager], None]
) -> list[Event]:
    """Run one prompt with `race(manager)` happening between its claim and its start (just
    before `_prepare`, or for a cancel just after it); the events of the session."""
    bus = EventBus(db)
    await bus.start()
    manager = RunManager(db, bus, runner, poll_interval=0.01)
    prepare = manager._prepare

    def raced(job: JobRow) -> Any:
        race(manager)
        return prepare(job)

    manager._prepare = raced  # type: ignore[method-assign]
    seen: list[Event] = []
    try:
        with bus.subscribe(session_id) as events:
            await manager.submit(session_id, "prompt")
            await manager.start()
            async with asyncio.timeout(20):
                async for event in events:
                    seen.append(event)
                    if event.type == "done":
                        break
    finally:
        await manager.stop()
        await bus.stop()
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_session_deleted_between_claim_and_start_ends_its_job(
    db: Database, tmp_path: Path, anyio_backend: str
) -> None:
    """The claim does not lock the session row (PostgreSQL), so a delete can land between the
    claim and the run's start. The job must end (cancelled), not stay processing for good."""
    project = tmp_path / "project"
    project.mkdir()
    sessions = SessionService(db, [tmp_path])
    session_id = sessions.create(str(project)).id
    runner = OutcomeRunner(RunOutcome(RunStatus.COMPLETED, None))

    def delete(_manager: RunManager) -> None:
        with db.write() as session:  # what a delete that won the race wrote
            session.execute(
                sa.update(SessionRow).where(SessionRow.id == session_id).values(deleted_at=utcnow())
            )

    seen = await _one_run_racing(db, session_id, runner, delete)

    assert seen[-1].data["status"] == "cancelled"
    assert runner.outcomes  # never started
    with db.read() as session:
        [job] = session.scalars(sa.select(JobRow).where(JobRow.session_id == session_id)).all()
    assert job.status is JobStatus.CANCELLED


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancel_between_claim_and_start_stops_the_run_before_it_starts(
    db: Database, tmp_path: Path, anyio_backend: str
) -> None:
    """Before the runner knows of a run, its `cancel` finds nothing to stop: the run manager
    itself must not start a run cancelled meanwhile (it ran to the end, answered 204)."""
    project = tmp_path / "project"
    project.mkdir()
    session_id = SessionService(db, [tmp_path]).create(str(project)).id
    runner = OutcomeRunner(RunOutcome(RunStatus.COMPLETED, None, num_turns=1))

    def cancel(manager: RunManager) -> None:
        for active in manager._active.values():
            active.cancel_requested = True  # what cancel_job sets before calling the runner

    seen = await _one_run_racing(db, session_id, runner, cancel)

    assert seen[-1].data["status"] == "cancelled"
    assert runner.outcomes  # never started
    row = SessionService(db, []).get(session_id)
    assert (row.is_working, row.process_status) == (False, ProcessStatus.CANCELLED)


def test_a_session_with_a_claimed_job_cannot_be_deleted(db: Database, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    sessions = SessionService(db, [tmp_path])
    session_id = sessions.create(str(project)).id
    JobService(db).enqueue(session_id, "claimed, not started")
    assert JobService(db).claim_next("worker:1:1") is not None
    with pytest.raises(Conflict, match="running"):
        sessions.delete(session_id)
    assert sessions.get(session_id).deleted_at is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancelling_a_session_whose_run_just_ended_is_no_conflict(
    db: Database, tmp_path: Path, anyio_backend: str
) -> None:
    """The run ended (its job recorded as completed) just before the cancel reached it:
    the session runs nothing, which is what was asked (204), not a 409."""
    project = tmp_path / "project"
    project.mkdir()
    session_id = SessionService(db, [tmp_path]).create(str(project)).id
    bus = EventBus(db)
    await bus.start()
    manager = RunManager(
        db, bus, OutcomeRunner(RunOutcome(RunStatus.COMPLETED, None)), poll_interval=0.01
    )
    finish = manager._finish
    recorded, release = asyncio.Event(), asyncio.Event()

    async def finish_then_hold(job: JobRow, outcome: RunOutcome) -> None:
        await finish(job, outcome)
        recorded.set()
        await release.wait()  # still among the active runs, its job completed

    manager._finish = finish_then_hold  # type: ignore[method-assign]
    await manager.start()
    try:
        job = await manager.submit(session_id, "quick")
        async with asyncio.timeout(10):
            await recorded.wait()
        cancelled = await manager.cancel_session(session_id)
        assert cancelled is not None and cancelled.id == job.id
        assert cancelled.status is JobStatus.COMPLETED
    finally:
        release.set()
        await manager.stop()
        await bus.stop()
