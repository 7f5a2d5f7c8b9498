"""The web app: its shell page, static assets, PWA manifest and service worker."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
