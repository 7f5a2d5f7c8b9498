"""Running the real, bundled `claude` CLI against the fake model, as end-to-end tests need."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketcode.devtools.fake_model import FakeModelServer, claude_cli_env

STREAM_JSON = ["--output-format", "stream-json", "--verbose"]


@dataclass
class ClaudeRun:
    """One finished `claude -p` process and its stream-json lines."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def of_type(self, line_type: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("type") == line_type]

    @property
    def result(self) -> dict[str, Any]:
        results = self.of_type("result")
        assert results, f"no result line; stderr: {self.stderr[-2000:]}"
        return results[-1]

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])

    @property
    def assistant_blocks(self) -> list[dict[str, Any]]:
        return [block for line in self.of_type("assistant") for block in line["message"]["content"]]

    @property
    def assistant_texts(self) -> list[str]:
        return [b["text"] for b in self.assistant_blocks if b.get("type") == "text"]


@dataclass
class ClaudeCli:
    """The bundled CLI with a throwaway HOME and a project directory to work in."""

    executable: Path
    home: Path
    project: Path

    def env(self, server: FakeModelServer, *, max_retries: int = 0) -> dict[str, str]:
        return claude_cli_env(self.home, server.base_url, max_retries=max_retries)

    def argv(self, prompt: str, args: Sequence[str]) -> list[str]:
        return [str(self.executable), "-p", prompt, *STREAM_JSON, *args]

    def run(
        self,
        server: FakeModelServer,
        prompt: str,
        *args: str,
        timeout: float = 20,
        max_retries: int = 0,
    ) -> ClaudeRun:
        completed = subprocess.run(
            self.argv(prompt, args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.project,
            env=self.env(server, max_retries=max_retries),
            timeout=timeout,
            check=False,
        )
        lines = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
        return ClaudeRun(completed.returncode, lines, completed.stderr)

    def start(self, server: FakeModelServer, prompt: str, *args: str) -> subprocess.Popen[str]:
        """A running CLI whose stdout the caller reads line by line (and must reap)."""
        return subprocess.Popen(
            self.argv(prompt, args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.project,
            env=self.env(server),
        )

    def transcript_dir(self) -> Path:
        """Where the CLI writes this project's transcripts: realpath(cwd), with every
        character that is not a letter or digit replaced by '-'."""
        encoded = re.sub(r"[^A-Za-z0-9]", "-", os.path.realpath(self.project))
        return self.home / ".claude" / "projects" / encoded
