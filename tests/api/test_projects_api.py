"""Repositories, the directory browser, project files, git status/diff/file, slash commands
and agents through the real app on SQLite and PostgreSQL, against real git repositories, in
PokéCode's shapes (closed enums, optional keys omitted, never null)."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.services.sessions import SessionService
from pocketcode.web.app import create_app

BASE = "http://localhost"
GIT_CODES = set("AMDRCUT?!") | {" ", "."}
CHANGES = {
    "added",
    "deleted",
    "modified",
    "renamed",
    "copied",
    "typechange",
    "conflicted",
    "untracked",
}
BINARY = bytes(range(256)) * 4


# -- helpers shared with tests/security/test_path_traversal.py --------------------------------


def start_client(settings: Settings, db: Database, roots: list[Path]) -> TestClient:
    """A started app whose allowed roots are `roots`, authenticated with an API token."""
    app_settings = Settings(**{**settings.model_dump(), "allowed_roots": roots})
    client = TestClient(create_app(app_settings, db, run_agents=False), base_url=BASE)
    client.__enter__()
    auth = client.app.state.pocketcode.auth  # type: ignore[attr-defined]
    user = auth.create_user("owner", "pw-owner-for-project-tests")
    client.headers["Authorization"] = f"Bearer {auth.create_token(user.id, 'tests').token}"
    return client


def new_session(client: TestClient, project: Path) -> str:
    state = client.app.state.pocketcode  # type: ignore[attr-defined]
    row = SessionService(state.db, state.settings.allowed_roots).create(str(project))
    return str(row.id)


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)},
    )
    return result.stdout.decode()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def assert_error(response: Any, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "statusCode"}, body
    assert body["statusCode"] == status
    assert isinstance(body["error"], str)
    if code is not None:
        assert body["code"] == code, body


def assert_no_nulls(value: Any) -> None:
    """Optional keys are omitted, never null (PokéCode's closed schemas reject null)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert item is not None, key
            assert_no_nulls(item)
    elif isinstance(value, list):
        for item in value:
            assert_no_nulls(item)


# -- fixtures ---------------------------------------------------------------------------------


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
def repo(root: Path) -> Path:
    """A repository with one file in every state git status knows here."""
    path = init_repo(root / "app")
    (path / "modified.txt").write_text("one\ntwo\nthree\n")
    (path / "staged.txt").write_text("staged before\n")
    (path / "old_name.txt").write_text("moving\nalong\nwith\nseveral\nlines\n")
    (path / "deleted.txt").write_text("gone soon\n")
    (path / "image.bin").write_bytes(BINARY)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    (path / "modified.txt").write_text("one\nTWO\nthree\n")
    (path / "staged.txt").write_text("staged after\nand more\n")
    git(path, "add", "staged.txt")
    git(path, "mv", "old_name.txt", "new_name.txt")
    (path / "deleted.txt").unlink()
    (path / "added.txt").write_text("brand new\n")
    git(path, "add", "added.txt")
    (path / "untracked.txt").write_text("a\nb\nc\n")
    (path / "sub").mkdir()
    (path / "sub" / "nested.txt").write_text("nested\n")
    (path / "image.bin").write_bytes(BINARY[::-1])
    return path


def check_status_shape(body: dict[str, Any]) -> None:
    assert_no_nulls(body)
    assert set(body) <= {"repoRoot", "branch", "ahead", "behind", "entries"}
    for entry in body["entries"]:
        required = {"path", "index", "worktree", "staged", "untracked", "change"}
        optional = {"origPath", "rename", "scores", "isSubmodule", "stats"}
        assert required <= set(entry) <= required | optional, entry
        assert entry["index"] in GIT_CODES and entry["worktree"] in GIT_CODES, entry
        assert entry["change"] in CHANGES, entry
        if "stats" in entry:
            assert set(entry["stats"]) == {"additions", "deletions"}
            assert min(entry["stats"].values()) >= 0


# -- git status -------------------------------------------------------------------------------


def test_git_status_reports_every_kind_of_change(client: TestClient, repo: Path) -> None:
    session = new_session(client, repo)
    response = client.get(f"/api/sessions/{session}/git/status?scope=all&includeUntracked=true")
    assert response.status_code == 200, response.text
    body = response.json()
    check_status_shape(body)
    assert body["repoRoot"] == str(repo)
    assert body["branch"] == "main"
    assert "ahead" not in body and "behind" not in body  # no upstream
    entries = {entry["path"]: entry for entry in body["entries"]}
    assert entries["modified.txt"] == {
        "path": "modified.txt",
        "index": ".",
        "worktree": "M",
        "staged": False,
        "untracked": False,
        "change": "modified",
        "stats": {"additions": 1, "deletions": 1},
    }
    assert entries["staged.txt"]["index"] == "M"
    assert entries["staged.txt"]["staged"] is True
    assert entries["staged.txt"]["stats"] == {"additions": 2, "deletions": 1}
    renamed = entries["new_name.txt"]
    assert renamed["origPath"] == "old_name.txt"
    assert (renamed["index"], renamed["change"], renamed["rename"]) == ("R", "renamed", True)
    assert renamed["scores"] == {"similarity": 100}
    assert (entries["deleted.txt"]["worktree"], entries["deleted.txt"]["change"]) == (
        "D",
        "deleted",
    )
    assert entries["added.txt"]["change"] == "added"
    assert entries["added.txt"]["stats"] == {"additions": 1, "deletions": 0}
    for untracked in ("untracked.txt", "sub/nested.txt"):
        assert entries[untracked]["untracked"] is True
        assert entries[untracked]["change"] == "untracked"
        assert (entries[untracked]["index"], entries[untracked]["worktree"]) == ("?", "?")
    assert entries["untracked.txt"]["stats"] == {"additions": 3, "deletions": 0}
    assert entries["image.bin"]["change"] == "modified"
    assert "stats" not in entries["image.bin"]  # binary: no line counts


def test_git_status_scopes_and_untracked_flag(client: TestClient, repo: Path) -> None:
    session = new_session(client, repo)

    def paths(query: str) -> set[str]:
        response = client.get(f"/api/sessions/{session}/git/status{query}")
        assert response.status_code == 200, response.text
        check_status_shape(response.json())
        return {entry["path"] for entry in response.json()["entries"]}

    # What PokéCode's diff screen asks for (and the default): the work tree's changes.
    unstaged = {"modified.txt", "deleted.txt", "image.bin", "untracked.txt", "sub/nested.txt"}
    assert paths("?scope=unstaged&includeUntracked=true") == unstaged
    assert paths("") == unstaged
    assert paths("?includeUntracked=false") == unstaged - {"untracked.txt", "sub/nested.txt"}
    assert paths("?scope=staged") == {"staged.txt", "new_name.txt", "added.txt"}
    bad = client.get(f"/api/sessions/{session}/git/status?scope=everything")
    assert_error(bad, 422, "VALIDATION_ERROR")


def test_git_status_ahead_behind_and_detached_head(client: TestClient, repo: Path) -> None:
    git(repo, "commit", "-q", "-m", "second")
    git(repo, "branch", "base", "HEAD~1")
    git(repo, "branch", "--set-upstream-to=base")
    session = new_session(client, repo)
    body = client.get(f"/api/sessions/{session}/git/status").json()
    assert (body["branch"], body["ahead"], body["behind"]) == ("main", 1, 0)

    git(repo, "checkout", "-q", "--detach")
    body = client.get(f"/api/sessions/{session}/git/status").json()
    check_status_shape(body)
    assert "branch" not in body and "ahead" not in body


def test_git_routes_on_a_folder_that_is_no_repository(client: TestClient, root: Path) -> None:
    plain = root / "plain"
    plain.mkdir()
    session = new_session(client, plain)
    assert_error(client.get(f"/api/sessions/{session}/git/status"), 404, "GIT_STATUS_ERROR")
    response = client.get(f"/api/sessions/{session}/git/diff", params={"path": "x"})
    assert_error(response, 404, "GIT_DIFF_ERROR")
    response = client.get(f"/api/sessions/{session}/git/file", params={"path": "x"})
    assert_error(response, 404, "GIT_FILE_ERROR")


def test_git_status_of_a_project_inside_a_larger_repository(client: TestClient, repo: Path) -> None:
    session = new_session(client, repo / "sub")
    body = client.get(f"/api/sessions/{session}/git/status").json()
    assert body["repoRoot"] == str(repo)
    assert [entry["path"] for entry in body["entries"]] == ["sub/nested.txt"]
    diff = client.get(f"/api/sessions/{session}/git/diff", params={"path": "sub/nested.txt"})
    assert "+nested" in diff.json()["unified"]
    # Paths are relative to the repository root; the rest of the repository is off limits.
    outside = client.get(f"/api/sessions/{session}/git/file", params={"path": "modified.txt"})
    assert_error(outside, 400, "GIT_FILE_ERROR")


def test_unknown_session(client: TestClient) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for route in ("git/status", "commands", "agents", "files"):
        assert_error(client.get(f"/api/sessions/{missing}/{route}"), 404, "NOT_FOUND")
    assert_error(client.get("/api/sessions/not-a-uuid/git/status"), 404, "NOT_FOUND")


# -- git diff ---------------------------------------------------------------------------------


def test_git_diff_of_each_kind_of_change(client: TestClient, repo: Path) -> None:
    session = new_session(client, repo)

    def diff(path: str, **query: Any) -> dict[str, Any]:
        response = client.get(f"/api/sessions/{session}/git/diff", params={"path": path, **query})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert_no_nulls(body)
        assert set(body) <= {"path", "isBinary", "unified", "stats"}
        return body

    body = diff("modified.txt", scope="unstaged", context=3)
    assert body["path"] == "modified.txt" and body["isBinary"] is False
    assert "-two\n+TWO\n" in body["unified"] and " one\n" in body["unified"]
    assert body["stats"] == {"additions": 1, "deletions": 1}
    assert "\n one\n" not in diff("modified.txt", context=0)["unified"]

    # Staged changes show only with scope=staged.
    assert diff("staged.txt")["unified"] == ""
    staged = diff("staged.txt", scope="staged")
    assert "+staged after\n" in staged["unified"]
    assert staged["stats"] == {"additions": 2, "deletions": 1}

    deleted = diff("deleted.txt")
    assert "-gone soon" in deleted["unified"] and deleted["stats"]["deletions"] == 1

    untracked = diff("untracked.txt")
    assert "+a\n+b\n+c\n" in untracked["unified"]
    assert untracked["stats"] == {"additions": 3, "deletions": 0}

    binary = diff("image.bin")
    assert binary["isBinary"] is True and "stats" not in binary
    assert "Binary files" in binary["unified"]

    for context in ("-1", "1001"):
        response = client.get(
            f"/api/sessions/{session}/git/diff", params={"path": "modified.txt", "context": context}
        )
        assert_error(response, 400, "GIT_DIFF_ERROR")
    assert_error(client.get(f"/api/sessions/{session}/git/diff"), 422, "VALIDATION_ERROR")


# -- git file ---------------------------------------------------------------------------------


def test_git_file_at_each_ref(client: TestClient, repo: Path) -> None:
    session = new_session(client, repo)

    def file(path: str, ref: str | None = None) -> Any:
        query = {"path": path} | ({"ref": ref} if ref else {})
        return client.get(f"/api/sessions/{session}/git/file", params=query)

    def content(path: str, ref: str | None = None) -> dict[str, Any]:
        response = file(path, ref)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert set(body) == {"path", "ref", "encoding", "content", "isBinary"}
        return body

    assert content("staged.txt") == {
        "path": "staged.txt",
        "ref": "WORKING",
        "encoding": "utf8",
        "content": "staged after\nand more\n",
        "isBinary": False,
    }
    assert content("staged.txt", "INDEX")["content"] == "staged after\nand more\n"
    assert content("staged.txt", "HEAD")["content"] == "staged before\n"
    assert content("modified.txt", "INDEX")["content"] == "one\ntwo\nthree\n"
    head = git(repo, "rev-parse", "HEAD").strip()
    assert content("deleted.txt", head)["content"] == "gone soon\n"
    assert content("deleted.txt", "main")["content"] == "gone soon\n"

    binary = content("image.bin", "HEAD")
    assert (binary["encoding"], binary["isBinary"]) == ("base64", True)
    assert base64.b64decode(binary["content"]) == BINARY
    assert base64.b64decode(content("image.bin")["content"]) == BINARY[::-1]

    assert_error(file("deleted.txt"), 404, "GIT_FILE_ERROR")
    assert_error(file("untracked.txt", "HEAD"), 404, "GIT_FILE_ERROR")
    assert_error(file("modified.txt", "no-such-branch"), 404, "GIT_FILE_ERROR")
    for ref in ("-p", "--output=/tmp/x", "HEAD:../x", "main..HEAD", "HEAD@{1}", "a b", "$(id)"):
        assert_error(file("modified.txt", ref), 400, "GIT_FILE_ERROR")


def test_git_file_size_limit(client: TestClient, repo: Path) -> None:
    (repo / "big.txt").write_text("x" * (1024 * 1024 + 1))
    git(repo, "add", "big.txt")
    session = new_session(client, repo)
    for ref in ("WORKING", "INDEX"):
        response = client.get(
            f"/api/sessions/{session}/git/file", params={"path": "big.txt", "ref": ref}
        )
        assert_error(response, 413, "GIT_FILE_ERROR")


# -- repositories and the directory browser ---------------------------------------------------


def test_repositories(client: TestClient, root: Path) -> None:
    init_repo(root / "zeta")
    (root / "Alpha").mkdir()
    (root / ".hidden").mkdir()
    (root / "notes.txt").write_text("a file is no repository")
    response = client.get("/api/repositories")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "repositories": [
            {"folderName": "Alpha", "path": str(root / "Alpha"), "isGitRepository": False},
            {"folderName": "zeta", "path": str(root / "zeta"), "isGitRepository": True},
        ],
        "total": 2,
        "githubReposDirectory": str(root),
    }
    assert client.get("/api/repositories/").json() == response.json()


