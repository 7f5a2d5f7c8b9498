"""The web app: its shell page, static assets, PWA manifest and service worker.

The app is plain ES modules and CSS under `web/static/` (no build step, no Node to install or
run). The shell page answers `/` for browsers; `/` keeps its JSON answer for every other
client (see `routes/health.py`, which asks `wants_html`). Routing inside the app is by hash
(`/#/sessions/<id>`), so no catch-all route is needed here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from pocketcode.domain.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ASSETS_PREFIX = "/assets/"
MANIFEST_PATH = "/manifest.webmanifest"
SERVICE_WORKER_PATH = "/sw.js"

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
}
# The app is small and changes with the server: the browser revalidates every file (a cheap
# 304 by ETag), so an upgraded server never runs against a stale cached module.
_REVALIDATE = {"Cache-Control": "no-cache"}


def wants_html(request: Request) -> bool:
    """A browser navigating (it asks for text/html), not an API client asking for JSON."""
    return "text/html" in request.headers.get("accept", "").lower()


def _file(relative: str) -> FileResponse:
    """A file under the static folder, or 404. The path is resolved first, so `..` or a
    symlink cannot leave the folder."""
    if "\x00" in relative:  # `resolve` refuses it with a ValueError
        raise NotFound("no such asset")
    path = (STATIC_DIR / relative).resolve()
    # os.path.isfile: pathlib's raises for a name too long (Python 3.11).
    if not path.is_relative_to(STATIC_DIR) or not os.path.isfile(path):
        raise NotFound("no such asset")
    media_type = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=_REVALIDATE)


def shell_page() -> FileResponse:
    return _file("index.html")


@router.get(ASSETS_PREFIX + "{relative:path}")
def asset(relative: Annotated[str, PathParam(max_length=512)]) -> Response:
    return _file(relative)


@router.get(MANIFEST_PATH)
def manifest() -> Response:
    return _file("manifest.webmanifest")


@router.get(SERVICE_WORKER_PATH)
def service_worker() -> Response:
    # Served from the root so that its scope is the whole app.
    return _file("sw.js")
