"""The live event streams over real HTTP: the app is served by uvicorn on a free 127.0.0.1 port
inside the test's event loop (an ASGI transport buffers whole responses, so it cannot show a
stream), and an httpx client reads the frames as a browser's EventSource would. On SQLite and
PostgreSQL; the reconnect test drives the real Claude Code CLI against the scripted fake model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.devtools.fake_model import slow, text, tool_use
from pocketcode.domain.states import MessageType
from pocketcode.services.events import EventBus, message_event, resync_event
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.runtime import Runtime
from pocketcode.services.sessions import SessionService
from pocketcode.web.app import create_app
from pocketcode.web.event_streams import StreamOptions, encode_all_cursor, parse_all_cursor
from pocketcode.web.routes.events import stream_options
from tests.e2e import conftest as e2e_fixtures
from tests.e2e.run_stack import RunStack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

PASSWORD = "pw-events-correct-horse-4411"

# The fixtures of the reconnect test: a run manager with the real CLI and the fake model.
claude_executable = e2e_fixtures.claude_executable
fake_model = e2e_fixtures.fake_model
run_stack = e2e_fixtures.run_stack


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- a served app and an EventSource-like reader -------------------------------------------------


@dataclass
class Served:
    app: FastAPI
    base_url: str
    token: str
    server: uvicorn.Server

    @property
    def db(self) -> Database:
        database: Database = self.app.state.pocketcode.db
        return database

    def client(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {self.token}", **headers},
            timeout=httpx.Timeout(10.0),
        )


@dataclass
class Frame:
    event: str | None
    id: str | None
    data: Any
    retry: int | None = None


_readers: weakref.WeakKeyDictionary[httpx.Response, AsyncIterator[Frame]] = (
    weakref.WeakKeyDictionary()
)


def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The frames of a response, read by one parser however many times a test asks."""
    if response not in _readers:
        _readers[response] = _parse(response)
    return _readers[response]