def test_browse_directories(client: TestClient, root: Path) -> None:
    init_repo(root / "repo")
    (root / "repo" / "src").mkdir()
    (root / ".config").mkdir()
    (root / "b-dir").mkdir()
    (root / "file.txt").write_text("12345")

    top = client.get("/api/directories/browse")
    assert top.status_code == 200, top.text
    assert top.json() == {
        "currentPath": str(root),
        "parentPath": None,
        "items": [
            {"name": ".config", "path": str(root / ".config"), "type": "directory"}
            | {"isGitRepository": False},
            {"name": "b-dir", "path": str(root / "b-dir"), "type": "directory"}
            | {"isGitRepository": False},
            {"name": "repo", "path": str(root / "repo"), "type": "directory"}
            | {"isGitRepository": True},
        ],
    }
    assert client.get("/api/directories/browse/").json() == top.json()
    assert client.get("/api/directories/browse", params={"path": str(root)}).json() == top.json()

    inner = client.get("/api/directories/browse", params={"path": str(root / "repo")}).json()
    assert inner["currentPath"] == str(root / "repo")
    assert inner["parentPath"] == str(root)
    assert [item["name"] for item in inner["items"]] == [".git", "src"]

    with_files = client.get("/api/directories/browse?includeFiles=true").json()
    file = with_files["items"][-1]
    assert (file["name"], file["type"], file["size"]) == ("file.txt", "file", 5)
    assert file["modifiedAt"].endswith("Z")

    missing = client.get("/api/directories/browse", params={"path": str(root / "nope")})
    assert_error(missing, 404, "NOT_FOUND")
    not_dir = client.get("/api/directories/browse", params={"path": str(root / "file.txt")})
    assert_error(not_dir, 400, "INVALID_INPUT")


