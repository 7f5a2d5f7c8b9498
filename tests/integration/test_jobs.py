"""The prompt queue on SQLite and PostgreSQL: atomic enqueue, FIFO per session, one run per
session under concurrent claimers, and every state change a user can cause or see."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, MessageRow, SessionRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from pocketcode.domain.states import JobStatus, LifecycleStatus, MessageType
from pocketcode.services.jobs import MAX_PROMPT_CHARS, JobService
from pocketcode.services.messages import MessageService
from pocketcode.services.sessions import SessionService
from tests.helpers import run_in_threads


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "projects" / "demo"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def sessions(db: Database, tmp_path: Path) -> SessionService:
    return SessionService(db, [tmp_path / "projects"])


@pytest.fixture
def jobs(db: Database) -> JobService:
    return JobService(db)


@pytest.fixture
def session_id(sessions: SessionService, project: Path) -> uuid.UUID:
    return sessions.create(str(project)).id


def _count(db: Database, model: type[JobRow] | type[MessageRow]) -> int:
    with db.read() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def test_enqueue_stores_the_prompt_message_and_a_pending_job(
    jobs: JobService, session_id: uuid.UUID, db: Database
) -> None:
    job, message = jobs.enqueue(session_id, "  fix the tests  ", {"model": "claude-sonnet-4-5"})

    assert job.status is JobStatus.PENDING
    assert job.prompt == "  fix the tests  "
    assert job.options == {"model": "claude-sonnet-4-5"}
    assert (message.type, message.subtype, message.seq) == (MessageType.USER, "prompt", 1)
    assert message.job_id == job.id
    assert message.text == job.prompt
    stored = MessageService(db).page(session_id).messages
    assert [(m.id, m.job_id) for m in stored] == [(message.id, job.id)]
    assert jobs.get(job.id).status is JobStatus.PENDING
    # What enqueue returns is what was stored.
    stored_job = jobs.get(job.id)
    for column in JobRow.__table__.columns:
        assert getattr(job, column.key) == getattr(stored_job, column.key), column.key
    stored_message = stored[0]
    for column in ("id", "seq", "type", "subtype", "text", "job_id", "created_at", "raw"):
        assert getattr(message, column) == getattr(stored_message, column), column


def test_a_failing_enqueue_stores_neither_message_nor_job(
    jobs: JobService, session_id: uuid.UUID, db: Database
) -> None:
    jobs.enqueue(session_id, "first")
    # Make the message insert fail after the job row was written in the same transaction.
    with db.write() as session:
        session.execute(
            sa.update(SessionRow).where(SessionRow.id == session_id).values(last_message_index=0)
        )
    with pytest.raises(IntegrityError):
        jobs.enqueue(session_id, "second")
    assert _count(db, JobRow) == 1
    assert _count(db, MessageRow) == 1
    assert [job.prompt for job in jobs.list_queue(session_id)] == ["first"]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "empty"),
        (" \n\t ", "empty"),
        ("x" * (MAX_PROMPT_CHARS + 1), "longer than 100000"),
        ("a\x00b", "NUL"),
    ],
)
def test_bad_prompts_are_refused(
    jobs: JobService, session_id: uuid.UUID, db: Database, prompt: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        jobs.enqueue(session_id, prompt)
    assert _count(db, JobRow) == 0
    assert _count(db, MessageRow) == 0


def test_bad_options_and_sessions_are_refused(
    jobs: JobService, sessions: SessionService, session_id: uuid.UUID, db: Database
) -> None:
    assert jobs.enqueue(session_id, "x" * MAX_PROMPT_CHARS)[0].prompt == "x" * MAX_PROMPT_CHARS
    with pytest.raises(InvalidInput, match="JSON"):
        jobs.enqueue(session_id, "hi", {"when": object()})
    with pytest.raises(NotFound):
        jobs.enqueue(uuid.uuid4(), "hi")
    with pytest.raises(NotFound):
        jobs.enqueue("not-a-uuid", "hi")
    sessions.update(session_id, status=LifecycleStatus.ARCHIVED)
    with pytest.raises(Conflict, match="archived"):
        jobs.enqueue(session_id, "hi")
    sessions.update(session_id, status=LifecycleStatus.ACTIVE)
    sessions.delete(session_id)
    with pytest.raises(NotFound):
        jobs.enqueue(session_id, "hi")
    assert _count(db, JobRow) == 1
    with pytest.raises(NotFound):
        jobs.get(uuid.uuid4())
    with pytest.raises(InvalidInput):
        jobs.claim_next("")
    with pytest.raises(InvalidInput):
        jobs.stalled(timedelta(0))


def test_each_session_is_a_fifo_queue_running_one_job_at_a_time(
    jobs: JobService, sessions: SessionService, project: Path
) -> None:
    first_session = sessions.create(str(project)).id
    second_session = sessions.create(str(project)).id
    a1, _ = jobs.enqueue(first_session, "a1")
    b1, _ = jobs.enqueue(second_session, "b1")
    a2, _ = jobs.enqueue(first_session, "a2")
    a3, _ = jobs.enqueue(first_session, "a3")
    assert [job.id for job in jobs.list_queue(first_session)] == [a1.id, a2.id, a3.id]

    claimed = jobs.claim_next("w1")
    assert claimed is not None and claimed.id == a1.id
    assert (claimed.status, claimed.worker_id, claimed.attempts) == (JobStatus.PROCESSING, "w1", 1)
    assert claimed.claimed_at is not None and claimed.heartbeat_at is not None
    # The first session is busy: the second session's job is next, then nothing.
    second = jobs.claim_next("w2")
    assert second is not None and second.id == b1.id
    assert jobs.claim_next("w3") is None

    jobs.finish(a1.id, JobStatus.COMPLETED)
    assert [job.id for job in jobs.list_queue(first_session)] == [a2.id, a3.id]
    third = jobs.claim_next("w3")
    assert third is not None and third.id == a2.id


def test_a_job_waiting_for_a_retry_time_holds_back_its_session(
    jobs: JobService, session_id: uuid.UUID, db: Database
) -> None:
    first, _ = jobs.enqueue(session_id, "first")
    jobs.enqueue(session_id, "second")
    with db.write() as session:
        session.execute(
            sa.update(JobRow)
            .where(JobRow.id == first.id)
            .values(next_retry_at=utcnow() + timedelta(hours=1))
        )
    assert jobs.claim_next("w") is None
    with db.write() as session:
        session.execute(
            sa.update(JobRow)
            .where(JobRow.id == first.id)
            .values(next_retry_at=utcnow() - timedelta(seconds=1))
        )
    claimed = jobs.claim_next("w")
    assert claimed is not None and claimed.id == first.id


def test_prompts_queued_in_the_same_instant_keep_their_order(
    jobs: JobService, session_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = utcnow()
    monkeypatch.setattr("pocketcode.services.jobs.utcnow", lambda: frozen)
    queued = [jobs.enqueue(session_id, f"p{i}")[0].id for i in range(5)]
    assert [job.id for job in jobs.list_queue(session_id)] == queued
    monkeypatch.undo()
    for expected in queued:
        claimed = jobs.claim_next("w")
        assert claimed is not None and claimed.id == expected
        jobs.finish(claimed.id, JobStatus.COMPLETED)


def test_the_queue_keeps_the_order_prompts_were_stored_in(
    jobs: JobService, session_id: uuid.UUID, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six writers at once, with a clock that goes back a millisecond at every reading: the
    queue order is still the order the prompts were stored in (their messages' seq), and the
    session keeps the newest queue time (PostgreSQL takes it in the prompt's one statement,
    from the row's latest version after waiting for its lock)."""
    start = utcnow()
    readings = itertools.count()
    lock = threading.Lock()

    def going_back() -> datetime:
        with lock:
            return start - timedelta(milliseconds=next(readings))

    monkeypatch.setattr("pocketcode.services.jobs.utcnow", going_back)

    def work(index: int) -> None:
        writer = JobService(db)
        for number in range(5):
            writer.enqueue(session_id, f"writer {index}, prompt {number}")

    run_in_threads(6, work)
    monkeypatch.undo()

    with db.read() as session:
        stored = session.scalars(
            sa.select(MessageRow.text)
            .where(MessageRow.session_id == session_id)
            .order_by(MessageRow.seq)
        ).all()
        newest = session.scalar(sa.select(sa.func.max(JobRow.created_at)))
        kept = session.scalar(
            sa.select(SessionRow.last_queued_at).where(SessionRow.id == session_id)
        )
    queue = jobs.list_queue(session_id)
    assert len(stored) == 30
    assert [job.prompt for job in queue] == stored
    times = [job.created_at for job in queue]
    assert times == sorted(set(times))
    assert kept == newest == times[-1]


