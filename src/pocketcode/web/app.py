"""`create_app`: the FastAPI application factory and its lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pocketcode import __version__
from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.domain.errors import PocketcodeError
from pocketcode.services.secrets import Keyring, load_keyring, verify_keyring

if TYPE_CHECKING:
    from pocketcode.services.runtime import Runtime


@dataclass
class AppState:
    settings: Settings
    db: Database
    keyring: Keyring
    started_at: float
    runtime: Runtime | None = None


def create_app(
    settings: Settings, db: Database | None = None, *, run_agents: bool = True
) -> FastAPI:
    """Build the app. The database must already be migrated (`serve` does it first).

    With `run_agents`, the lifespan also starts the event bus and the run manager (which
    recovers runs a previous server left behind, then claims queued prompts)."""

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
            app.state.pocketcode = AppState(settings, database, keyring, time.monotonic(), runtime)
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
    )

    @app.exception_handler(PocketcodeError)
    async def _domain_error(_request: Request, exc: PocketcodeError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.message, "code": exc.code, "statusCode": exc.status_code},
            status_code=exc.status_code,
        )

    from pocketcode.web.routes import health

    app.include_router(health.router)
    return app
