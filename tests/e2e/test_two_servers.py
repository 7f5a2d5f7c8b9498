"""Several server processes on one PostgreSQL: a prompt queued through one process is run
exactly once (by whichever server claims it) and its events reach the subscribers of every
process, through LISTEN/NOTIFY."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pocketcode.db.engine import Database, create_db_engine
from pocketcode.devtools.fake_model import text
from pocketcode.domain.states import JobStatus
from pocketcode.services.events import EventBus
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MessageService
from pocketcode.services.runs import RunManager
from pocketcode.services.sessions import SessionService
from tests.e2e.conftest import StartFakeModel
from tests.e2e.server_process import ServerProcess, server_env
from tests.integration.test_run_recovery import IdleRunner

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pg_database(postgresql_url: str) -> str:
    return postgresql_url


@pytest.fixture
def db(pg_database: str) -> Iterator[Database]:
    database = Database(create_db_engine(pg_database, pool_size=5))
    yield database
    database.dispose()


@pytest.mark.anyio
async def test_a_prompt_queued_here_runs_there_and_streams_back(
    pg_database: str,
    db: Database,
    tmp_path: Path,
    fake_model: StartFakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = fake_model(text("Answered by the other server."))
    env = server_env(tmp_path, pg_database, model.base_url)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", env["CLAUDE_CONFIG_DIR"])
    other = await anyio.to_thread.run_sync(ServerProcess.start, env, tmp_path / "b.log")
    try:
        project = tmp_path / "project"
        project.mkdir()
        session = SessionService(db, [tmp_path]).create(str(project))
        bus = EventBus(db)
        await bus.start()
        # This process only queues and listens: it never claims, so the other one must run it.
        here = RunManager(db, bus, IdleRunner())  # type: ignore[arg-type]
        received = []
        try:
            with bus.subscribe(session.id) as events:
                job = await here.submit(session.id, "Hello over there")
                with anyio.fail_after(60):
                    async for event in events:
                        received.append(event)
                        if event.type == "done" and event.data.get("jobId") == str(job.id):
                            break
        finally:
            await bus.stop()
    finally:
        await anyio.to_thread.run_sync(other.stop)

    assert JobService(db).get(job.id).status is JobStatus.COMPLETED
    stored = MessageService(db).page(session.id, limit=1000).messages
    assert [e.seq for e in received if e.type == "message"] == [m.seq for m in stored]
    assert any(e.data.get("text") == "Answered by the other server." for e in received)
    assert len(model.main_requests) == 1


def test_two_servers_run_each_prompt_once(
    pg_database: str,
    db: Database,
    tmp_path: Path,
    fake_model: StartFakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts = 4
    model = fake_model(*[text(f"answer {i}") for i in range(prompts)])
    env = server_env(tmp_path, pg_database, model.base_url)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", env["CLAUDE_CONFIG_DIR"])
    servers = [ServerProcess.start(env, tmp_path / f"{name}.log") for name in ("b", "c")]
    try:
        jobs = JobService(db)
        queued: list[uuid.UUID] = []
        for index in range(prompts):
            project = tmp_path / f"project-{index}"
            project.mkdir()
            session = SessionService(db, [tmp_path]).create(str(project))
            job, _ = jobs.enqueue(session.id, f"prompt {index}", {})
            queued.append(job.id)
        # No wake-up sent: the servers find the prompts by their poll fallback.
        deadline = time.monotonic() + 90
        while not all(jobs.get(job_id).status is JobStatus.COMPLETED for job_id in queued):
            rows = [jobs.get(job_id) for job_id in queued]
            failed = [(row.error_code, row.error) for row in rows if row.status is JobStatus.FAILED]
            assert not failed, failed
            assert time.monotonic() < deadline, [row.status for row in rows]
            time.sleep(0.2)
    finally:
        for server in servers:
            server.stop()
    assert len(model.main_requests) == prompts
    assert all(jobs.get(job_id).attempts == 1 for job_id in queued)
