"""Application settings: known keys, plain values shown, secrets write-only and masked."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
