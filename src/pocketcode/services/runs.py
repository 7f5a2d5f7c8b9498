"""The run manager: claims queued prompts, runs them through an agent runner, and keeps the
database, the session state and the live event stream in step.

Persist, then publish: every message an agent produces is stored with its seq before any
subscriber hears of it. One run at a time per session (the queue enforces it); a global limit
on concurrent runs per process. Nothing is retried blindly: a run whose server died is marked
interrupted at the next start, its processes are reaped and its missed messages recovered from
the CLI's transcript; the user decides whether to run it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pocketcode.agents.base import (
    AgentEvent,
    AgentRunner,
    EventKind,
    PermissionDecision,
    RunOutcome,
    RunRequest,
    RunStatus,
)
from pocketcode.agents.processes import (
    MARKER_INSTANCE,
    find_marked_processes,
    is_same_process,
    kill_process_group,
    process_create_time,
    reap_orphans,
)
from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, MessageRow, PermissionRequestRow, SessionRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from pocketcode.domain.states import (
    ACTIVE_PROCESS_STATUSES,
    JobStatus,
    MessageType,
    PermissionMode,
    ProcessStatus,
)
from pocketcode.services.events import (
    Event,
    EventBus,
    message_event,
    resync_event,
    session_state_event,
)
from pocketcode.services.jobs import JobService, finish_in, pending_jobs_in
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.permissions import PermissionEvent, PermissionService
from pocketcode.services.pricing import compute_cost, lookup_in
from pocketcode.services.sessions import (
    SessionService,
    SessionWithPending,
    load_session,
    load_with_pending,
    move_process_in,
)
from pocketcode.services.transcripts import run_messages_since

log = logging.getLogger(__name__)

_RUN_OPTION_KEYS = {
    "model",
    "permissionMode",
    "allowedTools",
    "disallowedTools",
    "maxTurns",
    "appendSystemPrompt",
    "maxThinkingTokens",
}


def make_worker_id() -> str:
    """host:pid:start — enough for a restarted server to tell its dead predecessors apart."""
    pid = os.getpid()
    started = process_create_time(pid) or 0.0
    return f"{socket.gethostname()}:{pid}:{started:.3f}"


def _worker_is_dead_here(worker_id: str) -> bool:
    host, _, rest = worker_id.partition(":")
    pid_text, _, started_text = rest.partition(":")
    if host != socket.gethostname():
        return False
    try:
        return not is_same_process(int(pid_text), float(started_text))
    except ValueError:
        return True


def validate_run_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The per-prompt options a client may set, checked; unknown keys are refused."""
    options = dict(options or {})
    unknown = set(options) - _RUN_OPTION_KEYS
    if unknown:
        raise InvalidInput(f"unknown run options: {', '.join(sorted(unknown))}")
    if "permissionMode" in options and options["permissionMode"] is not None:
        try:
            PermissionMode(options["permissionMode"])
        except ValueError:
            modes = ", ".join(mode.value for mode in PermissionMode)
            raise InvalidInput(f"permissionMode must be one of {modes}") from None
    for key in ("allowedTools", "disallowedTools"):
        value = options.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(t, str) and t for t in value)
        ):
            raise InvalidInput(f"{key} must be a list of tool names")
    for key, upper in (("maxTurns", 1000), ("maxThinkingTokens", 1_000_000)):
        value = options.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= upper
        ):
            raise InvalidInput(f"{key} must be an integer between 1 and {upper}")
    for key in ("model", "appendSystemPrompt"):
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{key} must be a string")
    return {key: value for key, value in options.items() if value is not None}


