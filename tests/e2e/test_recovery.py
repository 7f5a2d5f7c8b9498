"""A server killed with SIGKILL in the middle of a run, then started again: no job stays
processing, no agent process survives, the session is idle, and every message of the
transcript is in the database. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pocketcode.agents import processes
from pocketcode.db.engine import Database
from pocketcode.devtools.fake_model import text, tool_use
from pocketcode.domain.states import JobStatus, ProcessStatus
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MessageService
from pocketcode.services.sessions import SessionService
from pocketcode.services.transcripts import read_lines
from tests.e2e.conftest import StartFakeModel
from tests.e2e.server_process import ServerProcess, server_env

pytestmark = pytest.mark.timeout(120)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def test_a_killed_server_leaves_nothing_behind(
    db: Database,
    database_url: str,
    tmp_path: Path,
    fake_model: StartFakeModel,
    servers: list[ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    model = fake_model(
        tool_use(
            "Bash",
            {"command": "echo started > started.txt; sleep 45; echo never", "description": "wait"},
        ),
        text("not reached"),
    )
    env = server_env(tmp_path, database_url, model.base_url)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", env["CLAUDE_CONFIG_DIR"])
    log = tmp_path / "server.log"
    first = ServerProcess.start(env, log)
    servers.append(first)

    session = SessionService(db, [tmp_path]).create(
        str(project), permission_mode="bypassPermissions"
    )  # type: ignore[arg-type]
    job, _ = JobService(db).enqueue(session.id, "Run the long command", {})
    _wait_for((project / "started.txt").exists, 30, "the Bash tool to start")
    running = SessionService(db, []).get(session.id)
    assert running.is_working and running.process_pid

    first.kill()
    # The kill leaves the CLI and its tool commands orphaned, still running.
    orphans = processes.find_marked_processes(processes.MARKER_SESSION_ID, str(session.id))
    assert orphans, "expected orphaned agent processes after SIGKILL"

    second = ServerProcess.start(env, log)
    servers.append(second)

    after = JobService(db).get(job.id)
    assert after.status is JobStatus.INTERRUPTED
    assert after.error and "interrupted" in after.error
    _wait_for(
        lambda: not processes.find_marked_processes(processes.MARKER_SESSION_ID, str(session.id)),
        10,
        "the orphans to be reaped",
    )
    idle = SessionService(db, []).get(session.id)
    assert idle.is_working is False
    assert idle.process_pid is None
    assert idle.process_status is ProcessStatus.IDLE
    assert idle.current_job_id is None

    stored = MessageService(db).page(session.id, limit=1000).messages
    stored_uuids = {m.provider_message_uuid for m in stored}
    transcript = Path(idle.claude_directory_path or "") / f"{idle.provider_session_id}.jsonl"
    lines = [
        line
        for line in read_lines(transcript)
        if line.get("type") == "assistant"
        or (line.get("type") == "user" and not isinstance(line["message"].get("content"), str))
    ]
    assert lines, "the transcript should hold the run's messages"
    for line in lines:
        assert line["uuid"] in stored_uuids, line
    assert stored[-1].subtype == "interrupted"
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
