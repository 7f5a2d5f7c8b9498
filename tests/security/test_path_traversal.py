"""A path-traversal corpus against every route that takes a path: the directory browser
(absolute paths inside the allowed roots) and a session's project files, git diff and git file
(paths inside the project). Each attempt must be a 4xx in the API's error shape and never
show a byte of what lies outside."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from tests.api.test_projects_api import git, init_repo, new_session, start_client

CANARY = "TRAVERSAL-CANARY-9c41e7"


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """base/root is the one allowed root; base/root/app the project (a git repository);
    base/root-evil a sibling with the root's name as a prefix; base/root/app-evil a sibling of
    the project; base/outside outside everything. Every file out of bounds holds the canary."""
    base = tmp_path.resolve()
    root, outside, root_evil = base / "root", base / "outside", base / "root-evil"
    app, app_evil = root / "app", root / "app-evil"
    for folder in (outside, root_evil, app_evil):
        folder.mkdir(parents=True)
        (folder / "secret.txt").write_text(CANARY)
    init_repo(app)
    (app / "readme.txt").write_text("inside\n")
    (app / "sub").mkdir()
    (app / "sub" / "ok.txt").write_text("fine\n")
    git(app, "add", ".")
    git(app, "commit", "-q", "-m", "init")
    (app / "link_out").symlink_to(outside / "secret.txt")
    (app / "dirlink").symlink_to(outside, target_is_directory=True)
    (app / "evil_sibling").symlink_to(app_evil, target_is_directory=True)
    (app / "sub" / "up").symlink_to(base, target_is_directory=True)
    (root / "outlink").symlink_to(outside, target_is_directory=True)
    (root / "evil_root").symlink_to(root_evil, target_is_directory=True)
    return {"base": base, "root": root, "app": app, "outside": outside, "root_evil": root_evil}


@pytest.fixture
def client(settings: Settings, db: Database, layout: dict[str, Path]) -> Iterator[TestClient]:
    test_client = start_client(settings, db, [layout["root"]])
    yield test_client
    test_client.__exit__(None, None, None)


# Paths relative to the project, as they appear in the query string (already URL-encoded
# where the case is about encoding).
PROJECT_CORPUS = [
    "..",
    "../",
    "../app-evil/secret.txt",
    "../../outside/secret.txt",
    "sub/../../app-evil/secret.txt",
    "sub/../..",
    "./../app-evil/secret.txt",
    ".git/../../app-evil/secret.txt",
    "%2e%2e",
    "%2e%2e%2fapp-evil%2fsecret.txt",
    "%2E%2E%2Fapp-evil%2Fsecret.txt",
    "..%2fapp-evil%2fsecret.txt",
    "%2e%2e/app-evil/secret.txt",
    ".%2e/app-evil/secret.txt",
    "%252e%252e%252fapp-evil%252fsecret.txt",
    "..%252fapp-evil%252fsecret.txt",
    "%c0%ae%c0%ae/app-evil/secret.txt",
    "..%c0%afapp-evil%c0%afsecret.txt",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "{outside}/secret.txt",
    "{root}/app-evil/secret.txt",
    "{root}/app/../app-evil/secret.txt",
    "~",
    "~/secret.txt",
    "~root",
    "~root/.bashrc",
    "%7e/secret.txt",
    "readme.txt%00",
    "readme.txt%00../../outside/secret.txt",
    "%00",
    "..%5capp-evil%5csecret.txt",
    "..\\app-evil\\secret.txt",
    "\\etc\\passwd",
    "C:\\Windows\\win.ini",
    "C:/Windows/win.ini",
    "link_out",
    "dirlink/secret.txt",
    "dirlink",
    "evil_sibling/secret.txt",
    "sub/up/outside/secret.txt",
    "sub/up/root-evil/secret.txt",
    "%E2%80%A5/app-evil/secret.txt",  # U+2025 two dot leader
    "%EF%BC%8E%EF%BC%8E/app-evil/secret.txt",  # fullwidth full stops
    "....//app-evil/secret.txt",
    "..;/app-evil/secret.txt",
    "file:///etc/passwd",
    "a/" * 2100 + "x",
    "x" * 5000,
    "%20",
]

# Absolute paths for the directory browser (allowed root: base/root).
BROWSE_CORPUS = [
    "/",
    "/etc",
    "{base}",
    "{root}/..",
    "{root}/../outside",
    "{root}/app/../../outside",
    "{root}%2f..%2foutside",
    "{root}/%2e%2e/outside",
    "{root}/%252e%252e/outside",
    "{outside}",
    "{root_evil}",
    "{root}-evil",
    "{root}/../root-evil",
    "{root}/outlink",
    "{root}/outlink/",
    "{root}/evil_root",
    "{root}/app/dirlink",
    "{root}/app/sub/up",
    "{root}/app/sub/up/outside",
    "{root}%00",
    "{root}/app%00/../../outside",
    "{base}\\root-evil",
    "~",
    "~/",
    "~root",
    "%7eroot",
    "root",
    "..",
    "%2e%2e",
    "./",
    "{root}/%E2%80%A5",
    "{root}/" + "a/" * 2100,
    "file://{outside}",
]


def fill(template: str, layout: dict[str, Path]) -> str:
    for name, path in layout.items():
        template = template.replace("{" + name + "}", str(path))
    return template


def refused(response: Any) -> str | None:
    """Why the response is not a clean refusal, or None when it is."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}"
    if CANARY in response.text:
        return "leaked the canary"
    body = response.json()
    if set(body) != {"error", "code", "statusCode"} or body["statusCode"] != response.status_code:
        return f"body {body!r}"
    return None


