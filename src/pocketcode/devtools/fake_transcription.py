"""A fake OpenAI-compatible transcription API, for tests and offline demos of voice input.

    with FakeTranscriptionServer(api_key="sk-test") as server:
        # transcription_url = server.base_url  (…/v1), transcription_api_key = "sk-test"
        ...
        server.requests[0].model  # what pocketcode sent

`POST /v1/audio/transcriptions` (multipart `file` + `model`) answers `{"text": ...}`: the
upload itself when it is short UTF-8 text (so a test can "say" a sentence), else a line that
names its size. With `api_key` set, a request without `Authorization: Bearer <api_key>` gets
OpenAI's 401. `fail_next(status)` makes the next requests fail; `delay` slows every answer.
Served by uvicorn in a background thread on 127.0.0.1, on a free port unless one is given.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pocketcode.devtools.loopback import LoopbackServer

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
_MAX_ECHO_CHARS = 2000


def fake_transcript(audio: bytes) -> str:
    """The text the fake "hears" in `audio`."""
    try:
        spoken = audio.decode("utf-8")
    except UnicodeDecodeError:
        spoken = None
    if spoken is not None and spoken.isprintable() and 0 < len(spoken) <= _MAX_ECHO_CHARS:
        return spoken
    return f"(fake transcription of {len(audio)} bytes)"


@dataclass(frozen=True)
class TranscriptionRequest:
    """What one request carried (never the bearer key itself: only whether it matched)."""

    path: str
    authorized: bool
    model: str | None
    filename: str | None
    content_type: str | None
    size: int
    status: int


class _State:
    def __init__(self, api_key: str | None, delay: float) -> None:
        self.api_key = api_key
        self.delay = delay
        self.lock = threading.Lock()
        self.failures: deque[int] = deque()
        self.requests: list[TranscriptionRequest] = []
        self.stopping = threading.Event()


def _create_app(state: _State, on_request: Callable[[TranscriptionRequest], None] | None) -> Any:
    import anyio
    from starlette.applications import Starlette
    from starlette.datastructures import UploadFile
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def openai_error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": None, "code": None}},
            status_code=status,
        )

    async def transcriptions(request: Request) -> JSONResponse:
        # Slow, but never slower than a stop: the thread must join.
        deadline = time.monotonic() + state.delay
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or state.stopping.is_set():
                break
            await anyio.sleep(min(remaining, 0.05))
        authorization = request.headers.get("authorization")
        authorized = state.api_key is None or authorization == f"Bearer {state.api_key}"
        async with request.form() as form:
            upload = form.get("file")
            model = form.get("model")
            audio = await upload.read() if isinstance(upload, UploadFile) else b""
            filename = upload.filename if isinstance(upload, UploadFile) else None
            content_type = upload.content_type if isinstance(upload, UploadFile) else None
        with state.lock:
            failure = state.failures.popleft() if state.failures else None
        if not authorized:
            response = openai_error(401, "Incorrect API key provided.", "invalid_request_error")
        elif failure is not None:
            response = openai_error(failure, "The server had an error.", "server_error")
        elif not isinstance(upload, UploadFile) or not isinstance(model, str):
            response = openai_error(400, "file and model are required", "invalid_request_error")
        else:
            response = JSONResponse({"text": fake_transcript(audio)})
        record = TranscriptionRequest(
            request.url.path,
            authorized,
            model if isinstance(model, str) else None,
            filename,
            content_type,
            len(audio),
            response.status_code,
        )
        with state.lock:
            state.requests.append(record)
        if on_request is not None:
            on_request(record)
        return response

    async def not_found(request: Request) -> JSONResponse:
        return openai_error(404, f"Unknown path {request.url.path}", "invalid_request_error")

    return Starlette(
        routes=[
            Route(TRANSCRIPTIONS_PATH, transcriptions, methods=["POST"]),
            Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
    )


class FakeTranscriptionServer(LoopbackServer):
    """The fake served by uvicorn in a background thread. Use it as a context manager, or
    call `start()` and `stop()`."""

    _name = "fake transcription"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        port: int = 0,
        delay: float = 0.0,
        on_request: Callable[[TranscriptionRequest], None] | None = None,
    ) -> None:
        self._state = _State(api_key, delay)
        self._on_request = on_request
        super().__init__(port=port)

    @property
    def base_url(self) -> str:
        """What to store as `transcription_url`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[TranscriptionRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        """The next `times` authorized requests answer `status` with OpenAI's error shape."""
        with self._state.lock:
            self._state.failures.extend([status] * times)

    def _app(self) -> Any:
        return _create_app(self._state, self._on_request)

    def _on_stop(self) -> None:
        self._state.stopping.set()
