"""Every route of the app refuses an anonymous request unless this test's own table says it is
public. A route added without a decision fails here: either it is private (nothing to do,
that is the default) or someone must add it below, on purpose."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Route

from pocketcode.web.security import PUBLIC_PATHS, PUBLIC_PREFIXES, is_public
from tests.security.conftest import MakeClient

# (method, path template) that answer without credentials, and why.
PUBLIC = {
    ("GET", "/"),  # server name and version: PokéCode's client probes it
    ("GET", "/health"),  # PokéCode's health probe
    ("GET", "/health/"),  # the same, in the form PokéCode's client asks for
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/api/auth/status"),  # which screen to show: setup or login
    ("POST", "/api/auth/setup"),  # needs the one-time token printed by serve
    ("POST", "/api/auth/login"),
    # The web app's code and styles, its PWA manifest and service worker: no data.
    ("GET", "/assets/{relative:path}"),
    ("GET", "/manifest.webmanifest"),
    ("GET", "/sw.js"),
}


def all_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route, those of included routers too."""
    pairs: list[tuple[str, str]] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        # A websocket route or a mount needs its own check here before it may exist.
        assert isinstance(route, Route), f"unexpected route type {route!r}: extend this test"
        assert context.path and context.methods, route
        pairs.extend((method, context.path) for method in sorted(context.methods))
    return pairs


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)


def refuses(client: TestClient, method: str, path: str) -> bool:
    response = client.request(method, concrete(path))
    if response.status_code != 401:
        return False
    if method != "HEAD":
        body = response.json()
        assert body == {
            "error": "authentication required",
            "code": "UNAUTHENTICATED",
            "statusCode": 401,
        }
    return True


def test_every_route_refuses_anonymous_requests_unless_public(make_client: MakeClient) -> None:
    client = make_client()
    routes = all_routes(client.app)  # type: ignore[arg-type]
    assert len(routes) > len(PUBLIC)

    wrongly_public = [
        (m, p) for m, p in routes if (m, p) not in PUBLIC and not refuses(client, m, p)
    ]
    assert not wrongly_public, f"routes answering without credentials: {wrongly_public}"
    wrongly_private = [(m, p) for m, p in routes if (m, p) in PUBLIC and refuses(client, m, p)]
    assert not wrongly_private, wrongly_private
    # The table names no route that does not exist (a renamed route must be reviewed here).
    assert set(routes) >= PUBLIC, PUBLIC - set(routes)
    # And the server's lists say no more than this table.
    assert {path for _, path in PUBLIC if not path.startswith(PUBLIC_PREFIXES)} == set(PUBLIC_PATHS)


def test_a_route_that_declares_nothing_is_private(make_client: MakeClient) -> None:
    client = make_client()
    app: FastAPI = client.app  # type: ignore[assignment]

    @app.get("/api/forgot-to-declare-auth")
    def leaky() -> dict[str, str]:
        return {"secret": "s"}

    @app.post("/health/live/extra")
    def lookalike() -> dict[str, str]:
        return {"secret": "s"}

    assert ("GET", "/api/forgot-to-declare-auth") in all_routes(app)
    assert refuses(client, "GET", "/api/forgot-to-declare-auth")
    assert refuses(client, "POST", "/health/live/extra")


def test_unknown_paths_do_not_reveal_what_exists(make_client: MakeClient) -> None:
    client = make_client()
    assert refuses(client, "GET", "/api/nothing-here")
    assert refuses(client, "GET", "/api/auth/status/../me")


def test_the_schema_documents_what_the_security_middleware_answers(
    make_client: MakeClient,
) -> None:
    """The middleware answers before any route: 400 for a Host it does not serve (every
    operation), 401 without credentials (every private one), 403 for an unsafe request from
    another site. And 422 only where FastAPI has something to refuse."""
    app: FastAPI = make_client().app  # type: ignore[assignment]
    missing = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            needed = {"400"} | ({"401"} if not is_public(path) else set())
            if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}:
                needed.add("403")
            if not needed <= documented:
                missing.append((method, path, sorted(needed - documented)))
    assert missing == []
    operations = app.openapi()["paths"]
    # Nothing to validate: a session id taken as it comes.
    assert "422" not in operations["/api/sessions/{session_id}"]["get"]["responses"]
    assert "422" not in operations["/api/auth/tokens/{token_id}"]["delete"]["responses"]
    # A body, or a bounded query parameter: something to refuse.
    assert "422" in operations["/api/sessions"]["post"]["responses"]
    assert "422" in operations["/api/sessions"]["get"]["responses"]
    headers = [p for p in operations["/api/events"]["get"]["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in headers] == ["Last-Event-ID"]
