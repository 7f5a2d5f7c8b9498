"""Everything that runs prompts, wired from the settings: the event bus, the agent runner, the
permission service, the run manager and (for a server) the live transcript watcher. `serve` and
`pocketcode run` both start one."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from pocketcode.agents.claude_code import ClaudeCodeRunner
from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.services.app_settings import ANTHROPIC_API_KEY, KnownSettings
from pocketcode.services.events import EventBus
from pocketcode.services.permissions import PermissionService
from pocketcode.services.runs import RunManager, make_worker_id
from pocketcode.services.secrets import Keyring
from pocketcode.services.transcript_watch import TranscriptWatcher


def agent_credentials(db: Database, keyring: Keyring) -> dict[str, str]:
    """The setting `anthropic_api_key`, when stored, wins over ANTHROPIC_API_KEY from the
    server's environment (the user set it in the app on purpose, and can delete it to fall
    back); without either the CLI uses the user's own Claude login. Read for every run."""
    stored = KnownSettings(db, keyring).value(ANTHROPIC_API_KEY)
    return {"ANTHROPIC_API_KEY": stored} if stored else {}


@dataclass
class Runtime:
    bus: EventBus
    runner: ClaudeCodeRunner
    permissions: PermissionService
    runs: RunManager
    transcripts: TranscriptWatcher | None = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        db: Database,
        keyring: Keyring,
        *,
        claim_jobs: bool = True,
        only_sessions: set[uuid.UUID] | None = None,
    ) -> Runtime:
        bus = EventBus(db)
        await bus.start()
        work_dir = settings.data_dir / "run" / f"{os.getpid()}"
        # The runner marks its processes with the worker id (host:pid:start), so a later
        # server can tell the processes of a dead one from those of a live one.
        worker_id = make_worker_id()
        runner = ClaudeCodeRunner(
            cli_path=settings.claude_path,
            idle_timeout=settings.agent_idle_timeout,
            max_concurrent_starts=settings.agent_max_concurrent_starts,
            cancel_grace=settings.cancel_grace,
            instance_id=worker_id,
            work_dir=work_dir,
            nice=settings.agent_nice,
            allowed_roots=settings.allowed_roots,
        )
        permissions = PermissionService(db, timeout=settings.permission_timeout)
        runs = RunManager(
            db,
            bus,
            runner,
            permissions=permissions,
            max_concurrent_runs=settings.max_concurrent_runs,
            worker_id=worker_id,
            agent_env=lambda: agent_credentials(db, keyring),
            # `pocketcode run` claims its own session's prompts only: another's, queued by the
            # server's users, is the server's to run (and would be cancelled when run exits).
            only_sessions=only_sessions,
        )
        if claim_jobs:
            await runs.start()
        transcripts: TranscriptWatcher | None = None
        # A server (it claims every session's jobs) keeps the transcripts in sync; a one-shot
        # `pocketcode run` does not.
        if settings.transcript_watch and claim_jobs and only_sessions is None:
            transcripts = TranscriptWatcher(
                db, bus, pending_permissions=lambda sid: len(permissions.pending(sid))
            )
            await transcripts.start()
        return cls(bus, runner, permissions, runs, transcripts)

    def queue_health(self) -> str:
        """'healthy' while the run manager claims prompts, 'unhealthy' if its loop died."""
        return "healthy" if self.runs.is_claiming() else "unhealthy"

    async def stop(self) -> None:
        if self.transcripts is not None:
            await self.transcripts.stop()
        await self.runs.stop()
        await self.bus.stop()
