"""The API documentation pages (/docs, /redoc) with their scripts served from here.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, which a server on a plane, on a
closed network or behind our CSP cannot reach. The fastapi-offline package ships the same
files; we serve them under /docs-assets/ (private like the pages themselves)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from pocketcode.domain.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PREFIX = "/docs-assets"
ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"})


def _title(request: Request, page: str) -> str:
    return f"{request.app.title} - {page}"


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=_title(request, "API"),
        swagger_js_url=f"{ASSETS_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PREFIX}/favicon.png",
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=_title(request, "API reference"),
        redoc_js_url=f"{ASSETS_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PREFIX}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSETS_PREFIX + "/{name}")
def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed set of names: nothing from the request becomes a path
        raise NotFound("no such documentation asset")
    return FileResponse(ASSETS_DIR / name, headers={"cache-control": "max-age=86400"})
