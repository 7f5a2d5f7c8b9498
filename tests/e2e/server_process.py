"""`pocketcode serve` as a real child process, for crash and multi-process tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from pocketcode.devtools.fake_model import claude_cli_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pocketcode_cli(env: dict[str, str], *argv: str, stdin: str = "") -> str:
    """Run `pocketcode ARGV` as a user would (its own process, `env`, `stdin`); its stdout,
    or RuntimeError with the tail of its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "pocketcode", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pocketcode {' '.join(argv[:2])} failed: {done.stderr[-2000:]}")
    return done.stdout


def server_env(tmp_path: Path, database_url: str, model_url: str) -> dict[str, str]:
    """The environment of a server whose CLI talks to the fake model."""
    env = claude_cli_env(tmp_path / "home", model_url)
    env.update(
        {
            "PATH": os.environ.get("PATH", os.defpath),
            "POCKETCODE_DATA_DIR": str(tmp_path / "data"),
            "POCKETCODE_DATABASE_URL": database_url,
            "POCKETCODE_ALLOWED_ROOTS": str(tmp_path),
            "CLAUDE_CONFIG_DIR": str(tmp_path / "home" / ".claude"),
        }
    )
    return env


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, env: dict[str, str], log: Path, *, timeout: float = 30) -> ServerProcess:
        port = free_port()
        handle = log.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "pocketcode", "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
        handle.close()
        server = cls(process, port, log)
        server.wait_ready(timeout)
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
