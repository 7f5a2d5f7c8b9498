"""Fixtures for driving the real Claude Code CLI against the scripted fake model server."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from pocketcode.devtools.fake_model import FakeModelServer, Script, Turn, bundled_claude_path
from tests.e2e.claude_runs import ClaudeCli

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

    def start(*turns: Turn, subagent_turns: Iterable[Turn] = ()) -> FakeModelServer:
        server = FakeModelServer(Script(list(turns), list(subagent_turns))).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
