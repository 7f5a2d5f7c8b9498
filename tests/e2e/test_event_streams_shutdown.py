"""`pocketcode serve` stopped with SIGTERM while event streams are open: uvicorn waits for open
responses before it shuts the app down, so every stream must end its body by itself. The
server exits 0 within a few seconds and each client sees a clean end of stream (and would
reconnect), not a cut connection. On SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server_process import ServerProcess, pocketcode_cli, server_env

pytestmark = pytest.mark.timeout(120)

PASSWORD = "pw-streams-shutdown-8812"


def test_sigterm_ends_open_streams_and_the_server_exits(database_url: str, tmp_path: Path) -> None:
    env = server_env(tmp_path, database_url, "http://127.0.0.1:9")
    pocketcode_cli(env, "user", "create", "--username", "owner", stdin=PASSWORD + "\n")
    token = pocketcode_cli(env, "token", "create", "owner").strip().splitlines()[-1]
    server = ServerProcess.start(env, tmp_path / "server.log", timeout=60)
    try:
        with httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            project = tmp_path / "project"
            project.mkdir()
            created = client.post("/api/sessions", json={"projectPath": str(project)})
            session_id = created.json()["id"]
            paths = [
                f"/api/sessions/{session_id}/events",
                "/api/events",
                f"/api/sessions/{session_id}/messages/stream",
            ]
            with contextlib.ExitStack() as stack:
                streams = [stack.enter_context(client.stream("GET", path)) for path in paths]
                chunks = [stream.iter_raw() for stream in streams]
                for stream, chunk in zip(streams, chunks, strict=True):
                    assert stream.status_code == 200
                    assert next(chunk).startswith(b"retry: ")  # open and subscribed

                started = time.monotonic()
                server.process.terminate()
                for chunk in chunks:
                    # Reads to the end of the chunked body; a cut connection raises.
                    for _ in chunk:
                        pass
                assert server.process.wait(timeout=15) == 0
                assert time.monotonic() - started < 5
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "pocketcode stopped" in log
    assert "Traceback" not in log
