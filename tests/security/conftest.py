"""Fixtures for the HTTP security tests: the real app (no agent runtime) on both backends, a
cheap argon2 so the suite stays fast, and an owner account."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.services import auth as auth_module
from pocketcode.services.auth import AuthService
from pocketcode.web.app import create_app

BASE = "http://localhost"
SETUP_TOKEN = "setup-canary-5f0c2a9d"
USERNAME = "owner"
PASSWORD = "pw-canary-correct-horse-7e1d"


@pytest.fixture(autouse=True)
def _fast_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with tiny costs: the same code paths, a millisecond per hash."""
    monkeypatch.setattr(
        auth_module,
        "make_password_hasher",
        lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
    )


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(settings: Settings, db: Database) -> Iterator[MakeClient]:
    """`make_client(**settings_overrides, client=(ip, port), headers=…)`: a started app."""
    clients: list[TestClient] = []

    def make(*, client: tuple[str, int] = ("127.0.0.1", 50000), **overrides: Any) -> TestClient:
        headers = overrides.pop("headers", {"origin": BASE})
        app_settings = Settings(**{**settings.model_dump(), **overrides})
        app = create_app(app_settings, db, run_agents=False, setup_token=SETUP_TOKEN)
        test_client = TestClient(app, base_url=BASE, headers=headers, client=client)
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def auth_of(client: TestClient) -> AuthService:
    app: FastAPI = client.app  # type: ignore[assignment]
    service: AuthService = app.state.pocketcode.auth
    return service


@pytest.fixture
def owner(client: TestClient) -> str:
    """The owner account; returns its id."""
    return str(auth_of(client).create_user(USERNAME, PASSWORD).id)


def login(client: TestClient, password: str = PASSWORD, **extra: str) -> Any:
    response = client.post(
        "/api/auth/login", json={"username": USERNAME, "password": password, **extra}
    )
    return response
