"""Voice input: forwards a recording to the configured OpenAI-compatible transcription endpoint."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
