"""The real app (no agent runtime unless a test adds one) on both backends, with an owner and
a bearer token, and a project folder inside the allowed roots."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.security.conftest import (  # noqa: F401 - fixtures shared with the security tests
    MakeClient,
    _fast_hasher,
    auth_of,
    make_client,
)

USERNAME = "owner"
PASSWORD = "pw-canary-correct-horse-7e1d"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "roots" / "my-project"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def api(make_client: MakeClient, project: Path) -> TestClient:  # noqa: F811
    """A client authenticated with an API token."""
    client = make_client(allowed_roots=[project.parent])
    auth = auth_of(client)
    user = auth.create_user(USERNAME, PASSWORD)
    token = auth.create_token(user.id, "tests").token
    client.headers["authorization"] = f"Bearer {token}"
    return client


@pytest.fixture
def anonymous(api: TestClient) -> TestClient:
    """A second client on the same app, without credentials."""
    return TestClient(api.app, base_url=str(api.base_url), headers={"origin": "http://localhost"})