# -- project files ----------------------------------------------------------------------------


def test_project_files_list_and_read(client: TestClient, root: Path) -> None:
    project = root / "site"
    (project / "docs").mkdir(parents=True)
    (project / "docs" / "readme.md").write_text("# héllo\n", encoding="utf-8")
    (project / "index.html").write_text("<p>hi</p>")
    (project / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (project / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (project / "huge.log").write_bytes(b"x" * (1024 * 1024 + 1))
    session = new_session(client, project)

    listing = client.get(f"/api/sessions/{session}/files").json()
    assert (listing["path"], listing["parentPath"]) == ("", None)
    assert [item["name"] for item in listing["items"]] == [
        "docs",
        "huge.log",
        "index.html",
        "latin1.txt",
        "logo.png",
    ]
    assert listing["items"][2]["size"] == len("<p>hi</p>")
    docs = client.get(f"/api/sessions/{session}/files", params={"path": "docs"}).json()
    assert (docs["path"], docs["parentPath"]) == ("docs", "")
    assert docs["items"][0]["path"] == "docs/readme.md"

    def read(path: str) -> Any:
        return client.get(f"/api/sessions/{session}/files/content", params={"path": path})

    body = read("docs/readme.md").json()
    assert (body["path"], body["content"], body["size"]) == ("docs/readme.md", "# héllo\n", 9)
    assert read("./docs//readme.md").json()["path"] == "docs/readme.md"
    assert_error(read("logo.png"), 415, "NOT_A_TEXT_FILE")
    assert_error(read("latin1.txt"), 415, "NOT_A_TEXT_FILE")
    assert_error(read("huge.log"), 413, "FILE_TOO_LARGE")
    assert_error(read("docs"), 400, "INVALID_INPUT")
    assert_error(read("nope.txt"), 404, "NOT_FOUND")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_reading_a_fifo_does_not_hang(client: TestClient, root: Path) -> None:
    project = root / "fifo"
    project.mkdir()
    os.mkfifo(project / "pipe")
    session = new_session(client, project)
    response = client.get(f"/api/sessions/{session}/files/content", params={"path": "pipe"})
    assert_error(response, 400, "INVALID_INPUT")


# -- slash commands and agents ----------------------------------------------------------------


@pytest.fixture
def claude_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "claude-config"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(path))
    return path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_slash_commands(client: TestClient, root: Path, claude_home: Path) -> None:
    project = root / "app"
    project.mkdir()
    session = new_session(client, project)
    empty = client.get(f"/api/sessions/{session}/commands/?type=all").json()
    assert empty == {"commands": [], "sources": {}}

    write(claude_home / "commands" / "review.md", "Review the diff.\n")
    write(
        project / ".claude" / "commands" / "frontend" / "deploy.md",
        "---\ndescription: Ship it\nallowed-tools: Bash\n---\nDeploy $ARGUMENTS now.\n",
    )
    write(project / ".claude" / "commands" / "notes.txt", "not a command")
    body = client.get(f"/api/sessions/{session}/commands/?type=all").json()
    assert body == {
        "commands": [
            {"name": "review", "body": "Review the diff.\n", "type": "user"},
            {"name": "deploy", "body": "Deploy $ARGUMENTS now.\n", "type": "project"},
        ],
        "sources": {
            "userCommandsPath": str(claude_home / "commands"),
            "projectCommandsPath": str(project / ".claude" / "commands"),
        },
    }
    assert client.get(f"/api/sessions/{session}/commands").json() == body
    project_only = client.get(f"/api/sessions/{session}/commands?type=project").json()
    assert [c["name"] for c in project_only["commands"]] == ["deploy"]
    assert set(project_only["sources"]) == {"projectCommandsPath"}
    found = client.get(f"/api/sessions/{session}/commands?search=SHIP").json()
    assert [c["name"] for c in found["commands"]] == ["deploy"]
    bad = client.get(f"/api/sessions/{session}/commands?type=system")
    assert_error(bad, 422, "VALIDATION_ERROR")


def test_agents(client: TestClient, root: Path, claude_home: Path) -> None:
    project = root / "app"
    project.mkdir()
    write(
        claude_home / "agents" / "reviewer.md",
        '---\nname: code-reviewer\ndescription: "Reviews code"\ncolor: blue\n'
        "tools: Read, Grep\n---\nYou review code.\n",
    )
    write(project / ".claude" / "agents" / "helper.md", "No front matter here.\n")
    session = new_session(client, project)
    body = client.get(f"/api/sessions/{session}/agents/?type=all").json()
    assert_no_nulls(body)
    assert body == {
        "agents": [
            {
                "name": "code-reviewer",
                "description": "Reviews code",
                "color": "blue",
                "content": "You review code.\n",
                "type": "user",
            },
            {
                "name": "helper",
                "description": "",
                "content": "No front matter here.\n",
                "type": "project",
            },
        ],
        "sources": {
            "userAgentsPath": str(claude_home / "agents"),
            "projectAgentsPath": str(project / ".claude" / "agents"),
        },
    }
    user_only = client.get(f"/api/sessions/{session}/agents?type=user").json()
    assert [agent["name"] for agent in user_only["agents"]] == ["code-reviewer"]


def test_project_command_files_that_lead_outside_are_skipped(
    client: TestClient, root: Path, tmp_path: Path, claude_home: Path
) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret.md", "SECRET-CANARY-commands")
    project = root / "app"
    (project / ".claude" / "commands").mkdir(parents=True)
    (project / ".claude" / "commands" / "leak.md").symlink_to(outside / "secret.md")
    (project / ".claude" / "agents").symlink_to(outside, target_is_directory=True)
    session = new_session(client, project)
    for route in ("commands", "agents"):
        response = client.get(f"/api/sessions/{session}/{route}")
        assert response.status_code == 200, response.text
        assert "SECRET-CANARY" not in response.text