def test_concurrent_claimers_never_run_two_jobs_of_one_session(
    jobs: JobService, sessions: SessionService, project: Path
) -> None:
    session_ids = [sessions.create(str(project)).id for _ in range(4)]
    queued: dict[uuid.UUID, list[uuid.UUID]] = {sid: [] for sid in session_ids}
    for index in range(6):
        for sid in session_ids:
            queued[sid].append(jobs.enqueue(sid, f"prompt {index}")[0].id)

    lock = threading.Lock()
    running: set[uuid.UUID] = set()
    claims: list[tuple[uuid.UUID, uuid.UUID]] = []
    overlaps: list[uuid.UUID] = []
    total = sum(len(ids) for ids in queued.values())

    def work(index: int) -> None:
        idle_rounds = 0
        while idle_rounds < 200:
            with lock:
                if len(claims) == total:
                    return
            job = jobs.claim_next(f"worker-{index}")
            if job is None:
                idle_rounds += 1
                threading.Event().wait(0.002)
                continue
            idle_rounds = 0
            with lock:
                if job.session_id in running:
                    overlaps.append(job.session_id)
                running.add(job.session_id)
                claims.append((job.session_id, job.id))
            threading.Event().wait(0.001)  # the "run", while other workers keep claiming
            with lock:
                running.discard(job.session_id)
            jobs.finish(job.id, JobStatus.COMPLETED)

    run_in_threads(8, work)

    assert not overlaps
    assert Counter(job_id for _, job_id in claims) == Counter(
        job_id for ids in queued.values() for job_id in ids
    )
    for sid in session_ids:
        assert [job_id for s, job_id in claims if s == sid] == queued[sid]
        assert jobs.list_queue(sid) == []


