"""FastAPI dependencies: the app's state, the auth service and the request's principal.

Routes declare them through the `State`, `Me`, `Auth` and `Account` annotations below. Their
dependency functions are `async def` although they do no I/O: FastAPI runs a plain `def`
dependency in its thread pool, so each of them would cost a hand-off to a worker thread and
back on every request (two per request on most routes, about as much CPU as the route itself
on the hot ones).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pocketcode.domain.errors import Forbidden, Unauthenticated
from pocketcode.services.auth import AuthService
from pocketcode.web.app import AppState
from pocketcode.web.security import Principal


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.pocketcode
    return state


def auth_service(request: Request) -> AuthService:
    auth = app_state(request).auth
    assert auth is not None, "the auth service starts with the app"
    return auth


def optional_principal(request: Request) -> Principal | None:
    """Who is asking, as the security middleware resolved it (None on public routes)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def current_principal(request: Request) -> Principal:
    principal = optional_principal(request)
    if principal is None:  # the middleware already refused it; this guards a misconfiguration
        raise Unauthenticated("authentication required")
    return principal


def credentialed_principal(request: Request) -> Principal:
    """A principal that proved itself with a cookie or token. A trusted-network client acts as
    the owner for sessions but cannot manage passwords, two-factor auth or tokens."""
    principal = current_principal(request)
    if principal.method == "trusted-network":
        raise Forbidden("log in to manage the account (trusted-network access cannot)")
    return principal


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _state(request: Request) -> AppState:
    return app_state(request)


async def _auth(request: Request) -> AuthService:
    return auth_service(request)


async def _me(request: Request) -> Principal:
    return current_principal(request)


async def _account(request: Request) -> Principal:
    return credentialed_principal(request)


State = Annotated[AppState, Depends(_state)]
Auth = Annotated[AuthService, Depends(_auth)]
Me = Annotated[Principal, Depends(_me)]
Account = Annotated[Principal, Depends(_account)]
