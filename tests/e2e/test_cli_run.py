"""`pocketcode run`: one prompt from the terminal through the real runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pocketcode.db.engine import Database, create_db_engine
from pocketcode.devtools.fake_model import claude_cli_env, text, tool_use
from pocketcode.domain.states import JobStatus
from pocketcode.services.jobs import JobService
from pocketcode.services.sessions import SessionService
from tests.e2e.conftest import StartFakeModel


def _run(tmp_path: Path, base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = claude_cli_env(tmp_path / "home", base_url)
    env.update(
        {
            "POCKETCODE_DATA_DIR": str(tmp_path / "data"),
            "POCKETCODE_ALLOWED_ROOTS": str(tmp_path),
            "CLAUDE_CONFIG_DIR": str(tmp_path / "home" / ".claude"),
            "COLUMNS": "200",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "pocketcode", "run", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**env, "PATH": os.environ.get("PATH", os.defpath)},
        timeout=90,
        check=False,
    )


def test_run_shows_the_answer_and_the_tools(tmp_path: Path, fake_model: StartFakeModel) -> None:
    project = tmp_path / "project"
    project.mkdir()
    server = fake_model(
        tool_use("Write", {"file_path": "hello.txt", "content": "hi\n"}), text("Wrote hello.txt.")
    )
    done = _run(
        tmp_path,
        server.base_url,
        "--project",
        str(project),
        "--permission-mode",
        "bypassPermissions",
        "Write hello.txt",
    )
    assert done.returncode == 0, done.stderr
    assert "▶ Write" in done.stdout
    assert "Wrote hello.txt." in done.stdout
    assert "pocketcode session" in done.stdout
    assert (project / "hello.txt").read_text() == "hi\n"


def test_a_denied_tool_without_a_terminal(tmp_path: Path, fake_model: StartFakeModel) -> None:
    project = tmp_path / "project"
    project.mkdir()
    server = fake_model(
        tool_use("Write", {"file_path": "nope.txt", "content": "x"}), text("Could not write.")
    )
    done = _run(tmp_path, server.base_url, "--project", str(project), "Write nope.txt")
    assert "needs approval and there is no terminal: denied" in done.stdout
    assert not (project / "nope.txt").exists()


def test_a_failed_run_exits_non_zero(tmp_path: Path, fake_model: StartFakeModel) -> None:
    project = tmp_path / "project"
    project.mkdir()
    from pocketcode.devtools.fake_model import error

    server = fake_model(error(401))
    done = _run(tmp_path, server.base_url, "--project", str(project), "hello")
    assert done.returncode == 1
    assert "HTTP 401" in done.stdout


def test_a_project_outside_the_roots_is_refused(tmp_path: Path, fake_model: StartFakeModel) -> None:
    server = fake_model(text("unused"))
    done = _run(tmp_path, server.base_url, "--project", "/", "hello")
    assert done.returncode == 1
    assert "outside the allowed project roots" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_leaves_the_prompts_of_other_sessions_alone(
    tmp_path: Path, fake_model: StartFakeModel
) -> None:
    """A prompt the server's users queued in another session is the server's to run:
    `pocketcode run` claimed it too, and cancelled it when it exited."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    server = fake_model(text("First answer."), text("Second answer."), text("Never asked."))
    assert _run(tmp_path, server.base_url, "--project", str(first), "one").returncode == 0
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'data' / 'pocketcode.db'}"))
    try:
        [queued_in] = SessionService(db, [tmp_path]).list_sessions()[0]
        waiting = JobService(db).enqueue(queued_in.id, "queued from the web")[0]

        done = _run(tmp_path, server.base_url, "--project", str(second), "two")

        assert done.returncode == 0, done.stdout + done.stderr
        assert "Second answer." in done.stdout
        assert JobService(db).get(waiting.id).status is JobStatus.PENDING
    finally:
        db.dispose()
