"""Fixtures for driving the real Claude Code CLI against the scripted fake model server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pocketcode.agents import processes
from pocketcode.agents.claude_code import ClaudeCodeRunner, bundled_claude_path
from pocketcode.db.engine import Database
from pocketcode.devtools.fake_model import FakeModelServer, Script, Turn
from tests.e2e.claude_runs import ClaudeCli, RunnerSession
from tests.e2e.run_stack import RunStack, start_stack, stop_stack

StartFakeModel = Callable[..., FakeModelServer]


@pytest.fixture(scope="session")
def claude_executable() -> Path:
    return bundled_claude_path()


@pytest.fixture
def claude(tmp_path: Path, claude_executable: Path) -> ClaudeCli:
    project = tmp_path / "project"
    project.mkdir()
    return ClaudeCli(executable=claude_executable, home=tmp_path / "home", project=project)


@pytest.fixture
def fake_model() -> Iterator[StartFakeModel]:
    """Start a fake model server with these turns; every one is stopped after the test."""
    servers: list[FakeModelServer] = []

    def start(
        *turns: Turn,
        subagent_turns: Iterable[Turn] = (),
        by_prompt: Mapping[str, Turn] | None = None,
    ) -> FakeModelServer:
        script = Script(list(turns), list(subagent_turns), dict(by_prompt or {}))
        server = FakeModelServer(script).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


MakeRunnerSession = Callable[..., RunnerSession]


@pytest.fixture
async def runner_session(
    tmp_path: Path, claude_executable: Path
) -> AsyncIterator[MakeRunnerSession]:
    """Make a `RunnerSession`: a `ClaudeCodeRunner` (own instance id, work dir and a minimal
    server environment) and a project against a fake model server. Every runner is closed
    after the test, and no process carrying its instance marker may survive."""
    runners: list[ClaudeCodeRunner] = []

    def make(
        server: FakeModelServer, *, runner: ClaudeCodeRunner | None = None, **options: Any
    ) -> RunnerSession:
        if runner is None:
            options.setdefault("cli_path", claude_executable)
            options.setdefault("server_env", {"PATH": os.environ.get("PATH", os.defpath)})
            options.setdefault("work_dir", tmp_path / "runner")
            options.setdefault("instance_id", f"test-{uuid.uuid4().hex[:12]}")
            runner = ClaudeCodeRunner(**options)
            runners.append(runner)
        project = tmp_path / "project"
        project.mkdir(exist_ok=True)
        return RunnerSession(runner=runner, server=server, home=tmp_path / "home", project=project)

    yield make
    for runner in runners:
        await runner.aclose()
    survivors = [
        process.pid
        for runner in runners
        for process in processes.find_marked_processes(
            processes.MARKER_INSTANCE, runner.instance_id
        )
    ]
    assert not survivors, f"processes survived the runner: {survivors}"


@pytest.fixture
async def run_stack(
    db: Database,
    tmp_path: Path,
    claude_executable: Path,
    fake_model: StartFakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Callable[..., Awaitable[RunStack]]]:
    """Start a run manager (real CLI, fake model with these turns) on the test database."""
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "home" / ".claude"))
    stacks: list[RunStack] = []

    async def start(*turns: Turn, **options: Any) -> RunStack:
        stack = await start_stack(db, fake_model(*turns), tmp_path, claude_executable, **options)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        await stop_stack(stack)
    survivors = [
        process.pid
        for stack in stacks
        for process in processes.find_marked_processes(
            processes.MARKER_INSTANCE, stack.runner.instance_id
        )
    ]
    assert not survivors, f"processes survived the run manager: {survivors}"
