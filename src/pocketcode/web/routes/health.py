"""Health checks (PokéCode's shapes): `/`, `/health`, `/health/live`, `/health/ready`."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pocketcode import __version__
from pocketcode.domain.timefmt import now_iso_z
from pocketcode.services.health import check_health

router = APIRouter(tags=["health"])


@router.get("/", summary="Server name and version")
async def root() -> dict[str, str]:
    return {"name": "pocketcode", "version": __version__, "status": "ok", "timestamp": now_iso_z()}


@router.get("/health/live", summary="The process answers")
async def live() -> dict[str, str]:
    return {"status": "ok", "timestamp": now_iso_z()}


@router.get("/health/ready", summary="The database answers and is migrated")
async def ready(request: Request) -> JSONResponse:
    state = request.app.state.pocketcode
    health = await run_in_threadpool(check_health, state.db)
    if health.ok:
        return JSONResponse({"status": "ready", "timestamp": now_iso_z()})
    return JSONResponse(
        {"status": "not_ready", "timestamp": now_iso_z(), "reason": health.reason},
        status_code=503,
    )


# PokéCode answered `/health/` too (Fastify), and its client asks for that form; a redirect
# would send clients behind a proxy to the wrong address.
@router.get("/health/", include_in_schema=False)
@router.get("/health", summary="Overall health with per-service status")
async def health(request: Request) -> JSONResponse:
    state = request.app.state.pocketcode
    result = await run_in_threadpool(check_health, state.db)
    body: dict[str, object] = {
        "status": "healthy" if result.ok else "unhealthy",
        "timestamp": now_iso_z(),
        "services": {
            "database": "healthy" if result.ok else "unhealthy",
            # The queue lives in the database: it cannot work when the database does not.
            "queue": "unhealthy"
            if not result.ok
            else (state.runtime.queue_health() if state.runtime else "unknown"),
        },
        "version": __version__,
        "uptime": round(time.monotonic() - state.started_at, 3),
    }
    if not result.ok:
        body["reason"] = result.reason  # additive: PokéCode's client strips unknown keys
    return JSONResponse(body, status_code=200 if result.ok else 503)
