"""Live events: order and filtering, bounded slow subscribers, job wake-ups, and on PostgreSQL
the fan-out between server processes (a real second OS process), large events and a lost
listening connection."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from pocketcode.db.engine import Database
from pocketcode.domain.states import JobStatus, MessageType
from pocketcode.services.events import (
    ALL_SESSIONS,
    MAX_NOTIFY_BYTES,
    Event,
    EventBus,
    Subscription,
    message_event,
    resync_event,
)
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.sessions import SessionService

REPO = Path(__file__).resolve().parents[2]
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def sessions(db: Database, tmp_path: Path) -> SessionService:
    (tmp_path / "projects" / "demo").mkdir(parents=True)
    return SessionService(db, [tmp_path / "projects"])


@pytest.fixture
def session_id(sessions: SessionService, tmp_path: Path) -> uuid.UUID:
    return sessions.create(str(tmp_path / "projects" / "demo")).id


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def _next(subscription: Subscription, seconds: float = 5.0) -> Event:
    async with asyncio.timeout(seconds):
        return await subscription.get()


def test_subscribers_get_their_sessions_events_in_order(db: Database) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> None:
        bus = EventBus(db)
        await bus.start()
        with (
            bus.subscribe(first) as only_first,
            bus.subscribe(second) as only_second,
            bus.subscribe() as everything,
        ):
            for index in range(50):
                await bus.publish(
                    Event(first if index % 2 else second, "delta", None, {"i": index})
                )
            assert [(await _next(only_first)).data["i"] for _ in range(25)] == list(range(1, 50, 2))
            assert [(await _next(only_second)).data["i"] for _ in range(25)] == list(
                range(0, 50, 2)
            )
            assert [(await _next(everything)).data["i"] for _ in range(50)] == list(range(50))
            assert only_first.pending == only_second.pending == everything.pending == 0
        # A closed subscription receives nothing and its iteration ends.
        await bus.publish(Event(first, "delta", None, {}))
        assert only_first.pending == 1  # just the end marker
        assert [event async for event in only_first] == []
        await bus.stop()

    _run(scenario)


def test_message_events_carry_the_stored_message(db: Database, session_id: uuid.UUID) -> None:
    row = MessageService(db).append(
        session_id,
        NewMessage(
            MessageType.ASSISTANT,
            "Done.",
            subtype="text",
            raw={"content": [{"type": "text", "text": "Done."}]},
            provider_message_id="msg_1",
            parent_tool_use_id="toolu_1",
            model="claude-sonnet-4-5",
            input_tokens=12,
            output_tokens=3,
            cost_usd=Decimal("0.000081"),
        ),
    )
    event = message_event(row)
    assert (event.session_id, event.type, event.seq) == (session_id, "message", 1)
    data = event.data
    assert data["id"] == str(row.id) and data["seq"] == 1
    assert (data["type"], data["subtype"], data["text"]) == ("assistant", "text", "Done.")
    assert data["raw"] == {"content": [{"type": "text", "text": "Done."}]}
    assert (data["parentToolUseId"], data["providerMessageId"]) == ("toolu_1", "msg_1")
    assert data["model"] == "claude-sonnet-4-5"
    assert data["usage"] == {
        "inputTokens": 12,
        "outputTokens": 3,
        "cacheCreationTokens": 0,
        "cacheReadTokens": 0,
    }
    assert data["costUsd"] == pytest.approx(0.000081)
    assert data["createdAt"].endswith("Z")
    json.dumps(data)
    plain = MessageService(db).append(session_id, NewMessage(MessageType.USER, "hi"))
    assert "usage" not in message_event(plain).data
    assert "costUsd" not in message_event(plain).data


def test_a_slow_subscriber_gets_one_resync_and_never_blocks_the_publisher(db: Database) -> None:
    session = uuid.uuid4()

    async def scenario() -> None:
        bus = EventBus(db)
        await bus.start()
        slow = bus.subscribe(session, max_queue=10)
        everything = bus.subscribe(max_queue=10)
        started = time.perf_counter()
        for index in range(5000):
            await bus.publish(Event(session, "delta", None, {"i": index}))
        assert time.perf_counter() - started < 2
        assert slow.pending == 11 and everything.pending == 11  # bounded
        assert [(await _next(slow)).data["i"] for _ in range(10)] == list(range(10))
        marker = await _next(slow)
        assert (marker.type, marker.session_id) == ("resync", session)
        assert slow.dropped == 4990
        global_marker = [await _next(everything) for _ in range(11)][-1]
        assert (global_marker.type, global_marker.session_id) == ("resync", ALL_SESSIONS)
        # Drained: events flow again, and the subscriber replays the gap from the database.
        await bus.publish(Event(session, "delta", None, {"i": "again"}))
        assert (await _next(slow)).data == {"i": "again"}
        await bus.stop()
        assert [event async for event in slow] == []

    _run(scenario)


def test_a_resync_of_one_session_makes_the_every_session_subscriber_replay_all(
    db: Database,
) -> None:
    """After a marker, a subscriber drops every event until it has read it: for a subscriber
    of every session, a marker about one session (a remote event too large for NOTIFY) must
    ask it to replay every session, or another session's message arriving meanwhile is lost."""
    first, second = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> None:
        bus = EventBus(db)
        await bus.start()
        with bus.subscribe() as everything, bus.subscribe(first) as one:
            bus._deliver(resync_event(first, "oversize"))
            bus._deliver(Event(second, "message", 7, {}))  # dropped: the marker is unread
            marker = await _next(everything)
            assert (marker.type, marker.session_id, marker.data) == (
                "resync",
                ALL_SESSIONS,
                {"reason": "oversize"},
            )
            assert everything.dropped == 1
            # A subscriber of the session itself keeps the session's marker.
            assert (await _next(one)).session_id == first
        await bus.stop()

    _run(scenario)


