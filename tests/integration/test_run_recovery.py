"""Start-up recovery without a real CLI: runs whose server died are interrupted, their missed
messages come back from the transcript (once), their sessions return to idle, and runs of a
live server are left alone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from pocketcode.agents.base import RunOutcome, RunRequest, RunStatus
from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, SessionRow
from pocketcode.db.types import utcnow
from pocketcode.domain.states import JobStatus, MessageType, ProcessStatus
from pocketcode.services.events import EventBus
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.runs import RunManager, make_worker_id
from pocketcode.services.sessions import SessionService
from tests.helpers import eventually

DEAD_WORKER = f"{socket.gethostname()}:999999:1.000"


class IdleRunner:
    """A runner that is never asked to run: recovery only."""

    provider = "claude-code"

    async def run(self, request: RunRequest, emit: object, ask: object) -> RunOutcome:
        return RunOutcome(RunStatus.COMPLETED, None)

    async def cancel(self, session_id: uuid.UUID) -> None: ...

    async def close_idle(self) -> int:
        return 0

    async def aclose(self) -> None: ...


def _line(kind: str, uuid_: str, when: str, content: object, msg_id: str = "msg_1") -> str:
    message: dict[str, object] = {"role": kind, "content": content}
    if kind == "assistant":
        message.update({"id": msg_id, "model": "claude-sonnet-4-5-20250929"})
    return json.dumps(
        {"type": kind, "uuid": uuid_, "sessionId": "s-1", "timestamp": when, "message": message}
    )


@pytest.fixture
def crashed(db: Database, tmp_path: Path) -> tuple[uuid.UUID, uuid.UUID, Path]:
    """A session whose run was processing when its server (a dead pid) died, with a
    transcript holding messages the server had not stored."""
    project = tmp_path / "project"
    project.mkdir()
    session = SessionService(db, [tmp_path]).create(str(project))
    claude_dir = tmp_path / "claude"
    claude_dir.mkdir()
    jobs = JobService(db)
    job, _ = jobs.enqueue(session.id, "do it", {})
    claimed = jobs.claim_next(DEAD_WORKER)
    assert claimed is not None and claimed.id == job.id
    start = (claimed.claimed_at or utcnow()) - timedelta(seconds=0)
    with db.write() as s:
        s.execute(
            sa.update(SessionRow)
            .where(SessionRow.id == session.id)
            .values(
                provider_session_id="s-1",
                claude_directory_path=str(claude_dir),
                is_working=True,
                current_job_id=job.id,
                process_status=ProcessStatus.STREAMING,
                process_pid=999999,
                process_create_time=1.0,
            )
        )
    MessageService(db).append(
        session.id,
        NewMessage(
            MessageType.ASSISTANT,
            "stored live",
            subtype="text",
            provider_message_uuid="a-1",
            job_id=job.id,
        ),
    )
    before = (start - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    during = (start + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    (claude_dir / "s-1.jsonl").write_text(
        "\n".join(
            [
                _line("assistant", "old-1", before, [{"type": "text", "text": "earlier run"}]),
                _line("user", "u-0", during, "do it"),
                _line("assistant", "a-1", during, [{"type": "text", "text": "stored live"}]),
                _line(
                    "assistant",
                    "a-2",
                    during,
                    [
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "Bash",
                            "input": {"command": "ls"},
                        }
                    ],
                    "msg_2",
                ),
                _line(
                    "user",
                    "u-1",
                    during,
                    [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}],
                ),
                '{"type": "assistant", "uuid": "partial", "mess',
            ]
        )
        + "\n"
    )
    return session.id, job.id, claude_dir


def test_recovery_interrupts_and_recovers_missed_messages(
    db: Database, crashed: tuple[uuid.UUID, uuid.UUID, Path]
) -> None:
    session_id, job_id, _ = crashed
    manager = RunManager(db, EventBus(db), IdleRunner(), worker_id=make_worker_id())  # type: ignore[arg-type]
    manager.recover_sync()

    job = JobService(db).get(job_id)
    assert job.status is JobStatus.INTERRUPTED
    stored = MessageService(db).page(session_id, limit=100).messages
    assert [(m.provider_message_uuid, m.subtype) for m in stored] == [
        (None, "prompt"),
        ("a-1", "text"),
        ("a-2", "tool_use"),
        ("u-1", "tool_result"),
        (None, "interrupted"),
    ]
    assert stored[3].parent_tool_use_id == "toolu_1"
    assert [m.job_id for m in stored] == [job_id] * len(stored)
    session = SessionService(db, []).get(session_id)
    assert (session.is_working, session.process_status, session.process_pid) == (
        False,
        ProcessStatus.IDLE,
        None,
    )
    assert session.last_job_status is JobStatus.INTERRUPTED

    # A second start-up finds nothing more to do and stores nothing twice.
    manager.recover_sync()
    assert len(MessageService(db).page(session_id, limit=100).messages) == len(stored)


def test_recovery_leaves_runs_of_live_servers_alone(
    db: Database, crashed: tuple[uuid.UUID, uuid.UUID, Path]
) -> None:
    session_id, job_id, _ = crashed
    with db.write() as s:
        s.execute(sa.update(JobRow).where(JobRow.id == job_id).values(worker_id=make_worker_id()))
    manager = RunManager(db, EventBus(db), IdleRunner(), worker_id="another")  # type: ignore[arg-type]
    manager.recover_sync()
    assert JobService(db).get(job_id).status is JobStatus.PROCESSING
    assert SessionService(db, []).get(session_id).is_working is True


class WaitingRunner(IdleRunner):
    """Runs until cancelled, like an agent in the middle of a long tool call."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, request: RunRequest, emit: object, ask: object) -> RunOutcome:
        self.started.set()
        await self.cancelled.wait()
        return RunOutcome(RunStatus.CANCELLED, None)

    async def cancel(self, session_id: uuid.UUID) -> None:
        self.cancelled.set()


