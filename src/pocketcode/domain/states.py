"""The states a session, a run, a message and a permission request can be in, and the
transitions between them that the services are allowed to make."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    CLAUDE_CODE = "claude-code"
    CODEX_CLI = "codex-cli"


class LifecycleStatus(StrEnum):
    """Whether a session is listed (seed 000 `sessions.status`)."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    ARCHIVED = "archived"


class ProcessStatus(StrEnum):
    """What the agent process of a session is doing (seed 004 `process_status`)."""

    IDLE = "idle"
    STARTING = "starting"
    STREAMING = "streaming"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    """A queued prompt and the run that answers it."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class MessageType(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    RESULT = "result"
    ERROR = "error"


class PermissionStatus(StrEnum):
    PENDING = "pending"
    ALLOWED = "allowed"
    DENIED = "denied"
    EXPIRED = "expired"


class PermissionMode(StrEnum):
    DEFAULT = "default"
    ACCEPT_EDITS = "acceptEdits"
    PLAN = "plan"
    BYPASS_PERMISSIONS = "bypassPermissions"


ACTIVE_PROCESS_STATUSES = frozenset({ProcessStatus.STARTING, ProcessStatus.STREAMING})
FINISHED_JOB_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
)

_PROCESS_TRANSITIONS: dict[ProcessStatus, frozenset[ProcessStatus]] = {
    ProcessStatus.IDLE: frozenset({ProcessStatus.STARTING, ProcessStatus.STREAMING}),
    ProcessStatus.STARTING: frozenset(
        {ProcessStatus.STREAMING, ProcessStatus.FAILED, ProcessStatus.CANCELLED}
    ),
    ProcessStatus.STREAMING: frozenset(
        {ProcessStatus.COMPLETED, ProcessStatus.FAILED, ProcessStatus.CANCELLED}
    ),
    ProcessStatus.COMPLETED: frozenset(
        {ProcessStatus.STARTING, ProcessStatus.STREAMING, ProcessStatus.IDLE}
    ),
    ProcessStatus.FAILED: frozenset(
        {ProcessStatus.STARTING, ProcessStatus.STREAMING, ProcessStatus.IDLE}
    ),
    ProcessStatus.CANCELLED: frozenset(
        {ProcessStatus.STARTING, ProcessStatus.STREAMING, ProcessStatus.IDLE}
    ),
}

_JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.PROCESSING, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
    ),
    # A failed or interrupted run is retried only when the user asks: it may have edited files.
    JobStatus.FAILED: frozenset({JobStatus.PENDING}),
    JobStatus.INTERRUPTED: frozenset({JobStatus.PENDING}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_move_process(current: ProcessStatus, target: ProcessStatus) -> bool:
    return target in _PROCESS_TRANSITIONS[current]


def can_move_job(current: JobStatus, target: JobStatus) -> bool:
    return target in _JOB_TRANSITIONS[current]
