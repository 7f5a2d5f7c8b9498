"""The prompt queue: each session is its own FIFO queue, and runs one job at a time.

A prompt is stored twice in one transaction: as the session's user message (so every client
sees it at once, with its `seq`) and as a pending job (on PostgreSQL in one statement, which
commits by itself: `_prompt_insert`). Workers claim jobs atomically: the oldest
pending job of a session that has no job processing, with `FOR UPDATE SKIP LOCKED` on
PostgreSQL (claimers on other server processes skip the rows being claimed instead of waiting)
and inside SQLite's BEGIN IMMEDIATE write transaction (writers are serialised already). The
partial unique index `ix_jobs_session_id_processing` makes the database refuse a second
processing job in a session whatever happens above it.

`created_at` is the queue order. It is made strictly increasing within a session while the
session row is locked (from `sessions.last_queued_at`, the newest job's), so two prompts sent
in the same microsecond, or from two hosts whose clocks disagree, still run in the order they
were stored.

Runs are never retried blindly (they edit files): a job whose worker died becomes
`interrupted`, and only `requeue` — the user's decision — makes it pending again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, MessageRow, SessionRow
from pocketcode.db.types import new_id, utcnow
from pocketcode.domain.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from pocketcode.domain.ids import parse_id
from pocketcode.domain.states import (
    FINISHED_JOB_STATUSES,
    JobStatus,
    LifecycleStatus,
    MessageType,
    can_move_job,
)
from pocketcode.services.messages import NewMessage, append_in
from pocketcode.services.sessions import load_session

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 100_000
INTERRUPTED_ERROR_CODE = "interrupted"
DEFAULT_INTERRUPT_REASON = (
    "The server stopped while this prompt was running, so the run was interrupted. "
    "Send it again to continue."
)
# A claim that loses a race on the one-processing-job index tries again this many times.
_CLAIM_ATTEMPTS = 3
PROMPT_SUBTYPE = "prompt"
_TICK = timedelta(microseconds=1)


def _parse_job_id(job_id: uuid.UUID | str) -> uuid.UUID:
    return parse_id(job_id, "job")


def _check_prompt(prompt: str) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("the prompt is empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
    if "\x00" in prompt:
        # PostgreSQL text cannot hold NUL; refuse it on both databases alike.
        raise InvalidInput("the prompt contains a NUL character")


def _check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidInput("options must be an object")
    try:
        json.dumps(options)
    except (TypeError, ValueError):
        raise InvalidInput("options must be JSON") from None
    return dict(options)


def _take_queue_time(row: SessionRow) -> datetime:
    """Now, or just after the session's newest job if the clock says otherwise, kept on the
    session row (`last_queued_at`). Call it with the row locked, so two writers cannot hand
    out the same time."""
    now = utcnow()
    newest = row.last_queued_at
    row.last_queued_at = max(now, newest + _TICK) if newest is not None else now
    return row.last_queued_at


def _prompt_message(prompt: str, job_id: uuid.UUID) -> NewMessage:
    """The user message a prompt is stored as (`_prompt_insert` writes the same columns)."""
    return NewMessage(MessageType.USER, prompt, subtype=PROMPT_SUBTYPE, job_id=job_id)


def _refuse_archived(row: SessionRow) -> None:
    if row.status is LifecycleStatus.ARCHIVED:
        raise Conflict(f"session {row.id} is archived; unarchive it to send prompts")


def _writable_session(session: Session, session_id: uuid.UUID | str) -> SessionRow:
    row = load_session(session, session_id, lock=True)
    _refuse_archived(row)
    return row


def _prompt_insert() -> sa.Select[int, datetime]:
    """PostgreSQL: a prompt stored in one statement (data-modifying CTEs) — the session's
    counters bumped and its queue time taken (`bumped`: the session locked, live and not
    archived, else nothing is written), the pending job, the user message numbered after the
    session's last one — answering the message's seq and the job's queue time (no row: the
    session cannot take prompts). Outside a transaction it commits by itself: one round trip
    between the message's createdAt and its commit instead of two, and one instead of seven
    for the whole prompt. The queue time is computed from the locked row's latest version, so
    two writers queueing at once still get increasing times."""
    now = sa.bindparam("now", type_=SessionRow.__table__.c.updated_at.type)
    # Parameters are named `new_…`: one named after a column of `sessions` would be SET.
    job_id = sa.bindparam("new_job_id", type_=JobRow.__table__.c.id.type)
    prompt = sa.bindparam("new_prompt", type_=JobRow.__table__.c.prompt.type)
    session_id = sa.bindparam("session_id", type_=SessionRow.__table__.c.id.type)
    bumped = (
        sa.update(SessionRow)
        .where(
            SessionRow.id == session_id,
            SessionRow.deleted_at.is_(None),
            SessionRow.status != LifecycleStatus.ARCHIVED,
        )
        .values(
            message_count=SessionRow.message_count + 1,
            last_message_index=SessionRow.last_message_index + 1,
            last_activity_at=now,
            last_message_sent_at=now,
            last_accessed_at=now,  # in use: not a session `db archive` may take
            updated_at=now,
            # GREATEST skips a NULL: the first prompt is queued now.
            last_queued_at=sa.func.greatest(
                now, SessionRow.last_queued_at + sa.literal(_TICK, sa.Interval())
            ),
        )
        .returning(SessionRow.last_message_index, SessionRow.last_queued_at)
        .cte("bumped")
    )
    job = (
        sa.insert(JobRow)
        .from_select(
            ["id", "session_id", "status", "prompt", "options", "created_at", "updated_at"],
            sa.select(
                job_id,
                session_id,
                sa.literal(JobStatus.PENDING, JobRow.__table__.c.status.type),
                prompt,
                sa.bindparam("new_options", type_=JobRow.__table__.c.options.type),
                bumped.c.last_queued_at,
                now,
            ),
        )
        .returning(JobRow.created_at)
        .cte("job")
    )
    message = (
        sa.insert(MessageRow)
        .from_select(
            ["id", "session_id", "seq", "created_at", "type", "subtype", "text", "job_id"],
            sa.select(
                sa.bindparam("new_message_id", type_=MessageRow.__table__.c.id.type),
                session_id,
                bumped.c.last_message_index,
                now,
                sa.literal(MessageType.USER, MessageRow.__table__.c.type.type),
                sa.literal(PROMPT_SUBTYPE),
                prompt,
                job_id,
            ).select_from(bumped.join(job, sa.true())),
        )
        .returning(MessageRow.seq)
        .cte("message")
    )
    return sa.select(message.c.seq, job.c.created_at).select_from(message.join(job, sa.true()))


_PROMPT_INSERT = _prompt_insert()


@functools.cache
def _claimable(some_sessions: bool) -> sa.Select[uuid.UUID]:
    """The oldest job that may start now: pending and due, first in its session's queue, in
    a live session that runs nothing (and, with `some_sessions`, one of the bound
    `session_ids`); bound `now`.

    Built once per variant: building it — three aliases of the jobs table — cost more of the
    server's time than running it when ten prompts arrived at once."""
    job = aliased(JobRow, name="candidate")
    older = aliased(JobRow, name="older")
    running = aliased(JobRow, name="running")
    now: sa.BindParameter[datetime] = sa.bindparam("now")
    return (
        sa.select(job.id)
        .where(
            job.status == JobStatus.PENDING,
            sa.or_(job.next_retry_at.is_(None), job.next_retry_at <= now),
            ~sa.exists().where(
                running.session_id == job.session_id,
                running.status == JobStatus.PROCESSING,
            ),
            # FIFO: a job whose elder is pending (even one not due yet) waits for it.
            ~sa.exists().where(
                older.session_id == job.session_id,
                older.status == JobStatus.PENDING,
                sa.or_(
                    older.created_at < job.created_at,
                    sa.and_(older.created_at == job.created_at, older.id < job.id),
                ),
            ),
            sa.exists().where(SessionRow.id == job.session_id, SessionRow.deleted_at.is_(None)),
            job.session_id.in_(sa.bindparam("session_ids", expanding=True))
            if some_sessions
            else sa.true(),
        )
        .order_by(job.created_at, job.id)
        .limit(1)
    )


