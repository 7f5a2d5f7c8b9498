"""`/api/auth`: first-run setup, login and logout, the account, two-factor auth, API tokens.

Only status, setup and login are public (see `web.security.PUBLIC_PATHS`); the rest run for
the principal the security middleware resolved.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import APIRouter, Request, Response

from pocketcode.domain.errors import Conflict, Forbidden
from pocketcode.domain.timefmt import iso_z
from pocketcode.services.auth import NewLogin
from pocketcode.web.app import AppState
from pocketcode.web.deps import Account, Auth, Me, State, client_ip, optional_principal
from pocketcode.web.schemas import (
    ErrorBody,
    LoginIn,
    LoginOut,
    MeOut,
    PasswordIn,
    PasswordOut,
    SetupIn,
    StatusOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    TotpConfirmIn,
    TotpConfirmOut,
    TotpDisableIn,
    TotpEnrollOut,
    UserOut,
    errors,
)
from pocketcode.web.security import SESSION_COOKIE

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _set_session_cookie(
    request: Request, response: Response, login: NewLogin, state: AppState
) -> None:
    secure = request.url.scheme == "https" or bool(
        state.settings.public_url and state.settings.public_url.startswith("https:")
    )
    max_age = state.settings.session_ttl_days * 86400
    # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it.
    response.set_cookie(
        SESSION_COOKIE,
        login.token,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


# These routes check a password from the body as well as the caller's credentials.
_WRONG_PASSWORD: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Not logged in, or the password sent is wrong"}
}


@router.get("/status", summary="Whether setup is needed and whether this client is logged in")
def status(request: Request, auth: Auth) -> StatusOut:
    principal = optional_principal(request)
    user = UserOut.of(auth.get_user(principal.user_id)) if principal else None
    return StatusOut(
        setup_required=auth.count_users() == 0, authenticated=principal is not None, user=user
    )


@router.post(
    "/setup",
    status_code=201,
    summary="Create the owner account with the one-time setup token",
    responses=errors(400, 403, 409, 429),
)
def setup(
    body: SetupIn, request: Request, response: Response, auth: Auth, state: State
) -> LoginOut:
    if auth.count_users():
        raise Conflict("the owner account already exists")
    expected = state.setup_token_hash
    given = hashlib.sha256(body.token.encode()).hexdigest()
    if expected is None or not hmac.compare_digest(expected, given):
        raise Forbidden(
            "setup needs the one-time URL `pocketcode serve` printed "
            "(or create the owner with `pocketcode user create`)"
        )
    user = auth.create_user(body.username, body.password, only_if_first=True)
    state.setup_token_hash = None
    login = auth.login(
        user.username,
        body.password,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    _set_session_cookie(request, response, login, state)
    return LoginOut(user=UserOut.of(auth.get_user(user.id)), expires_at=iso_z(login.expires_at))


@router.post("/login", summary="Log in; sets the session cookie", responses=errors(400, 401, 429))
def login(
    body: LoginIn, request: Request, response: Response, auth: Auth, state: State
) -> LoginOut:
    result = auth.login(
        body.username,
        body.password,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        totp_code=body.totp_code,
        recovery_code=body.recovery_code,
    )
    _set_session_cookie(request, response, result, state)
    return LoginOut(
        user=UserOut.of(auth.get_user(result.user_id)), expires_at=iso_z(result.expires_at)
    )


@router.post("/logout", status_code=204, summary="End this login session")
def logout(principal: Me, auth: Auth) -> Response:
    if principal.login_session_id is not None:
        auth.logout(principal.login_session_id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/me", summary="The logged-in user")
def me(principal: Me, auth: Auth) -> MeOut:
    return MeOut(user=UserOut.of(auth.get_user(principal.user_id)), auth_method=principal.method)


@router.post(
    "/password",
    summary="Change the password; other login sessions are revoked",
    responses={**errors(400, 403, 429), **_WRONG_PASSWORD},
)
def change_password(
    body: PasswordIn, request: Request, principal: Account, auth: Auth
) -> PasswordOut:
    revoked = auth.change_password(
        principal.user_id,
        body.new_password,
        current_password=body.current_password,
        keep_session=principal.login_session_id,
        ip=client_ip(request),
    )
    return PasswordOut(revoked_sessions=revoked)


@router.post(
    "/totp/enroll",
    summary="Start two-factor auth: a new secret to scan",
    responses=errors(403, 409),
)
def totp_enroll(principal: Account, auth: Auth) -> TotpEnrollOut:
    enrollment = auth.enroll_totp(principal.user_id)
    return TotpEnrollOut(secret=enrollment.secret, otpauth_uri=enrollment.uri)


@router.post(
    "/totp/confirm",
    summary="Turn two-factor auth on with a code; returns recovery codes",
    responses=errors(400, 403, 409, 429),
)
def totp_confirm(
    body: TotpConfirmIn, request: Request, principal: Account, auth: Auth
) -> TotpConfirmOut:
    codes = auth.confirm_totp(principal.user_id, body.code, ip=client_ip(request))
    return TotpConfirmOut(recovery_codes=codes)


@router.post(
    "/totp/disable",
    status_code=204,
    summary="Turn two-factor auth off",
    responses={**errors(400, 403, 429), **_WRONG_PASSWORD},
)
def totp_disable(body: TotpDisableIn, request: Request, principal: Account, auth: Auth) -> Response:
    auth.disable_totp(principal.user_id, password=body.password, ip=client_ip(request))
    return Response(status_code=204)


@router.get(
    "/tokens",
    summary="The user's API tokens (never the tokens themselves)",
    responses=errors(403),
)
def list_tokens(principal: Account, auth: Auth) -> list[TokenOut]:
    return [TokenOut.of(token) for token in auth.list_tokens(principal.user_id)]


@router.post(
    "/tokens",
    status_code=201,
    summary="Create an API token; shown this once",
    responses=errors(400, 403),
)
def create_token(body: TokenIn, principal: Account, auth: Auth) -> TokenCreatedOut:
    created = auth.create_token(principal.user_id, body.name)
    return TokenCreatedOut(token=created.token, **TokenOut.of(created.info).model_dump())


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    summary="Revoke an API token",
    responses=errors(403, 404),
)
def revoke_token(token_id: str, principal: Account, auth: Auth) -> Response:
    auth.revoke_token(principal.user_id, token_id)
    return Response(status_code=204)