def test_the_database_refuses_a_second_processing_job_in_a_session(
    jobs: JobService, session_id: uuid.UUID, db: Database
) -> None:
    jobs.enqueue(session_id, "first")
    second, _ = jobs.enqueue(session_id, "second")
    assert jobs.claim_next("w") is not None
    with pytest.raises(IntegrityError), db.write() as session:
        session.execute(
            sa.update(JobRow).where(JobRow.id == second.id).values(status=JobStatus.PROCESSING)
        )
    # Other statuses are not limited.
    with db.write() as session:
        session.add(JobRow(session_id=session_id, prompt="old", status=JobStatus.FAILED))
        session.add(JobRow(session_id=session_id, prompt="old", status=JobStatus.FAILED))


def test_a_claim_that_loses_to_the_index_returns_none(
    jobs: JobService, session_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = jobs.enqueue(session_id, "first")
    second, _ = jobs.enqueue(session_id, "second")
    assert jobs.claim_next("w1") is not None

    def careless(session_ids: object = None) -> sa.Select[uuid.UUID]:
        # A claim query that forgets the running job, as a racing claimer would see it.
        return (
            sa.select(JobRow.id)
            .where(JobRow.status == JobStatus.PENDING)
            .order_by(JobRow.created_at)
            .limit(1)
        )

    monkeypatch.setattr("pocketcode.services.jobs._claimable", careless)
    assert jobs.claim_next("w2") is None
    assert jobs.get(first.id).worker_id == "w1"
    assert jobs.get(second.id).status is JobStatus.PENDING


def test_cancel_pending(jobs: JobService, session_id: uuid.UUID) -> None:
    running, _ = jobs.enqueue(session_id, "running")
    waiting, _ = jobs.enqueue(session_id, "waiting")
    last, _ = jobs.enqueue(session_id, "last")
    assert jobs.claim_next("w") is not None

    cancelled = jobs.cancel_pending(str(waiting.id))
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert [job.id for job in jobs.list_queue(session_id)] == [last.id]
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.cancel_pending(waiting.id)
    with pytest.raises(Conflict, match="already processing"):
        jobs.cancel_pending(running.id)
    with pytest.raises(NotFound):
        jobs.cancel_pending(uuid.uuid4())


def test_finish_records_the_outcome_and_refuses_invalid_transitions(
    jobs: JobService, session_id: uuid.UUID
) -> None:
    job, _ = jobs.enqueue(session_id, "go")
    with pytest.raises(InvalidTransition):
        jobs.finish(job.id, JobStatus.COMPLETED)  # pending → completed
    with pytest.raises(InvalidInput):
        jobs.finish(job.id, JobStatus.PROCESSING)
    assert jobs.claim_next("w") is not None
    with pytest.raises(Conflict):
        jobs.finish(job.id, JobStatus.COMPLETED, worker_id="someone-else")

    done = jobs.finish(
        job.id,
        JobStatus.FAILED,
        error="The API answered 429: rate limited.",
        error_code="api_429",
        input_tokens=10,
        output_tokens=5,
        cache_creation_tokens=3,
        cache_read_tokens=2,
        cost_usd=Decimal("0.0012"),
        cli_cost_usd=Decimal("0.0011"),
        num_turns=1,
        duration_ms=1500,
        worker_id="w",
    )
    stored = jobs.get(job.id)
    for row in (done, stored):
        assert row.status is JobStatus.FAILED
        assert (row.error, row.error_code) == ("The API answered 429: rate limited.", "api_429")
        assert (row.input_tokens, row.output_tokens) == (10, 5)
        assert (row.cache_creation_tokens, row.cache_read_tokens) == (3, 2)
        assert row.cost_usd == Decimal("0.0012")
        assert row.cli_cost_usd == Decimal("0.0011")
        assert (row.num_turns, row.duration_ms) == (1, 1500)
        assert row.finished_at is not None
    for target in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.INTERRUPTED):
        with pytest.raises(InvalidTransition):
            jobs.finish(job.id, target)