@functools.cache
def _claim(pick: bool, some_sessions: bool = False) -> sa.Update:
    """Mark a pending job processing for a worker (bound `claimer`, `now`), RETURNING it:
    the one `_claimable` picks and locks (`pick`, PostgreSQL), else the bound `job_id`."""
    now = sa.bindparam("now", type_=JobRow.__table__.c.updated_at.type)
    target: sa.ColumnElement[uuid.UUID] = (
        _claimable(some_sessions).with_for_update(skip_locked=True).scalar_subquery()
        if pick
        else sa.bindparam("job_id")
    )
    return (
        sa.update(JobRow)
        .where(JobRow.id == target, JobRow.status == JobStatus.PENDING)
        .values(
            status=JobStatus.PROCESSING,
            worker_id=sa.bindparam("claimer"),
            claimed_at=now,
            heartbeat_at=now,
            attempts=JobRow.attempts + 1,
            updated_at=now,
        )
        .returning(JobRow)
    )


def pending_jobs_in(session: Session, session_id: uuid.UUID) -> list[JobRow]:
    """A session's pending jobs, next to run first, in the caller's transaction."""
    return list(
        session.scalars(
            sa.select(JobRow)
            .where(JobRow.session_id == session_id, JobRow.status == JobStatus.PENDING)
            .order_by(JobRow.created_at, JobRow.id)
        )
    )


