"""FastAPI dependencies: the app's state, the auth service and the request's principal."""

from __future__ import annotations

from fastapi import Request

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
