"""Paths the filesystem refuses in ways other than "no such file": a name longer than the
filesystem allows, a symlink loop, a folder the server may not search. Each is the client's
mistake (or another user's folder), so each must be a 4xx in the API's error shape or a
listing without that one entry, never a 500."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from tests.api.test_projects_api import assert_error, git, init_repo, new_session, start_client

# One path component over NAME_MAX (255 bytes on Linux and macOS): the kernel answers
# ENAMETOOLONG before it looks for the file.
TOO_LONG = "a" * 300


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "projects"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def client(settings: Settings, db: Database, root: Path) -> Iterator[TestClient]:
    test_client = start_client(settings, db, [root])
    yield test_client
    test_client.__exit__(None, None, None)


@pytest.fixture
def app(root: Path) -> Path:
    """A git repository with one commit, and a symlink that points at itself."""
    path = init_repo(root / "app")
    (path / "readme.txt").write_text("hello\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "init")
    (path / "loop").symlink_to("loop")
    return path


def unsearchable(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """`os.stat` of each of `paths` fails as it does for a name inside another user's 0700
    folder (the tests run as root, which no permission stops)."""
    real_stat = os.stat
    refused = {str(path) for path in paths}

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(path, str | os.PathLike) and os.fspath(path) in refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)


def error_of(response: Any) -> str:
    message: str = response.json()["error"]
    return message


# -- names too long and symlink loops ---------------------------------------------------------


def test_browsing_a_name_too_long_or_a_symlink_loop_is_a_400(
    client: TestClient, root: Path, app: Path
) -> None:
    def browse(path: Path) -> Any:
        return client.get("/api/directories/browse", params={"path": str(path)})

    for path in (root / TOO_LONG, root / TOO_LONG / "inner"):
        response = browse(path)
        assert_error(response, 400, "INVALID_INPUT")
        assert "File name too long" in error_of(response)
    for path in (app / "loop", app / "loop" / "inner"):
        response = browse(path)
        assert_error(response, 400, "INVALID_INPUT")
        assert "Too many levels of symbolic links" in error_of(response)
    # The folder that holds the loop still lists, the loop left out (it leads nowhere).
    names = [item["name"] for item in browse(app).json()["items"]]
    assert names == [".git"]


def test_project_files_of_a_name_too_long_or_a_symlink_loop_is_a_400(
    client: TestClient, app: Path
) -> None:
    session = new_session(client, app)
    for path in (TOO_LONG, f"{TOO_LONG}/inner", "loop", "loop/inner"):
        response = client.get(f"/api/sessions/{session}/files", params={"path": path})
        assert_error(response, 400, "INVALID_INPUT")
        content = client.get(f"/api/sessions/{session}/files/content", params={"path": path})
        assert 400 <= content.status_code < 500, (path, content.text)
    listing = client.get(f"/api/sessions/{session}/files").json()
    assert [item["name"] for item in listing["items"]] == [".git", "readme.txt"]


def test_git_routes_answer_a_name_too_long_as_a_path_not_in_the_project(
    client: TestClient, app: Path
) -> None:
    session = new_session(client, app)
    for scope in ("unstaged", "staged"):
        diff = client.get(
            f"/api/sessions/{session}/git/diff", params={"path": TOO_LONG, "scope": scope}
        )
        assert_error(diff, 404, "GIT_DIFF_ERROR")
    working = client.get(f"/api/sessions/{session}/git/file", params={"path": TOO_LONG})
    assert_error(working, 400, "GIT_FILE_ERROR")
    for ref in ("HEAD", "INDEX"):
        at_ref = client.get(
            f"/api/sessions/{session}/git/file", params={"path": TOO_LONG, "ref": ref}
        )
        assert_error(at_ref, 404, "GIT_FILE_ERROR")


def test_a_session_on_a_name_too_long_is_refused_and_none_is_created(
    client: TestClient, root: Path
) -> None:
    response = client.post("/api/sessions", json={"projectPath": str(root / TOO_LONG)})
    assert_error(response, 400, "INVALID_INPUT")
    assert client.get("/api/sessions").json()["total"] == 0


# -- folders the server may not search --------------------------------------------------------


def test_a_folder_the_server_may_not_search_is_listed_without_the_git_flag(
    client: TestClient, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_repo(root / "mine")
    init_repo(root / "theirs")
    unsearchable(monkeypatch, root / "theirs" / ".git")

    repositories = client.get("/api/repositories")
    assert repositories.status_code == 200, repositories.text
    flags = {r["folderName"]: r["isGitRepository"] for r in repositories.json()["repositories"]}
    assert flags == {"mine": True, "theirs": False}

    browse = client.get("/api/directories/browse")
    assert browse.status_code == 200, browse.text
    flags = {item["name"]: item["isGitRepository"] for item in browse.json()["items"]}
    assert flags == {"mine": True, "theirs": False}

    session = new_session(client, root)
    files = client.get(f"/api/sessions/{session}/files")
    assert files.status_code == 200, files.text
    flags = {item["name"]: item["isGitRepository"] for item in files.json()["items"]}
    assert flags == {"mine": True, "theirs": False}


def test_a_project_inside_a_folder_the_server_may_not_search_is_a_400(
    client: TestClient, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = root / "theirs" / "app"
    project.mkdir(parents=True)
    session = new_session(client, project)
    unsearchable(monkeypatch, project)

    created = client.post("/api/sessions", json={"projectPath": str(project)})
    assert_error(created, 400, "INVALID_INPUT")
    assert_error(client.get(f"/api/sessions/{session}/files"), 400, "INVALID_INPUT")
    assert client.get("/api/sessions").json()["total"] == 1


def test_project_commands_the_server_may_not_search_are_left_out(
    client: TestClient, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_commands = tmp_path / "claude-config" / "commands"
    user_commands.mkdir(parents=True)
    (user_commands / "review.md").write_text("Review the diff.\n")
    project = root / "app"
    (project / ".claude" / "commands").mkdir(parents=True)
    (project / ".claude" / "agents").mkdir(parents=True)
    session = new_session(client, project)
    unsearchable(monkeypatch, project / ".claude" / "commands", project / ".claude" / "agents")

    commands = client.get(f"/api/sessions/{session}/commands")
    assert commands.status_code == 200, commands.text
    assert commands.json() == {
        "commands": [{"name": "review", "body": "Review the diff.\n", "type": "user"}],
        "sources": {"userCommandsPath": str(user_commands)},
    }
    agents = client.get(f"/api/sessions/{session}/agents")
    assert agents.status_code == 200, agents.text
    assert agents.json() == {"agents": [], "sources": {}}


# -- names that are not UTF-8 -----------------------------------------------------------------
#
# A cloned repository or an agent run can create names of any bytes (`touch $'\xff'`). Such a
# name cannot be shown in JSON, stored, or sent back in a request (a query string decodes
# `%FF` to U+FFFD), so a listing leaves it out, and a path that leads to one is a 400.

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes, as Python's os and git output decode them


@pytest.fixture
def not_utf8_names(root: Path) -> None:
    """Skip where the filesystem itself refuses names that are not UTF-8 (macOS's APFS)."""
    try:
        (root / NOT_UTF8).mkdir()
    except OSError as exc:
        pytest.skip(f"the filesystem refuses names that are not UTF-8 ({exc.strerror})")
    (root / NOT_UTF8).rmdir()


@pytest.mark.usefixtures("not_utf8_names")
def test_listings_leave_out_names_that_are_not_utf8(client: TestClient, root: Path) -> None:
    init_repo(root / "good")
    init_repo(root / NOT_UTF8)
    (root / f"{NOT_UTF8}.txt").write_text("hello\n")
    (root / "readme.txt").write_text("hello\n")
    (root / "link").symlink_to(root / NOT_UTF8)  # a UTF-8 name, a target that is not

    repositories = client.get("/api/repositories")
    assert repositories.status_code == 200, repositories.text
    assert [r["folderName"] for r in repositories.json()["repositories"]] == ["good"]

    browse = client.get("/api/directories/browse", params={"includeFiles": "true"})
    assert browse.status_code == 200, browse.text
    assert [item["name"] for item in browse.json()["items"]] == ["good", "readme.txt"]

    session = new_session(client, root)
    files = client.get(f"/api/sessions/{session}/files")
    assert files.status_code == 200, files.text
    assert [item["name"] for item in files.json()["items"]] == ["good", "readme.txt"]


@pytest.mark.usefixtures("not_utf8_names")
def test_a_path_leading_to_a_name_that_is_not_utf8_is_a_400(client: TestClient, root: Path) -> None:
    (root / NOT_UTF8).mkdir()
    (root / NOT_UTF8 / "notes.txt").write_text("hello\n")
    (root / "link").symlink_to(root / NOT_UTF8)
    session = new_session(client, root)

    browse = client.get("/api/directories/browse", params={"path": str(root / "link")})
    assert_error(browse, 400, "INVALID_INPUT")
    assert "not valid UTF-8" in error_of(browse)
    for route, path in (("files", "link"), ("files/content", "link/notes.txt")):
        response = client.get(f"/api/sessions/{session}/{route}", params={"path": path})
        assert_error(response, 400, "INVALID_INPUT")
        assert "not valid UTF-8" in error_of(response)


@pytest.mark.usefixtures("not_utf8_names")
def test_a_session_in_a_folder_whose_real_path_is_not_utf8_is_refused(
    client: TestClient, root: Path
) -> None:
    (root / NOT_UTF8).mkdir()
    (root / "link").symlink_to(root / NOT_UTF8)

    response = client.post("/api/sessions", json={"projectPath": str(root / "link")})
    assert_error(response, 400, "INVALID_INPUT")
    assert "not valid UTF-8" in error_of(response)
    # The folder named directly: JSON carries its byte as a lone surrogate (`\udce9`).
    response = client.post(
        "/api/sessions",
        content=json.dumps({"projectPath": str(root / NOT_UTF8)}),
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "INVALID_INPUT")
    assert client.get("/api/sessions").json()["total"] == 0


@pytest.mark.usefixtures("not_utf8_names")
def test_a_session_whose_folder_became_a_link_to_a_name_not_utf8_is_kept(
    client: TestClient, root: Path
) -> None:
    project = root / "app"
    project.mkdir()
    session = new_session(client, project)
    (root / NOT_UTF8).mkdir()
    project.rmdir()
    project.symlink_to(root / NOT_UTF8)

    assert_error(client.get(f"/api/sessions/{session}/files"), 400, "INVALID_INPUT")
    assert_error(client.get(f"/api/sessions/{session}/git/status"), 400, "INVALID_INPUT")
    sessions = client.get("/api/sessions")
    assert sessions.status_code == 200, sessions.text
    assert [s["projectPath"] for s in sessions.json()["sessions"]] == [str(project)]


@pytest.mark.usefixtures("not_utf8_names")
def test_git_status_leaves_out_paths_that_are_not_utf8(client: TestClient, root: Path) -> None:
    app = init_repo(root / "app")
    (app / "readme.txt").write_text("hello\n")
    git(app, "add", ".")
    git(app, "commit", "-q", "-m", "init")
    (app / f"{NOT_UTF8}.txt").write_text("untracked\n")
    (app / "moved").mkdir()
    git(app, "mv", "readme.txt", f"moved/{NOT_UTF8}.txt")  # a rename to a name not UTF-8
    (app / "notes.txt").write_text("one\n")
    git(app, "add", "notes.txt")
    git(app, "checkout", "-q", "-b", NOT_UTF8)
    session = new_session(client, app)

    status = client.get(f"/api/sessions/{session}/git/status", params={"scope": "all"})
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["branch"] == "caf\ufffd"  # shown only, never sent back: made displayable
    assert [(e["path"], e["change"]) for e in body["entries"]] == [("notes.txt", "added")]


@pytest.mark.usefixtures("not_utf8_names")
def test_git_status_keeps_a_rename_from_a_name_that_is_not_utf8(
    client: TestClient, root: Path
) -> None:
    project = init_repo(root / "app")
    (project / f"{NOT_UTF8}.txt").write_text("hello\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "init")
    git(project, "mv", f"{NOT_UTF8}.txt", "cafe.txt")
    session = new_session(client, project)

    status = client.get(f"/api/sessions/{session}/git/status", params={"scope": "staged"})
    assert status.status_code == 200, status.text
    entries = status.json()["entries"]
    assert [(e["path"], e["change"]) for e in entries] == [("cafe.txt", "renamed")]
    assert "origPath" not in entries[0]


@pytest.mark.usefixtures("not_utf8_names")
def test_git_status_of_a_work_tree_that_is_not_utf8_is_a_400(
    client: TestClient, root: Path
) -> None:
    project = init_repo(root / "app")
    (root / NOT_UTF8).mkdir()
    git(project, "config", "core.worktree", str(root / NOT_UTF8))
    session = new_session(client, project)

    status = client.get(f"/api/sessions/{session}/git/status")
    assert_error(status, 400, "GIT_STATUS_ERROR")
    assert "caf\\xe9' is not valid UTF-8" in error_of(status)


@pytest.mark.usefixtures("not_utf8_names")
def test_commands_and_agents_named_not_utf8_are_left_out(client: TestClient, root: Path) -> None:
    project = root / "app"
    for kind in ("commands", "agents"):
        folder = project / ".claude" / kind
        folder.mkdir(parents=True)
        (folder / "review.md").write_text("Review the diff.\n")
        (folder / f"{NOT_UTF8}.md").write_text("Unreachable.\n")
    session = new_session(client, project)

    commands = client.get(f"/api/sessions/{session}/commands")
    assert commands.status_code == 200, commands.text
    assert [c["name"] for c in commands.json()["commands"]] == ["review"]
    agents = client.get(f"/api/sessions/{session}/agents")
    assert agents.status_code == 200, agents.text
    assert [a["name"] for a in agents.json()["agents"]] == ["review"]
