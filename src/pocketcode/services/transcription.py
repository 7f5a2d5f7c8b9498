"""Voice input (PocketDev's feature): a recording is forwarded to an OpenAI-compatible
`{transcription_url}/audio/transcriptions` endpoint and its text comes back.

The endpoint is configured in the settings (`transcription_url`, `transcription_api_key`,
`transcription_model`); without a URL voice input is off. A local server that needs no key
(whisper.cpp, faster-whisper-server) works without `transcription_api_key`.

Neither the key nor the recording nor its text is ever logged, and an error message never
carries the key or the endpoint's own answer (which may quote the key).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx

from pocketcode.db.engine import Database
from pocketcode.domain.errors import (
    FileTooLarge,
    TranscriptionFailed,
    TranscriptionNotConfigured,
    Unprocessable,
)
from pocketcode.services.app_settings import (
    KNOWN_SETTINGS,
    TRANSCRIPTION_API_KEY,
    TRANSCRIPTION_MODEL,
    TRANSCRIPTION_URL,
    KnownSettings,
)
from pocketcode.services.secrets import Keyring

logger = logging.getLogger(__name__)

# OpenAI's own limit for one file; minutes of speech from a phone are far below it.
MAX_AUDIO_BYTES = 25 * 1024 * 1024
# Long recordings take the API a while; a dead endpoint is noticed at connect.
TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0

# OpenAI picks the decoder by the file name's extension, so the forwarded name keeps a known
# one: the upload's own, else one derived from its content type (browsers record webm or mp4).
_EXTENSIONS = frozenset({"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"})
_EXTENSION_OF_TYPE = {
    "audio/webm": "webm",
    "video/webm": "webm",
    "audio/ogg": "ogg",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "m4a",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
}


@dataclass(frozen=True)
class TranscriptionEndpoint:
    base_url: str  # e.g. https://api.openai.com/v1, without a trailing slash
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = TIMEOUT_S

    @property
    def url(self) -> str:
        return f"{self.base_url}/audio/transcriptions"


def transcription_endpoint(db: Database, keyring: Keyring) -> TranscriptionEndpoint | None:
    """The configured endpoint, or None when voice input is off (no `transcription_url`)."""
    settings = KnownSettings(db, keyring)
    base_url = settings.value(TRANSCRIPTION_URL)
    if base_url is None:
        return None
    model = settings.value(TRANSCRIPTION_MODEL) or KNOWN_SETTINGS[TRANSCRIPTION_MODEL].default
    assert model is not None  # the setting has a default
    return TranscriptionEndpoint(base_url, model, settings.value(TRANSCRIPTION_API_KEY))


def require_endpoint(db: Database, keyring: Keyring) -> TranscriptionEndpoint:
    endpoint = transcription_endpoint(db, keyring)
    if endpoint is None:
        raise TranscriptionNotConfigured(
            "voice input is not configured: set transcription_url (and transcription_api_key "
            "if the endpoint needs one) in the settings"
        )
    return endpoint


def upload_name(filename: str | None, content_type: str | None) -> str:
    """`recording.<ext>` with an extension the endpoint knows; nothing else of the client's
    file name is passed on."""
    suffix = PurePosixPath(filename or "").suffix.lower().lstrip(".")
    if suffix not in _EXTENSIONS:
        media_type = (content_type or "").split(";")[0].strip().lower()
        suffix = _EXTENSION_OF_TYPE.get(media_type, "webm")
    return f"recording.{suffix}"


def check_audio(audio: bytes) -> None:
    if not audio:
        raise Unprocessable("the recording is empty")
    if len(audio) > MAX_AUDIO_BYTES:
        raise FileTooLarge(f"a recording is at most {MAX_AUDIO_BYTES // (1024 * 1024)} MB")


async def transcribe(
    endpoint: TranscriptionEndpoint,
    audio: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
) -> str:
    """The text of `audio`, from the endpoint. TranscriptionFailed (502) when the endpoint
    cannot be reached, times out, refuses the request or answers without a text."""
    check_audio(audio)
    host = urlsplit(endpoint.base_url).netloc
    if endpoint.api_key and not endpoint.api_key.isascii():  # stored before keys were ASCII
        raise TranscriptionFailed(
            "the transcription key holds characters an HTTP header cannot carry: "
            "set transcription_api_key again"
        )
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    name = upload_name(filename, content_type)
    timeout = httpx.Timeout(endpoint.timeout_s, connect=min(CONNECT_TIMEOUT_S, endpoint.timeout_s))
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.post(
                endpoint.url,
                headers=headers,
                data={"model": endpoint.model, "response_format": "json"},
                files={"file": (name, audio, content_type or "application/octet-stream")},
            )
    except httpx.TimeoutException:
        raise TranscriptionFailed(
            f"the transcription service at {host} did not answer in time"
        ) from None
    except (httpx.InvalidURL, UnicodeError):  # a URL stored before settings checked this
        raise TranscriptionFailed(
            "the transcription URL is not valid: set transcription_url again"
        ) from None
    except httpx.HTTPError as exc:
        raise TranscriptionFailed(
            f"the transcription service at {host} could not be reached ({type(exc).__name__})"
        ) from None
    elapsed_ms = round((time.monotonic() - started) * 1000)
    logger.info(
        "transcription: %d bytes to %s, HTTP %d in %d ms",
        len(audio),
        host,
        response.status_code,
        elapsed_ms,
    )
    if response.status_code in (401, 403):
        raise TranscriptionFailed(
            f"the transcription service at {host} refused the key "
            f"(HTTP {response.status_code}): check transcription_api_key"
        )
    if not response.is_success:
        raise TranscriptionFailed(
            f"the transcription service at {host} answered HTTP {response.status_code}"
        )
    try:
        text = response.json()["text"]
    except (ValueError, KeyError, TypeError):
        text = None
    if not isinstance(text, str):
        raise TranscriptionFailed(
            f"the transcription service at {host} answered without a text (is "
            f"{TRANSCRIPTION_URL} the API's base URL, e.g. https://api.openai.com/v1?)"
        )
    return text
