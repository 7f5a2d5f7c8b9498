"""Server-sent events on the wire: frames, the response, and the cross-site check of a stream.

Frames are built here as bytes and handed to sse-starlette's `EventSourceResponse`, which owns
the connection: it notices a client that went away and ends open streams when the server shuts
down (a plain streaming response would keep uvicorn waiting on them). Its own pings are off:
each stream sends heartbeats of its own shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request
from sse_starlette import EventSourceResponse

from pocketcode.domain.errors import Forbidden
from pocketcode.web.security import RequestPolicy


def frame(data: Mapping[str, Any], *, event: str | None = None, id: str | None = None) -> bytes:
    """One event: optional `id:` and `event:` lines, then the data as single-line JSON."""
    # json.dumps escapes newlines inside strings, so the data is always one line.
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return frame_json(encoded, event=event, id=id)


def frame_json(data_json: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """`frame` of data encoded already as one line of JSON (an event sent to many streams is
    encoded once)."""
    lines = []
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("an event id is one line without NUL")
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + data_json)
    return ("\n".join(lines) + "\n\n").encode()


def retry_frame(milliseconds: int) -> bytes:
    """Tell EventSource how long to wait before reconnecting."""
    return f"retry: {milliseconds}\n\n".encode()


def event_stream_response(
    frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None
) -> EventSourceResponse:
    return EventSourceResponse(
        frames,
        headers={
            # Not stored, not transformed (a compressing proxy would buffer the stream).
            "Cache-Control": "no-cache, no-store, no-transform",
            **(headers or {}),
        },
        ping=0,
        sep="\n",
    )


def refuse_cross_site(request: Request) -> None:
    """Forbidden for a stream a page of another site opens with this site's cookie.

    The security middleware checks Origin only on unsafe methods; a stream is a GET that
    reads private data, so it gets the same check here: an `Origin` that is not ours, or
    `Sec-Fetch-Site` other than same-origin/none, is refused. A bearer token is not ambient
    (a page of another site cannot attach it), so, as in the middleware, it is not checked."""
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.method == "bearer":
        return
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site")
    host = request.headers.get("host", "")
    policy: RequestPolicy = RequestPolicy(request.app.state.pocketcode.settings)
    if (origin is not None and not policy.is_same_origin(origin, host)) or (
        fetch_site is not None and fetch_site not in {"same-origin", "none"}
    ):
        raise Forbidden("cross-origin event stream refused")
