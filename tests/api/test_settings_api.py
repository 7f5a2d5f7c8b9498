"""The settings a user edits: known keys only, each checked by its kind, plain values shown,
secrets write-only (masked, encrypted at rest, never in a response or a log), and the values
at work — new sessions take the default model and permission mode, the agent gets the stored
Anthropic key. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pocketcode.agents.claude_code import agent_environment
from pocketcode.db.engine import Database
from pocketcode.services.runtime import agent_credentials
from tests.api.test_sessions_api import create, error

CANARY = "sk-ant-canary-0f9e8d7c6b5a"
TRANSCRIPTION_CANARY = "sk-whisper-canary-77aa31"
KEYS = [
    "anthropic_api_key",
    "transcription_url",
    "transcription_api_key",
    "transcription_model",
    "default_model",
    "default_permission_mode",
]


def put(api: TestClient, key: str, value: Any) -> Any:
    return api.put(f"/api/settings/{key}", json={"value": value})


def item(api: TestClient, key: str) -> dict[str, Any]:
    response = api.get(f"/api/settings/{key}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_list_names_every_known_setting_with_its_kind(api: TestClient) -> None:
    response = api.get("/api/settings")
    assert response.status_code == 200, response.text
    settings = response.json()["settings"]
    assert [s["key"] for s in settings] == KEYS
    by_key = {s["key"]: s for s in settings}
    assert by_key["anthropic_api_key"] == {
        "key": "anthropic_api_key",
        "secret": True,
        "isSet": False,
        "value": None,
        "masked": None,
    }
    # A plain setting shows its default until one is stored.
    assert by_key["transcription_model"] == {
        "key": "transcription_model",
        "secret": False,
        "isSet": False,
        "value": "whisper-1",
        "masked": None,
    }
    assert [s["key"] for s in settings if s["secret"]] == [
        "anthropic_api_key",
        "transcription_api_key",
    ]
    assert item(api, "default_model") == by_key["default_model"]


def test_secrets_are_write_only_and_encrypted_at_rest(
    api: TestClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Pasted with a trailing newline: stored without it.
    stored = put(api, "anthropic_api_key", CANARY + "\n")
    assert stored.status_code == 200, stored.text
    assert stored.json() == {
        "key": "anthropic_api_key",
        "secret": True,
        "isSet": True,
        "value": None,
        "masked": "••••••••" + CANARY[-4:],
    }
    put(api, "transcription_api_key", TRANSCRIPTION_CANARY)
    responses = [
        stored,
        api.get("/api/settings"),
        api.get("/api/settings/anthropic_api_key"),
        api.get("/api/settings/transcription_api_key"),
        put(api, "anthropic_api_key", "two words"),  # a refused value is not echoed
        api.get("/openapi.json"),
    ]
    for response in responses:
        assert CANARY not in response.text
        assert TRANSCRIPTION_CANARY not in response.text
        assert "two words" not in response.text
    assert CANARY not in caplog.text and TRANSCRIPTION_CANARY not in caplog.text
    with db.read() as session:
        at_rest = " ".join(
            str(row) for row in session.execute(sa.text("SELECT key, value FROM app_settings"))
        )
    assert "anthropic_api_key" in at_rest
    assert CANARY not in at_rest and TRANSCRIPTION_CANARY not in at_rest

    assert api.delete("/api/settings/anthropic_api_key").status_code == 204
    assert item(api, "anthropic_api_key")["isSet"] is False
    # Deleting what is not set is no error: the setting is in the state asked for.
    assert api.delete("/api/settings/anthropic_api_key").status_code == 204


def test_each_kind_is_checked_with_a_message(api: TestClient) -> None:
    refused = {
        "transcription_url": [
            "api.openai.com/v1",
            "ftp://example.com/v1",
            "https://",
            "https://user:pw@example.com/v1",
            "https://example.com/v1?key=1",
            "https://example.com:99999/v1",
            "https://exa mple.com",
            "http://xn--.com/v1",  # urlsplit takes these; the HTTP client does not
            "http://[::1]x/v1",
            "http://☃--☃.com/v1",
            "x" * 3000,
        ],
        "default_model": ["gpt-4o", "claude-nonexistent-9", "sonnet\nopus"],
        "default_permission_mode": ["yolo", "Plan", "acceptedits"],
        "anthropic_api_key": ["two words", "tab\tinside", "sk-kéy"],
        "transcription_api_key": ["sk-kéy", "ключ"],  # a header carries ASCII only
        "transcription_model": ["bad\x00model", "m" * 256],
    }
    for key, values in refused.items():
        for value in values:
            message = error(put(api, key, value), 400, "INVALID_INPUT")
            assert message, (key, value)
            assert item(api, key)["isSet"] is False, (key, value)
    assert "default, acceptEdits, plan, bypassPermissions" in error(
        put(api, "default_permission_mode", "yolo"), 400, "INVALID_INPUT"
    )
    assert "http" in error(put(api, "transcription_url", "example.com"), 400, "INVALID_INPUT")
    # Empty (or blank) is not a value: DELETE clears a setting.
    assert "DELETE" in error(put(api, "transcription_model", "  "), 400, "INVALID_INPUT")
    for bad_body in ({}, {"value": 3}, {"value": "x", "extra": 1}, {"value": None}):
        response = api.put("/api/settings/transcription_model", json=bad_body)
        error(response, 422, "VALIDATION_ERROR")

    accepted = {
        "transcription_url": ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
        "default_model": ("sonnet", "sonnet"),
        "default_permission_mode": ("acceptEdits", "acceptEdits"),
        "transcription_model": ("gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe"),
    }
    for key, (value, shown) in accepted.items():
        response = put(api, key, value)
        assert response.status_code == 200, response.text
        assert response.json()["value"] == shown
        assert item(api, key) == {
            "key": key,
            "secret": False,
            "isSet": True,
            "value": shown,
            "masked": None,
        }
    # A model with a price is known, with or without its date suffix.
    for model in ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "opusplan"):
        assert put(api, "default_model", model).status_code == 200, model
    # Deleting a plain setting brings its default back.
    assert api.delete("/api/settings/transcription_model").status_code == 204
    assert item(api, "transcription_model")["value"] == "whisper-1"
    assert item(api, "transcription_url")["value"] == "https://api.openai.com/v1"


def test_unknown_keys_are_404_and_anonymous_requests_401(
    api: TestClient, anonymous: TestClient
) -> None:
    for method in ("GET", "PUT", "DELETE"):
        body = {"value": "x"} if method == "PUT" else None
        response = api.request(method, "/api/settings/openai_api_key", json=body)
        message = error(response, 404, "NOT_FOUND")
        assert "openai_api_key" in message and "transcription_url" in message
    error(api.get("/api/settings/Bad-Key!"), 400, "INVALID_INPUT")
    error(api.get("/api/settings/" + "k" * 300), 422, "VALIDATION_ERROR")
    put(api, "anthropic_api_key", CANARY)
    for method, path in (
        ("GET", "/api/settings"),
        ("GET", "/api/settings/anthropic_api_key"),
        ("PUT", "/api/settings/anthropic_api_key"),
        ("DELETE", "/api/settings/anthropic_api_key"),
    ):
        body = {"value": "attacker"} if method == "PUT" else None
        response = anonymous.request(method, path, json=body)
        error(response, 401, "UNAUTHENTICATED")
        assert CANARY not in response.text
    assert item(api, "anthropic_api_key")["isSet"] is True


def test_new_sessions_take_the_default_model_and_permission_mode(
    api: TestClient, project: Path
) -> None:
    before = create(api, project)
    assert (before["model"], before["permissionMode"]) == (None, None)
    put(api, "default_model", "opus")
    put(api, "default_permission_mode", "plan")
    defaulted = create(api, project)
    assert (defaulted["model"], defaulted["permissionMode"]) == ("opus", "plan")
    chosen = create(api, project, model="haiku", permissionMode="acceptEdits")
    assert (chosen["model"], chosen["permissionMode"]) == ("haiku", "acceptEdits")
    # Changing the defaults changes new sessions only: what a session stored sticks.
    put(api, "default_model", "sonnet")
    reread = api.get(f"/api/sessions/{defaulted['id']}").json()
    assert (reread["model"], reread["permissionMode"]) == ("opus", "plan")


def test_the_stored_anthropic_key_wins_over_the_servers_environment(
    api: TestClient, db: Database
) -> None:
    app: FastAPI = api.app  # type: ignore[assignment]
    keyring = app.state.pocketcode.keyring
    server_env = {"ANTHROPIC_API_KEY": "sk-from-the-environment", "PATH": "/usr/bin"}

    # No setting: the server's own environment variable reaches the agent.
    env = agent_environment(server_env, agent_credentials(db, keyring), {})
    assert env["ANTHROPIC_API_KEY"] == "sk-from-the-environment"
    # A stored key wins, from the next run on.
    put(api, "anthropic_api_key", CANARY)
    env = agent_environment(server_env, agent_credentials(db, keyring), {})
    assert env["ANTHROPIC_API_KEY"] == CANARY
    api.delete("/api/settings/anthropic_api_key")
    assert agent_credentials(db, keyring) == {}
