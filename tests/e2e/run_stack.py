"""A run manager with the real CLI against the fake model, on a test database: what the
server wires up in its lifespan, for end-to-end tests of the run flow."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from pocketcode.agents.claude_code import ClaudeCodeRunner
from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, MessageRow, SessionRow
from pocketcode.devtools.fake_model import FakeModelServer, claude_cli_env
from pocketcode.domain.states import PermissionMode
from pocketcode.services.events import Event, EventBus, Subscription
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MessageService
from pocketcode.services.permissions import PermissionService
from pocketcode.services.runs import RunManager
from pocketcode.services.sessions import SessionService


@dataclass
class RunStack:
    db: Database
    server: FakeModelServer
    bus: EventBus
    runner: ClaudeCodeRunner
    manager: RunManager
    permissions: PermissionService
    project: Path
    session: SessionRow
    events: list[Event] = field(default_factory=list)

    @property
    def session_id(self) -> uuid.UUID:
        return self.session.id

    def stored(self) -> list[MessageRow]:
        return MessageService(self.db).page(self.session_id, limit=1000).messages

    def session_row(self) -> SessionRow:
        return SessionService(self.db, []).get(self.session_id)

    def job(self, job_id: uuid.UUID) -> JobRow:
        return JobService(self.db).get(job_id)

    async def collect_until_done(
        self, subscription: Subscription, job_id: uuid.UUID, *, seconds: float = 30
    ) -> list[Event]:
        """Events of the session until the `done` event of `job_id` (included)."""
        seen: list[Event] = []
        with anyio.fail_after(seconds):
            async for event in subscription:
                seen.append(event)
                self.events.append(event)
                if event.type == "done" and event.data.get("jobId") == str(job_id):
                    return seen
        raise AssertionError("the event stream ended before the run was done")

    async def run(
        self, prompt: str, *, seconds: float = 30, **options: Any
    ) -> tuple[JobRow, list[Event]]:
        with self.bus.subscribe(self.session_id) as subscription:
            job = await self.manager.submit(self.session_id, prompt, options or None)
            events = await self.collect_until_done(subscription, job.id, seconds=seconds)
        return await anyio.to_thread.run_sync(self.job, job.id), events


async def start_stack(
    db: Database,
    server: FakeModelServer,
    tmp_path: Path,
    claude_executable: Path,
    *,
    permission_mode: PermissionMode | None = PermissionMode.BYPASS_PERMISSIONS,
    permission_timeout: float = 30,
    cancel_grace: float = 2.0,
    worker_id: str | None = None,
) -> RunStack:
    home = tmp_path / "home"
    env = claude_cli_env(home, server.base_url)
    # The server computes the transcript folder from CLAUDE_CONFIG_DIR (the fixture sets it in
    # this process's environment); the CLI must use the same one.
    env["CLAUDE_CONFIG_DIR"] = str(home / ".claude")
    worker_id = worker_id or f"test-{uuid.uuid4().hex[:12]}"
    bus = EventBus(db)
    await bus.start()
    runner = ClaudeCodeRunner(
        cli_path=claude_executable,
        server_env={"PATH": os.environ.get("PATH", os.defpath)},
        work_dir=tmp_path / "runner",
        instance_id=worker_id,
        cancel_grace=cancel_grace,
    )
    permissions = PermissionService(db, timeout=permission_timeout)
    manager = RunManager(
        db,
        bus,
        runner,
        permissions=permissions,
        agent_env=lambda: dict(env),
        worker_id=worker_id,
        poll_interval=0.5,
    )
    await manager.start()
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    session = SessionService(db, [tmp_path]).create(str(project), permission_mode=permission_mode)
    return RunStack(db, server, bus, runner, manager, permissions, project, session)


async def stop_stack(stack: RunStack) -> None:
    await stack.manager.stop()
    await stack.bus.stop()


StartStack = Callable[..., Any]
