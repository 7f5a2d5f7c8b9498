"""A real `pocketcode serve` (SQLite in a temp dir, the real Claude CLI against the in-process
fake model) with no account yet, and the one-time setup token it printed, for browser tests
and screenshots."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pocketcode.cli.serve import SETUP_URL_FILE
from pocketcode.devtools.fake_model import FakeModelServer
from tests.e2e.server_process import ServerProcess, server_env

USERNAME = "owner"
PASSWORD = "correct horse battery staple"


@dataclass
class BrowserStack:
    root: Path
    model: FakeModelServer
    server: ServerProcess
    project: Path
    env: dict[str, str]
    setup_token: str

    @property
    def url(self) -> str:
        return self.server.url

    def reset_script(self) -> None:
        """Forget turns a failed test left unconsumed, so the next test starts clean."""
        # The fake has no public way to drop turns.
        state = self.model._state
        with state.lock:
            state.turns.clear()
            state.subagent_turns.clear()

    def stop(self) -> None:
        self.server.stop()
        self.model.stop()


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


def make_project(root: Path, name: str = "demo-app") -> Path:
    """A small git repository with one commit."""
    project = root / name
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("# Demo app\n\nA project for the browser tests.\n")
    (project / "src" / "app.py").write_text(
        'def greet(name):\n    return "Hello, " + name\n\n\nprint(greet("world"))\n'
    )
    git(project, "init", "-q", "-b", "main")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "initial")
    return project


def start_browser_stack(root: Path, extra_env: dict[str, str] | None = None) -> BrowserStack:
    model = FakeModelServer().start()
    try:
        project = make_project(root)
        env = server_env(root, "", model.base_url)
        del env["POCKETCODE_DATABASE_URL"]  # SQLite in the data dir
        env["POCKETCODE_LOG_LEVEL"] = "warning"
        env.update(extra_env or {})
        env["COLUMNS"] = "1000"  # the setup file's path on one line of the log
        server = ServerProcess.start(env, root / "server.log", timeout=60)
        try:
            token = printed_setup_token(root / "server.log", Path(env["POCKETCODE_DATA_DIR"]))
        except BaseException:
            server.stop()
            raise
    except BaseException:
        model.stop()
        raise
    return BrowserStack(root, model, server, project, env, token)


def printed_setup_token(log: Path, data_dir: Path, timeout: float = 10) -> str:
    """The token of the `/#token=…` link `serve` offers when there is no account yet: its
    output is a file here, not a terminal, so the link is in `<data dir>/setup-url`, and the
    log says only where."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if SETUP_URL_FILE in log.read_text():
            found = re.search(r"#token=([A-Za-z0-9_-]+)", (data_dir / SETUP_URL_FILE).read_text())
            assert found is not None and found.group(1) not in log.read_text()
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no setup link offered in the server log: {log.read_text()[-2000:]}")


if __name__ == "__main__":  # a demo server to look at by hand: python -m tests.browser.stack
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        stack = start_browser_stack(Path(tmp))
        print(f"{stack.url}/#token={stack.setup_token}", flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            stack.stop()
