"""Live events: persist, then publish; fanned out to every server process through the database.

A message is stored first (with its per-session `seq`), then published as a "message" event;
ephemeral events ("delta", "state", "queue", "permission", "done"…) are published only. A client
that missed anything replays from the database after the last `seq` it saw, so a subscriber
that falls behind is not buffered without bound: it gets one "resync" event and nothing more
until it has read it.

On SQLite (one process) the bus is in-process only. On PostgreSQL it also sends every event with
`NOTIFY pocketcode_events` and listens on a dedicated connection, so subscribers of every server
process see every event. A process delivers its own events at once and ignores their echo (each
bus has an origin id). NOTIFY payloads must stay under 8000 bytes: a "message" event travels as
a reference (session and seq) that the receiver loads from the database; another event travels
with its data when it fits, else as a reference the receiver turns into a "resync". After a lost
listening connection the bus reconnects with a bounded backoff and sends "resync" to everyone,
since notifications sent meanwhile are gone.

Workers wait for jobs with `wait_for_jobs`, woken by `notify_jobs` in this process at once and,
on PostgreSQL, in the others through `NOTIFY pocketcode_jobs`; callers still poll now and then,
so a wake-up lost with a connection only delays a job, never strands it.

On PostgreSQL the listening connection also hears `NOTIFY pocketcode_revocations` (a credential
was revoked by another process) and calls what `when_revoked` registered: the web app's
credential cache forgets what it holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from types import TracebackType
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow, SessionRow
from pocketcode.domain.errors import OperationFailed
from pocketcode.domain.timefmt import iso_z

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "pocketcode_events"
JOBS_CHANNEL = "pocketcode_jobs"
# A credential was revoked (services/auth.py RevocationSignal): caches forget what they hold.
REVOCATIONS_CHANNEL = "pocketcode_revocations"
# PostgreSQL refuses payloads of 8000 bytes or more; keep a margin.
MAX_NOTIFY_BYTES = 7900
# The session id of a "resync" sent to a subscriber of every session: replay them all.
ALL_SESSIONS = uuid.UUID(int=0)
RESYNC = "resync"
MESSAGE = "message"

_BATCH = 500
_OUTBOX_SIZE = 10_000
_INBOX_SIZE = 10_000
_FLUSH_TIMEOUT = 5.0
_LISTEN_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Event:
    session_id: uuid.UUID
    type: str  # message, delta, state, permission, queue, done, resync…
    # The stored message's seq for "message" events, else None.
    seq: int | None = None
    # JSON-serialisable, camelCase keys, timestamps as `…Z` strings.
    data: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def wire_json(self) -> bytes:
        """`data` with the session id, as one line of JSON in UTF-8: encoded once, however
        many streams send the event."""
        return json.dumps(
            {**self.data, "sessionId": str(self.session_id)},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()


def resync_event(session_id: uuid.UUID, reason: str) -> Event:
    """Tell a subscriber it missed events: replay from the database after the last seq seen."""
    return Event(session_id, RESYNC, None, {"reason": reason})


def _money(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def session_state_event(row: SessionRow, pending_permissions: int) -> Event:
    """A session's "state" event: what a screen shows of it besides its messages (the run
    manager publishes it as a run moves, the transcript watcher when a terminal writes)."""
    return Event(
        row.id,
        "state",
        None,
        {
            "isWorking": row.is_working,
            "processStatus": row.process_status.value,
            "currentJobId": str(row.current_job_id) if row.current_job_id else None,
            "lastJobStatus": row.last_job_status.value if row.last_job_status else None,
            "pendingPermissions": pending_permissions,
            "turnCount": row.turn_count,
            "messageCount": row.message_count,
            "tokens": {
                "input": int(row.input_tokens),
                "output": int(row.output_tokens),
                "cacheCreation": int(row.cache_creation_tokens),
                "cacheRead": int(row.cache_read_tokens),
            },
            # A JSON number, as in the REST API.
            "totalCostUsd": float(row.total_cost_usd),
        },
    )


def message_event(row: MessageRow) -> Event:
    """The "message" event of a stored message."""
    data: dict[str, Any] = {
        "id": str(row.id),
        "sessionId": str(row.session_id),
        "seq": row.seq,
        "type": row.type.value,
        "subtype": row.subtype,
        "text": row.text,
        "raw": row.raw,
        "jobId": str(row.job_id) if row.job_id else None,
        "parentToolUseId": row.parent_tool_use_id,
        "providerMessageId": row.provider_message_id,
        "model": row.model,
        "createdAt": iso_z(row.created_at),
    }
    tokens = {
        "inputTokens": row.input_tokens,
        "outputTokens": row.output_tokens,
        "cacheCreationTokens": row.cache_creation_tokens,
        "cacheReadTokens": row.cache_read_tokens,
    }
    if any(value is not None for value in tokens.values()):
        data["usage"] = {name: value or 0 for name, value in tokens.items()}
    if row.cost_usd is not None:
        data["costUsd"] = _money(row.cost_usd)
    return Event(row.session_id, MESSAGE, row.seq, data)


class Subscription:
    """The events of one session (or of all), in publication order, for one reader.

    At most `max_queue` events wait here. Past that, the subscriber gets one "resync" event and
    every further event is dropped until it has read that marker; it then replays from the
    database. The publisher never waits for a subscriber: offering an event appends it and, if
    the reader is waiting, resolves its one future (no queue machinery per event, since every
    event is offered to every stream).
    """

    def __init__(self, bus: EventBus, session_id: uuid.UUID | None, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.session_id = session_id
        self.max_queue = max_queue
        self.dropped = 0
        self._bus = bus
        # At most max_queue events + the marker.
        self._events: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._marker_pending = False
        self._closed = False

    @property
    def pending(self) -> int:
        """What is left to read: the events waiting, and the end once closed."""
        return len(self._events) + self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, event: Event) -> None:
        if self._closed:
            return
        if self._marker_pending:
            self.dropped += 1
            return
        if event.type == RESYNC:
            self._marker_pending = True
            if self.session_id is None and event.session_id != ALL_SESSIONS:
                # Everything after the marker is dropped until it is read, other sessions'
                # events too: replaying only its session would lose theirs.
                event = resync_event(ALL_SESSIONS, event.data.get("reason", "resync"))
        elif len(self._events) >= self.max_queue:
            self._marker_pending = True
            self.dropped += 1
            event = resync_event(self.session_id or ALL_SESSIONS, "overflow")
        self._events.append(event)
        self.wake()

    def wake(self) -> None:
        """Return a pending `wait()` now (the bus calls it for an event; a stream's timer, for
        a heartbeat)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until an event is waiting, the subscription is closed or `wake()` is called."""
        if self._events or self._closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def get_nowait(self) -> Event | None:
        """The next event if one is waiting, else None (also once closed)."""
        if not self._events:
            return None
        event = self._events.popleft()
        if event.type == RESYNC:
            self._marker_pending = False
        return event

    async def get(self) -> Event:
        """The next event (StopAsyncIteration once closed and read to the end); bound the wait
        with `asyncio.timeout`."""
        while (event := self.get_nowait()) is None:
            if self._closed:
                raise StopAsyncIteration
            await self.wait()
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def close(self) -> None:
        """Stop receiving events: the reader gets those already waiting, then the end."""
        if not self._closed:
            self._closed = True
            self._bus._unsubscribe(self)
            self.wake()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class _MessageRef:
    session_id: uuid.UUID
    seq: int


class EventBus:
    """Publish events to local subscribers and, on PostgreSQL, to every other server process."""

    def __init__(
        self,
        db: Database,
        *,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        self.db = db
        self.origin = uuid.uuid4().hex
        # Numbers this process's notifications: PostgreSQL delivers identical payloads sent in
        # one transaction (a batch of the send loop) once, and two deltas can be identical.
        self._numbers = itertools.count()
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self._by_session: dict[uuid.UUID, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._jobs_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(_OUTBOX_SIZE)
        self._inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(_INBOX_SIZE)
        self._remote_lost = False  # events could not be sent: tell the others to resync
        self._inbox_lost = False  # notifications were dropped here: resync our subscribers
        self._started = False
        self._revoked: list[Callable[[], None]] = []

    @property
    def distributed(self) -> bool:
        """True when events reach other server processes (PostgreSQL)."""
        return not self.db.is_sqlite

    def when_revoked(self, forget: Callable[[], None]) -> None:
        """Call `forget` when another process announces a revoked credential (PostgreSQL:
        `REVOCATIONS_CHANNEL`), and after the listening connection was lost, since an
        announcement may have been missed meanwhile. On SQLite the announcement is a file
        (services/auth.py `RevocationSignal`) and this is never called."""
        self._revoked.append(forget)

    def _forget_credentials(self) -> None:
        for forget in self._revoked:
            forget()

    # -- subscribers ----------------------------------------------------------------------------

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions in this process (a stream holds one while it is open)."""
        return len(self._everything) + sum(len(s) for s in self._by_session.values())

    def subscribe(self, session_id: uuid.UUID | None = None, max_queue: int = 1000) -> Subscription:
        """Events of one session, or of every session when `session_id` is None."""
        subscription = Subscription(self, session_id, max_queue)
        if session_id is None:
            self._everything.add(subscription)
        else:
            self._by_session.setdefault(session_id, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription.session_id is None:
            self._everything.discard(subscription)
            return
        listeners = self._by_session.get(subscription.session_id)
        if listeners is not None:
            listeners.discard(subscription)
            if not listeners:
                del self._by_session[subscription.session_id]

    def _deliver(self, event: Event) -> None:
        for subscription in self._by_session.get(event.session_id, ()):
            subscription._offer(event)
        for subscription in self._everything:
            subscription._offer(event)

    def _resync_everyone(self, reason: str) -> None:
        for session_id, listeners in self._by_session.items():
            for subscription in listeners:
                subscription._offer(resync_event(session_id, reason))
        for subscription in self._everything:
            subscription._offer(resync_event(ALL_SESSIONS, reason))

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Deliver to this process's subscribers now and, on PostgreSQL, to the others. Store a
        message before publishing it: other processes load it from the database."""
        payload = self._encode(event) if self._started and self.distributed else None
        self._deliver(event)
        if payload is not None:
            self._send(EVENTS_CHANNEL, payload)

    def _encode(self, event: Event) -> str:
        head: dict[str, Any] = {
            "origin": self.origin,
            "n": next(self._numbers),
            "session_id": str(event.session_id),
            "type": event.type,
            "seq": event.seq,
        }
        if event.type == MESSAGE and event.seq is not None:
            return json.dumps(head, separators=(",", ":"))
        # ASCII only, so the length in characters is the length in bytes.
        body = json.dumps({**head, "data": event.data}, separators=(",", ":"))
        if len(body) < MAX_NOTIFY_BYTES:
            return body
        return json.dumps({**head, "oversize": True}, separators=(",", ":"))

    def _send(self, channel: str, payload: str) -> None:
        try:
            self._outbox.put_nowait((channel, payload))
        except asyncio.QueueFull:
            if not self._remote_lost:
                log.warning("event outbox full: other server processes will resync")
            self._remote_lost = True

    async def _send_loop(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        retry_in = self.reconnect_delay
        try:
            while True:
                if self._remote_lost:
                    # What was lost must reach the others as a resync soon, even if nothing
                    # more is published (a run's last message and its "done").
                    try:
                        batch = [await asyncio.wait_for(self._outbox.get(), retry_in)]
                    except TimeoutError:
                        batch = []
                else:
                    batch = [await self._outbox.get()]
                while len(batch) < _BATCH and not self._outbox.empty():
                    batch.append(self._outbox.get_nowait())
                taken = len(batch)  # the notice below was never queued
                if self._remote_lost:
                    self._remote_lost = False
                    notice = json.dumps({"origin": self.origin, "type": RESYNC})
                    batch.insert(0, (EVENTS_CHANNEL, notice))
                query = sql.SQL("; ").join(
                    sql.SQL("NOTIFY {}, {}").format(sql.Identifier(channel), sql.Literal(payload))
                    for channel, payload in batch
                )
                for attempt in (1, 2):
                    try:
                        if conn is None or conn.closed:
                            conn = await self._connect("pocketcode-notify")
                        # No parameters: one simple query, one round trip, sent in order.
                        await conn.execute(query)
                        retry_in = self.reconnect_delay
                        break
                    except (psycopg.Error, OSError) as exc:
                        log.warning("sending events failed (%s)", type(exc).__name__)
                        if conn is not None:
                            await conn.close()
                        conn = None
                        if attempt == 2:
                            self._remote_lost = True
                            retry_in = min(retry_in * 2, self.max_reconnect_delay)
                for _ in range(taken):
                    self._outbox.task_done()
        finally:
            if conn is not None:
                await conn.close()

    # -- jobs wake-up ---------------------------------------------------------------------------

    async def notify_jobs(self) -> None:
        """Wake the workers of this process now, and on PostgreSQL those of the others."""
        self._jobs_ready.set()
        if self._started and self.distributed:
            self._send(JOBS_CHANNEL, json.dumps({"origin": self.origin}))

    async def wait_for_jobs(self, timeout: float) -> bool:  # noqa: ASYNC109 - a poll period
        """Wait until a job may be ready (True) or `timeout` seconds passed (False)."""
        if not self._jobs_ready.is_set():
            try:
                await asyncio.wait_for(self._jobs_ready.wait(), timeout)
            except TimeoutError:
                return False
        self._jobs_ready.clear()
        return True

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """On PostgreSQL, start listening; returns once LISTEN is in place."""
        if self._started:
            return
        if self.distributed:
            listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._tasks = [
                asyncio.create_task(self._listen_loop(listening), name="pocketcode-listen"),
                asyncio.create_task(self._dispatch_loop(), name="pocketcode-dispatch"),
                asyncio.create_task(self._send_loop(), name="pocketcode-notify"),
            ]
            try:
                await asyncio.wait_for(asyncio.shield(listening), _LISTEN_START_TIMEOUT)
            except BaseException:
                await self._cancel_tasks()
                raise
        self._started = True

    async def stop(self) -> None:
        """Send what is still queued (for a few seconds at most), stop listening and end every
        subscription."""
        if self._started and self.distributed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), _FLUSH_TIMEOUT)
        await self._cancel_tasks()
        self._started = False
        for subscription in [*self._everything, *(s for v in self._by_session.values() for s in v)]:
            subscription.close()

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- receiving (PostgreSQL) -------------------------------------------------------------------

    async def _connect(self, application_name: str) -> psycopg.AsyncConnection[Any]:
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            application_name=application_name,
            connect_timeout=5,
            # Notice a silently dead network within a minute.
            keepalives=1,
            keepalives_idle=20,
            keepalives_interval=5,
            keepalives_count=4,
        )

    async def _listen_loop(self, listening: asyncio.Future[None]) -> None:
        delay = self.reconnect_delay
        while True:
            try:
                conn = await self._connect("pocketcode-listen")
                async with conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    await conn.execute(f"LISTEN {JOBS_CHANNEL}")
                    await conn.execute(f"LISTEN {REVOCATIONS_CHANNEL}")
                    if listening.done():
                        log.info("listening for events again")
                        # Whatever was sent while we were away is lost: replay, re-poll,
                        # check credentials again.
                        self._forget_credentials()
                        self._resync_everyone("reconnected")
                        self._jobs_ready.set()
                    else:
                        listening.set_result(None)
                    delay = self.reconnect_delay
                    async for notify in conn.notifies():
                        if notify.channel == REVOCATIONS_CHANNEL:
                            # At once, not behind the events in the inbox (nor lost with them).
                            self._forget_credentials()
                            continue
                        try:
                            self._inbox.put_nowait((notify.channel, notify.payload))
                        except asyncio.QueueFull:
                            self._inbox_lost = True
            except (psycopg.Error, OSError) as exc:
                if not listening.done():
                    listening.set_exception(
                        OperationFailed(f"cannot listen for events: {type(exc).__name__}")
                    )
                    return
                log.warning(
                    "lost the event connection (%s); reconnecting in %.1f s",
                    type(exc).__name__,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _dispatch_loop(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < _BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            try:
                await self._dispatch(batch)
            except Exception:
                log.exception("delivering events from other processes failed")
                self._resync_everyone("error")
            if self._inbox_lost:
                self._inbox_lost = False
                self._resync_everyone("overflow")

    async def _dispatch(self, batch: list[tuple[str, str]]) -> None:
        items: list[Event | _MessageRef | None] = []
        for channel, payload in batch:
            try:
                decoded = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(decoded, dict) or decoded.get("origin") == self.origin:
                continue
            if channel == JOBS_CHANNEL:
                self._jobs_ready.set()
                continue
            items.append(self._decode(decoded))
        refs = [item for item in items if isinstance(item, _MessageRef)]
        rows: dict[_MessageRef, MessageRow] = {}
        if refs:
            try:
                rows = await asyncio.to_thread(self._load_messages, refs)
            except Exception as exc:
                log.warning("loading published messages failed (%s)", type(exc).__name__)
        for item in items:
            if item is None:
                self._resync_everyone("remote")
            elif isinstance(item, _MessageRef):
                row = rows.get(item)
                self._deliver(
                    message_event(row) if row else resync_event(item.session_id, "missing")
                )
            else:
                self._deliver(item)

    @staticmethod
    def _decode(decoded: dict[str, Any]) -> Event | _MessageRef | None:
        """An event, a message to load, or None when the sender asks everyone to resync."""
        kind = decoded.get("type")
        try:
            session_id = uuid.UUID(str(decoded["session_id"]))
        except (KeyError, ValueError):
            return None
        seq = decoded.get("seq")
        if kind == MESSAGE and isinstance(seq, int):
            return _MessageRef(session_id, seq)
        if decoded.get("oversize") or not isinstance(decoded.get("data"), dict):
            return resync_event(session_id, "oversize")
        return Event(session_id, str(kind), seq if isinstance(seq, int) else None, decoded["data"])

    def _load_messages(self, refs: list[_MessageRef]) -> dict[_MessageRef, MessageRow]:
        by_session: dict[uuid.UUID, set[int]] = {}
        for ref in refs:
            by_session.setdefault(ref.session_id, set()).add(ref.seq)
        condition = sa.or_(
            *(
                sa.and_(MessageRow.session_id == session_id, MessageRow.seq.in_(sorted(seqs)))
                for session_id, seqs in by_session.items()
            )
        )
        with self.db.read() as session:
            rows = session.scalars(sa.select(MessageRow).where(condition))
            return {_MessageRef(row.session_id, row.seq): row for row in rows}
