"""Health checks (PokéCode's shapes): `/`, `/health`, `/health/live`, `/health/ready`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from pocketcode import __version__
from pocketcode.domain.timefmt import now_iso_z
from pocketcode.services.health import check_health
from pocketcode.web.routes.webapp import shell_page, wants_html
from pocketcode.web.schemas import (
    HealthOut,
    LiveOut,
    NotReadyOut,
    ReadyOut,
    RootOut,
    ServicesOut,
)

router = APIRouter(tags=["health"])


@router.get(
    "/",
    summary="Server name and version (browsers get the web app)",
    responses={
        200: {
            "model": RootOut,
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "JSON, or the web app's page for a browser that asks for HTML",
        }
    },
)
async def root(request: Request) -> Response:
    # One URL for both: a browser opening the printed URL gets the app, while PokéCode's
    # client and scripts (which ask for JSON or anything) keep this JSON answer.
    if wants_html(request):
        return shell_page()
    body = RootOut(name="pocketcode", version=__version__, status="ok", timestamp=now_iso_z())
    return JSONResponse(body.model_dump())


@router.get("/health/live", summary="The process answers", response_model=LiveOut)
async def live() -> LiveOut:
    return LiveOut(status="ok", timestamp=now_iso_z())


@router.get(
    "/health/ready",
    summary="The database answers and is migrated",
    response_model=ReadyOut,
    responses={503: {"model": NotReadyOut, "description": "Not ready, and why"}},
)
async def ready(request: Request) -> ReadyOut | JSONResponse:
    state = request.app.state.pocketcode
    health = await run_in_threadpool(check_health, state.db)
    if health.ok:
        return ReadyOut(status="ready", timestamp=now_iso_z())
    body = NotReadyOut(status="not_ready", timestamp=now_iso_z(), reason=health.reason or "")
    return JSONResponse(body.model_dump(by_alias=True), status_code=503)


# PokéCode answered `/health/` too (Fastify), and its client asks for that form; a redirect
# would send clients behind a proxy to the wrong address.
_HEALTH: dict[str, Any] = {
    "response_model": HealthOut,
    "response_model_exclude_unset": True,
    "responses": {503: {"model": HealthOut, "description": "Unhealthy, and why"}},
}


@router.get("/health/", include_in_schema=False, **_HEALTH)
@router.get("/health", summary="Overall health with per-service status", **_HEALTH)
async def health(request: Request, response: Response) -> HealthOut:
    state = request.app.state.pocketcode
    result = await run_in_threadpool(check_health, state.db)
    # The queue lives in the database: it cannot work when the database does not.
    queue = state.runtime.queue_health() if state.runtime else "unknown"
    body = HealthOut(
        status="healthy" if result.ok else "unhealthy",
        timestamp=now_iso_z(),
        services=ServicesOut(
            database="healthy" if result.ok else "unhealthy",
            queue=queue if result.ok else "unhealthy",
        ),
        version=__version__,
        uptime=round(time.monotonic() - state.started_at, 3),
    )
    if not result.ok:
        body.reason = result.reason or ""  # additive: PokéCode's client strips unknown keys
        response.status_code = 503
    return body
