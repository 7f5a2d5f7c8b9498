"""Running the real, bundled `claude` CLI against the fake model, as end-to-end tests need."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketcode.agents.base import (
    AgentEvent,
    EventKind,
    PermissionDecision,
    RunOutcome,
    RunRequest,
)
from pocketcode.agents.claude_code import ClaudeCodeRunner
from pocketcode.devtools.fake_model import FakeModelServer, claude_cli_env
from pocketcode.domain.states import MessageType, PermissionMode
from pocketcode.services.messages import NewMessage

STREAM_JSON = ["--output-format", "stream-json", "--verbose"]


@dataclass
class ClaudeRun:
    """One finished `claude -p` process and its stream-json lines."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def of_type(self, line_type: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("type") == line_type]

    @property
    def result(self) -> dict[str, Any]:
        results = self.of_type("result")
        assert results, f"no result line; stderr: {self.stderr[-2000:]}"
        return results[-1]

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])

    @property
    def assistant_blocks(self) -> list[dict[str, Any]]:
        return [block for line in self.of_type("assistant") for block in line["message"]["content"]]

    @property
    def assistant_texts(self) -> list[str]:
        return [b["text"] for b in self.assistant_blocks if b.get("type") == "text"]


@dataclass
class ClaudeCli:
    """The bundled CLI with a throwaway HOME and a project directory to work in."""

    executable: Path
    home: Path
    project: Path

    def env(self, server: FakeModelServer, *, max_retries: int = 0) -> dict[str, str]:
        return claude_cli_env(self.home, server.base_url, max_retries=max_retries)

    def argv(self, prompt: str, args: Sequence[str]) -> list[str]:
        return [str(self.executable), "-p", prompt, *STREAM_JSON, *args]

    def run(
        self,
        server: FakeModelServer,
        prompt: str,
        *args: str,
        timeout: float = 20,
        max_retries: int = 0,
    ) -> ClaudeRun:
        completed = subprocess.run(
            self.argv(prompt, args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.project,
            env=self.env(server, max_retries=max_retries),
            timeout=timeout,
            check=False,
        )
        lines = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
        return ClaudeRun(completed.returncode, lines, completed.stderr)

    def start(self, server: FakeModelServer, prompt: str, *args: str) -> subprocess.Popen[str]:
        """A running CLI whose stdout the caller reads line by line (and must reap)."""
        return subprocess.Popen(
            self.argv(prompt, args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.project,
            env=self.env(server),
        )

    def transcript_dir(self) -> Path:
        """Where the CLI writes this project's transcripts: realpath(cwd), with every
        character that is not a letter or digit replaced by '-'."""
        encoded = re.sub(r"[^A-Za-z0-9]", "-", os.path.realpath(self.project))
        return self.home / ".claude" / "projects" / encoded


# --- driving the runner (pocketcode.agents.claude_code) --------------------------------------


def allow_all(tool_name: str, tool_input: dict[str, Any]) -> PermissionDecision:
    return PermissionDecision(allow=True)


@dataclass
class RunnerSession:
    """One pocketcode session driven through a `ClaudeCodeRunner` against the fake model:
    builds the run requests, records every event and every permission question."""

    runner: ClaudeCodeRunner
    server: FakeModelServer
    home: Path
    project: Path
    session_id: uuid.UUID = field(default_factory=uuid.uuid4)
    new_provider_session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    provider_session_id: str | None = None
    """Set from the first outcome, then every prompt resumes it (as the run manager does)."""
    permission_mode: PermissionMode | None = PermissionMode.BYPASS_PERMISSIONS
    decide: Callable[[str, dict[str, Any]], PermissionDecision] = allow_all
    events: list[AgentEvent] = field(default_factory=list)
    questions: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return claude_cli_env(self.home, self.server.base_url)

    def request(self, prompt: str, **changes: Any) -> RunRequest:
        values: dict[str, Any] = {
            "session_id": self.session_id,
            "job_id": uuid.uuid4(),
            "prompt": prompt,
            "cwd": self.project,
            "resume_provider_session_id": self.provider_session_id,
            "new_provider_session_id": self.new_provider_session_id,
            "permission_mode": self.permission_mode,
            "env": self.env(),
        }
        values.update(changes)
        return RunRequest(**values)

    async def run(self, prompt: str, **changes: Any) -> RunResult:
        return await self.run_request(self.request(prompt, **changes))

    async def run_request(self, request: RunRequest) -> RunResult:
        started = len(self.events)
        began = time.monotonic()

        async def emit(event: AgentEvent) -> None:
            self.events.append(event)
            self.event_times.append(time.monotonic() - began)

        async def ask(
            tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None
        ) -> PermissionDecision:
            self.questions.append((tool_name, tool_input, tool_use_id))
            return self.decide(tool_name, tool_input)

        outcome = await self.runner.run(request, emit, ask)
        if outcome.provider_session_id and self.provider_session_id is None:
            self.provider_session_id = outcome.provider_session_id
        return RunResult(
            request,
            outcome,
            self.events[started:],
            self.event_times[started:],
            time.monotonic() - began,
        )


@dataclass
class RunResult:
    request: RunRequest
    outcome: RunOutcome
    events: list[AgentEvent]
    times: list[float]
    """Seconds from the start of `run` to each event."""
    duration: float

    @property
    def messages(self) -> list[NewMessage]:
        return [e.message for e in self.events if e.message is not None]

    def of_type(self, message_type: MessageType, subtype: str | None = None) -> list[NewMessage]:
        return [
            m
            for m in self.messages
            if m.type is message_type and (subtype is None or m.subtype == subtype)
        ]

    @property
    def deltas(self) -> list[dict[str, Any]]:
        return [e.delta for e in self.events if e.kind is EventKind.DELTA and e.delta is not None]

    @property
    def process(self) -> AgentEvent:
        [event] = [e for e in self.events if e.kind is EventKind.PROCESS]
        return event

    def time_to_first_message(self) -> float:
        return next(t for e, t in zip(self.events, self.times, strict=True) if e.message)
