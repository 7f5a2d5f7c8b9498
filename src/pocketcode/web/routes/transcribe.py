"""Voice input: forwards a recording to the configured OpenAI-compatible transcription endpoint.

The upload is read by hand rather than through an `UploadFile` parameter so that its size is
checked before anything is parsed: FastAPI would spool the whole form first. A request
without a Content-Length (a chunked upload of unknown size) is refused.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from pocketcode.domain.errors import FileTooLarge, InvalidInput, Unprocessable
from pocketcode.services.transcription import (
    MAX_AUDIO_BYTES,
    check_audio,
    require_endpoint,
    transcribe,
    transcription_endpoint,
)
from pocketcode.web.deps import Me, State
from pocketcode.web.schemas import Out, errors

router = APIRouter(prefix="/api", tags=["transcription"])


# Room for the multipart boundaries and part headers around the recording.
_FORM_OVERHEAD = 64 * 1024

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"The recording (webm, mp4, ogg, wav…), at most "
                            f"{MAX_AUDIO_BYTES // (1024 * 1024)} MB",
                        }
                    },
                }
            }
        },
    }
}


class TranscriptionStatusOut(Out):
    configured: bool


class TranscriptOut(Out):
    text: str


@router.get(
    "/transcribe",
    response_model=TranscriptionStatusOut,
    summary="Whether voice input is configured (a transcription URL is set)",
)
def transcription_status(state: State, _me: Me) -> TranscriptionStatusOut:
    configured = transcription_endpoint(state.db, state.keyring) is not None
    return TranscriptionStatusOut(configured=configured)


@router.post(
    "/transcribe",
    response_model=TranscriptOut,
    summary="Transcribe a recording through the configured OpenAI-compatible endpoint",
    responses=errors(400, 409, 411, 413, 422, 502),
    openapi_extra=_UPLOAD_BODY,
)
async def transcribe_recording(request: Request, state: State, _me: Me) -> TranscriptOut:
    endpoint = await run_in_threadpool(require_endpoint, state.db, state.keyring)
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411, "send the recording with a Content-Length")
    if not length.isdigit():
        raise InvalidInput("Content-Length is not a number")
    if int(length) > MAX_AUDIO_BYTES + _FORM_OVERHEAD:
        raise FileTooLarge(f"a recording is at most {MAX_AUDIO_BYTES // (1024 * 1024)} MB")
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable("send the recording as the multipart/form-data field `file`")
        audio = await upload.read(MAX_AUDIO_BYTES + 1)
        check_audio(audio)
        text = await transcribe(
            endpoint, audio, filename=upload.filename, content_type=upload.content_type
        )
    return TranscriptOut(text=text)