def test_wait_for_jobs_wakes_up_at_once(db: Database) -> None:
    async def scenario() -> None:
        bus = EventBus(db)
        await bus.start()
        started = time.perf_counter()
        assert await bus.wait_for_jobs(0.05) is False
        assert time.perf_counter() - started >= 0.04

        woken_at: list[float] = []

        async def worker() -> None:
            assert await bus.wait_for_jobs(5) is True
            woken_at.append(time.perf_counter())

        task = asyncio.create_task(worker())
        await asyncio.sleep(0.05)
        notified_at = time.perf_counter()
        await bus.notify_jobs()
        await task
        # Woken by the notification, not by the 5 s timeout (bound loose for a loaded CI).
        assert woken_at[0] - notified_at < 1.0
        # A notification while nobody waits is not lost.
        await bus.notify_jobs()
        assert await bus.wait_for_jobs(0) is True
        assert await bus.wait_for_jobs(0.01) is False
        await bus.stop()

    _run(scenario)


@postgresql_only
def test_events_and_jobs_cross_server_processes(
    db: Database, session_id: uuid.UUID, database_url: str
) -> None:
    count = 200
    jobs = JobService(db)

    async def scenario() -> None:
        bus = EventBus(db)
        await bus.start()
        subscription = bus.subscribe(session_id)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.event_publisher",
            database_url,
            str(session_id),
            str(count),
            cwd=REPO,
            stderr=subprocess.PIPE,
        )
        received = [await _next(subscription, 20) for _ in range(count + 1)]
        assert await bus.wait_for_jobs(10) is True
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()

        messages, delta = received[:count], received[count]
        assert [event.type for event in messages] == ["message"] * count
        assert [event.seq for event in messages] == list(range(1, count + 1))
        stored = MessageService(db).page(session_id, limit=1000).messages
        assert [message_event(row) for row in stored[:count]] == messages
        assert messages[7].data["text"] == "message 7"
        assert messages[7].data["raw"] == {"index": 7, "text": "é" * 10}
        assert (delta.type, delta.seq, delta.data) == ("delta", None, {"text": "typing…"})
        # The prompt queued by the other process runs here, once.
        claimed = jobs.claim_next("test-process")
        assert claimed is not None and claimed.prompt == "from the other process"
        assert jobs.claim_next("test-process") is None
        jobs.finish(claimed.id, JobStatus.COMPLETED)
        # Exactly once: nothing else arrives (the publisher's echo is not delivered twice).
        await asyncio.sleep(0.2)
        assert subscription.pending == 0
        await bus.stop()

    _run(scenario)