def finish_in(
    session: Session,
    job_id: uuid.UUID | str,
    status: JobStatus,
    *,
    error: str | None = None,
    error_code: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_creation_tokens: int = 0,
    cache_read_tokens: int = 0,
    cost_usd: Decimal = Decimal(0),
    cli_cost_usd: Decimal | None = None,
    num_turns: int | None = None,
    duration_ms: int | None = None,
    worker_id: str | None = None,
) -> JobRow:
    """End a run in the caller's write transaction (the job locked; nothing changed when the
    move is refused). Usage, cost, turns and duration are added to what earlier attempts of
    the same prompt used, so a requeued job reports what all its runs cost."""
    if status not in FINISHED_JOB_STATUSES:
        raise InvalidInput(f"{status.value} is not a final job status")
    job = _load_job_locked(session, job_id)
    if not can_move_job(job.status, status):
        raise InvalidTransition(f"job {job.id} cannot go from {job.status.value} to {status.value}")
    if worker_id is not None and job.worker_id != worker_id:
        raise Conflict(f"job {job.id} is not run by worker {worker_id}")
    now = utcnow()
    job.status = status
    job.error = error
    job.error_code = error_code
    job.input_tokens += input_tokens
    job.output_tokens += output_tokens
    job.cache_creation_tokens += cache_creation_tokens
    job.cache_read_tokens += cache_read_tokens
    job.cost_usd += cost_usd
    if cli_cost_usd is not None:
        job.cli_cost_usd = (job.cli_cost_usd or Decimal(0)) + cli_cost_usd
    if num_turns is not None:
        job.num_turns = (job.num_turns or 0) + num_turns
    if duration_ms is not None:
        job.duration_ms = (job.duration_ms or 0) + duration_ms
    job.finished_at = now
    job.updated_at = now
    return job


def _load_job_locked(session: Session, job_id: uuid.UUID | str) -> JobRow:
    row = session.scalar(
        sa.select(JobRow).where(JobRow.id == _parse_job_id(job_id)).with_for_update()
    )
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return row


