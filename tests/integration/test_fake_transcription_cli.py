"""`pocketcode dev fake-transcription`: the fake OpenAI-compatible transcription API runs as a
command, prints the URL to put in the settings, answers with the upload's text, checks the
bearer key, and stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx


def test_the_command_serves_the_fake_until_interrupted() -> None:
    env = {**os.environ, "POCKETCODE_FAKE_TRANSCRIPTION_KEY": "sk-demo", "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pocketcode", "dev", "fake-transcription"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", first)
        assert match, first
        url = match.group(1) + "/audio/transcriptions"
        files = {"file": ("a.webm", b"hello from the phone", "audio/webm")}
        ok = httpx.post(
            url,
            files=files,
            data={"model": "whisper-1"},
            headers={"authorization": "Bearer sk-demo"},
        )
        assert ok.json() == {"text": "hello from the phone"}
        refused = httpx.post(url, files=files, data={"model": "whisper-1"})
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "Incorrect API key provided."
    finally:
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
    output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, output
    assert "transcription_url = http://127.0.0.1:" in output
    assert "sk-demo" not in first + output  # the key is not printed back
    assert "POST /v1/audio/transcriptions: 20 bytes, model whisper-1 → 200" in output
