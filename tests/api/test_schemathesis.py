"""Schemathesis against the app's own OpenAPI schema, anonymous and authenticated.

Every operation in `/openapi.json` becomes one test per run and backend; Hypothesis generates
valid and invalid requests from the schema (odd strings, NUL bytes, huge integers, ids that
are not UUIDs, missing and extra fields) and each response must:
- never be a 5xx (`not_a_server_error`);
- carry a status the operation declares (`status_code_conformance`), with the declared
  content type (`content_type_conformance`) and a body that matches the declared schema
  (`response_schema_conformance`), errors included (`{error, code, statusCode}`).

Anonymous: every operation that is not on the public list must answer 401 with the error
shape, whatever the request; public ones are checked like the authenticated run.
Authenticated: the owner's API token (`Authorization: Bearer`). Half the cases that name a
session get a real session of a real git project (with a conversation of every message kind
and a queued prompt), so the handlers behind the 404 are reached and their bodies checked.

Left out, with reasons:
- the SSE streams (`/api/events`, `/api/sessions/{id}/events`, `.../messages/stream`): they
  never end, and the app runs without the agent runtime here (they answer 503 by design);
  tests/api/test_events_api.py covers them over a real server;
- nothing else: routes that would destroy the fixture (deleting the session, revoking the
  token, changing the password) need data Hypothesis cannot guess (the ids, the password), so
  they only ever see refused or harmless requests, which is what is checked.

Bounded for the suite: a few examples per operation (on top of Schemathesis' explicit
boundary cases), derandomized, no deadline. The anonymous run is on SQLite only: refusing
without credentials happens before any query, the same on both backends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import ASGIClient
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pocketcode.config import Settings
from pocketcode.domain.states import MessageType
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.sessions import SessionService
from pocketcode.web.app import create_app
from pocketcode.web.schemas import UNSTORABLE_TEXT
from pocketcode.web.security import is_public
from tests.api.test_projects_api import git

BASE = "http://localhost"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The streams never end and need the agent runtime (see the module docstring).
SSE_PATHS = r"(/events|/messages/stream)$"
JSON = {"content-type": "application/json"}


def _openapi() -> dict[str, Any]:
    """The schema the app serves; building it reads no settings, files or database."""
    app = create_app(Settings.model_construct(), None, run_agents=False)
    return app.openapi()


schema = schemathesis.openapi.from_dict(_openapi()).exclude(path_regex=SSE_PATHS)

BOUNDED = settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def git_project(project: Path) -> Path:
    """The project folder as a git repository with a commit and a change, so git routes work."""
    git(project, "init", "-q", "-b", "main")
    (project / "README.md").write_text("hello\n")
    git(project, "add", "README.md")
    git(project, "commit", "-q", "-m", "first")
    (project / "README.md").write_text("hello, world\n")
    (project / "notes.txt").write_text("untracked\n")
    return project


def _line(role: str, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": role, "message": {"role": role, "content": [block]}}


CONVERSATION = [
    NewMessage(MessageType.USER, "list the files", subtype="prompt"),
    NewMessage(MessageType.ASSISTANT, "thinking…", subtype="thinking"),
    NewMessage(
        MessageType.ASSISTANT,
        "Bash",
        subtype="tool_use",
        raw=_line("assistant", {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}),
    ),
    NewMessage(
        MessageType.ASSISTANT,
        "Read",
        subtype="tool_use",
        raw=_line(
            "assistant",
            {"type": "tool_use", "id": "t2", "name": "Read", "input": {"file_path": "/a"}},
        ),
    ),
    NewMessage(
        MessageType.USER,
        "hello",
        subtype="tool_result",
        raw=_line("user", {"type": "tool_result", "tool_use_id": "t2", "is_error": False}),
        parent_tool_use_id="t2",
    ),
    NewMessage(MessageType.ASSISTANT, "README.md and notes.txt", subtype="text"),
    NewMessage(MessageType.SYSTEM, "Cancelled.", subtype="cancelled"),
    NewMessage(MessageType.ERROR, "the model is overloaded", subtype="run_failed"),
    NewMessage(MessageType.RESULT, "done", subtype="success"),
]


@pytest.fixture
def session_id(api: TestClient, git_project: Path) -> str:
    """A session of the git project with a conversation of every message kind and a prompt
    waiting in its queue, so the pages and queue Schemathesis reads are not empty."""
    state = api.app.state.pocketcode  # type: ignore[attr-defined]
    row = SessionService(state.db, state.settings.allowed_roots).create(str(git_project))
    MessageService(state.db).append_many(row.id, CONVERSATION)
    JobService(state.db).enqueue(row.id, "and now the tests", {})
    return str(row.id)


def _session(client: TestClient) -> Iterator[ASGIClient]:
    """Schemathesis' in-process client on the app `client` started (its lifespan is running),
    with the same headers: Host `localhost` passes the Host allowlist."""
    session = ASGIClient(client.app, base_url=BASE)
    session.headers.update(dict(client.headers))
    yield session
    session.close()


@pytest.fixture
def anonymous_session(anonymous: TestClient) -> Iterator[ASGIClient]:
    yield from _session(anonymous)


@pytest.fixture
def owner_session(api: TestClient) -> Iterator[ASGIClient]:
    yield from _session(api)


@schema.parametrize()
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(BOUNDED, max_examples=5)
def test_anonymous_requests_are_refused_unless_public(
    case: schemathesis.Case, anonymous_session: ASGIClient
) -> None:
    response = case.call_and_validate(base_url=BASE, session=anonymous_session, checks=CHECKS)
    event(f"status {response.status_code}")
    if is_public(case.operation.path):
        return
    assert response.status_code == 401, (case.operation.label, response.text)
    assert response.json() == {
        "error": "authentication required",
        "code": "UNAUTHENTICATED",
        "statusCode": 401,
    }


@schema.parametrize()
@schema.given(real_session=st.booleans())
@BOUNDED
def test_owner_requests_answer_as_documented(
    case: schemathesis.Case, real_session: bool, owner_session: ASGIClient, session_id: str
) -> None:
    if real_session and case.path_parameters and "session_id" in case.path_parameters:
        case.path_parameters["session_id"] = session_id
    response = case.call_and_validate(base_url=BASE, session=owner_session, checks=CHECKS)
    # `--hypothesis-show-statistics` shows how often each operation succeeded.
    event(f"status {response.status_code}")


def test_text_postgresql_cannot_store_is_refused_on_both_backends(
    api: TestClient, session_id: str
) -> None:
    """PostgreSQL stores neither NUL nor a lone surrogate (JSON's `\\ud800`), so these once
    answered 500 there (and were stored on SQLite). Fuzzing rarely draws one; each body kind
    is tried here on purpose."""
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/sessions", {"projectPath": "/x", "title": "a\x00b"}),
        ("PATCH", f"/api/sessions/{session_id}", {"metadata": {"k\x00": "v"}}),
        ("PATCH", f"/api/sessions/{session_id}", {"context": "a\x00"}),
        ("POST", f"/api/sessions/{session_id}/messages", {"content": "a\x00b"}),
        ("POST", f"/api/permissions/{session_id}", {"decision": "deny", "reason": "\x00"}),
        (
            "PUT",
            "/api/pricing",
            {
                "prices": [
                    {"modelName": "m\x00", "inputPricePerMillion": 1, "outputPricePerMillion": 1}
                ]
            },
        ),
        ("POST", "/api/connect", {"device_id": "d", "device_name": "phone\x00"}),
        ("POST", "/api/auth/login", {"username": "owner\x00", "password": "x"}),
        ("POST", "/api/auth/tokens", {"name": "cli\x00"}),
        ("PATCH", f"/api/sessions/{session_id}", {"metadata": {"k": "\ud800"}}),
        ("PATCH", f"/api/sessions/{session_id}", {"title": "\udfff"}),
    ]
    before = api.get(f"/api/sessions/{session_id}").json()
    for method, path, body in bodies:
        # Serialised by hand: httpx cannot encode a lone surrogate, JSON escapes it.
        content = json.dumps(body).encode()
        response = api.request(method, path, content=content, headers=JSON)
        assert response.status_code == 400, (method, path, response.text)
        assert response.json() == {
            "error": UNSTORABLE_TEXT,
            "code": "INVALID_INPUT",
            "statusCode": 400,
        }
    # Deeper than the check's limit, not than Python's stack: that once was a 500 too.
    deep = json.loads('{"metadata": {"a": ' + "[" * 500 + "]" * 500 + "}}")
    response = api.patch(f"/api/sessions/{session_id}", json=deep)
    assert response.status_code == 400, response.text
    assert "deeper than" in response.json()["error"]
    # PokéCode's connect reads its body itself: what Python's parser chokes on is a 400 too.
    for raw in (b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe", b'{"device_id": "\\ud800"}'):
        response = api.post("/api/connect", content=raw, headers=JSON)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "INVALID_INPUT"
    after = api.get(f"/api/sessions/{session_id}").json()
    for key in ("metadata", "context", "messageCount", "title"):
        assert after[key] == before[key], key
    assert api.get("/api/sessions").json()["total"] == 1
    prices = api.get("/api/pricing").json()["prices"]
    assert all("\x00" not in price["modelName"] for price in prices)
    assert [token["name"] for token in api.get("/api/auth/tokens").json()] == ["tests"]


def test_every_json_answer_is_described_and_every_error_has_the_one_shape() -> None:
    """What Schemathesis checks responses against must say something: a route that returns a
    bare dict (no response model) documents `{}` and would pass any body."""
    undescribed: list[str] = []
    errors_elsewhere: list[str] = []
    for path, operations in _openapi()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                where = f"{method.upper()} {path} {status}"
                if 400 <= int(status) < 500:  # 503s keep PokéCode's health shapes
                    if schema != {"$ref": "#/components/schemas/ErrorBody"}:
                        errors_elsewhere.append(where)
                elif schema is not None and ("$ref" not in schema and "items" not in schema):
                    undescribed.append(where)
    assert undescribed == []
    assert errors_elsewhere == []