def test_requeue_runs_a_failed_prompt_again_at_the_back_of_the_queue(
    jobs: JobService, session_id: uuid.UUID
) -> None:
    failed, _ = jobs.enqueue(session_id, "flaky")
    assert jobs.claim_next("w") is not None
    jobs.finish(failed.id, JobStatus.FAILED, error="boom", input_tokens=7, num_turns=1)
    later, _ = jobs.enqueue(session_id, "later")

    again = jobs.requeue(failed.id)
    assert again.status is JobStatus.PENDING
    assert (again.error, again.worker_id, again.finished_at) == (None, None, None)
    assert [job.id for job in jobs.list_queue(session_id)] == [later.id, failed.id]

    first = jobs.claim_next("w")
    assert first is not None and first.id == later.id
    jobs.finish(first.id, JobStatus.COMPLETED)
    second = jobs.claim_next("w")
    assert second is not None and second.id == failed.id and second.attempts == 2
    done = jobs.finish(second.id, JobStatus.COMPLETED, input_tokens=3, num_turns=2)
    # What every attempt used.
    assert (done.input_tokens, done.num_turns) == (10, 3)
    with pytest.raises(InvalidTransition):
        jobs.requeue(done.id)
    pending, _ = jobs.enqueue(session_id, "pending")
    with pytest.raises(InvalidTransition):
        jobs.requeue(pending.id)