@postgresql_only
def test_two_buses_share_events_and_large_events_become_a_resync(
    db: Database, session_id: uuid.UUID
) -> None:
    async def scenario() -> None:
        here, there = EventBus(db), EventBus(db)
        await here.start()
        await there.start()
        with here.subscribe(session_id) as local, there.subscribe() as remote:
            await here.publish(Event(session_id, "state", None, {"isWorking": True}))
            assert (await _next(local)).data == {"isWorking": True}
            assert (await _next(remote)).data == {"isWorking": True}

            # Identical events sent together (one batch, one transaction, where PostgreSQL
            # folds identical notifications into one): each arrives.
            for _ in range(3):
                await here.publish(Event(session_id, "delta", None, {"text": "\n"}))
            for _ in range(3):
                assert (await _next(remote)).data == {"text": "\n"}
                assert (await _next(local)).data == {"text": "\n"}

            huge = {"text": "x" * MAX_NOTIFY_BYTES}
            await here.publish(Event(session_id, "permission", None, huge))
            assert (await _next(local)).data == huge
            marker = await _next(remote)
            # A subscriber of every session replays every session (see the test above).
            assert (marker.type, marker.session_id) == ("resync", ALL_SESSIONS)
            assert marker.data == {"reason": "oversize"}

            row = MessageService(db).append(session_id, NewMessage(MessageType.USER, "é" * 9000))
            await here.publish(message_event(row))
            assert (await _next(remote)) == message_event(row)
            assert local.pending == 1 and (await _next(local)) == message_event(row)

            # A message that is not in the database (published before it was stored): resync.
            await here.publish(Event(session_id, "message", 999, {}))
            assert (await _next(remote)).type == "resync"

            started = time.perf_counter()
            await here.notify_jobs()
            assert await there.wait_for_jobs(5) is True
            assert time.perf_counter() - started < 1
        await here.stop()
        await there.stop()

    _run(scenario)


@postgresql_only
def test_events_that_could_not_be_sent_become_a_resync_without_waiting_for_more(
    db: Database, session_id: uuid.UUID
) -> None:
    """Both tries at sending a batch failed (the notify connection was lost): the other
    processes are told to resync at once, not with the next event, which may never come (a
    run's last message and its "done")."""

    async def scenario() -> None:
        here, there = EventBus(db, reconnect_delay=0.05), EventBus(db)
        await here.start()
        await there.start()
        connect = here._connect
        refusals = [OSError("down"), OSError("still down")]

        async def flaky(application_name: str) -> Any:
            if application_name == "pocketcode-notify" and refusals:
                raise refusals.pop(0)
            return await connect(application_name)

        here._connect = flaky  # type: ignore[method-assign]
        with there.subscribe() as remote:
            await here.publish(Event(session_id, "done", None, {"status": "completed"}))
            marker = await _next(remote)
            assert (marker.type, marker.session_id, marker.data) == (
                "resync",
                ALL_SESSIONS,
                {"reason": "remote"},
            )
            # And the sending goes on (counting the notice as a queued event ended it).
            await here.publish(Event(session_id, "state", None, {"isWorking": False}))
            assert (await _next(remote)).data == {"isWorking": False}
        await here.stop()
        await there.stop()

    _run(scenario)


@postgresql_only
def test_a_lost_listening_connection_reconnects_and_asks_for_resync(
    db: Database, session_id: uuid.UUID, database_url: str
) -> None:
    libpq = make_url(database_url).set(drivername="postgresql").render_as_string(False)

    async def scenario() -> None:
        here = EventBus(db, reconnect_delay=0.05)
        there = EventBus(db)
        forgotten: list[str] = []
        here.when_revoked(lambda: forgotten.append("credentials"))
        await here.start()
        await there.start()
        assert forgotten == []
        with here.subscribe(session_id) as subscription:
            with psycopg.connect(libpq, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s",
                    ("pocketcode-listen",),
                ).fetchone()
            assert killed is not None and killed[0] == 2
            marker = await _next(subscription)
            assert (marker.type, marker.session_id, marker.data) == (
                "resync",
                session_id,
                {"reason": "reconnected"},
            )
            # A revocation announced meanwhile may be lost: cached credentials are checked again.
            assert forgotten == ["credentials"]
            # Workers re-poll after a reconnect, and events flow again.
            assert await here.wait_for_jobs(1) is True
            await there.publish(Event(session_id, "done", None, {"status": "completed"}))
            assert (await _next(subscription)).data == {"status": "completed"}
        await here.stop()
        await there.stop()

    _run(scenario)
