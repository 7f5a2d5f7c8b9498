"""Request security for every route: Host allowlist, who is asking (`Principal`), auth required
by default, the Origin check on unsafe methods, and security headers on every response.

It is one ASGI middleware rather than a dependency each route declares, so a route that
forgets to declare anything is still private: only paths on `PUBLIC_PATHS` answer without
credentials (and an unknown path answers 401, not 404, to anonymous clients).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import anyio.to_thread
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from pocketcode.config import Settings
    from pocketcode.services.auth import AuthService

SESSION_COOKIE = "pocketcode_session"

# Answer without credentials. `/` and the health checks are what PokéCode's mobile app probes
# before it has any credentials, and they tell no more than the version (which `/` always
# told); `/health` also says whether the database is up, which is what a probe is for.
# Setup and login must be reachable to get credentials at all; status tells the web client
# which of the two screens to show.
PUBLIC_PATHS = frozenset(
    {
        "/",
        "/health",
        "/health/",
        "/health/live",
        "/health/ready",
        "/api/auth/status",
        "/api/auth/setup",
        "/api/auth/login",
        # The web app's PWA manifest and service worker: a browser fetches them without
        # credentials (the manifest request carries no cookie), and they hold no data.
        "/manifest.webmanifest",
        "/sw.js",
    }
)
# The web app's static files (routes/webapp.py): code and styles, no data.
PUBLIC_PREFIXES: tuple[str, ...] = ("/assets/",)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
# The /docs and /redoc pages (routes/docs.py) start Swagger UI and ReDoc with an inline script
# and inline styles; their scripts are served from here. Private pages with no user content.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; base-uri 'none'; object-src 'none'; "
    "frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc"})

AuthMethod = Literal["cookie", "bearer", "trusted-network"]


@dataclass(frozen=True)
class Principal:
    """The user a request acts for and how it proved it."""

    user_id: uuid.UUID
    method: AuthMethod
    login_session_id: uuid.UUID | None = None
    api_token_id: uuid.UUID | None = None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def split_host(value: str) -> str:
    """The host name of a Host header or netloc, without port or IPv6 brackets, lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class RequestPolicy:
    """The settings the middleware enforces, computed once."""

    def __init__(self, settings: Settings) -> None:
        hosts = {"localhost", "127.0.0.1", "::1", settings.host.lower(), *settings.allowed_hosts}
        self.public_origin: str | None = None
        if settings.public_url:
            parts = urlsplit(settings.public_url)
            hosts.add((parts.hostname or "").lower())
            self.public_origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.allowed_hosts = frozenset(hosts - {"", "0.0.0.0", "::"})  # noqa: S104
        self.cors_origins = frozenset(origin.lower() for origin in settings.cors_origins)
        self.trusted_networks = [ipaddress.ip_network(cidr) for cidr in settings.trusted_networks]
        self.secure_cookies = bool(settings.public_url and settings.public_url.startswith("https:"))

    def allows_host(self, header: str | None) -> bool:
        """A name we serve, or an IP address: DNS rebinding needs a name the attacker controls,
        so a literal address (a phone on the LAN typing 192.168.1.20) is safe to answer."""
        if not header:
            return False
        host = split_host(header)
        return host in self.allowed_hosts or _is_ip_literal(host)

    def is_same_origin(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.cors_origins or origin == self.public_origin:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:  # not a URL at all (`http://[x`): not ours
            return False
        return parts.scheme in {"http", "https"} and parts.netloc == host_header.strip().lower()

    def is_cross_site(self, origin: str | None, fetch_site: str | None, host_header: str) -> bool:
        """A request a page of another site sent: its `Origin` is not ours, or its
        `Sec-Fetch-Site` is other than same-origin/none."""
        return (origin is not None and not self.is_same_origin(origin, host_header)) or (
            fetch_site is not None and fetch_site not in {"same-origin", "none"}
        )

    def is_trusted(self, client_host: str | None) -> bool:
        if not self.trusted_networks or not client_host:
            return False
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_networks)


def error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": message, "code": code, "statusCode": status}).encode()


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-security-policy", (DOCS_CSP if path in DOCS_PATHS else CSP).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if path.startswith("/api/"):
        headers.append((b"cache-control", b"no-store"))
    return headers


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


def cookie_token(headers: Headers) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    raw = headers.get("cookie")
    if not raw:
        return None
    try:
        cookie = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = cookie.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, policy: RequestPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra = security_headers(path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    if name.decode() not in headers:
                        headers.append(name.decode(), value.decode())
            await send(message)

        async def refuse(status: int, code: str, text: str) -> None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = error_body(status, code, text)
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.policy.allows_host(host):
            await refuse(400, "INVALID_HOST", "this server does not answer to that host name")
            return
        assert host is not None

        method: str = scope.get("method", "GET")
        origin = headers.get("origin")
        fetch_site = headers.get("sec-fetch-site")
        cross_site = self.policy.is_cross_site(origin, fetch_site, host)

        principal = await self._principal(scope, headers)
        if (method in UNSAFE_METHODS or scope["type"] == "websocket") and (
            principal is None or principal.method != "bearer"
        ):
            # A browser adds Origin to every unsafe request and cannot forge it; a page of
            # another site must not act with this site's cookie (CSRF) nor log a victim in.
            if cross_site:
                await refuse(403, "CROSS_ORIGIN", "cross-origin request refused")
                return
            if (
                principal is not None
                and principal.method == "cookie"
                and origin is None
                and fetch_site != "same-origin"
            ):
                await refuse(403, "ORIGIN_REQUIRED", "an Origin header is required")
                return

        if principal is None and not is_public(path):
            await refuse(401, "UNAUTHENTICATED", "authentication required")
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send_with_headers)

    async def _principal(self, scope: Scope, headers: Headers) -> Principal | None:
        """From `Authorization: Bearer` (API tokens) or the session cookie, else the trusted
        network. Never from the query string: URLs end up in logs and browser history."""
        auth = _auth_service(scope)
        if auth is None:
            return None
        # A credential checked in the last few seconds is answered here, without a database
        # query and without the hand-off to a worker thread that the query needs.
        bearer = bearer_token(headers)
        if bearer is not None:  # a client that sent a token means it: no fallback to a cookie
            identity = auth.cached_identity(bearer, "token") or await anyio.to_thread.run_sync(
                auth.authenticate_token, bearer
            )
            if identity is None:
                return None
            return Principal(identity.user_id, "bearer", api_token_id=identity.api_token_id)
        cookie = cookie_token(headers)
        if cookie is not None:
            identity = auth.cached_identity(cookie, "session") or await anyio.to_thread.run_sync(
                auth.authenticate_session, cookie
            )
            if identity is not None:
                return Principal(
                    identity.user_id, "cookie", login_session_id=identity.login_session_id
                )
        client = scope.get("client")
        if client and self.policy.is_trusted(client[0]):
            owner = await anyio.to_thread.run_sync(auth.owner_id)
            if owner is not None:
                return Principal(owner, "trusted-network")
        return None


def _auth_service(scope: Scope) -> AuthService | None:
    app = scope.get("app")
    state = getattr(getattr(app, "state", None), "pocketcode", None)
    return getattr(state, "auth", None)
