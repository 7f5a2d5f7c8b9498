"""The settings at work in a real run: the server (its agent runtime on) runs the real Claude
Code CLI against the fake model, and what the fake receives shows that the stored
`anthropic_api_key` replaced the server's own ANTHROPIC_API_KEY and that a session created
without a model runs with `default_model`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.devtools.fake_model import FakeModelServer, claude_cli_env, text
from pocketcode.web.app import create_app
from tests.security.conftest import _fast_hasher, auth_of  # noqa: F401 - fixture

KEY_CANARY = "sk-ant-stored-canary-51c0e2"
ENVIRONMENT_KEY = "sk-ant-from-the-server-environment"
MODEL = "claude-haiku-4-5"


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    with FakeModelServer([text("first answer"), text("second answer")]) as server:
        yield server


@pytest.fixture
def server(
    settings: Settings,
    db: Database,
    tmp_path: Path,
    fake: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    home = tmp_path / "home"
    env = claude_cli_env(home, fake.base_url)
    env["ANTHROPIC_API_KEY"] = ENVIRONMENT_KEY
    env["CLAUDE_CONFIG_DIR"] = str(home / ".claude")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    roots = tmp_path / "roots"
    (roots / "project").mkdir(parents=True)
    app_settings = Settings(**{**settings.model_dump(), "allowed_roots": [roots]})
    app = create_app(app_settings, db, run_agents=True)
    with TestClient(app, base_url="http://localhost", headers={"origin": "http://localhost"}) as c:
        auth = auth_of(c)
        user = auth.create_user("owner", "pw-canary-correct-horse-7e1d")
        c.headers["authorization"] = f"Bearer {auth.create_token(user.id, 'tests').token}"
        yield c


def run_prompt(api: TestClient, fake: FakeModelServer, session_id: str, prompt: str) -> None:
    """Send `prompt` and wait until the fake model answered it and the session is idle."""
    expected = len(fake.main_requests) + 1
    response = api.post(f"/api/sessions/{session_id}/messages", json={"content": prompt})
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        session = api.get(f"/api/sessions/{session_id}").json()
        if len(fake.main_requests) >= expected and not session["isWorking"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run did not finish: {session}")


def test_the_stored_key_and_the_default_model_reach_the_cli(
    server: TestClient, fake: FakeModelServer, tmp_path: Path
) -> None:
    project = str(tmp_path / "roots" / "project")
    for key, value in (("anthropic_api_key", KEY_CANARY), ("default_model", MODEL)):
        assert server.put(f"/api/settings/{key}", json={"value": value}).status_code == 200
    session = server.post("/api/sessions", json={"projectPath": project}).json()
    assert session["model"] == MODEL
    run_prompt(server, fake, session["id"], "hello")
    [request] = fake.main_requests
    assert request.headers.get("x-api-key") == KEY_CANARY
    assert request.body["model"] == MODEL

    # Without the setting the server's own variable is used again, from the next run on.
    assert server.delete("/api/settings/anthropic_api_key").status_code == 204
    run_prompt(server, fake, session["id"], "again")
    assert len(fake.main_requests) == 2
    assert fake.main_requests[-1].headers.get("x-api-key") == ENVIRONMENT_KEY
