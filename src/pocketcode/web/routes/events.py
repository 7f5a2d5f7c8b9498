"""Live events over server-sent events: one session's stream and one stream of every session.

How ids, replay and resync work is told in `pocketcode.web.event_streams`. Both streams need
the event bus, so they answer 503 when the app runs without its agent runtime.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request

from pocketcode.services.events import EventBus
from pocketcode.services.sessions import SessionService
from pocketcode.web.deps import app_state
from pocketcode.web.event_streams import EventStream, PokecodeStream, StreamOptions
from pocketcode.web.schemas import errors
from pocketcode.web.sse import EventStreamResponse, refuse_cross_site

router = APIRouter(tags=["events"])

_STREAM_DOC = {
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
    "description": "An endless stream of server-sent events.",
}


def stream_options() -> StreamOptions:
    """Heartbeat period and queue size of the streams (overridden by tests)."""
    return StreamOptions()


def event_bus(request: Request) -> EventBus:
    runtime = app_state(request).runtime
    if runtime is None:
        raise HTTPException(503, "live events are not available: the agent runtime is off")
    return runtime.bus


Cursor = Annotated[
    str | None,
    Query(description="Resume after this cursor (a message seq) on a first connection."),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The `id:` of the last event received, which an EventSource sends when it "
        "reconnects: the stream replays what came after it. Wins over `after`; an unreadable "
        "one is answered with a `resync` event.",
    ),
]
Options = Annotated[StreamOptions, Depends(stream_options)]


@router.get(
    "/api/sessions/{session_id}/events",
    response_class=EventStreamResponse,
    responses={200: _STREAM_DOC, **errors(403, 404, 503)},
)
async def session_events(
    request: Request,
    session_id: str,
    options: Options,
    after: Cursor = None,
    last_event_id: LastEventId = None,
) -> EventStreamResponse:
    """A session's events: stored messages (`id:` = seq) after `Last-Event-ID` or `after`,
    then live ones, with deltas, state, queue, permission, done, resync and heartbeats."""
    refuse_cross_site(request)
    state = app_state(request)
    row = await anyio.to_thread.run_sync(SessionService(state.db, []).get, session_id)
    stream = EventStream(state.db, event_bus(request), row.id, last_event_id or after, options)
    return EventStreamResponse(stream)


@router.get(
    "/api/events",
    response_class=EventStreamResponse,
    responses={200: _STREAM_DOC, **errors(403, 503)},
)
async def all_events(
    request: Request,
    options: Options,
    after: Annotated[
        str | None,
        Query(
            description="Resume after this cursor (an `id:` of this stream) on a first connection."
        ),
    ] = None,
    last_event_id: LastEventId = None,
) -> EventStreamResponse:
    """The events of every session on one connection (browsers allow six per host); `id:` is
    a cursor of per-session positions."""
    refuse_cross_site(request)
    state = app_state(request)
    stream = EventStream(state.db, event_bus(request), None, last_event_id or after, options)
    return EventStreamResponse(stream)


_POKECODE_HEADERS = {
    "Connection": "keep-alive",
    "Cache-Control": "no-cache,no-transform",
    "x-no-compression": "1",
}


@router.get(
    "/api/sessions/{session_id}/messages/stream",
    response_class=EventStreamResponse,
    responses={200: _STREAM_DOC, **errors(403, 404, 503)},
)
async def pokecode_message_stream(
    request: Request, session_id: str, options: Options
) -> EventStreamResponse:
    """PokéCode's stream: data-only frames `{type:'update', data:{state:'running', message}}`
    per stored message, `{state:'done', message:null}` when a run ends, and
    `{type:'heartbeat', data:{}}`. Its client appends what it gets without ids, so the stream
    starts at the session's current end and sends each stored message once, in seq order."""
    refuse_cross_site(request)
    state = app_state(request)
    row = await anyio.to_thread.run_sync(SessionService(state.db, []).get, session_id)
    stream = PokecodeStream(state.db, event_bus(request), row.id, options)
    return EventStreamResponse(stream, headers=_POKECODE_HEADERS)