@contextlib.asynccontextmanager
async def _run_taken_over(
    db: Database, tmp_path: Path
) -> AsyncIterator[tuple[RunManager, WaitingRunner, uuid.UUID, uuid.UUID]]:
    """A run started here whose job another server then declared dead and interrupted (a lost
    claim): the manager, its runner, the session and the job."""
    project = tmp_path / "p"
    project.mkdir()
    session = SessionService(db, [tmp_path]).create(str(project))
    runner = WaitingRunner()
    manager = RunManager(
        db,
        EventBus(db),
        runner,  # type: ignore[arg-type]
        worker_id=make_worker_id(),
        heartbeat_interval=0.1,
        poll_interval=0.1,
    )
    await manager.start()
    try:
        job = await manager.submit(session.id, "long work")
        with anyio.fail_after(10):
            await runner.started.wait()
        JobService(db).interrupt_processing({manager.worker_id}, "taken over")
        yield manager, runner, session.id, job.id
    finally:
        await manager.stop()


@pytest.mark.anyio
async def test_a_run_that_loses_its_claim_stops_and_releases_the_session(
    db: Database, tmp_path: Path
) -> None:
    """Another server declared this one dead and interrupted its job: the run stops rather
    than two copies editing the same files, and the session does not stay working."""
    async with _run_taken_over(db, tmp_path) as (_manager, runner, session_id, job_id):
        with anyio.fail_after(10):
            await runner.cancelled.wait()
        await eventually(
            lambda: not SessionService(db, []).get(session_id).is_working, 10, "the release"
        )
    assert JobService(db).get(job_id).status is JobStatus.INTERRUPTED
    assert SessionService(db, []).get(session_id).current_job_id is None


@pytest.mark.anyio
async def test_a_run_that_lost_its_claim_leaves_the_next_run_of_its_session_alone(
    db: Database, tmp_path: Path
) -> None:
    """Another server took the job over and already started the session's next prompt: when
    the run here ends, it must not mark the session idle under that run."""
    async with _run_taken_over(db, tmp_path) as (manager, runner, session_id, job_id):
        next_job = JobRow(
            session_id=session_id,
            status=JobStatus.PROCESSING,
            prompt="the next prompt",
            worker_id="other:1:1",
            claimed_at=utcnow(),
        )
        with db.write() as s:
            # What the other server did: claimed and started the session's next prompt (stored
            # processing at once, so this manager's claim loop cannot take it first).
            s.add(next_job)
            s.flush()
            s.execute(
                sa.update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(current_job_id=next_job.id, process_status=ProcessStatus.STREAMING)
            )
        with anyio.fail_after(10):
            await runner.cancelled.wait()
        await eventually(lambda: job_id not in manager._active, 10, "the run's end")
    row = SessionService(db, []).get(session_id)
    assert (row.current_job_id, row.is_working, row.process_status) == (
        next_job.id,
        True,
        ProcessStatus.STREAMING,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_recovery_of_a_run_whose_session_was_deleted_does_not_stop_the_start(
    db: Database, crashed: tuple[uuid.UUID, uuid.UUID, Path]
) -> None:
    """A deleted session's run left processing (a delete that won a race with the claim, on a
    server that then died): the next start-up interrupts it, and starts."""
    session_id, job_id, _ = crashed
    with db.write() as s:
        s.execute(
            sa.update(SessionRow).where(SessionRow.id == session_id).values(deleted_at=utcnow())
        )
    manager = RunManager(db, EventBus(db), IdleRunner(), worker_id=make_worker_id())  # type: ignore[arg-type]
    manager.recover_sync()
    assert JobService(db).get(job_id).status is JobStatus.INTERRUPTED


@pytest.mark.anyio
async def test_recovery_tells_the_streams_what_it_changed(
    db: Database, crashed: tuple[uuid.UUID, uuid.UUID, Path]
) -> None:
    """What start-up recovery stores (the run's missed messages, the "interrupted" error) and
    the session it resets reach open streams, those of other processes too (PostgreSQL): a
    resync to replay from the database, and the session's new state."""
    session_id, _, _ = crashed
    bus = EventBus(db)
    await bus.start()
    manager = RunManager(db, bus, IdleRunner(), worker_id=make_worker_id())  # type: ignore[arg-type]
    try:
        with bus.subscribe(session_id) as events:
            await manager.recover()
            state, resync = events.get_nowait(), events.get_nowait()
    finally:
        await bus.stop()
    assert resync is not None and (resync.type, resync.data) == ("resync", {"reason": "recovered"})
    assert state is not None and state.type == "state"
    assert state.data["isWorking"] is False
