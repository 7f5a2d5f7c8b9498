"""Live event streams that a client can leave and rejoin without missing or repeating a message.

Every stream subscribes to the event bus first, then reads from the database what the client
missed, then forwards live events, skipping the stored messages it already sent. Stored
messages carry an `id:`, a cursor; ephemeral events (delta, state, queue, permission, done)
carry none, so the browser's `lastEventId` stays on the last message sent. The opening
heartbeat and every later one also carry the cursor, so a client that saw no message yet can
still come back exactly where it left.

Cursors
- One session (`/api/sessions/{id}/events`): the seq of the last message sent, e.g. `42`.
  Reconnecting with `Last-Event-ID: 42` replays seq 43, 44… from the database. A client that
  fetched a page of messages before connecting passes the last seq it has as `?after=42`
  (EventSource cannot set headers on its first request); `Last-Event-ID` wins over `after`.
  Without either, the stream starts at the session's current last seq.
- Every session (`/api/events`): `m1.<since_ms>.<session hex>-<seq>.<session hex>-<seq>…`.
  Each listed session is at the seq given. A session not listed is one that had no message
  created at or after `since_ms` (Unix ms) when the cursor was issued: the client has its
  messages created before `since` and none after, so it is replayed from the last seq created
  before `since`. `since` is 60 s (MARGIN) behind the moment the cursor's stream opened and
  moves forward at every reconnect, when sessions quiet since then drop out of the list, so
  the cursor only names sessions active in the last minute or so of its stream. This relies
  on a message's `created_at` (set inside the transaction that gives it its seq) growing with
  its seq and lying within MARGIN of its commit, across server processes too (clocks in step).

A "resync" event from the bus (the subscriber fell behind, or the PostgreSQL listener lost
events) is passed on to the client — ephemeral events may be lost: drop partial deltas and
refetch the session state — and is followed at once by the stored messages missed, replayed
from the database, and the pending permission requests. A cursor that cannot be read, or
that is ahead of the session, also gets a "resync" and the stream starts from now.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from pocketcode.db.engine import Database
from pocketcode.domain.errors import NotFound
from pocketcode.domain.timefmt import iso_z
from pocketcode.services.events import (
    ALL_SESSIONS,
    MESSAGE,
    RESYNC,
    Event,
    EventBus,
    Subscription,
    message_event,
)
from pocketcode.services.messages import MAX_PAGE, MessageService
from pocketcode.services.permissions import PermissionService, request_data
from pocketcode.services.sessions import SessionService
from pocketcode.web.presenters import pokecode_message
from pocketcode.web.sse import frame, frame_json, retry_frame

MARGIN = timedelta(seconds=60)
_COALESCE = 64  # frames sent in one write at most
HEARTBEAT = "heartbeat"
_ALL_CURSOR_PREFIX = "m1"


@dataclass(frozen=True)
class StreamOptions:
    """Tunables of the event streams (a dependency, so tests can shorten them)."""

    heartbeat_interval: float = 15.0
    pokecode_heartbeat_interval: float = 25.0
    max_queue: int = 1000
    retry_ms: int = 3000


# -- cursors ------------------------------------------------------------------------------------


# `session_messages.seq` is a 32-bit integer: a larger one names no message, and PostgreSQL
# refuses to compare the column with it.
MAX_SEQ = 2**31 - 1


def parse_session_cursor(text: str) -> int:
    """A seq (ValueError unless an integer from 0 to MAX_SEQ)."""
    number = _parse_count(text)
    if number > MAX_SEQ:
        raise ValueError("not a seq")
    return number


def _parse_count(text: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ValueError("not a non-negative integer")
    return int(text)


def encode_all_cursor(since_ms: int, positions: dict[uuid.UUID, int]) -> str:
    # Sorted as text: 32 hex digits each, so the order of the ids, without comparing UUIDs
    # (a Python-level comparison; the cursor is written on every message frame).
    parts = sorted([_cursor_part(session_id, seq) for session_id, seq in positions.items()])
    return _all_cursor(since_ms, parts)


def _all_cursor(since_ms: int, parts: Iterable[str]) -> str:
    """The every-session cursor from its session parts, already in order."""
    return ".".join([_ALL_CURSOR_PREFIX, str(since_ms), *parts])


def _cursor_part(session_id: uuid.UUID, seq: int) -> str:
    return f"{_hex(session_id)}-{seq}"


@functools.lru_cache(maxsize=4096)
def _hex(session_id: uuid.UUID) -> str:
    """A session id in cursors (the every-session stream writes one per session per frame)."""
    return session_id.hex


def parse_all_cursor(text: str) -> tuple[int, dict[uuid.UUID, int]]:
    """(since_ms, positions), ValueError if the text is not such a cursor."""
    prefix, since, *entries = text.strip().split(".")
    if prefix != _ALL_CURSOR_PREFIX:
        raise ValueError("not a cursor of this stream")
    positions: dict[uuid.UUID, int] = {}
    for entry in entries:
        session_hex, _, seq = entry.partition("-")
        positions[uuid.UUID(hex=session_hex)] = parse_session_cursor(seq)
    since_ms = _parse_count(since)
    try:
        _from_ms(since_ms)
    except (OverflowError, OSError, ValueError):
        raise ValueError("not a time a cursor was issued at") from None
    return since_ms, positions


def _from_ms(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


# -- the stream ---------------------------------------------------------------------------------


class _Heartbeat:
    """Marks a heartbeat due every `interval` seconds and wakes the stream's wait: one timer
    per period, not one per wait."""

    def __init__(self, subscription: Subscription, interval: float) -> None:
        self._subscription = subscription
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self.due = False
        self._timer = self._loop.call_later(interval, self._fire)

    def _fire(self) -> None:
        self.due = True
        self._subscription.wake()

    def restart(self) -> None:
        self.due = False
        self._timer = self._loop.call_later(self._interval, self._fire)

    def cancel(self) -> None:
        self._timer.cancel()


async def event_batches(
    subscription: Subscription, interval: float
) -> AsyncGenerator[tuple[list[Event], bool], None]:
    """What a stream sends next: the events waiting (up to _COALESCE: they go out in one
    write, since under load the cost of a send, not of an event, is what a busy stream pays)
    and whether a heartbeat is due (every `interval` seconds, busy or idle). Ends once the
    subscription is closed (client gone, server stopping) and read."""
    heartbeat = _Heartbeat(subscription, interval)
    try:
        while True:
            events: list[Event] = []
            while len(events) < _COALESCE and (event := subscription.get_nowait()) is not None:
                events.append(event)
            if events or heartbeat.due:
                due = heartbeat.due
                if due:
                    heartbeat.restart()
                yield events, due
            elif subscription.closed:
                return
            else:
                await subscription.wait()
    finally:
        heartbeat.cancel()


class EventStream:
    """The frames of one client's stream: of one session, or of every one (`session_id` None).

    `cursor` is what the client sent (Last-Event-ID or `after`), None on a first connection.
    The stream subscribes to the bus when it is made; `close` ends its frames."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        session_id: uuid.UUID | None,
        cursor: str | None,
        options: StreamOptions,
    ) -> None:
        self.db = db
        self.bus = bus
        self.session_id = session_id
        self.requested = cursor
        self.options = options
        # Subscribed before anything is read: a message stored from now on is either in the
        # database when we read it or arrives on the subscription (or both; seqs tell them
        # apart).
        self.subscription = bus.subscribe(session_id, options.max_queue)
        self.messages = MessageService(db)
        self.permissions = PermissionService(db)
        # The last seq the client has, per session.
        self.positions: dict[uuid.UUID, int] = {}
        # Every session: the cursor's "<session hex>-<seq>" parts, in cursor order, kept as
        # positions move (the cursor is written on every message frame); None: rebuild.
        self._parts: dict[uuid.UUID, str] | None = None
        # Every session: sessions not in `positions` are known up to `since` (see above).
        self.since_ms = 0

    @property
    def since(self) -> datetime:
        return _from_ms(self.since_ms)

    def cursor(self) -> str:
        if self.session_id is not None:
            return str(self.positions.get(self.session_id, 0))
        parts = self._parts
        if parts is None:
            # In the order encode_all_cursor writes them: by session hex.
            ordered = sorted(self.positions.items(), key=lambda item: _hex(item[0]))
            parts = self._parts = {s: _cursor_part(s, seq) for s, seq in ordered}
        return _all_cursor(self.since_ms, parts.values())

    def _move_to(self, session_id: uuid.UUID, seq: int) -> None:
        """The client has the session's messages up to `seq`."""
        self.positions[session_id] = seq
        parts = self._parts
        if parts is not None:
            if session_id in parts:
                parts[session_id] = _cursor_part(session_id, seq)
            else:
                self._parts = None  # a new session: its place in the order

    def close(self) -> None:
        self.subscription.close()

    async def frames(self) -> AsyncGenerator[bytes, None]:
        try:
            yield retry_frame(self.options.retry_ms)
            async for chunk in self._open():
                yield chunk
            yield self._heartbeat()
            async for chunk in self._pending_permissions(self.session_id):
                yield chunk
            interval = self.options.heartbeat_interval
            async with contextlib.aclosing(event_batches(self.subscription, interval)) as batches:
                async for events, heartbeat_due in batches:
                    chunks: list[bytes] = []
                    for event in events:
                        live = self._live_frame(event)
                        if live is None:
                            chunks.extend([chunk async for chunk in self._on_event(event)])
                        else:
                            chunks.append(live)
                    if heartbeat_due:
                        chunks.append(self._heartbeat())
                    yield b"".join(chunks)
        finally:
            self.close()

    # -- opening ---------------------------------------------------------------------------

    async def _open(self) -> AsyncIterator[bytes]:
        if self.session_id is not None:
            async for chunk in self._open_session(self.session_id):
                yield chunk
            return
        decoded: tuple[int, dict[uuid.UUID, int]] | None = None
        if self.requested is not None:
            try:
                decoded = parse_all_cursor(self.requested)
            except ValueError:
                yield self._resync_frame(None, "invalid cursor")
        if decoded is None:
            await self._start_from_now()
            return
        self.since_ms, self.positions = decoded
        self._parts = None
        # A position past its session's end (a database restored from a backup): the client
        # holds messages the database does not, and new ones would be taken for those.
        lasts = await anyio.to_thread.run_sync(self.messages.last_seqs, list(self.positions))
        for session_id, last in lasts.items():
            if self.positions[session_id] > last:
                yield self._resync_frame(session_id, "cursor ahead of the session")
                self.positions[session_id] = last
        async for chunk in self._replay_all():
            yield chunk
        await self._move_since()

    async def _open_session(self, session_id: uuid.UUID) -> AsyncIterator[bytes]:
        last = await anyio.to_thread.run_sync(self.messages.last_seq, session_id)
        last = last or 0
        requested: int | None = None
        if self.requested is not None:
            try:
                requested = parse_session_cursor(self.requested)
            except ValueError:
                yield self._resync_frame(session_id, "invalid cursor")
        if requested is not None and requested > last:
            yield self._resync_frame(session_id, "cursor ahead of the session")
            requested = None
        self._move_to(session_id, last if requested is None else requested)
        async for chunk in self._backlog(session_id):
            yield chunk

    async def _start_from_now(self) -> None:
        self.since_ms = int((time.time() - MARGIN.total_seconds()) * 1000)
        self.positions = await anyio.to_thread.run_sync(self.messages.recent_positions, self.since)
        self._parts = None

    async def _move_since(self) -> None:
        """After a replay the client has every stored message: move `since` to a minute ago
        and forget the sessions with no message since then, so the cursor stays short."""
        since_ms = int((time.time() - MARGIN.total_seconds()) * 1000)
        if since_ms <= self.since_ms:
            return
        recent = await anyio.to_thread.run_sync(self.messages.recent_sessions, _from_ms(since_ms))
        self.since_ms = since_ms
        self.positions = {s: seq for s, seq in self.positions.items() if s in recent}
        self._parts = None

    # -- replay from the database ---------------------------------------------------------

    async def _position(self, session_id: uuid.UUID) -> int:
        position = self.positions.get(session_id)
        if position is None:
            # Every-session stream, a session it has not sent yet: known up to `since`.
            position = await anyio.to_thread.run_sync(
                self.messages.seq_before, session_id, self.since
            )
            self._move_to(session_id, position)
        return position

    async def _backlog(self, session_id: uuid.UUID) -> AsyncIterator[bytes]:
        """The session's stored messages after the client's position, page by page."""
        after = await self._position(session_id)
        while True:
            rows = await anyio.to_thread.run_sync(self.messages.since, session_id, after, MAX_PAGE)
            for row in rows:
                self._move_to(session_id, row.seq)
                yield self._message_frame(message_event(row))
            if len(rows) < MAX_PAGE:
                return
            after = rows[-1].seq

    async def _replay_all(self) -> AsyncIterator[bytes]:
        recent = await anyio.to_thread.run_sync(self.messages.recent_sessions, self.since)
        for session_id in sorted(set(self.positions) | recent):
            async for chunk in self._backlog(session_id):
                yield chunk

    # -- live -----------------------------------------------------------------------------

    def _live_frame(self, event: Event) -> bytes | None:
        """The frame of a live event that needs no database read — the next message of a
        session the stream knows, a message it sent already (b""), an ephemeral event — or
        None (`_on_event` handles it). The common case, for every stream and event, so it
        stays synchronous."""
        if event.type == MESSAGE and event.seq is not None:
            position = self.positions.get(event.session_id)
            if position is None or event.seq > position + 1:
                return None
            if event.seq <= position:
                return b""
            self._move_to(event.session_id, event.seq)
            return self._message_frame(event)
        if event.type == RESYNC:
            return None
        return frame_json(event.wire_json, event=event.type)

    async def _on_event(self, event: Event) -> AsyncIterator[bytes]:
        if event.type == MESSAGE and event.seq is not None:
            position = await self._position(event.session_id)
            if event.seq == position + 1:
                self._move_to(event.session_id, event.seq)
                yield self._message_frame(event)
            elif event.seq > position + 1:
                # Messages in between were published elsewhere and are still on their way
                # (another server process): they are stored, read them in order now.
                async for chunk in self._backlog(event.session_id):
                    yield chunk
            return
        if event.type == RESYNC:
            scope = None if event.session_id == ALL_SESSIONS else event.session_id
            yield self._resync_frame(scope, str(event.data.get("reason", "")))
            if scope is None and self.session_id is None:
                async for chunk in self._replay_all():
                    yield chunk
            else:
                async for chunk in self._backlog(scope or event.session_id):
                    yield chunk
            async for chunk in self._pending_permissions(scope or self.session_id):
                yield chunk
            return
        yield frame_json(event.wire_json, event=event.type)

    # -- frames ---------------------------------------------------------------------------

    def _message_frame(self, event: Event) -> bytes:
        return frame_json(event.wire_json, event=MESSAGE, id=self.cursor())

    def _heartbeat(self) -> bytes:
        data: dict[str, Any] = {
            "sessionId": str(self.session_id) if self.session_id else None,
            "time": iso_z(datetime.now(UTC)),
        }
        return frame(data, event=HEARTBEAT, id=self.cursor())

    def _resync_frame(self, session_id: uuid.UUID | None, reason: str) -> bytes:
        data = {"sessionId": str(session_id) if session_id else None, "reason": reason}
        return frame(data, event=RESYNC)

    async def _pending_permissions(self, session_id: uuid.UUID | None) -> AsyncIterator[bytes]:
        rows = await anyio.to_thread.run_sync(self.permissions.pending, session_id)
        for row in rows:
            yield frame(request_data(row), event="permission")