class _MessageWriter:
    """Stores the messages of every run of this process, then publishes each stored one.

    An agent is never made to wait for the database: a message is queued, and the writer
    stores whatever has queued up, from all sessions, in one write transaction (rows of one
    session in arrival order), then publishes them in seq order. Under a burst, or with many
    sessions streaming at once, that amortises the commit; when events trickle in, each is
    stored and published on its own at once. Persist-then-publish holds: nothing is published
    before its transaction committed.
    """

    MAX_BATCH = 500

    def __init__(self, manager: RunManager) -> None:
        self._manager = manager
        self._queue: asyncio.Queue[tuple[uuid.UUID, NewMessage]] = asyncio.Queue()
        self._pending: dict[uuid.UUID, int] = {}
        self._drained: dict[uuid.UUID, asyncio.Event] = {}
        self._failures: dict[uuid.UUID, BaseException] = {}
        self._task: asyncio.Task[None] | None = None

    def put(self, session_id: uuid.UUID, message: NewMessage) -> None:
        failure = self._failures.get(session_id)
        if failure is not None:
            raise RuntimeError("storing the run's messages failed") from failure
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="pocketcode-message-writer")
        self._pending[session_id] = self._pending.get(session_id, 0) + 1
        self._drained.setdefault(session_id, asyncio.Event()).clear()
        self._queue.put_nowait((session_id, message))

    async def flush(self, session_id: uuid.UUID) -> None:
        """Wait until everything queued for the session is stored and published."""
        drained = self._drained.get(session_id)
        if drained is not None and self._pending.get(session_id):
            await drained.wait()

    def forget(self, session_id: uuid.UUID) -> None:
        if not self._pending.get(session_id):
            self._pending.pop(session_id, None)
            self._drained.pop(session_id, None)
            self._failures.pop(session_id, None)

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            grouped: dict[uuid.UUID, list[NewMessage]] = {}
            for session_id, message in batch:
                grouped.setdefault(session_id, []).append(message)
            try:
                stored = await anyio.to_thread.run_sync(
                    self._manager.messages.append_grouped, grouped
                )
            except Exception:
                # One session's failure (deleted under the run, say) must not lose the others'.
                stored = await self._one_session_at_a_time(grouped)
            for rows in stored.values():
                for row in rows:
                    await self._manager.bus.publish(message_event(row))
            for session_id, messages in grouped.items():
                left = self._pending[session_id] - len(messages)
                self._pending[session_id] = left
                if left == 0:
                    self._drained[session_id].set()

    async def _one_session_at_a_time(
        self, grouped: dict[uuid.UUID, list[NewMessage]]
    ) -> dict[uuid.UUID, list[MessageRow]]:
        stored: dict[uuid.UUID, list[MessageRow]] = {}
        for session_id, messages in grouped.items():
            try:
                stored[session_id] = await anyio.to_thread.run_sync(
                    self._manager.messages.append_many, session_id, messages
                )
            except Exception as exc:
                log.exception("storing messages of session %s failed", session_id)
                self._failures[session_id] = exc
        return stored

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class _RunWriter:
    """The writer as one run sees it."""

    writer: _MessageWriter
    session_id: uuid.UUID

    def put(self, message: NewMessage) -> None:
        self.writer.put(self.session_id, message)

    async def flush(self) -> None:
        await self.writer.flush(self.session_id)

    async def close(self) -> None:
        await self.flush()
        self.writer.forget(self.session_id)


@dataclass
class _ActiveRun:
    job_id: uuid.UUID
    session_id: uuid.UUID
    task: asyncio.Task[None]
    cancel_requested: bool = False


def _queue_event(session_id: uuid.UUID, queue: list[JobRow]) -> Event:
    """A session's "queue" event: its pending prompts, next first."""
    pending = [{"id": str(job.id), "prompt": job.prompt[:500]} for job in queue]
    return Event(session_id, "queue", None, {"pending": pending})


def _state_in(session: Session, row: SessionRow) -> Event:
    """A session's "state" event from its row, in the caller's transaction (after the
    changes made to the row in it), with its pending permission count."""
    session.flush()
    return _state_event(load_with_pending(session, row.id))


def _state_event(found: SessionWithPending) -> Event:
    return session_state_event(found.row, found.pending_permissions)


