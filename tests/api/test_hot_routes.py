"""The routes clients poll (a session, the session list, a page of messages) encode their bodies
themselves instead of going through FastAPI's response-model validation: their bodies must be
exactly what that validation would have produced. And the credentials the app caches for a few
seconds: what is revoked in this process is refused at once, what another process revokes
within `CREDENTIAL_CACHE_SECONDS`."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import BaseModel

from pocketcode.db.engine import Database
from pocketcode.db.tables import ApiTokenRow, LoginSessionRow, PermissionRequestRow
from pocketcode.db.types import utcnow
from pocketcode.domain.states import MessageType
from pocketcode.services.auth import CREDENTIAL_CACHE_SECONDS, CredentialCache, Identity
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.web.responses import model_response
from pocketcode.web.schemas import MessagesPageOut, SessionListOut, SessionOut
from tests.api.conftest import PASSWORD, USERNAME
from tests.security.conftest import MakeClient, auth_of


def _line(role: str, block: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": role, "uuid": str(uuid.uuid4()), "message": {"content": [block]}, **extra}


def _conversation() -> list[NewMessage]:
    """One message of each kind a page shows (and two it leaves out)."""
    edit = {"file_path": "/p/a.py", "old_string": "a", "new_string": "b"}
    return [
        NewMessage(MessageType.USER, "hi ünïcode ✓", subtype="prompt"),
        NewMessage(MessageType.ASSISTANT, "hmm", subtype="thinking"),
        NewMessage(
            MessageType.ASSISTANT,
            "Edit",
            subtype="tool_use",
            raw=_line("assistant", {"type": "tool_use", "id": "t1", "name": "Edit", "input": edit}),
        ),
        NewMessage(
            MessageType.ASSISTANT,
            "Mystery",
            subtype="tool_use",
            raw=_line(
                "assistant",
                {"type": "tool_use", "id": "t2", "name": "Mystery", "input": {"n": 1.5}},
                parent_tool_use_id="t0",
            ),
            parent_tool_use_id="t0",
        ),
        NewMessage(
            MessageType.USER,
            "output",
            subtype="tool_result",
            raw=_line(
                "user", {"type": "tool_result", "tool_use_id": "t1", "is_error": True}, uuid="r"
            ),
            parent_tool_use_id="t1",
        ),
        NewMessage(MessageType.ASSISTANT, "done", subtype="text"),
        NewMessage(MessageType.ERROR, "", subtype="api_error"),
        NewMessage(MessageType.SYSTEM, "compacted", subtype="compact_boundary"),
        NewMessage(MessageType.RESULT, "done", subtype="success"),
    ]


def _validated(model: type[BaseModel], body: Any, *, exclude_unset: bool = False) -> Any:
    """What FastAPI sends for `body` returned by a route with this response model."""
    return model.model_validate(body).model_dump(
        mode="json", by_alias=True, exclude_unset=exclude_unset
    )


def test_hot_routes_send_what_their_response_models_would(
    api: TestClient, project: Path, db: Database
) -> None:
    ids = []
    for n in range(3):
        created = api.post(
            "/api/sessions",
            json={
                "projectPath": str(project),
                "title": f"t{n}",
                "context": "ç" * 50,
                "metadata": {"nested": {"list": [1, 2.5, None, True, "x"]}, "big": 2**70},
            },
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    with db.write() as s:
        s.add(PermissionRequestRow(session_id=uuid.UUID(ids[0]), tool_name="Bash"))
    MessageService(db).append_many(uuid.UUID(ids[0]), _conversation())

    session = api.get(f"/api/sessions/{ids[0]}")
    assert session.headers["content-type"] == "application/json"
    assert session.json() == _validated(SessionOut, session.json())
    assert session.json()["pendingPermissions"] == 1

    for query in ("", "?limit=2", "?limit=2&offset=2", "?offset=5", "?state=active&q=T1"):
        listed = api.get(f"/api/sessions{query}")
        assert listed.status_code == 200, listed.text
        assert listed.json() == _validated(SessionListOut, listed.json())
    counts = {s["id"]: s["pendingPermissions"] for s in api.get("/api/sessions").json()["sessions"]}
    assert counts == {ids[0]: 1, ids[1]: 0, ids[2]: 0}
    assert [api.get(f"/api/sessions{q}").json()["total"] for q in ("?limit=2", "?offset=9")] == [
        3,
        3,
    ]

    page = api.get(f"/api/sessions/{ids[0]}/messages")
    body = page.json()
    assert body == _validated(MessagesPageOut, body, exclude_unset=True)
    assert [m["type"] for m in body["messages"]] == [
        "user",
        "assistant",
        "assistant",
        "assistant",
        "assistant",
        "error",
        "system",
    ]
    first = api.get(f"/api/sessions/{ids[0]}/messages?limit=2").json()
    assert first["pagination"]["hasNextPage"] is True
    rest = api.get(
        f"/api/sessions/{ids[0]}/messages?after={first['pagination']['nextCursor']}"
    ).json()
    assert rest == _validated(MessagesPageOut, rest, exclude_unset=True)
    assert [m["id"] for m in first["messages"] + rest["messages"]] == [
        m["id"] for m in body["messages"]
    ]


def test_hot_routes_keep_their_errors(api: TestClient, project: Path) -> None:
    missing = {"error": "Session not found", "code": "NOT_FOUND", "statusCode": 404}
    for path in (f"/api/sessions/{uuid.uuid4()}", f"/api/sessions/{uuid.uuid4()}/messages"):
        assert (api.get(path).status_code, api.get(path).json()) == (404, missing)
    assert api.get("/api/sessions/not-an-id/messages").status_code == 404
    session_id = api.post("/api/sessions", json={"projectPath": str(project)}).json()["id"]
    # A prompt reads no session first: storing it refuses a missing or deleted one.
    deleted = api.post("/api/sessions", json={"projectPath": str(project)}).json()["id"]
    assert api.delete(f"/api/sessions/{deleted}").status_code == 200
    for target in (uuid.uuid4(), "not-an-id", deleted):
        sent = api.post(f"/api/sessions/{target}/messages", json={"content": "hi"})
        assert (sent.status_code, sent.json()) == (404, missing)
    for cursor in ("nope", str(uuid.uuid4())):
        response = api.get(f"/api/sessions/{session_id}/messages?after={cursor}")
        assert response.status_code == 400, response.text


# -- the credential cache -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(api: TestClient) -> Clock:
    """The app's credential cache, on a clock the test moves."""
    fake = Clock()
    auth_of(api).credentials = CredentialCache(clock=fake)
    return fake