class PokecodeStream:
    """PokéCode's message stream of one session (see routes/events.py for the frames)."""

    def __init__(
        self, db: Database, bus: EventBus, session_id: uuid.UUID, options: StreamOptions
    ) -> None:
        self.db = db
        self.bus = bus
        self.session_id = session_id
        self.options = options
        self.messages = MessageService(db)
        self.position = 0
        # A "running" update was sent since the last "done": the client shows a run going on.
        self.running_shown = False
        self.subscription = bus.subscribe(session_id, options.max_queue)

    def close(self) -> None:
        self.subscription.close()

    async def frames(self) -> AsyncGenerator[bytes, None]:
        try:
            yield retry_frame(self.options.retry_ms)
            last = await anyio.to_thread.run_sync(self.messages.last_seq, self.session_id)
            self.position = last or 0
            interval = self.options.pokecode_heartbeat_interval
            async with contextlib.aclosing(event_batches(self.subscription, interval)) as batches:
                async for events, heartbeat_due in batches:
                    for event in events:
                        async for chunk in self._on_event(event):
                            yield chunk
                    if heartbeat_due:
                        yield frame({"type": "heartbeat", "data": {}})
        finally:
            self.close()

    async def _on_event(self, event: Event) -> AsyncIterator[bytes]:
        if (event.type == MESSAGE and (event.seq or 0) > self.position) or event.type == RESYNC:
            # Read from the database in seq order: it also fills any gap left by events that
            # reached us out of order or were dropped.
            async for chunk in self._stored_since_position():
                yield chunk
            if event.type == RESYNC and self.running_shown and not await self._is_working():
                # The run's "done" may be among what was dropped, and PokéCode's framing has
                # no resync: without this the client would show the run going on for good.
                yield self._done()
        elif event.type == "done":
            async for chunk in self._stored_since_position():
                yield chunk
            yield self._done()

    def _done(self) -> bytes:
        self.running_shown = False
        return frame({"type": "update", "data": {"state": "done", "message": None}})

    async def _is_working(self) -> bool:
        try:
            row = await anyio.to_thread.run_sync(SessionService(self.db, []).get, self.session_id)
        except NotFound:
            return False
        return row.is_working

    async def _stored_since_position(self) -> AsyncIterator[bytes]:
        while True:
            rows = await anyio.to_thread.run_sync(
                self.messages.since, self.session_id, self.position, MAX_PAGE
            )
            for row in rows:
                self.position = row.seq
                message = pokecode_message(row)
                if message is not None:
                    self.running_shown = True
                    yield frame(
                        {"type": "update", "data": {"state": "running", "message": message}}
                    )
            if len(rows) < MAX_PAGE:
                return
