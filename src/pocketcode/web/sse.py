"""Server-sent events on the wire: frames, the response, and the cross-site check of a stream.

Frames are built here as bytes, and `EventStreamResponse` writes them straight to the ASGI
`send`: one call per chunk, nothing else per event (a stream is written to for every event of
every session it follows, by hundreds of streams at once). Besides writing, the response ends
its stream when the client goes away, which frees the stream's subscription at once, and when
the server begins to shut down: uvicorn waits for open responses to finish before it runs the
app's shutdown, so a stream that waited for the next event would keep it from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import weakref
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any, Protocol

from fastapi import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pocketcode.domain.errors import Forbidden
from pocketcode.web.security import RequestPolicy

_BODY = "http.response.body"
# How often open streams look whether the server is shutting down.
SHUTDOWN_POLL_SECONDS = 0.25

_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Not stored, not transformed (a compressing proxy would buffer the stream).
    "Cache-Control": "no-cache, no-store, no-transform",
    "Connection": "keep-alive",
    # nginx buffers proxied responses unless told not to.
    "X-Accel-Buffering": "no",
}


def frame(data: Mapping[str, Any], *, event: str | None = None, id: str | None = None) -> bytes:
    """One event: optional `id:` and `event:` lines, then the data as single-line JSON."""
    # json.dumps escapes newlines inside strings, so the data is always one line.
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return frame_json(encoded.encode(), event=event, id=id)


def frame_json(data_json: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """`frame` of data encoded already as one line of UTF-8 JSON (an event sent to many
    streams is encoded once)."""
    parts: list[bytes] = []
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("an event id is one line without NUL")
        parts += (b"id: ", id.encode(), b"\n")
    if event is not None:
        parts += (b"event: ", event.encode(), b"\n")
    parts += (b"data: ", data_json, b"\n\n")
    return b"".join(parts)


def retry_frame(milliseconds: int) -> bytes:
    """Tell EventSource how long to wait before reconnecting."""
    return f"retry: {milliseconds}\n\n".encode()


class FrameSource(Protocol):
    """A stream's frames, and a way to make them end early."""

    def frames(self) -> AsyncGenerator[bytes, None]:
        """The chunks to write, in order; the iteration ends once `close` was called."""
        ...

    def close(self) -> None:
        """End the frames soon (at the next wait) and release what they hold. Idempotent."""
        ...


class EventStreamResponse(Response):
    """A `text/event-stream` response of a `FrameSource`.

    It sends the headers, then every chunk as it comes (empty ones are skipped), then the end
    of the body. A watcher task waits for the client's disconnect (`receive`) and closes the
    source; the response stops at the next chunk. When the uvicorn server running the app
    begins to shut down, every open stream of the event loop is closed the same way and ends
    its body, so the connection can close and uvicorn can go on to the app's shutdown."""

    # Not a class attribute: FastAPI would take it for the media type of the routes' error
    # responses too, which are JSON. The headers carry it; routes document the stream.
    media_type = None

    def __init__(
        self,
        source: FrameSource,
        headers: Mapping[str, str] | None = None,
        # FastAPI reads this default for the route's response in the OpenAPI schema.
        status_code: int = 200,
    ) -> None:
        self.source = source
        self.status_code = status_code
        self.background = None
        self.init_headers({**_HEADERS, **(headers or {})})
        self._client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        frames = self.source.frames()
        try:
            start = {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
            await send(start)
            with _open_stream(self):
                watcher = asyncio.create_task(self._watch_disconnect(receive))
                try:
                    async for chunk in frames:
                        if self._client_gone:
                            return
                        if chunk:
                            await send({"type": _BODY, "body": chunk, "more_body": True})
                finally:
                    watcher.cancel()
                if not self._client_gone:
                    await send({"type": _BODY, "body": b"", "more_body": False})
        finally:
            self.source.close()
            await frames.aclose()

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._client_gone = True
        self.source.close()


# -- ending streams when the server shuts down --------------------------------------------------


class _OpenStreams:
    """The open streams of one event loop and the task that ends them at shutdown."""

    def __init__(self) -> None:
        self.responses: set[EventStreamResponse] = set()
        self.watcher: asyncio.Task[None] | None = None


_STREAMS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _OpenStreams] = (
    weakref.WeakKeyDictionary()
)


def server_is_exiting() -> bool:
    """True once the uvicorn server of this process was told to stop.

    uvicorn offers no hook for it, and its `should_exit` flag lives on the server object. The
    server installs its bound `handle_exit` as the SIGTERM handler while it runs (in the main
    thread), which is how the server is found; a server run without signal handlers (in
    another thread) is not, and its open streams end only when their clients leave."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


@contextlib.contextmanager
def _open_stream(response: EventStreamResponse) -> Iterator[None]:
    """Registers an open stream for the shutdown watcher of its event loop (started with the
    first stream, gone with the last one)."""
    loop = asyncio.get_running_loop()
    streams = _STREAMS.get(loop) or _STREAMS.setdefault(loop, _OpenStreams())
    streams.responses.add(response)
    if server_is_exiting():
        response.source.close()
    elif streams.watcher is None:
        streams.watcher = asyncio.create_task(_end_at_shutdown(streams))
    try:
        yield
    finally:
        streams.responses.discard(response)
        if not streams.responses and streams.watcher is not None:
            streams.watcher.cancel()
            streams.watcher = None


async def _end_at_shutdown(streams: _OpenStreams) -> None:
    """Close every open stream once the server is exiting (and those opened after)."""
    while True:
        await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
        if server_is_exiting():
            for response in list(streams.responses):
                response.source.close()


# -- who may open a stream -----------------------------------------------------------------------


def refuse_cross_site(request: Request) -> None:
    """Forbidden for a stream a page of another site opens with this site's cookie.

    The security middleware checks Origin only on unsafe methods; a stream is a GET that
    reads private data, so it gets the same check here: an `Origin` that is not ours, or
    `Sec-Fetch-Site` other than same-origin/none, is refused. A bearer token is not ambient
    (a page of another site cannot attach it), so, as in the middleware, it is not checked."""
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.method == "bearer":
        return
    policy: RequestPolicy = RequestPolicy(request.app.state.pocketcode.settings)
    headers = request.headers
    if policy.is_cross_site(
        headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host", "")
    ):
        raise Forbidden("cross-origin event stream refused")