def _revoke_elsewhere(db: Database, row: type[ApiTokenRow] | type[LoginSessionRow]) -> None:
    """What another process (the CLI, a second server) does, had its announcement been lost
    (auth.RevocationSignal): the database row only. The time limit still ends the credential."""
    with db.write() as s:
        s.execute(sa.update(row).values(revoked_at=utcnow()))


def test_a_token_revoked_by_another_process_is_refused_within_seconds(
    api: TestClient, db: Database, clock: Clock
) -> None:
    assert api.get("/api/sessions").status_code == 200
    _revoke_elsewhere(db, ApiTokenRow)
    # Still answered from this process's cache for up to CREDENTIAL_CACHE_SECONDS …
    clock.now += CREDENTIAL_CACHE_SECONDS - 1
    assert api.get("/api/sessions").status_code == 200
    # … then checked again, and refused.
    clock.now += 1
    assert api.get("/api/sessions").status_code == 401


def test_a_login_session_ended_by_another_process_is_refused_within_seconds(
    make_client: MakeClient, db: Database
) -> None:
    browser = make_client()
    auth = auth_of(browser)
    fake = Clock()
    auth.credentials = CredentialCache(clock=fake)
    auth.create_user(USERNAME, PASSWORD)
    login = browser.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert browser.get("/api/auth/me").status_code == 200
    _revoke_elsewhere(db, LoginSessionRow)
    assert browser.get("/api/auth/me").status_code == 200
    fake.now += CREDENTIAL_CACHE_SECONDS
    assert browser.get("/api/auth/me").status_code == 401


def test_revocations_in_this_process_are_refused_at_once(
    api: TestClient, make_client: MakeClient
) -> None:
    auth = auth_of(api)
    user = auth.find_user(None)
    token = auth.create_token(user.id, "phone")
    other = make_client(headers={"authorization": f"Bearer {token.token}"})
    assert other.get("/api/sessions").status_code == 200
    # Revoked through another app of this process: every app's cache forgets it.
    assert api.delete(f"/api/auth/tokens/{token.info.id}").status_code == 204
    assert other.get("/api/sessions").status_code == 401


def test_a_cached_token_is_not_a_session_cookie(api: TestClient, make_client: MakeClient) -> None:
    token = api.headers["authorization"].removeprefix("Bearer ")
    assert api.get("/api/sessions").status_code == 200  # cached now
    cookie_only = make_client(headers={"cookie": f"pocketcode_session={token}"})
    assert cookie_only.get("/api/sessions").status_code == 401


def test_a_cached_token_expires_with_the_token(api: TestClient) -> None:
    auth = auth_of(api)
    user = auth.find_user(None)
    expiring = auth.create_token(user.id, "short", expires_at=utcnow() + timedelta(seconds=0.5))
    headers = {"authorization": f"Bearer {expiring.token}"}
    assert api.get("/api/sessions", headers=headers).status_code == 200
    time.sleep(0.6)
    assert api.get("/api/sessions", headers=headers).status_code == 401


def test_the_cache_keeps_at_most_its_size_oldest_out_first() -> None:
    cache = CredentialCache(size=2)
    identities = [Identity(uuid.uuid4(), api_token_id=uuid.uuid4()) for _ in range(3)]
    for n, identity in enumerate(identities):
        cache.put(f"h{n}", identity, expires_in=None, epoch=cache.epoch)
    assert [cache.get(f"h{n}") for n in range(3)] == [None, identities[1], identities[2]]
    cache.forget(lambda identity: identity is identities[1])
    assert cache.get("h1") is None
    assert CredentialCache(ttl=0).get("h2") is None


def test_what_orjson_cannot_encode_is_encoded_as_fastapi_would(
    api: TestClient, project: Path
) -> None:
    session = api.post("/api/sessions", json={"projectPath": str(project)}).json()
    body = {"sessions": [{**session, "metadata": {"big": 2**70}}], "total": 1, "limit": 20}
    body["offset"] = 0
    response = model_response(body, SessionListOut)
    assert orjson.loads(response.body) == _validated(SessionListOut, body)
    assert b'"big":1180591620717411303424' in response.body