class JobService:
    """Each public method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- queueing -------------------------------------------------------------------------------

    def enqueue(
        self, session_id: uuid.UUID | str, prompt: str, options: dict[str, Any] | None = None
    ) -> tuple[JobRow, MessageRow]:
        """Store the prompt as the session's next user message and as a pending job, both or
        neither (one statement on PostgreSQL: `_prompt_insert`)."""
        _check_prompt(prompt)
        checked = _check_options(options)
        if self.db.is_sqlite:
            job, message = self._enqueue_in_transaction(session_id, prompt, checked)
        else:
            job, message = self._enqueue_in_one_statement(session_id, prompt, checked)
        log.info("job %s queued in session %s", job.id, job.session_id)
        return job, message

    def _enqueue_in_transaction(
        self, session_id: uuid.UUID | str, prompt: str, options: dict[str, Any]
    ) -> tuple[JobRow, MessageRow]:
        with self.db.write() as session:
            row = _writable_session(session, session_id)
            row.last_accessed_at = utcnow()  # in use: not a session `db archive` may take
            job = JobRow(
                id=uuid.uuid4(),
                session_id=row.id,
                status=JobStatus.PENDING,
                prompt=prompt,
                options=options,
                created_at=_take_queue_time(row),
            )
            session.add(job)
            session.flush()  # the message refers to the job
            # Last before the commit: the message's createdAt is taken here, and clients
            # measure how fast it reaches them from it.
            message, _ = append_in(
                session,
                row.id,
                _prompt_message(prompt, job.id),
            )
        return job, message

    def _enqueue_in_one_statement(
        self, session_id: uuid.UUID | str, prompt: str, options: dict[str, Any]
    ) -> tuple[JobRow, MessageRow]:
        parsed = parse_id(session_id, "session")
        job_id, message_id, now = uuid.uuid4(), new_id(), utcnow()
        params = {
            "session_id": parsed,
            "now": now,
            "new_job_id": job_id,
            "new_message_id": message_id,
            "new_prompt": prompt,
            "new_options": options,
        }
        with self.db.autocommit_connection() as connection:
            stored = connection.execute(_PROMPT_INSERT, params).first()
        if stored is None:
            with self.db.read() as session:
                _refuse_archived(load_session(session, parsed))
            raise Conflict(f"session {parsed} cannot take prompts now; try again")
        seq, queued_at = stored
        job = JobRow(
            id=job_id,
            session_id=parsed,
            status=JobStatus.PENDING,
            prompt=prompt,
            options=options,
            attempts=0,
            max_attempts=1,
            input_tokens=0,
            output_tokens=0,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal(0),
            created_at=queued_at,
            updated_at=now,
        )
        message = MessageRow(
            id=message_id,
            session_id=parsed,
            seq=seq,
            created_at=now,
            **dataclasses.asdict(_prompt_message(prompt, job_id)),
        )
        return job, message

    def list_queue(self, session_id: uuid.UUID) -> list[JobRow]:
        """The session's pending jobs, next to run first."""
        with self.db.read() as session:
            return pending_jobs_in(session, session_id)

    def get(self, job_id: uuid.UUID | str) -> JobRow:
        with self.db.read() as session:
            row = session.get(JobRow, _parse_job_id(job_id))
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return row

    def cancel_pending(self, job_id: uuid.UUID | str) -> JobRow:
        """Take a prompt out of the queue. A processing job is cancelled through its runner."""
        parsed = _parse_job_id(job_id)
        now = utcnow()
        with self.db.write() as session:
            row: JobRow | None = session.scalar(
                sa.update(JobRow)
                .where(JobRow.id == parsed, JobRow.status == JobStatus.PENDING)
                .values(status=JobStatus.CANCELLED, finished_at=now, updated_at=now)
                .returning(JobRow),
                execution_options={"synchronize_session": False},
            )
        if row is None:
            current = self.get(parsed)
            raise Conflict(f"the prompt is already {current.status.value}")
        return row

    def requeue(self, job_id: uuid.UUID | str) -> JobRow:
        """Run a failed or interrupted prompt again, at the back of its session's queue: a
        new attempt the user asked for."""
        with self.db.write() as session:
            job = _load_job_locked(session, job_id)
            if not can_move_job(job.status, JobStatus.PENDING):
                raise InvalidTransition(f"a {job.status.value} prompt cannot be queued again")
            row = _writable_session(session, job.session_id)
            job.status = JobStatus.PENDING
            job.created_at = _take_queue_time(row)
            job.max_attempts = max(job.max_attempts, job.attempts + 1)
            job.worker_id = None
            job.claimed_at = None
            job.heartbeat_at = None
            job.finished_at = None
            job.next_retry_at = None
            job.error = None
            job.error_code = None
            job.updated_at = utcnow()
        return job

    # -- workers -------------------------------------------------------------------------------

    def claim_next(
        self, worker_id: str, session_ids: Collection[uuid.UUID] | None = None
    ) -> JobRow | None:
        """Claim the next job that may start (of `session_ids` only, when given), or None.
        Never raises on a lost race."""
        if not worker_id:
            raise InvalidInput("worker_id is empty")
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                with self.db.write() as session:
                    return self._claim_in(session, worker_id, session_ids)
            except IntegrityError:
                # Another claimer started a job of the same session first.
                log.debug("worker %s lost a claim race; trying again", worker_id)
        return None

    def _claim_in(
        self, session: Session, worker_id: str, session_ids: Collection[uuid.UUID] | None
    ) -> JobRow | None:
        params: dict[str, Any] = {"now": utcnow(), "claimer": worker_id}
        if session_ids is not None:
            params["session_ids"] = list(session_ids)
        if self.db.is_sqlite:
            # BEGIN IMMEDIATE already holds the write lock: no other claimer runs meanwhile.
            job_id = session.scalar(_claimable(session_ids is not None), params)
            if job_id is None:
                return None
            statement = _claim(False)
            params["job_id"] = job_id
        else:
            statement = _claim(True, session_ids is not None)
        row: JobRow | None = session.scalar(
            statement, params, execution_options={"synchronize_session": False}
        )
        if row is not None:
            log.info("worker %s claimed job %s of session %s", worker_id, row.id, row.session_id)
        return row

    def heartbeat(self, job_id: uuid.UUID | str, worker_id: str | None = None) -> bool:
        """Record that the job's worker is alive. False when the job is no longer processing
        (or no longer this worker's): the worker should stop its run."""
        parsed = _parse_job_id(job_id)
        conditions = [JobRow.id == parsed, JobRow.status == JobStatus.PROCESSING]
        if worker_id is not None:
            conditions.append(JobRow.worker_id == worker_id)
        with self.db.write() as session:
            alive = session.scalar(
                sa.update(JobRow)
                .where(*conditions)
                .values(heartbeat_at=utcnow())
                .returning(JobRow.id),
                execution_options={"synchronize_session": False},
            )
        if alive is None:
            self.get(parsed)  # NotFound for an unknown job
            return False
        return True

    def finish(self, job_id: uuid.UUID | str, status: JobStatus, **values: Any) -> JobRow:
        """End a run (`finish_in` in a transaction of its own)."""
        with self.db.write() as session:
            return finish_in(session, job_id, status, **values)

    # -- recovery -------------------------------------------------------------------------------

    def interrupt_processing(
        self, worker_ids: set[str] | None = None, reason: str = DEFAULT_INTERRUPT_REASON
    ) -> list[JobRow]:
        """Mark processing jobs interrupted: all of them (at start-up of a single server), or
        only those of the given dead workers. The user decides whether to run them again."""
        if worker_ids is not None and not worker_ids:
            return []
        now = utcnow()
        update = sa.update(JobRow).where(JobRow.status == JobStatus.PROCESSING)
        if worker_ids is not None:
            update = update.where(JobRow.worker_id.in_(sorted(worker_ids)))
        with self.db.write() as session:
            rows = list(
                session.scalars(
                    update.values(
                        status=JobStatus.INTERRUPTED,
                        error=reason,
                        error_code=INTERRUPTED_ERROR_CODE,
                        finished_at=now,
                        updated_at=now,
                    ).returning(JobRow),
                    execution_options={"synchronize_session": False},
                )
            )
        for row in rows:
            log.warning(
                "job %s of session %s (worker %s) interrupted",
                row.id,
                row.session_id,
                row.worker_id,
            )
        return rows

    def stalled(self, older_than: timedelta) -> list[JobRow]:
        """Processing jobs whose worker has not shown a sign of life for `older_than`: most
        likely a dead worker on another host."""
        if older_than <= timedelta(0):
            raise InvalidInput("older_than must be positive")
        cutoff = utcnow() - older_than
        with self.db.read() as session:
            return list(
                session.scalars(
                    sa.select(JobRow)
                    .where(
                        JobRow.status == JobStatus.PROCESSING,
                        sa.func.coalesce(JobRow.heartbeat_at, JobRow.claimed_at) < cutoff,
                    )
                    .order_by(JobRow.heartbeat_at)
                )
            )
