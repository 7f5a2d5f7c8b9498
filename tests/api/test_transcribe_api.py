"""Voice input: `POST /api/transcribe` forwards a recording to the configured OpenAI-compatible
endpoint (here the fake of `pocketcode.devtools.fake_transcription`, on a real port) and
returns its text; off until a URL is set; refused, too big, empty and failed uploads are
4xx/5xx with the error shape, and the key never shows in a response or a log."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from pocketcode.devtools.fake_transcription import FakeTranscriptionServer, fake_transcript
from pocketcode.domain.errors import TranscriptionFailed
from pocketcode.services.transcription import (
    MAX_AUDIO_BYTES,
    TranscriptionEndpoint,
    transcribe,
    upload_name,
)
from tests.api.test_sessions_api import error

KEY_CANARY = "sk-transcribe-canary-4b1d9e"
SPOKEN = "Fix the login bug, then run the tests."


@pytest.fixture
def fake() -> Iterator[FakeTranscriptionServer]:
    with FakeTranscriptionServer(api_key=KEY_CANARY) as server:
        yield server


def configure(api: TestClient, url: str, key: str | None = KEY_CANARY) -> None:
    assert api.put("/api/settings/transcription_url", json={"value": url}).status_code == 200
    if key is not None:
        response = api.put("/api/settings/transcription_api_key", json={"value": key})
        assert response.status_code == 200


def upload(
    api: TestClient, audio: bytes, name: str = "voice.webm", kind: str = "audio/webm"
) -> Any:
    return api.post("/api/transcribe", files={"file": (name, audio, kind)})


def test_off_until_a_url_is_set(api: TestClient, fake: FakeTranscriptionServer) -> None:
    assert api.get("/api/transcribe").json() == {"configured": False}
    message = error(upload(api, b"hello"), 409, "TRANSCRIPTION_NOT_CONFIGURED")
    assert "transcription_url" in message
    configure(api, fake.base_url)
    assert api.get("/api/transcribe").json() == {"configured": True}
    api.delete("/api/settings/transcription_url")
    assert api.get("/api/transcribe").json() == {"configured": False}
    assert fake.requests == []


def test_a_recording_comes_back_as_text(
    api: TestClient, fake: FakeTranscriptionServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configure(api, fake.base_url)
    response = upload(api, SPOKEN.encode())
    assert response.status_code == 200, response.text
    assert response.json() == {"text": SPOKEN}
    [sent] = fake.requests
    assert (sent.authorized, sent.model, sent.size) == (True, "whisper-1", len(SPOKEN))
    assert (sent.filename, sent.content_type) == ("recording.webm", "audio/webm")

    # The model setting is what is sent; Safari's mp4 keeps a name the API decodes.
    api.put("/api/settings/transcription_model", json={"value": "gpt-4o-mini-transcribe"})
    audio = bytes(range(256)) * 40
    response = upload(api, audio, name="blob", kind="audio/mp4")
    assert response.json() == {"text": fake_transcript(audio)}
    assert (fake.requests[1].model, fake.requests[1].filename) == (
        "gpt-4o-mini-transcribe",
        "recording.m4a",
    )
    # The key, the recording and its text stay out of the logs.
    for secret in (KEY_CANARY, SPOKEN):
        assert secret not in caplog.text
    assert f"transcription: {len(SPOKEN)} bytes" in caplog.text


def test_a_local_endpoint_without_a_key(api: TestClient) -> None:
    with FakeTranscriptionServer() as keyless:
        configure(api, keyless.base_url, key=None)
        assert upload(api, b"no key needed").json() == {"text": "no key needed"}


def test_upstream_failures_are_502_without_the_key(
    api: TestClient, fake: FakeTranscriptionServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configure(api, fake.base_url, key="sk-wrong-key-123")
    refused = upload(api, b"hello")
    assert "transcription_api_key" in error(refused, 502, "TRANSCRIPTION_FAILED")
    assert fake.requests[-1].authorized is False

    configure(api, fake.base_url, key=KEY_CANARY)
    fake.fail_next(500)
    assert "HTTP 500" in error(upload(api, b"hello"), 502, "TRANSCRIPTION_FAILED")
    fake.fail_next(429)
    assert "HTTP 429" in error(upload(api, b"hello"), 502, "TRANSCRIPTION_FAILED")
    # The API's base URL without /v1: the endpoint answers 404.
    configure(api, fake.base_url.removesuffix("/v1"))
    assert "HTTP 404" in error(upload(api, b"hello"), 502, "TRANSCRIPTION_FAILED")
    # Nothing listens there any more.
    with FakeTranscriptionServer() as gone:
        dead_url = gone.base_url
    configure(api, dead_url)
    message = error(upload(api, b"hello"), 502, "TRANSCRIPTION_FAILED")
    assert "could not be reached" in message
    # After all that, the service works again.
    configure(api, fake.base_url)
    assert upload(api, b"back").json() == {"text": "back"}
    assert KEY_CANARY not in caplog.text


def test_size_limit_empty_and_malformed_uploads(
    api: TestClient, fake: FakeTranscriptionServer
) -> None:
    configure(api, fake.base_url)
    too_big = upload(api, b"\x00" * (MAX_AUDIO_BYTES + 1))
    assert "25 MB" in error(too_big, 413, "FILE_TOO_LARGE")
    # Refused from its Content-Length alone, before any of it is parsed.
    oversized = api.post(
        "/api/transcribe",
        content=b"x" * (MAX_AUDIO_BYTES + 100_000),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    error(oversized, 413, "FILE_TOO_LARGE")
    # A chunked upload of unknown size is refused.
    chunked = api.post(
        "/api/transcribe",
        content=iter([b"--x\r\n", b"--x--\r\n"]),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    error(chunked, 411, "LENGTH_REQUIRED")
    error(upload(api, b""), 422, "VALIDATION_ERROR")
    error(api.post("/api/transcribe", files={"audio": ("a.webm", b"x")}), 422, "VALIDATION_ERROR")
    error(api.post("/api/transcribe", json={"file": "aGVsbG8="}), 422, "VALIDATION_ERROR")
    error(api.post("/api/transcribe", data={"file": "just text"}), 422, "VALIDATION_ERROR")
    broken = api.post(
        "/api/transcribe",
        content=b"--x\r\nnot a part",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert broken.status_code in (400, 422), broken.text
    two_files = api.post(
        "/api/transcribe",
        files=[("file", ("a.webm", b"one")), ("file", ("b.webm", b"two"))],
    )
    error(two_files, 400, "BAD_REQUEST")
    # None of it reached the endpoint; a good recording still does.
    assert fake.requests == []
    assert upload(api, b"fine").json() == {"text": "fine"}


def test_anonymous_requests_are_refused(
    api: TestClient, anonymous: TestClient, fake: FakeTranscriptionServer
) -> None:
    configure(api, fake.base_url)
    error(anonymous.get("/api/transcribe"), 401, "UNAUTHENTICATED")
    response = anonymous.post("/api/transcribe", files={"file": ("a.webm", b"hi", "audio/webm")})
    error(response, 401, "UNAUTHENTICATED")
    assert fake.requests == []


def test_a_slow_endpoint_times_out() -> None:
    async def attempt(endpoint: TranscriptionEndpoint) -> str:
        return await transcribe(endpoint, b"hello", content_type="audio/webm")

    with FakeTranscriptionServer(delay=5.0) as slow:
        endpoint = TranscriptionEndpoint(slow.base_url, "whisper-1", timeout_s=0.3)
        with pytest.raises(TranscriptionFailed, match="did not answer in time"):
            anyio.run(attempt, endpoint)
        patient = dataclasses.replace(endpoint, timeout_s=30)
        slow._state.delay = 0.1
        assert anyio.run(attempt, patient) == "hello"


def test_a_key_no_header_can_carry_is_a_502_not_a_crash(fake: FakeTranscriptionServer) -> None:
    """Settings take ASCII keys only; one stored before that rule is refused with a message
    (httpx cannot encode it into the Authorization header) and nothing is sent."""
    endpoint = TranscriptionEndpoint(fake.base_url, "whisper-1", api_key="sk-kéy")
    with pytest.raises(TranscriptionFailed, match="set transcription_api_key again"):
        anyio.run(lambda: transcribe(endpoint, b"hello", content_type="audio/webm"))
    assert fake.requests == []


def test_a_url_the_http_client_refuses_is_a_502_not_a_crash() -> None:
    """Settings refuse such URLs now; one stored before is answered with a message."""

    async def attempt(url: str) -> str:
        endpoint = TranscriptionEndpoint(url, "whisper-1")
        return await transcribe(endpoint, b"hello", content_type="audio/webm")

    for url in ("http://xn--.com/v1", "http://[::1]x/v1"):
        with pytest.raises(TranscriptionFailed, match="set transcription_url again"):
            anyio.run(attempt, url)


def test_the_forwarded_name_has_an_extension_the_api_decodes() -> None:
    assert upload_name("memo.OGG", None) == "recording.ogg"
    assert upload_name("../../etc/passwd", "audio/wav") == "recording.wav"
    assert upload_name("blob", "audio/webm;codecs=opus") == "recording.webm"
    assert upload_name(None, "video/mp4") == "recording.mp4"
    assert upload_name("x.exe", "application/octet-stream") == "recording.webm"