async def _parse(response: httpx.Response) -> AsyncIterator[Frame]:
    """Parse a text/event-stream body as EventSource does (one frame per blank line)."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = value
            yield Frame(
                fields.get("event"),
                fields.get("id"),
                json.loads(fields["data"]) if "data" in fields else None,
                int(fields["retry"]) if "retry" in fields else None,
            )


@asynccontextmanager
async def serve(
    settings: Settings, db: Database, bus: EventBus, runtime: Runtime | None = None, **options: Any
) -> AsyncIterator[Served]:
    app = create_app(settings, db, run_agents=False)
    app.dependency_overrides[stream_options] = lambda: StreamOptions(**options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
                await asyncio.sleep(0.01)
        state = app.state.pocketcode
        # The bus the test publishes on (the app runs without its own agent runtime).
        state.runtime = runtime or cast(Any, SimpleNamespace(bus=bus))
        user = await anyio.to_thread.run_sync(state.auth.create_user, "owner", PASSWORD)
        token = await anyio.to_thread.run_sync(state.auth.create_token, user.id, "events")
        yield Served(app, f"http://127.0.0.1:{port}", token.token, server)
    finally:
        server.should_exit = True
        with anyio.fail_after(10):
            await task
        sock.close()


@pytest.fixture
async def bus(db: Database) -> AsyncIterator[EventBus]:
    event_bus = EventBus(db)
    await event_bus.start()
    yield event_bus
    await event_bus.stop()


def new_session(db: Database, tmp_path: Path) -> uuid.UUID:
    project = tmp_path / f"project-{uuid.uuid4().hex[:6]}"
    project.mkdir()
    return SessionService(db, [tmp_path]).create(str(project)).id


async def store(db: Database, session_id: uuid.UUID, text_: str) -> Any:
    return await anyio.to_thread.run_sync(
        MessageService(db).append, session_id, NewMessage(MessageType.ASSISTANT, text_)
    )


async def store_and_publish(db: Database, bus: EventBus, session_id: uuid.UUID, n: int) -> None:
    for index in range(n):
        await bus.publish(message_event(await store(db, session_id, f"message {index}")))


async def read_until(
    response: httpx.Response, stop: Callable[[Frame], bool], seconds: float = 10
) -> list[Frame]:
    seen: list[Frame] = []
    with anyio.fail_after(seconds):
        async for item in frames(response):
            seen.append(item)
            if stop(item):
                return seen
    raise AssertionError(f"the stream ended early: {seen}")


async def read_messages(response: httpx.Response, count: int) -> list[Frame]:
    seen: list[Frame] = []

    def enough(item: Frame) -> bool:
        seen.append(item)
        return len(seqs(seen)) == count

    return await read_until(response, enough)


def is_heartbeat(item: Frame) -> bool:
    return item.event == "heartbeat"


def seqs(seen: list[Frame]) -> list[int]:
    return [item.data["seq"] for item in seen if item.event == "message"]


# --- replay, live, ids --------------------------------------------------------------------------


async def test_last_event_id_replays_the_stored_messages_after_it_then_live_ones(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    for index in range(5):
        await store(db, session_id, f"before {index}")
    async with serve(settings, db, bus) as served, served.client() as client:
        url = f"/api/sessions/{session_id}/events"
        async with client.stream("GET", url, headers={"Last-Event-ID": "2"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            opening = await read_until(response, is_heartbeat)
            assert opening[0].retry == 3000
            replayed = [item for item in opening if item.event == "message"]
            assert [(item.id, item.data["seq"]) for item in replayed] == [
                ("3", 3),
                ("4", 4),
                ("5", 5),
            ]
            assert all(item.data["sessionId"] == str(session_id) for item in replayed)
            assert opening[-1].id == "5"  # the heartbeat carries the cursor

            # Live: a republished old message is not repeated; an ephemeral event has no id;
            # a message published before the one it follows (another process's) is read from
            # the database in order.
            row6 = await store(db, session_id, "six")
            await bus.publish(message_event(row6))
            row7 = await store(db, session_id, "seven")
            row8 = await store(db, session_id, "eight")
            await bus.publish(message_event(row6))
            await bus.publish(message_event(row8))
            await bus.publish(message_event(row7))
            from pocketcode.services.events import Event

            await bus.publish(Event(session_id, "delta", None, {"text": "par"}))
            live = await read_until(response, lambda item: item.event == "delta")
            assert [(item.id, item.data["seq"]) for item in live if item.event == "message"] == [
                ("6", 6),
                ("7", 7),
                ("8", 8),
            ]
            assert live[-1].id is None
            assert live[-1].data == {"text": "par", "sessionId": str(session_id)}

        # A first connection with `after` (EventSource cannot set headers) and without it.
        async with client.stream("GET", url, params={"after": "6"}) as response:
            assert seqs(await read_until(response, is_heartbeat)) == [7, 8]
        async with client.stream("GET", url) as response:
            opening = await read_until(response, is_heartbeat)
            assert seqs(opening) == []
            assert opening[-1].id == "8"


async def test_the_stream_of_every_session_replays_each_session_exactly(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    first, second, quiet = (new_session(db, tmp_path) for _ in range(3))
    for session_id in (first, second, quiet):
        await store(db, session_id, "already fetched")
    async with serve(settings, db, bus) as served, served.client() as client:
        async with client.stream("GET", "/api/events") as response:
            opening = await read_until(response, is_heartbeat)
            assert seqs(opening) == []  # a first connection starts from now
            await store_and_publish(db, bus, first, 2)
            await store_and_publish(db, bus, second, 1)
            live = await read_messages(response, 3)
            received = [(i.data["sessionId"], i.data["seq"]) for i in live if i.event == "message"]
            assert sorted(received) == sorted([(str(first), 2), (str(first), 3), (str(second), 2)])
            cursor = [item.id for item in live if item.id][-1]
        assert cursor is not None and cursor.startswith("m1.")
        # Each message's cursor (kept up to date frame by frame) is the one its stream's
        # positions encode, and places the message's session at that message.
        for item in live:
            if item.event == "message":
                assert item.id is not None
                since, positions = parse_all_cursor(item.id)
                assert encode_all_cursor(since, positions) == item.id
                assert positions[uuid.UUID(item.data["sessionId"])] == item.data["seq"]

        # Missed while away: messages of every session, the quiet one included.
        await store(db, first, "missed")
        await store(db, quiet, "missed")
        await store(db, quiet, "missed too")
        async with client.stream("GET", "/api/events", headers={"Last-Event-ID": cursor}) as again:
            replay = await read_until(again, is_heartbeat)
        received = [(i.data["sessionId"], i.data["seq"]) for i in replay if i.event == "message"]
        assert sorted(received) == sorted([(str(first), 4), (str(quiet), 2), (str(quiet), 3)])


async def test_heartbeats_keep_coming_with_the_cursor(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    await store(db, session_id, "one")
    async with (
        serve(settings, db, bus, heartbeat_interval=0.1) as served,
        served.client() as client,
        client.stream("GET", f"/api/sessions/{session_id}/events") as response,
    ):
        beats = [item for item in await read_until(response, is_heartbeat) if is_heartbeat(item)]
        count = 0
        with anyio.fail_after(5):
            async for item in frames(response):
                if is_heartbeat(item):
                    beats.append(item)
                    count += 1
                    if count == 3:
                        break
        assert [beat.id for beat in beats] == ["1"] * 4
        assert beats[0].data["sessionId"] == str(session_id)


async def test_a_busy_stream_still_gets_its_heartbeats(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    """Heartbeats keep their period while events keep the stream busy (they carry the cursor
    a client without messages comes back with)."""
    from pocketcode.services.events import Event

    session_id = new_session(db, tmp_path)
    async with (
        serve(settings, db, bus, heartbeat_interval=0.1) as served,
        served.client() as client,
        client.stream("GET", f"/api/sessions/{session_id}/events") as response,
    ):
        await read_until(response, is_heartbeat)

        async def keep_busy() -> None:
            for index in range(100):
                await bus.publish(Event(session_id, "delta", None, {"i": index}))
                await asyncio.sleep(0.01)

        busy = asyncio.create_task(keep_busy())
        seen = await read_until(response, lambda item: item.data.get("i") == 99)
        await busy
    deltas = [item.data["i"] for item in seen if item.event == "delta"]
    assert deltas == list(range(100))
    assert sum(map(is_heartbeat, seen)) >= 4  # ~1 s of deltas, a heartbeat every 0.1 s


async def test_stream_headers_keep_proxies_from_caching_or_buffering(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    async with serve(settings, db, bus) as served, served.client() as client:
        for path in (f"/api/sessions/{session_id}/events", "/api/events"):
            async with client.stream("GET", path) as response:
                headers = response.headers
                assert headers["content-type"] == "text/event-stream; charset=utf-8"
                assert headers["cache-control"] == "no-cache, no-store, no-transform"
                assert headers["x-accel-buffering"] == "no"
                assert headers["connection"] == "keep-alive"
                assert headers["x-content-type-options"] == "nosniff"  # the middleware's
                assert headers["transfer-encoding"] == "chunked"


async def test_a_client_that_leaves_frees_its_subscription_at_once(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    paths = [
        f"/api/sessions/{session_id}/events",
        "/api/events",
        f"/api/sessions/{session_id}/messages/stream",
    ]
    # Long heartbeats: nothing is written to the stream after the client left, so only the
    # disconnect can end it.
    async with serve(settings, db, bus, heartbeat_interval=60) as served:
        for path in paths:
            async with served.client() as client, client.stream("GET", path) as response:
                await anext(frames(response))  # the opening frame: subscribed
                assert bus.subscriber_count == 1
            with anyio.fail_after(2):
                while bus.subscriber_count:  # noqa: ASYNC110 - a counter, no event to wait on
                    await asyncio.sleep(0.01)


async def test_open_streams_end_cleanly_when_the_server_stops(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    """uvicorn waits for open responses before it shuts the app down: every kind of stream
    ends its body when the server is told to exit, and the server stops."""
    session_id = new_session(db, tmp_path)
    paths = [
        f"/api/sessions/{session_id}/events",
        "/api/events",
        f"/api/sessions/{session_id}/messages/stream",
    ]
    async with (
        serve(settings, db, bus, heartbeat_interval=60, pokecode_heartbeat_interval=60) as served,
        served.client() as client,
        contextlib.AsyncExitStack() as streams,
    ):
        responses = [await streams.enter_async_context(client.stream("GET", p)) for p in paths]
        for response in responses:
            await anext(frames(response))
        served.server.should_exit = True
        with anyio.fail_after(3):
            for response in responses:
                # The end of a chunked body, not a cut connection (httpx would raise).
                rest = [item async for item in frames(response)]
                assert all(item.event != "message" for item in rest)
        assert bus.subscriber_count == 0


async def test_a_resync_is_passed_on_and_followed_by_the_missed_messages(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    async with (
        serve(settings, db, bus) as served,
        served.client() as client,
        client.stream("GET", f"/api/sessions/{session_id}/events") as response,
    ):
        await read_until(response, is_heartbeat)
        # Stored but never delivered (a subscriber that fell behind), then the bus's marker.
        await store(db, session_id, "lost one")
        await store(db, session_id, "lost two")
        await bus.publish(resync_event(session_id, "overflow"))
        await store_and_publish(db, bus, session_id, 1)
        seen = await read_until(
            response, lambda item: item.event == "message" and item.data["seq"] == 3
        )
        assert seen[0].event == "resync" and seen[0].data["reason"] == "overflow"
        assert seen[0].id is None
        assert [(item.id, item.data["seq"]) for item in seen[1:]] == [("1", 1), ("2", 2), ("3", 3)]


async def test_an_overflowing_subscriber_loses_nothing(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    async with (
        serve(settings, db, bus, max_queue=2) as served,
        served.client() as client,
        client.stream("GET", f"/api/sessions/{session_id}/events") as response,
    ):
        await read_until(response, is_heartbeat)
        await store_and_publish(db, bus, session_id, 30)  # far more than the queue holds
        seen = await read_until(
            response, lambda item: item.event == "message" and item.data["seq"] == 30
        )
        assert seqs(seen) == list(range(1, 31))


async def test_a_cursor_ahead_of_the_session_or_unreadable_asks_for_a_resync(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    await store(db, session_id, "one")
    async with serve(settings, db, bus) as served, served.client() as client:
        for cursor in ("99", "not-a-seq", "3000000000"):
            headers = {"Last-Event-ID": cursor}
            url = f"/api/sessions/{session_id}/events"
            async with client.stream("GET", url, headers=headers) as response:
                seen = await read_until(response, is_heartbeat)
            assert [item.event for item in seen[1:]] == ["resync", "heartbeat"]
            assert seen[-1].id == "1"
        # Unreadable, or a time no datetime holds (year 31,690: the stream used to end there).
        for cursor in (
            "x",
            "m1.999999999999999",
            f"m1.1.{session_id.hex}-1.nope",
            f"m1.{int(time.time() * 1000)}.{session_id.hex}-3000000000",  # seq is 32-bit
            f"m1.{int(time.time() * 1000)}.{uuid.UUID(int=0).hex}-{2**31}",
        ):
            headers = {"Last-Event-ID": cursor}
            async with client.stream("GET", "/api/events", headers=headers) as all_:
                seen = await read_until(all_, is_heartbeat)
            assert [item.event for item in seen[1:]] == ["resync", "heartbeat"], cursor


# --- refusals -----------------------------------------------------------------------------------


async def test_unknown_session_unauthenticated_and_cross_site_streams_are_refused(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    session_id = new_session(db, tmp_path)
    async with serve(settings, db, bus) as served:
        async with served.client() as client:
            for missing in (uuid.uuid4(), "not-an-id"):
                response = await client.get(f"/api/sessions/{missing}/events")
                assert response.status_code == 404
                assert response.json()["code"] == "NOT_FOUND"
        async with httpx.AsyncClient(base_url=served.base_url) as anonymous:
            for path in (f"/api/sessions/{session_id}/events", "/api/events"):
                response = await anonymous.get(path)
                assert response.status_code == 401

            # A browser with the login cookie: another site's page is refused.
            origin = {"origin": served.base_url}
            login = await anonymous.post(
                "/api/auth/login",
                json={"username": "owner", "password": PASSWORD},
                headers=origin,
            )
            assert login.status_code == 200, login.text
            for headers in (
                {"origin": "https://evil.example"},
                {"sec-fetch-site": "cross-site"},
                {"sec-fetch-site": "same-site"},
            ):
                for path in (f"/api/sessions/{session_id}/events", "/api/events"):
                    response = await anonymous.get(path, headers=headers)
                    assert response.status_code == 403, (headers, response.text)
                    assert response.json()["code"] == "FORBIDDEN"
            # The same browser on this site streams.
            headers = {**origin, "sec-fetch-site": "same-origin"}
            path = f"/api/sessions/{session_id}/events"
            async with anonymous.stream("GET", path, headers=headers) as response:
                assert response.status_code == 200
                await read_until(response, is_heartbeat)


# --- reconnects while a real run streams --------------------------------------------------------

StartStack = Callable[..., Awaitable[RunStack]]


async def _reconnecting_reader(
    served: Served,
    path: str,
    cursor: str | None,
    rng: random.Random,
    done: asyncio.Event,
    reconnects: int,
    connected: asyncio.Event,
) -> tuple[list[tuple[str, int]], int, int]:
    """Connect, drop the connection after a random number of frames or a random time,
    reconnect with the last id seen; keep going until the run is done and `reconnects` were
    made. Returns the (session, seq) of every message received, in order, the number of
    connections, and how many of them were made while the run went on. A reader never drops
    before it has an id to come back with: EventSource has nothing to resume from before that
    either."""
    received: list[tuple[str, int]] = []
    connections = during_run = 0

    def take(item: Frame) -> None:
        nonlocal cursor
        if item.event == "message":
            received.append((item.data["sessionId"], item.data["seq"]))
        if item.id is not None:
            cursor = item.id

    async with served.client() as client:
        while connections < reconnects or not done.is_set():
            connections += 1
            during_run += not done.is_set()
            headers = {"Last-Event-ID": cursor} if cursor else {}
            budget = rng.randint(1, 8)
            async with client.stream("GET", path, headers=headers) as response:
                assert response.status_code == 200
                if cursor is None:
                    for item in await read_until(response, lambda item: item.id is not None):
                        take(item)
                connected.set()
                with anyio.move_on_after(rng.random() * 0.1):
                    async for item in frames(response):
                        take(item)
                        budget -= 1
                        if budget <= 0:
                            break
        # Last, a connection that reads until its opening heartbeat: all that was missed.
        headers = {"Last-Event-ID": cursor} if cursor else {}
        async with client.stream("GET", path, headers=headers) as response:
            for item in await read_until(response, is_heartbeat):
                take(item)
    return received, connections, during_run


async def test_readers_dropped_and_reconnecting_get_every_message_once_in_order(
    settings: Settings, db: Database, run_stack: StartStack
) -> None:
    turns = [
        tool_use("Bash", {"command": f"echo step {i}", "description": f"step {i}"})
        for i in range(6)
    ]
    stack = await run_stack(*turns, slow("Finished. " * 40, 0.02), text("Again."))
    runtime = Runtime(stack.bus, stack.runner, stack.permissions, stack.manager)
    done = asyncio.Event()
    async with serve(settings, db, stack.bus, runtime, heartbeat_interval=0.02) as served:
        rng = random.Random(4)
        session_path = f"/api/sessions/{stack.session_id}/events"
        connected = [asyncio.Event(), asyncio.Event()]
        readers = [
            # The session's reader fetched its (empty) list of messages first: `after` 0.
            asyncio.create_task(
                _reconnecting_reader(
                    served, session_path + "?after=0", None, rng, done, 200, connected[0]
                )
            ),
            # The stream of everything starts from now: it must be open before the run starts.
            asyncio.create_task(
                _reconnecting_reader(served, "/api/events", None, rng, done, 200, connected[1])
            ),
        ]
        with anyio.fail_after(30):
            for event in connected:
                await event.wait()
        job, _ = await stack.run("Do the steps", seconds=60)
        done.set()
        results = await asyncio.gather(*readers)

    stored = await anyio.to_thread.run_sync(stack.stored)
    expected = [(str(stack.session_id), row.seq) for row in stored]
    assert len(expected) > 15
    assert str(job.status.value) == "completed"
    for received, connections, during_run in results:
        assert connections >= 200
        assert during_run >= 20, during_run
        assert received == expected


async def store_text(db: Database, session_id: uuid.UUID, text_: str) -> Any:
    """An assistant text message, as the runner stores one."""
    return await anyio.to_thread.run_sync(
        MessageService(db).append,
        session_id,
        NewMessage(MessageType.ASSISTANT, text_, subtype="text"),
    )


async def test_the_pokecode_stream_keeps_pokecodes_framing(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    """Data-only `update` frames per stored message (once, in order, from the session's end),
    a `done` update with `message: null`, heartbeats, and PokéCode's headers."""
    from pocketcode.services.events import Event

    session_id = new_session(db, tmp_path)
    await store_text(db, session_id, "already there: the client fetched it before connecting")
    async with (
        serve(settings, db, bus, pokecode_heartbeat_interval=0.2) as served,
        served.client() as client,
        client.stream("GET", f"/api/sessions/{session_id}/messages/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-no-compression"] == "1"
        assert "no-transform" in response.headers["cache-control"]
        reader = frames(response)
        first = await anext(reader)
        assert first.retry == 3000
        heartbeat = await anext(reader)
        assert heartbeat.event is None and heartbeat.id is None
        assert heartbeat.data == {"type": "heartbeat", "data": {}}

        row2 = await store_text(db, session_id, "two")
        row3 = await store_text(db, session_id, "three")
        await bus.publish(message_event(row3))  # out of order: two is read from the database
        await bus.publish(message_event(row2))
        await bus.publish(Event(session_id, "done", None, {"jobId": "j", "status": "completed"}))
        updates = []
        with anyio.fail_after(10):
            async for item in reader:
                if item.data["type"] == "heartbeat":
                    continue
                assert item.event is None and item.id is None
                updates.append(item.data)
                if item.data["data"]["state"] == "done":
                    break
    texts = [u["data"]["message"]["data"]["data"]["content"] for u in updates[:-1]]
    assert texts == ["two", "three"]
    assert all(u["type"] == "update" and u["data"]["state"] == "running" for u in updates[:-1])
    assert updates[-1] == {"type": "update", "data": {"state": "done", "message": None}}


async def test_the_pokecode_stream_ends_the_run_a_resync_shows_ended(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    """PokéCode's framing has no resync: when events were dropped (an overflow, a lost LISTEN
    connection) and the run ended meanwhile, its "done" may be among them; the stream then
    says "done" itself, once it has replayed the messages, if the session no longer works."""
    from pocketcode.services.events import resync_event

    session_id = new_session(db, tmp_path)
    async with (
        serve(settings, db, bus, pokecode_heartbeat_interval=0.2) as served,
        served.client() as client,
        client.stream("GET", f"/api/sessions/{session_id}/messages/stream") as response,
    ):
        reader = frames(response)
        await anext(reader)  # retry
        await anext(reader)  # a heartbeat: subscribed
        await bus.publish(message_event(await store_text(db, session_id, "working on it")))
        await store_text(db, session_id, "the last words, whose event was dropped")
        await bus.publish(resync_event(session_id, "overflow"))  # "done" was dropped too
        updates = []
        with anyio.fail_after(10):
            async for item in reader:
                if item.data["type"] == "heartbeat":
                    continue
                updates.append(item.data["data"])
                if item.data["data"]["state"] == "done":
                    break
    assert [u["state"] for u in updates] == ["running", "running", "done"]
    assert updates[-1]["message"] is None


async def test_an_every_session_cursor_ahead_of_a_session_asks_for_its_resync(
    settings: Settings, db: Database, bus: EventBus, tmp_path: Path
) -> None:
    """After a database was restored from a backup the client may hold positions past a
    session's end: it is told to resync that session, and the session's next message
    (whose seq the client thinks it has) still reaches it."""
    session_id = new_session(db, tmp_path)
    await store(db, session_id, "one")
    cursor = f"m1.{int(time.time() * 1000)}.{session_id.hex}-50"
    async with serve(settings, db, bus) as served, served.client() as client:
        headers = {"Last-Event-ID": cursor}
        async with client.stream("GET", "/api/events", headers=headers) as response:
            opening = await read_until(response, is_heartbeat)
            await store_and_publish(db, bus, session_id, 1)
            live = await read_until(response, lambda item: item.event == "message")
    [resync] = [item for item in opening if item.event == "resync"]
    assert resync.data == {"sessionId": str(session_id), "reason": "cursor ahead of the session"}
    assert seqs(live) == [2]
