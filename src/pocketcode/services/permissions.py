"""Tool approvals: a durable request per tool use the agent asks about, answered by the user.

The agent's run waits on `request()`; the answer comes through `answer()` from any client (the
web app, the CLI, another server process). A waiting run is woken at once in this process and,
for answers given through another process, by polling its row. A request left unanswered past
the timeout expires and counts as a denial, with a message stored for the user to read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import anyio
import sqlalchemy as sa

from pocketcode.agents.base import PermissionDecision
from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, PermissionRequestRow, SessionRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import Conflict, InvalidInput, NotFound
from pocketcode.domain.ids import parse_id
from pocketcode.domain.states import JobStatus, PermissionStatus
from pocketcode.domain.timefmt import iso_z
from pocketcode.services.sessions import load_session

DEFAULT_TIMEOUT = 300.0
_POLL_INTERVAL = 0.5


class Answer(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ALWAYS = "always"  # allow, and allow this tool for the rest of the session


@dataclass(frozen=True)
class PermissionEvent:
    """What the run manager publishes when a request is created or answered."""

    session_id: uuid.UUID
    data: dict[str, Any]


Publish = Callable[[PermissionEvent], Awaitable[None]]
NotifyExpired = Callable[[PermissionRequestRow], Awaitable[None]]


def request_data(row: PermissionRequestRow) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "sessionId": str(row.session_id),
        "jobId": str(row.job_id) if row.job_id else None,
        "toolName": row.tool_name,
        "toolInput": row.tool_input,
        "toolUseId": row.tool_use_id,
        "status": row.status.value,
        "scope": row.scope,
        "reason": row.reason,
        "createdAt": iso_z(row.created_at),
        "expiresAt": iso_z(row.expires_at) if row.expires_at else None,
        "decidedAt": iso_z(row.decided_at) if row.decided_at else None,
    }


def _decision(row: PermissionRequestRow) -> PermissionDecision:
    if row.status is PermissionStatus.ALLOWED:
        return PermissionDecision(allow=True)
    if row.status is PermissionStatus.EXPIRED:
        return PermissionDecision(allow=False, message="The user did not answer in time.")
    return PermissionDecision(allow=False, message=row.reason or "The user denied this tool use.")


class PermissionService:
    def __init__(self, db: Database, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise InvalidInput("the permission timeout must be positive")
        self.db = db
        self.timeout = timeout
        # Waiting runs, with their loop: `answer` may be called from any thread.
        self._waiters: dict[uuid.UUID, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    # -- the agent side ---------------------------------------------------------------------

    async def request(
        self,
        session_id: uuid.UUID,
        job_id: uuid.UUID | None,
        tool_name: str,
        tool_input: dict[str, Any],
        tool_use_id: str | None,
        *,
        publish: Publish,
        on_expired: NotifyExpired | None = None,
    ) -> PermissionDecision:
        """Ask the user; returns once they answer or the request expires."""
        if await anyio.to_thread.run_sync(self.is_always_allowed, session_id, tool_name):
            return PermissionDecision(allow=True)
        # The wake-up is registered before the request exists: an answer that comes the moment
        # it is stored (from another thread) must find it.
        request_id = uuid.uuid4()
        woken = asyncio.Event()
        self._waiters[request_id] = (asyncio.get_running_loop(), woken)
        try:
            row = await anyio.to_thread.run_sync(
                self._create, request_id, session_id, job_id, tool_name, tool_input, tool_use_id
            )
            await publish(PermissionEvent(session_id, request_data(row)))
            answered = await self._wait(row.id, woken)
            if answered is None:
                answered = await anyio.to_thread.run_sync(self._expire, row.id)
                if answered.status is PermissionStatus.EXPIRED:
                    await publish(PermissionEvent(session_id, request_data(answered)))
                    if on_expired is not None:
                        await on_expired(answered)
            return _decision(answered)
        finally:
            self._waiters.pop(request_id, None)

    async def _wait(
        self, request_id: uuid.UUID, woken: asyncio.Event
    ) -> PermissionRequestRow | None:
        deadline = anyio.current_time() + self.timeout
        while True:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return None
            with anyio.move_on_after(min(_POLL_INTERVAL, remaining)):
                await woken.wait()
            row = await anyio.to_thread.run_sync(self.get, request_id)
            if row.status is not PermissionStatus.PENDING:
                return row

    def _create(
        self,
        request_id: uuid.UUID,
        session_id: uuid.UUID,
        job_id: uuid.UUID | None,
        tool_name: str,
        tool_input: dict[str, Any],
        tool_use_id: str | None,
    ) -> PermissionRequestRow:
        now = utcnow()
        row = PermissionRequestRow(
            id=request_id,
            session_id=session_id,
            job_id=job_id,
            tool_name=tool_name[:128],
            tool_input=tool_input,
            tool_use_id=tool_use_id,
            created_at=now,
            expires_at=now + timedelta(seconds=self.timeout),
        )
        with self.db.write() as session:
            load_session(session, session_id)
            session.add(row)
        return row

    def _expire(self, request_id: uuid.UUID) -> PermissionRequestRow:
        """Expire the request unless an answer won the race; returns the final row."""
        with self.db.write() as session:
            session.execute(
                sa.update(PermissionRequestRow)
                .where(
                    PermissionRequestRow.id == request_id,
                    PermissionRequestRow.status == PermissionStatus.PENDING,
                )
                .values(
                    status=PermissionStatus.EXPIRED,
                    decided_at=utcnow(),
                    reason="no answer before the request expired",
                )
            )
        return self.get(request_id)

    # -- the user side ------------------------------------------------------------------------

    def get(self, request_id: uuid.UUID | str) -> PermissionRequestRow:
        parsed = parse_id(request_id, "permission request")
        with self.db.read() as session:
            row = session.get(PermissionRequestRow, parsed)
        if row is None:
            raise NotFound(f"permission request {request_id} not found")
        return row

    def pending(self, session_id: uuid.UUID | None = None) -> list[PermissionRequestRow]:
        """Requests waiting for an answer, oldest first: what a reconnecting client shows."""
        query = sa.select(PermissionRequestRow).where(
            PermissionRequestRow.status == PermissionStatus.PENDING
        )
        if session_id is not None:
            query = query.where(PermissionRequestRow.session_id == session_id)
        with self.db.read() as session:
            return list(session.scalars(query.order_by(PermissionRequestRow.created_at)))

    def answer(
        self,
        request_id: uuid.UUID | str,
        answer: Answer,
        *,
        reason: str | None = None,
        user_id: uuid.UUID | None = None,
    ) -> PermissionRequestRow:
        """Record the user's answer. A request already answered or expired is a Conflict."""
        return self.answer_all(request_id, answer, reason=reason, user_id=user_id)[0]

    def answer_all(
        self,
        request_id: uuid.UUID | str,
        answer: Answer,
        *,
        reason: str | None = None,
        user_id: uuid.UUID | None = None,
    ) -> list[PermissionRequestRow]:
        """`answer`, returning the request answered and, for "always", the session's other
        pending requests of the same tool, allowed with it (parallel tool uses can ask at
        once: each would otherwise wait for an answer, or expire)."""
        row = self.get(request_id)
        allowed = answer is not Answer.DENY
        settled = [row.id]
        with self.db.write() as session:
            result = session.execute(
                sa.update(PermissionRequestRow)
                .where(
                    PermissionRequestRow.id == row.id,
                    PermissionRequestRow.status == PermissionStatus.PENDING,
                )
                .values(
                    status=PermissionStatus.ALLOWED if allowed else PermissionStatus.DENIED,
                    scope="session" if answer is Answer.ALWAYS else "once",
                    reason=(reason or "").strip()[:2000] or None,
                    decided_at=utcnow(),
                    decided_by=user_id,
                )
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise Conflict(
                    f"permission request {row.id} was already {self.get(row.id).status.value}"
                )
            if answer is Answer.ALWAYS:
                owner = load_session(session, row.session_id, lock=True)
                if row.tool_name not in owner.allowed_tools:
                    owner.allowed_tools = [*owner.allowed_tools, row.tool_name]
                settled += session.scalars(
                    sa.update(PermissionRequestRow)
                    .where(
                        PermissionRequestRow.session_id == row.session_id,
                        PermissionRequestRow.tool_name == row.tool_name,
                        PermissionRequestRow.status == PermissionStatus.PENDING,
                    )
                    .values(
                        status=PermissionStatus.ALLOWED,
                        scope="session",
                        reason=f"{row.tool_name} is allowed for this session",
                        decided_at=utcnow(),
                        decided_by=user_id,
                    )
                    .returning(PermissionRequestRow.id),
                    execution_options={"synchronize_session": False},
                ).all()
        for settled_id in settled:
            waiter = self._waiters.get(settled_id)
            if waiter is not None:
                loop, woken = waiter
                loop.call_soon_threadsafe(woken.set)
        return [self.get(settled_id) for settled_id in settled]

    def is_always_allowed(self, session_id: uuid.UUID, tool_name: str) -> bool:
        with self.db.read() as session:
            tools = session.scalar(
                sa.select(SessionRow.allowed_tools).where(SessionRow.id == session_id)
            )
        return bool(tools) and tool_name in (tools or [])

    def expire_pending_without_run(self, reason: str) -> int:
        """At start-up, after the runs of dead servers were interrupted: expire the pending
        requests no run waits for any more. A request of a job still processing belongs to a
        live run (another server on PostgreSQL, or `pocketcode run` beside a server) and stays."""
        running = sa.select(JobRow.id).where(JobRow.status == JobStatus.PROCESSING)
        with self.db.write() as session:
            result = session.execute(
                sa.update(PermissionRequestRow)
                .where(
                    PermissionRequestRow.status == PermissionStatus.PENDING,
                    sa.or_(
                        PermissionRequestRow.job_id.is_(None),
                        PermissionRequestRow.job_id.not_in(running),
                    ),
                )
                .values(status=PermissionStatus.EXPIRED, decided_at=utcnow(), reason=reason)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]
