"""The API documentation pages work with no internet and under their CSP: every script, style
and image they use is served by pocketcode itself, and only to a logged-in user."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.security.conftest import MakeClient, login


@pytest.fixture
def logged_in(make_client: MakeClient, owner: str) -> TestClient:
    client = make_client()
    assert login(client).status_code == 200
    return client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_this_server(logged_in: TestClient, page: str) -> None:
    response = logged_in.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "://" not in html.replace("http://www.w3.org", "")  # no CDN, no font service
    policy = response.headers["content-security-policy"]
    assert "https:" not in policy
    assets = re.findall(r"""(?:src|href)=["']?(/[^"'\s>]+)""", html)
    assert assets, html
    for asset in assets:
        served = logged_in.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset
    # The page fetches the schema from here too.
    assert logged_in.get("/openapi.json").json()["info"]["title"] == "pocketcode"


def test_the_docs_are_private_and_serve_only_their_own_files(
    make_client: MakeClient, logged_in: TestClient
) -> None:
    anonymous = make_client()
    for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui.css"):
        assert anonymous.get(path).status_code == 401, path

    for name in ("..%2F..%2Fpyproject.toml", "core.py", "__init__.py", "%00"):
        response = logged_in.get(f"/docs-assets/{name}")
        assert response.status_code == 404, name
        assert response.json()["code"] == "NOT_FOUND"
