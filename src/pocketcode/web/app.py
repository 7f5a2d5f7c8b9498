"""`create_app`: the FastAPI application factory and its lifespan."""

from __future__ import annotations

import gc
import hashlib
import importlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pocketcode import __version__
from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.domain.errors import PocketcodeError, TooManyAttempts
from pocketcode.services.auth import AuthService
from pocketcode.services.secrets import Keyring, load_keyring, verify_keyring
from pocketcode.web.security import RequestPolicy, SecurityMiddleware, security_headers

if TYPE_CHECKING:
    from pocketcode.services.runtime import Runtime


@dataclass
class AppState:
    settings: Settings
    db: Database
    keyring: Keyring
    started_at: float
    runtime: Runtime | None = None
    auth: AuthService | None = None
    # SHA-256 of the one-time setup token `serve` printed; None once used or when not issued.
    setup_token_hash: str | None = None


def create_app(
    settings: Settings,
    db: Database | None = None,
    *,
    run_agents: bool = True,
    setup_token: str | None = None,
) -> FastAPI:
    """Build the app. The database must already be migrated (`serve` does it first).

    With `run_agents`, the lifespan also starts the event bus and the run manager (which
    recovers runs a previous server left behind, then claims queued prompts). `setup_token`
    is the one-time secret that lets `POST /api/auth/setup` create the owner account; only
    its hash is kept."""
    setup_hash = hashlib.sha256(setup_token.encode()).hexdigest() if setup_token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = db or Database.from_settings(settings)
        runtime: Runtime | None = None
        try:
            keyring = load_keyring(settings)
            verify_keyring(database, keyring)
            if run_agents:
                from pocketcode.services.runtime import Runtime

                runtime = await Runtime.start(settings, database, keyring)
            auth = AuthService(
                database,
                keyring,
                session_ttl=timedelta(days=settings.session_ttl_days),
                cache_credentials=True,
            )
            if runtime is not None:
                # Revocations announced by other processes on PostgreSQL (auth.RevocationSignal).
                runtime.bus.when_revoked(lambda: auth.credentials.invalidate())
            app.state.pocketcode = AppState(
                settings, database, keyring, time.monotonic(), runtime, auth, setup_hash
            )
            if runtime is not None:
                # The agent SDK (a third of the modules' objects) is imported by the first run
                # anyway; imported now, it is frozen below with the rest.
                importlib.import_module("claude_agent_sdk")
            # What start-up built (the imported modules, the app, the schemas: hundreds of
            # thousands of objects that live as long as the process) leaves the cyclic GC's
            # generations: a full collection walked all of it and paused every request for
            # 100–140 ms (bench/api.md). Collection goes on as before for what comes later.
            gc.collect()
            gc.freeze()
            yield
        finally:
            if runtime is not None:
                await runtime.stop()
            if db is None:  # ours to close, also when start-up failed
                database.dispose()

    app = FastAPI(
        title="pocketcode",
        version=__version__,
        description="Drive Claude Code sessions on your own machine from a phone or browser.",
        lifespan=lifespan,
        # Served by routes/docs.py from local files instead of a CDN.
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(PocketcodeError)
    async def _domain_error(_request: Request, exc: PocketcodeError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyAttempts) else {}
        return error_response(exc.status_code, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = (
            HTTPStatus(exc.status_code).name
            if exc.status_code in HTTPStatus._value2member_map_
            else "ERROR"
        )
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what, never the input: it may be a password.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return error_response(422, "VALIDATION_ERROR", f"invalid request: {problems}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, never the client's fault: the error shape all the same, with the headers the
        # security middleware (inside the framework's error handler) could not add. The
        # framework then logs the traceback for the operator; the client sees no detail.
        response = error_response(500, "INTERNAL_ERROR", "internal error: see the server's log")
        response.raw_headers.extend(security_headers(request.url.path))
        return response

    app.add_middleware(SecurityMiddleware, policy=RequestPolicy(settings))
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Outside the security middleware: a preflight carries no credentials.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )

    from pocketcode.web.routes import (
        auth,
        docs,
        events,
        health,
        projects,
        sessions,
        transcribe,
        webapp,
    )
    from pocketcode.web.routes import (
        settings as settings_routes,
    )
    from pocketcode.web.schemas import document_app_errors

    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(sessions.router)
    app.include_router(settings_routes.router)
    app.include_router(transcribe.router)
    app.include_router(events.router)
    app.include_router(projects.router)
    app.include_router(webapp.router)
    app.include_router(docs.router)
    document_app_errors(app)
    return app


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error shape of the API."""
    return JSONResponse(
        {"error": message, "code": code, "statusCode": status},
        status_code=status,
        headers=headers,
    )
