"""The small protocol every agent provider implements (Claude Code now, Codex CLI later).

A runner turns one prompt into a stream of `AgentEvent`s and a final `RunOutcome`. It knows
nothing about the database: the run manager (services/runs.py) persists each event before it
publishes it, answers permission requests, and updates the session and the job.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pocketcode.domain.states import PermissionMode, Provider
from pocketcode.services.messages import NewMessage
from pocketcode.services.pricing import TokenUsage


@dataclass(frozen=True)
class RunRequest:
    session_id: uuid.UUID  # ours
    job_id: uuid.UUID
    prompt: str
    cwd: Path
    # The provider session to continue; None starts a new one with `new_provider_session_id`.
    resume_provider_session_id: str | None
    new_provider_session_id: str
    model: str | None = None
    permission_mode: PermissionMode | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    max_turns: int | None = None
    append_system_prompt: str | None = None
    max_thinking_tokens: int | None = None
    # Extra environment for the agent process (credentials, base URL…), on top of the
    # filtered server environment the runner builds itself.
    env: dict[str, str] = field(default_factory=dict)


class EventKind(StrEnum):
    MESSAGE = "message"  # to be stored, then published
    DELTA = "delta"  # ephemeral partial text, published only
    PROCESS = "process"  # the agent process started: pid and create time


@dataclass(frozen=True)
class AgentEvent:
    kind: EventKind
    message: NewMessage | None = None
    # DELTA: {"text": …, "messageId": …, "index": …, "blockType": "text"|"thinking"}
    delta: dict[str, Any] | None = None
    # PROCESS
    pid: int | None = None
    create_time: float | None = None
    provider_session_id: str | None = None


class RunStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunOutcome:
    status: RunStatus
    provider_session_id: str | None
    usage: TokenUsage = field(default_factory=TokenUsage)
    model: str | None = None
    # Our own computation is made by the run manager from `usage` and model_pricing;
    # this is the CLI's own figure for the run (total_cost_usd is cumulative: the runner
    # reports the difference for this run and the cumulative value).
    cli_cost_usd: Decimal | None = None
    cli_total_cost_usd: Decimal | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    error: str | None = None  # readable, shown to the user
    error_code: str | None = None  # stable: api_401, api_429, cli_crashed, cli_missing…


@dataclass(frozen=True)
class PermissionDecision:
    allow: bool
    message: str | None = None  # why it was denied, told to the model
    updated_input: dict[str, Any] | None = None


EmitEvent = Callable[[AgentEvent], Awaitable[None]]
AskPermission = Callable[[str, dict[str, Any], str | None], Awaitable[PermissionDecision]]


class AgentRunner(Protocol):
    provider: Provider

    async def run(
        self, request: RunRequest, emit: EmitEvent, ask_permission: AskPermission
    ) -> RunOutcome:
        """Run one prompt to its end. Never raises for agent failures: they are outcomes."""
        ...

    async def cancel(self, session_id: uuid.UUID) -> None:
        """Stop the session's run: interrupt, then terminate the process group after a grace
        period, then reap tool processes left behind. `run` then returns CANCELLED."""
        ...

    async def close_idle(self) -> int:
        """Close live agent processes idle longer than the configured time; returns how many."""
        ...

    async def aclose(self) -> None:
        """Close every live agent process (server shutdown)."""
        ...
