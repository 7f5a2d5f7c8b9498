"""The first run's one-time setup link (`pocketcode serve` with no account): shown on a
terminal; when the output is not one (a service manager's journal, a redirect: a log), it goes
to a file only its user may read, and the output says where. Real `serve` processes."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pocketcode.cli.serve import SETUP_URL_FILE
from tests.e2e.server_process import ServerProcess, free_port, server_env

pytestmark = pytest.mark.timeout(120)

LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/?#token=([A-Za-z0-9_-]+)")


def test_output_that_is_no_terminal_gets_the_path_not_the_link(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'pc.db'}", "http://127.0.0.1:9")
    setup_file = Path(env["POCKETCODE_DATA_DIR"]) / SETUP_URL_FILE
    log = tmp_path / "server.log"
    server = ServerProcess.start(env, log)
    try:
        deadline = time.monotonic() + 10
        while SETUP_URL_FILE not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        found = LINK.search(setup_file.read_text())
        assert found is not None
        assert stat.S_IMODE(setup_file.stat().st_mode) == 0o600
        assert "#token=" not in log.read_text()
        assert found.group(2) not in log.read_text()
        created = httpx.post(
            f"{server.url}/api/auth/setup",
            json={"token": found.group(2), "username": "owner", "password": "setup-pw-5c2f1e"},
            headers={"origin": server.url},
        )
        assert created.status_code == 201, created.text
    finally:
        server.stop()
    assert not setup_file.exists()  # its token died with the server
    assert found.group(2) not in log.read_text()


def test_a_terminal_gets_the_link(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'pc.db'}", "http://127.0.0.1:9")
    env["COLUMNS"] = "1000"
    port = free_port()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pocketcode", "serve", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while LINK.search(shown.decode(errors="replace")) is None:
            assert time.monotonic() < deadline, shown.decode(errors="replace")
            assert process.poll() is None, shown.decode(errors="replace")
            if select.select([leader], [], [], 0.2)[0]:
                shown += os.read(leader, 65536)
        assert not (Path(env["POCKETCODE_DATA_DIR"]) / SETUP_URL_FILE).exists()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        os.close(leader)