def test_corpus_size() -> None:
    assert len(PROJECT_CORPUS) >= 40
    assert len(BROWSE_CORPUS) >= 30


@pytest.mark.parametrize("route", ["files", "files/content", "git/diff", "git/file"])
def test_project_routes_refuse_every_path_that_leaves_the_project(
    client: TestClient, layout: dict[str, Path], route: str
) -> None:
    session = new_session(client, layout["app"])
    # The routes work for paths inside, so a refusal below is about the path.
    inside = client.get(f"/api/sessions/{session}/{route}?path=sub/ok.txt")
    assert inside.status_code == (400 if route == "files" else 200), inside.text

    failures = []
    for raw in PROJECT_CORPUS:
        response = client.get(f"/api/sessions/{session}/{route}?path={fill(raw, layout)}")
        if (why := refused(response)) is not None:
            failures.append((raw[:60], why))
    assert not failures, failures


def test_git_file_at_a_ref_refuses_paths_outside_the_project(
    client: TestClient, layout: dict[str, Path]
) -> None:
    session = new_session(client, layout["app"])
    failures = []
    for ref in ("HEAD", "INDEX"):
        for raw in PROJECT_CORPUS:
            url = f"/api/sessions/{session}/git/file?ref={ref}&path={fill(raw, layout)}"
            if (why := refused(client.get(url))) is not None:
                failures.append((ref, raw[:60], why))
    assert not failures, failures


def test_directory_browser_refuses_every_path_outside_the_roots(
    client: TestClient, layout: dict[str, Path]
) -> None:
    ok = client.get("/api/directories/browse", params={"path": str(layout["app"] / "sub")})
    assert ok.status_code == 200, ok.text

    failures = []
    for raw in BROWSE_CORPUS:
        response = client.get(f"/api/directories/browse?path={fill(raw, layout)}")
        if (why := refused(response)) is not None:
            failures.append((raw[:60], why))
    assert not failures, failures


def test_listings_leave_out_symlinks_that_lead_outside(
    client: TestClient, layout: dict[str, Path]
) -> None:
    root = client.get("/api/directories/browse").json()
    assert [item["name"] for item in root["items"]] == ["app", "app-evil"]
    assert root["parentPath"] is None

    session = new_session(client, layout["app"])
    files = client.get(f"/api/sessions/{session}/files").json()
    names = {item["name"] for item in files["items"]}
    assert names == {".git", "readme.txt", "sub"}
    sub = client.get(f"/api/sessions/{session}/files?path=sub").json()
    assert [item["name"] for item in sub["items"]] == ["ok.txt"]


def test_a_project_that_became_a_symlink_out_of_the_roots_is_refused(
    client: TestClient, layout: dict[str, Path]
) -> None:
    moved = layout["root"] / "moved"
    moved.mkdir()
    session = new_session(client, moved)
    moved.rmdir()
    moved.symlink_to(layout["outside"], target_is_directory=True)
    for route in ("files", "files/content?path=secret.txt", "git/status", "commands", "agents"):
        response = client.get(f"/api/sessions/{session}/{route}")
        assert refused(response) is None, (route, response.text)


# The web app's files: a public route (no credentials), so a path that leaves the static folder
# must be refused to anyone.
ASSET_CORPUS = [
    "..%2f..%2fconfig.py",
    "%2e%2e/%2e%2e/config.py",
    "js/..%2f..%2f..%2fconfig.py",
    "%2fetc%2fpasswd",
    "..%5c..%5cconfig.py",
    "x%00y",
    "app.css%00.png",
    "a" * 300,
    "js/" + "b" * 300 + ".js",
    "%c0%ae%c0%ae/config.py",
    "~/.bashrc",
]


def test_static_assets_refuse_every_path_that_leaves_their_folder(client: TestClient) -> None:
    anonymous = TestClient(client.app, base_url=str(client.base_url))
    assert anonymous.get("/assets/app.css").status_code == 200
    failures = []
    for raw in ASSET_CORPUS:
        response = anonymous.get(f"/assets/{raw}")
        if (why := refused(response)) is not None:
            failures.append((raw[:60], why))
        elif "pocketcode" in response.text and "Settings" in response.text:
            failures.append((raw[:60], "served a source file"))
    assert not failures, failures
