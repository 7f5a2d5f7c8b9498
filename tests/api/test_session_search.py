"""`GET /api/sessions?q=`: the session list filtered by part of a title or project path, in any
case, with the user's `%` and `_` taken literally — on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.api.test_sessions_api import create, error


def titles(api: TestClient, **params: Any) -> list[str | None]:
    response = api.get("/api/sessions", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["sessions"])
    return sorted((s["title"] or "") for s in body["sessions"])


def test_search_matches_title_or_project_path_in_any_case(api: TestClient, project: Path) -> None:
    other = project.parent / "Other_App"
    other.mkdir()
    create(api, project, title="Fix the LOGIN bug")
    create(api, project, title="100% coverage")
    create(api, project, title="Write docs")
    create(api, other, title="Ship it")

    assert titles(api, q="login") == ["Fix the LOGIN bug"]
    assert titles(api, q="LoGiN Bug") == ["Fix the LOGIN bug"]
    # The project path counts too: every session of my-project, none of Other_App.
    assert titles(api, q="MY-PROJECT") == ["100% coverage", "Fix the LOGIN bug", "Write docs"]
    assert titles(api, q="other_app") == ["Ship it"]
    # Wildcards typed by the user are literal characters.
    assert titles(api, q="100%") == ["100% coverage"]
    assert titles(api, q="%") == ["100% coverage"]
    assert titles(api, q="r_a") == ["Ship it"]  # the literal `_` of "Other_App"
    assert titles(api, q="e_d") == []  # `_` is not "any character" ("Write docs" has "e d")
    assert titles(api, q="nothing like this") == []
    # An empty search is no filter; q combines with the state filter and paging.
    assert len(titles(api, q="")) == 4
    assert titles(api, q="i", state="active", limit=100) == titles(api, q="i")


def test_search_paging_counts_only_matches(api: TestClient, project: Path) -> None:
    for number in range(5):
        create(api, project, title=f"match {number}")
    create(api, project, title="unrelated")
    page = api.get("/api/sessions", params={"q": "MATCH", "limit": 2, "offset": 2}).json()
    assert page["total"] == 5
    assert all(s["title"].startswith("match") for s in page["sessions"])
    assert len(page["sessions"]) == 2


def test_bad_searches_are_refused_or_match_nothing(
    api: TestClient, anonymous: TestClient, project: Path
) -> None:
    create(api, project, title="a b")
    error(api.get("/api/sessions", params={"q": "x" * 201}), 422, "VALIDATION_ERROR")
    # A NUL matches nothing (and is no server error on PostgreSQL).
    assert api.get("/api/sessions", params={"q": "a\x00b"}).json()["total"] == 0
    assert api.get("/api/sessions", params={"q": "a b"}).json()["total"] == 1
    error(anonymous.get("/api/sessions", params={"q": "a"}), 401, "UNAUTHENTICATED")
