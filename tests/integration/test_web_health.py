"""Health endpoints in PokéCode's shapes (/work/shared/pokecode-api.md), on SQLite and
PostgreSQL, through the real app and its lifespan."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from pocketcode import __version__
from pocketcode.config import Settings
from pocketcode.db import migrate
from pocketcode.db.engine import Database
from pocketcode.web.app import create_app

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db), base_url="http://localhost") as test_client:
        yield test_client


@pytest.fixture
def quiet_client(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The app without its run manager: for tests that change the schema under it (a claim
    loop polling the jobs table would deadlock with the DDL on PostgreSQL)."""
    app = create_app(settings, db, run_agents=False)
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


def json_of(client: TestClient, path: str, status: int = 200) -> dict[str, Any]:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert TIMESTAMP.match(body["timestamp"]), body
    return body


def test_root_names_the_server(client: TestClient) -> None:
    body = json_of(client, "/")
    assert set(body) == {"name", "version", "status", "timestamp"}
    assert (body["name"], body["version"], body["status"]) == ("pocketcode", __version__, "ok")


def test_live(client: TestClient) -> None:
    body = json_of(client, "/health/live")
    assert set(body) == {"status", "timestamp"}
    assert body["status"] == "ok"


def test_ready(client: TestClient) -> None:
    body = json_of(client, "/health/ready")
    assert set(body) == {"status", "timestamp"}
    assert body["status"] == "ready"


@pytest.mark.parametrize("path", ["/health", "/health/"])
def test_health(client: TestClient, path: str) -> None:
    body = json_of(client, path)
    assert set(body) == {"status", "timestamp", "services", "version", "uptime"}
    assert body["status"] == "healthy"
    assert body["services"] == {"database": "healthy", "queue": "healthy"}
    assert body["version"] == __version__
    assert isinstance(body["uptime"], int | float)
    assert body["uptime"] >= 0


def test_not_ready_while_the_schema_is_not_at_head(quiet_client: TestClient, db: Database) -> None:
    client = quiet_client
    migrate.downgrade(db, "base")
    try:
        ready = json_of(client, "/health/ready", 503)
        assert set(ready) == {"status", "timestamp", "reason"}
        assert ready["status"] == "not_ready"
        assert "no schema" in ready["reason"]
        assert "pocketcode db upgrade" in ready["reason"]

        health = json_of(client, "/health", 503)
        assert health["status"] == "unhealthy"
        assert health["services"] == {"database": "unhealthy", "queue": "unhealthy"}
        assert health["reason"] == ready["reason"]

        assert json_of(client, "/health/live")["status"] == "ok"  # the process still answers
    finally:
        migrate.upgrade(db)
    assert json_of(client, "/health/ready")["status"] == "ready"


def test_not_ready_at_an_older_revision(quiet_client: TestClient, db: Database) -> None:
    client = quiet_client
    revisions = [
        script.revision
        for script in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()
    ]
    if len(revisions) < 2:
        pytest.skip("only one revision: nothing older than head")
    migrate.downgrade(db, revisions[1])
    try:
        ready = json_of(client, "/health/ready", 503)
        assert f"database schema at {revisions[1]}" in ready["reason"]
        assert migrate.head_revision() in ready["reason"]
    finally:
        migrate.upgrade(db)