def _provider_id_taken(session: Session, row: SessionRow, provider_session_id: str) -> bool:
    """Whether another session already holds this provider session id (it is unique)."""
    return bool(
        session.scalar(
            sa.select(
                sa.exists().where(
                    SessionRow.provider == row.provider,
                    SessionRow.provider_session_id == provider_session_id,
                    SessionRow.id != row.id,
                )
            )
        )
    )


# Tries at recording a run's end (0.3, 0.6, 1.2, 2.4, 4.8 s apart).
_RECORD_ATTEMPTS = 6
_PROCESS_STATUS_AFTER = {
    RunStatus.COMPLETED: ProcessStatus.COMPLETED,
    RunStatus.FAILED: ProcessStatus.FAILED,
    RunStatus.CANCELLED: ProcessStatus.CANCELLED,
}


class RunManager:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        runner: AgentRunner,
        *,
        permissions: PermissionService | None = None,
        max_concurrent_runs: int = 4,
        poll_interval: float = 2.0,
        heartbeat_interval: float = 15.0,
        idle_check_interval: float = 30.0,
        agent_env: Callable[[], dict[str, str]] | None = None,
        worker_id: str | None = None,
        only_sessions: set[uuid.UUID] | None = None,
    ) -> None:
        self.db = db
        self.bus = bus
        self.runner = runner
        self.jobs = JobService(db)
        self.messages = MessageService(db)
        self.sessions = SessionService(db, [])
        self.permissions = permissions or PermissionService(db)
        self.max_concurrent_runs = max_concurrent_runs
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.idle_check_interval = idle_check_interval
        # Called for every run, so a key changed in the settings applies to the next prompt.
        self.agent_env = agent_env or dict
        self.worker_id = worker_id or make_worker_id()
        # `pocketcode run` claims its own session's prompts only, never a server's.
        self.only_sessions = only_sessions
        self._active: dict[uuid.UUID, _ActiveRun] = {}
        self._writer = _MessageWriter(self)
        # Prompts are queued one at a time: ten prompt transactions in ten threads at once
        # (then six round trips each, every one taking the GIL back) each returned 30-80 ms
        # after its message's createdAt on PostgreSQL; one at a time, the prompts reached the
        # clients in half the time (bench/api.md, section 6). A prompt is one statement there
        # now (JobService.enqueue); SQLite's writes take turns anyway.
        self._enqueue_slot: anyio.CapacityLimiter | None = None  # made in the event loop
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="pocketcode-claim-loop"),
            asyncio.create_task(self._idle_loop(), name="pocketcode-idle-loop"),
        ]

    def is_claiming(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    async def stop(self) -> None:
        """Stop claiming, cancel what runs here, close the agent processes."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for active in list(self._active.values()):
            active.cancel_requested = True
            with contextlib.suppress(Exception):
                await self.runner.cancel(active.session_id)
        if self._active:
            await asyncio.wait([a.task for a in self._active.values()], timeout=10)
        await self._writer.aclose()
        await self.runner.aclose()

    # -- what clients call --------------------------------------------------------------------

    async def submit(
        self, session_id: uuid.UUID, prompt: str, options: dict[str, Any] | None = None
    ) -> JobRow:
        """Queue a prompt: the user message is stored and published before this returns."""
        checked = validate_run_options(options)
        if self._enqueue_slot is None:
            self._enqueue_slot = anyio.CapacityLimiter(1)
        job, message = await anyio.to_thread.run_sync(
            self.jobs.enqueue, session_id, prompt, checked, limiter=self._enqueue_slot
        )
        await self.bus.publish(message_event(message))
        await self._publish_queue(session_id)
        await self.bus.notify_jobs()
        return job

    async def cancel_job(self, job_id: uuid.UUID) -> JobRow:
        """Cancel a queued prompt, or stop the run answering it."""
        job = await anyio.to_thread.run_sync(self.jobs.get, job_id)
        if job.status is JobStatus.PENDING:
            try:
                cancelled = await anyio.to_thread.run_sync(self.jobs.cancel_pending, job_id)
            except Conflict:
                job = await anyio.to_thread.run_sync(self.jobs.get, job_id)
            else:
                await self._publish_queue(job.session_id)
                return cancelled
        if job.status is JobStatus.PROCESSING:
            active = self._active.get(job.id)
            if active is None:
                raise Conflict("this run is being answered by another server process")
            active.cancel_requested = True
            await self.runner.cancel(active.session_id)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(active.task), timeout=15)
            return await anyio.to_thread.run_sync(self.jobs.get, job_id)
        raise Conflict(f"the prompt is already {job.status.value}")

    async def cancel_session(self, session_id: uuid.UUID) -> JobRow | None:
        """Stop the session's current run, if any (queued prompts stay queued)."""
        for active in list(self._active.values()):
            if active.session_id == session_id:
                try:
                    return await self.cancel_job(active.job_id)
                except Conflict:
                    # The run ended between the look and the cancel: nothing runs now, which is
                    # what the caller asked for (a run of another process is not `_active`).
                    return await anyio.to_thread.run_sync(self.jobs.get, active.job_id)
        row = await anyio.to_thread.run_sync(self.sessions.get, session_id)
        if row.current_job_id is not None and row.is_working:
            return await self.cancel_job(row.current_job_id)
        return None

    # -- claiming ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            try:
                while len(self._active) < self.max_concurrent_runs:
                    job = await anyio.to_thread.run_sync(
                        self.jobs.claim_next, self.worker_id, self.only_sessions
                    )
                    if job is None:
                        break
                    task = asyncio.create_task(self._execute(job), name=f"run-{job.id}")
                    self._active[job.id] = _ActiveRun(job.id, job.session_id, task)
                    task.add_done_callback(functools.partial(self._run_done, job.id))
            except Exception:
                log.exception("claiming a job failed; retrying")
            await self.bus.wait_for_jobs(self.poll_interval)

    def _run_done(self, job_id: uuid.UUID, _task: asyncio.Task[None]) -> None:
        self._active.pop(job_id, None)
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.bus.notify_jobs())

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(self.idle_check_interval)
            try:
                await self.runner.close_idle()
            except Exception:
                log.exception("closing idle agent processes failed")

    # -- running -------------------------------------------------------------------------------

    async def _execute(self, job: JobRow) -> None:
        session_id = job.session_id
        outcome: RunOutcome | None = None
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        writer = _RunWriter(self._writer, session_id)
        try:
            outcome = await self._start_and_run(job, writer)
        except Exception as exc:
            log.exception("run %s of session %s failed", job.id, session_id)
            outcome = RunOutcome(
                RunStatus.FAILED,
                None,
                error=f"internal error: {type(exc).__name__}",
                error_code="internal_error",
            )
        finally:
            heartbeat.cancel()
            # Everything the run produced is stored before its end is recorded.
            await writer.close()
        active = self._active.get(job.id)
        if (
            active is not None
            and active.cancel_requested
            and outcome.status is not RunStatus.COMPLETED
        ):
            # Stopped on request: a cancellation, whatever the agent made of the interrupt.
            outcome = dataclasses.replace(
                outcome, status=RunStatus.CANCELLED, error=None, error_code=None
            )
        try:
            await self._finish(job, outcome)
        except Exception:
            log.exception("recording the end of run %s failed", job.id)

    async def _start_and_run(self, job: JobRow, writer: _RunWriter) -> RunOutcome:
        try:
            request, state, queue = await anyio.to_thread.run_sync(self._prepare, job)
        except NotFound:
            # Deleted between the claim and the start (the claim does not lock the session
            # row): nothing to run, and the job still ends.
            log.info("session %s was deleted before run %s started", job.session_id, job.id)
            return RunOutcome(RunStatus.CANCELLED, None)
        await self.bus.publish(state)
        await self.bus.publish(queue)
        active = self._active.get(job.id)
        if active is not None and active.cancel_requested:
            # Cancelled between the claim and now, before the runner knew of the run (its
            # `cancel` finds nothing to stop until `run` registers it, synchronously below).
            return RunOutcome(RunStatus.CANCELLED, None)
        return await self.runner.run(
            request,
            lambda event: self._on_event(job, request, writer, event),
            lambda name, tool_input, tool_use_id: self._ask(
                job, writer, name, tool_input, tool_use_id
            ),
        )

    def _prepare(self, job: JobRow) -> tuple[RunRequest, Event, Event]:
        """Mark the session starting and build the runner's request, with the session's
        "state" and "queue" events after it: one transaction (worker thread)."""
        with self.db.write() as session:
            row = load_session(session, job.session_id, lock=True)
            resume = row.provider_session_id
            new_id = resume or str(uuid.uuid4())
            # Chosen before the process starts, so the transcript path is known up front.
            row.provider_session_id = new_id
            if row.process_status in ACTIVE_PROCESS_STATUSES and row.current_job_id != job.id:
                # This job is the session's one processing job (a unique index sees to it), so
                # the run the session still shows is over: ended by another process that had
                # yet to reset the session (a dead server's run, interrupted at a start-up).
                log.warning("session %s was left %s by an ended run", row.id, row.process_status)
                row.process_status = ProcessStatus.IDLE
            move_process_in(row, ProcessStatus.STARTING, is_working=True, current_job_id=job.id)
            project = Path(row.project_path)
            model = row.model
            mode = row.permission_mode
            state = _state_in(session, row)
            queue = _queue_event(row.id, pending_jobs_in(session, row.id))
        options = job.options or {}
        request = RunRequest(
            session_id=job.session_id,
            job_id=job.id,
            prompt=job.prompt,
            cwd=project,
            resume_provider_session_id=resume,
            new_provider_session_id=new_id,
            model=options.get("model") or model,
            permission_mode=PermissionMode(options["permissionMode"])
            if options.get("permissionMode")
            else mode,
            allowed_tools=tuple(options.get("allowedTools") or ()),
            disallowed_tools=tuple(options.get("disallowedTools") or ()),
            max_turns=options.get("maxTurns"),
            append_system_prompt=options.get("appendSystemPrompt"),
            max_thinking_tokens=options.get("maxThinkingTokens"),
            env=self.agent_env(),
        )
        return request, state, queue

    async def _on_event(
        self, job: JobRow, request: RunRequest, writer: _RunWriter, event: AgentEvent
    ) -> None:
        if event.kind is EventKind.MESSAGE and event.message is not None:
            message = event.message
            message.job_id = job.id
            if message.provider_session_id is None:
                message.provider_session_id = (
                    request.resume_provider_session_id or request.new_provider_session_id
                )
            writer.put(message)
        elif event.kind is EventKind.DELTA and event.delta is not None:
            await self.bus.publish(Event(job.session_id, "delta", None, dict(event.delta)))
        elif event.kind is EventKind.PROCESS:
            # `_prepare` stored the provider session id the process was started with; it is
            # written again only if the process reports another one.
            reported = event.provider_session_id
            state = await anyio.to_thread.run_sync(
                self._record_process,
                job.session_id,
                event.pid,
                event.create_time,
                reported if reported != request.new_provider_session_id else None,
            )
            await self.bus.publish(state)

    def _record_process(
        self,
        session_id: uuid.UUID,
        pid: int | None,
        create_time: float | None,
        provider_session_id: str | None,
    ) -> Event:
        """The agent process is up: the session streams (and its provider session id is the
        one the process reported). Returns the session's "state" event; one transaction."""
        with self.db.write() as session:
            row = load_session(session, session_id, lock=True)
            move_process_in(
                row,
                ProcessStatus.STREAMING,
                is_working=True,
                process_pid=pid,
                process_create_time=create_time,
            )
            if provider_session_id:
                row.provider_session_id = provider_session_id
            return _state_in(session, row)

    async def _ask(
        self,
        job: JobRow,
        writer: _RunWriter,
        tool_name: str,
        tool_input: dict[str, Any],
        tool_use_id: str | None,
    ) -> PermissionDecision:
        # The tool call the user is asked about is stored and shown before the question.
        await writer.flush()

        async def publish(event: PermissionEvent) -> None:
            await self.bus.publish(Event(event.session_id, "permission", None, event.data))
            await self._publish_state(event.session_id)

        async def expired(row: PermissionRequestRow) -> None:
            writer.put(
                NewMessage(
                    MessageType.SYSTEM,
                    f"The request to use {row.tool_name} got no answer in time and was denied.",
                    subtype="permission_expired",
                    job_id=job.id,
                ),
            )

        decision = await self.permissions.request(
            job.session_id,
            job.id,
            tool_name,
            tool_input,
            tool_use_id,
            publish=publish,
            on_expired=expired,
        )
        # Answered here or in another process: the run is no longer waiting for anyone.
        await self._publish_state(job.session_id)
        return decision

    async def _heartbeat(self, job_id: uuid.UUID) -> None:
        """Keep the claim alive; a claim lost (another process declared this worker dead and
        interrupted the job) stops the run rather than letting two copies edit files."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                alive = await anyio.to_thread.run_sync(self.jobs.heartbeat, job_id, self.worker_id)
            except Exception:
                log.exception("heartbeat of run %s failed", job_id)
                continue
            active = self._active.get(job_id)
            if not alive and active is not None:
                log.warning("run %s lost its claim; stopping it", job_id)
                active.cancel_requested = True
                await self.runner.cancel(active.session_id)
                return

    async def _finish(self, job: JobRow, outcome: RunOutcome) -> None:
        session_id = job.session_id
        closing: NewMessage | None = None
        if outcome.status is RunStatus.FAILED:
            closing = NewMessage(
                MessageType.ERROR,
                outcome.error or "The run failed.",
                subtype=outcome.error_code or "failed",
                job_id=job.id,
            )
        elif outcome.status is RunStatus.CANCELLED:
            closing = NewMessage(
                MessageType.SYSTEM, "Cancelled.", subtype="cancelled", job_id=job.id
            )
        if closing is not None:
            # A session deleted meanwhile has nowhere to say it; the job still ends.
            with contextlib.suppress(NotFound):
                await self._store(session_id, closing)
        state, queue = await self._record_outcome_retrying(job, outcome)
        if state is not None:
            await self.bus.publish(state)
        await self.bus.publish(queue)
        await self.bus.publish(
            Event(session_id, "done", None, {"jobId": str(job.id), "status": outcome.status.value})
        )

    async def _record_outcome_retrying(
        self, job: JobRow, outcome: RunOutcome
    ) -> tuple[Event | None, Event]:
        """`_record_outcome`, tried again a few times over about ten seconds if the database
        fails: unrecorded, the job would stay processing and its session working until the
        next start-up."""
        for attempt in range(_RECORD_ATTEMPTS):
            try:
                return await anyio.to_thread.run_sync(self._record_outcome, job, outcome)
            except sa.exc.SQLAlchemyError:
                if attempt == _RECORD_ATTEMPTS - 1:
                    raise
                log.warning("recording the end of run %s failed; trying again", job.id)
                await asyncio.sleep(0.3 * 2**attempt)
        raise AssertionError("unreachable")

    def _record_outcome(self, job: JobRow, outcome: RunOutcome) -> tuple[Event | None, Event]:
        """Record a run's end: the job finished with its usage and cost, the session's totals
        and turns added, the session no longer working. One transaction, because the session's
        next prompt is claimable the moment this job stops processing: recorded apart, that
        run could find the session still streaming and fail. Returns the session's "state"
        event (None if the session is gone) and its "queue" event."""
        usage = outcome.usage
        with self.db.write() as session:
            model = outcome.model or session.scalar(
                sa.select(SessionRow.model).where(SessionRow.id == job.session_id)
            )
            price = lookup_in(session, model) if model else None
            cost = compute_cost(usage, price) if price is not None else Decimal(0)
            try:
                finish_in(
                    session,
                    job.id,
                    JobStatus(outcome.status.value),
                    error=outcome.error,
                    error_code=outcome.error_code,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_creation_tokens=usage.cache_creation_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cost_usd=cost,
                    cli_cost_usd=outcome.cli_cost_usd,
                    num_turns=outcome.num_turns,
                    duration_ms=outcome.duration_ms,
                )
            except InvalidTransition:
                # Another process interrupted the job while this one ran it (a lost claim).
                log.warning("run %s ended as %s after its job had moved on", job.id, outcome.status)
            queue = _queue_event(job.session_id, pending_jobs_in(session, job.session_id))
            row = session.scalar(
                sa.select(SessionRow)
                .where(SessionRow.id == job.session_id, SessionRow.deleted_at.is_(None))
                .with_for_update()
            )
            if row is None:
                return None, queue
            row.input_tokens += usage.input_tokens
            row.output_tokens += usage.output_tokens
            row.cache_creation_tokens += usage.cache_creation_tokens
            row.cache_read_tokens += usage.cache_read_tokens
            row.total_cost_usd += cost
            if outcome.cli_total_cost_usd is not None:
                # The CLI reports a cumulative total across resumes: the latest, not a sum.
                row.cli_total_cost_usd = outcome.cli_total_cost_usd
            if outcome.num_turns:
                row.turn_count += 1
            reported = outcome.provider_session_id
            if (
                reported
                and reported != row.provider_session_id
                and not _provider_id_taken(session, row, reported)
            ):
                row.provider_session_id = reported
            if row.current_job_id not in (None, job.id):
                # A lost claim: another process interrupted this job and the session has moved
                # on to its next run, whose state this run must not end.
                row.updated_at = utcnow()
                return _state_in(session, row), queue
            # Whatever state the run left, the session stops working now (never "working"
            # forever).
            row.is_working = False
            row.current_job_id = None
            row.process_pid = None
            row.process_create_time = None
            row.process_status = _PROCESS_STATUS_AFTER[outcome.status]
            row.last_job_status = JobStatus(outcome.status.value)
            row.last_activity_at = row.updated_at = utcnow()
            return _state_in(session, row), queue

    async def _store(self, session_id: uuid.UUID, message: NewMessage) -> None:
        row = await anyio.to_thread.run_sync(self.messages.append, session_id, message)
        await self.bus.publish(message_event(row))

    # -- publishing state ----------------------------------------------------------------------

    async def _publish_state(self, session_id: uuid.UUID) -> None:
        await self.bus.publish(await anyio.to_thread.run_sync(self._state_of, session_id))

    def _state_of(self, session_id: uuid.UUID) -> Event:
        """A session's "state" event, read in one statement (worker thread)."""
        return _state_event(self.sessions.get_with_pending(session_id))

    async def _publish_queue(self, session_id: uuid.UUID) -> None:
        queue = await anyio.to_thread.run_sync(self.jobs.list_queue, session_id)
        await self.bus.publish(_queue_event(session_id, queue))

    # -- recovery at start-up ------------------------------------------------------------------

    async def recover(self) -> None:
        """`recover_sync`, then tell the streams of every process (PostgreSQL) about the
        sessions it changed: they replay what it stored and show the session's new state."""
        changed = await anyio.to_thread.run_sync(self.recover_sync)
        for session_id in sorted(changed, key=str):
            with contextlib.suppress(NotFound):  # deleted meanwhile
                await self._publish_state(session_id)
            # Last: a subscriber drops what follows a resync until it has replayed.
            await self.bus.publish(resync_event(session_id, "recovered"))

    def recover_sync(self) -> set[uuid.UUID]:
        """Interrupt runs whose server died, reap their processes, recover their messages and
        reset their sessions. Runs of live servers (another process on PostgreSQL) are left.
        Returns the sessions it changed."""
        with self.db.read() as session:
            processing = list(
                session.scalars(sa.select(JobRow).where(JobRow.status == JobStatus.PROCESSING))
            )
        dead = {
            job.worker_id or "" for job in processing if _worker_is_dead_here(job.worker_id or "")
        }
        stalled = {
            job.worker_id or ""
            for job in self.jobs.stalled(timedelta(seconds=self.heartbeat_interval * 4))
        }
        interrupted: list[JobRow] = []
        if dead | stalled:
            interrupted = self.jobs.interrupt_processing(
                dead | stalled, "the server stopped during this run; it was interrupted"
            )
        self._reap_orphans(interrupted)
        for job in interrupted:
            self._recover_session(job)
        changed = self._reset_idle_sessions() | {job.session_id for job in interrupted}
        self.permissions.expire_pending_without_run(
            "the run waiting for this answer was interrupted"
        )
        return changed

    def _reap_orphans(self, interrupted: list[JobRow]) -> None:
        """Kill agent processes whose server is dead: the ones recorded on an interrupted
        run's session (pid + start time), and every process carrying the instance marker of a
        server process of this host that no longer exists (tool commands included)."""
        for job in interrupted:
            with self.db.read() as session:
                row = session.get(SessionRow, job.session_id)  # deleted ones too: their process
            if row is None:
                continue
            pid, started = row.process_pid, row.process_create_time
            if pid and started and is_same_process(pid, started):
                kill_process_group(pid, 2.0, create_time=started)
        dead_owners: set[str] = set()
        for process in find_marked_processes(MARKER_INSTANCE):
            try:
                owner = process.environ().get(MARKER_INSTANCE, "")
            except Exception:  # gone or unreadable since it was listed: nothing to reap
                owner = self.worker_id
            if owner != self.worker_id and _worker_is_dead_here(owner):
                dead_owners.add(owner)
        for owner in dead_owners:
            reaped = reap_orphans(instance_id=owner)
            if reaped:
                log.warning("killed %d process(es) left by dead server %s", len(reaped), owner)

    def _recover_session(self, job: JobRow) -> None:
        try:
            row = self.sessions.get(job.session_id)
        except NotFound:
            return  # deleted: no one will read what the run left
        if row.claude_directory_path and row.provider_session_id and job.claimed_at:
            transcript = Path(row.claude_directory_path) / f"{row.provider_session_id}.jsonl"
            missed = run_messages_since(transcript, job.claimed_at - timedelta(seconds=1))
            for message in missed:
                message.job_id = job.id
            stored = self.messages.append_many(job.session_id, missed)
            if stored:
                log.info(
                    "recovered %d message(s) of run %s from its transcript", len(stored), job.id
                )
        self.messages.append(
            job.session_id,
            NewMessage(
                MessageType.ERROR,
                "The server stopped during this run, so it was interrupted. Files it was "
                "editing may be half-changed: check them, then send a prompt to continue.",
                subtype="interrupted",
                job_id=job.id,
            ),
        )

    def _reset_idle_sessions(self) -> set[uuid.UUID]:
        """Sessions marked working without a processing job go back to idle; returns them."""
        with self.db.write() as session:
            running = sa.select(JobRow.session_id).where(JobRow.status == JobStatus.PROCESSING)
            reset = session.scalars(
                sa.update(SessionRow)
                .where(
                    sa.or_(
                        SessionRow.is_working.is_(True),
                        SessionRow.process_status.in_(list(ACTIVE_PROCESS_STATUSES)),
                    ),
                    SessionRow.id.not_in(running),
                )
                .values(
                    is_working=False,
                    current_job_id=None,
                    process_pid=None,
                    process_create_time=None,
                    process_status=ProcessStatus.IDLE,
                    last_job_status=JobStatus.INTERRUPTED,
                    updated_at=utcnow(),
                )
                .returning(SessionRow.id),
                execution_options={"synchronize_session": False},
            )
            return set(reset)