def test_interrupt_processing_at_start_up(
    jobs: JobService, sessions: SessionService, project: Path
) -> None:
    ids = [sessions.create(str(project)).id for _ in range(3)]
    for sid in ids:
        jobs.enqueue(sid, "run")
    waiting, _ = jobs.enqueue(ids[0], "waiting")
    mine = jobs.claim_next("host-a:1")
    other = jobs.claim_next("host-b:1")
    third = jobs.claim_next("host-a:1")
    assert mine and other and third

    assert jobs.interrupt_processing(set()) == []
    only_a = jobs.interrupt_processing({"host-a:1"}, "the server on host-a stopped")
    assert {job.id for job in only_a} == {mine.id, third.id}
    for job in only_a:
        assert job.status is JobStatus.INTERRUPTED
        assert job.error == "the server on host-a stopped"
        assert job.error_code == "interrupted"
        assert job.finished_at is not None
    assert jobs.get(other.id).status is JobStatus.PROCESSING

    rest = jobs.interrupt_processing()
    assert [job.id for job in rest] == [other.id]
    assert rest[0].error and "interrupted" in rest[0].error
    assert jobs.get(waiting.id).status is JobStatus.PENDING
    assert jobs.interrupt_processing() == []
    # The session's queue moves on; the interrupted run waits for the user.
    next_job = jobs.claim_next("host-a:2")
    assert next_job is not None and next_job.id == waiting.id
    assert jobs.requeue(mine.id).status is JobStatus.PENDING


def test_heartbeats_and_stalled_jobs(
    jobs: JobService, session_id: uuid.UUID, sessions: SessionService, project: Path, db: Database
) -> None:
    job, _ = jobs.enqueue(session_id, "slow")
    other, _ = jobs.enqueue(sessions.create(str(project)).id, "fresh")
    assert jobs.claim_next("dead-worker") is not None
    assert jobs.claim_next("live-worker") is not None
    with db.write() as session:
        session.execute(
            sa.update(JobRow)
            .where(JobRow.id == job.id)
            .values(heartbeat_at=utcnow() - timedelta(minutes=5))
        )
    assert [row.id for row in jobs.stalled(timedelta(minutes=1))] == [job.id]

    assert jobs.heartbeat(job.id) is True
    assert jobs.stalled(timedelta(minutes=1)) == []
    assert jobs.heartbeat(other.id, worker_id="dead-worker") is False
    jobs.finish(job.id, JobStatus.INTERRUPTED, error="its worker stopped answering")
    assert jobs.heartbeat(job.id) is False
    with pytest.raises(NotFound):
        jobs.heartbeat(uuid.uuid4())


def test_jobs_of_a_deleted_session_are_not_claimed(
    jobs: JobService, sessions: SessionService, session_id: uuid.UUID
) -> None:
    jobs.enqueue(session_id, "orphan")
    sessions.delete(session_id)
    assert jobs.claim_next("w") is None


def test_a_claim_can_be_limited_to_some_sessions(
    jobs: JobService, sessions: SessionService, project: Path
) -> None:
    # What `pocketcode run` does beside a server: it runs its own prompt, never the server's.
    mine = sessions.create(str(project)).id
    theirs = sessions.create(str(project)).id
    their_job, _ = jobs.enqueue(theirs, "queued through the web app", {})
    my_job, _ = jobs.enqueue(mine, "queued from the terminal", {})
    claimed = jobs.claim_next("terminal", {mine})
    assert claimed is not None and claimed.id == my_job.id
    assert jobs.claim_next("terminal", {mine}) is None
    assert jobs.get(their_job.id).status is JobStatus.PENDING
    other = jobs.claim_next("server")
    assert other is not None and other.id == their_job.id
