"""`pocketcode serve`: the loopback guard, the URL it prints (only once the port answers), and
one real run as a user starts it."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from pocketcode.config import load_settings
from pocketcode.db import migrate
from pocketcode.db.engine import Database
from pocketcode.db.tables import UserRow
from tests.helpers import run_cli

READY_WITHIN_S = 20.0
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a user passes to serve on the LAN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def _no_stray_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("POCKETCODE_") and name.upper() != "POCKETCODE_DATA_DIR":
            monkeypatch.delenv(name)


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """uvicorn never binds; records the (host, port) each run was asked for."""
    calls: list[tuple[str, int]] = []

    def fake_run(self: uvicorn.Server, *args: Any, **kwargs: Any) -> None:
        calls.append((self.config.host, self.config.port))

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    return calls


def add_owner() -> None:
    db = Database.from_settings(load_settings())
    try:
        migrate.upgrade(db)
        with db.write() as session:
            session.add(UserRow(username="owner", password_hash="x", is_owner=True))
    finally:
        db.dispose()


# --- the loopback guard -----------------------------------------------------------------------


@pytest.mark.parametrize("host", [ALL_INTERFACES, "::", "192.168.1.20"])
def test_a_public_address_is_refused_while_no_user_exists(
    host: str, uvicorn_runs: list[tuple[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "serve", "--host", host)

    assert code == 1
    assert "Traceback" not in out + err
    text = " ".join(err.split())
    assert text.startswith(f"error: refusing to listen on {host}:")
    assert "Start on 127.0.0.1 first and create the owner account" in text
    assert "running at" not in out
    assert uvicorn_runs == []


def test_a_public_address_is_allowed_once_an_owner_exists(
    uvicorn_runs: list[tuple[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    add_owner()

    code, _, err = run_cli(capsys, "serve", "--host", ALL_INTERFACES, "--port", "3999")

    assert code == 0, err
    assert uvicorn_runs == [(ALL_INTERFACES, 3999)]


# --- the printed URL --------------------------------------------------------------------------


def test_loopback_serves_and_prints_the_url_once_listening(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real uvicorn in this process; instead of waiting for Ctrl+C it asks the printed URL
    whether it answers, then stops."""
    port = free_port()
    seen: dict[str, Any] = {}

    async def one_request_then_stop(self: uvicorn.Server) -> None:
        seen["host"], seen["port"] = self.config.host, self.config.port
        seen["printed"] = capsys.readouterr().out  # printed before this point
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/health/ready")
        seen["ready"] = response.status_code

    monkeypatch.setattr(uvicorn.Server, "main_loop", one_request_then_stop)

    code, out, err = run_cli(capsys, "serve", "--host", "127.0.0.1", "--port", str(port))

    assert code == 0, err
    assert (seen["host"], seen["port"]) == ("127.0.0.1", port)
    assert f"pocketcode is running at http://127.0.0.1:{port}/" in seen["printed"]
    assert seen["ready"] == 200
    assert out.strip().endswith("pocketcode stopped")


def test_a_busy_port_is_one_clear_error_and_no_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        code, out, err = run_cli(capsys, "serve", "--port", str(port))

    assert code == 1
    assert "running at" not in out
    assert "Traceback" not in out + err
    assert f"error: the server could not start on 127.0.0.1 port {port}" in " ".join(err.split())


# --- one real run -----------------------------------------------------------------------------


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("POCKETCODE_")}
    env["POCKETCODE_DATA_DIR"] = str(tmp_path / "served")
    process = subprocess.Popen(
        [sys.executable, "-m", "pocketcode", "serve", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_for_real(serve_process: tuple[subprocess.Popen[str], int]) -> None:
    process, port = serve_process
    url = f"http://127.0.0.1:{port}/"
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []])
    reader.start()

    # The URL line appears on stdout, and when it does the URL already answers.
    deadline = time.monotonic() + READY_WITHIN_S
    printed: list[str] = []
    while f"pocketcode is running at {url}" not in "".join(printed):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            printed.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            pytest.fail(f"no URL printed within {READY_WITHIN_S} s: {printed}")
    assert httpx.get(f"{url}health/live", timeout=2).status_code == 200

    while True:
        response = httpx.get(f"{url}health/ready", timeout=2)
        if response.status_code == 200:
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    assert response.json()["status"] == "ready"

    process.terminate()
    assert process.wait(timeout=10) == 0
    reader.join(timeout=5)
    while not lines.empty():
        printed.append(lines.get())
    stderr = process.stderr.read() if process.stderr else ""
    assert printed[-1].strip() == "pocketcode stopped"
    assert "Traceback" not in stderr


# --- reverse proxies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        # No proxy configured: the header is anyone's claim and is ignored.
        ("", "10.1.2.3", 401),
        # A configured proxy speaks for the client it forwards.
        ("127.0.0.1", "10.1.2.3", 200),
        ("127.0.0.0/8", "192.168.7.7", 401),
    ],
)
def test_forwarded_for_is_believed_only_from_configured_proxies(
    proxies: str,
    forwarded_for: str,
    expected: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trusted network (10.0.0.0/8 here) acts as the owner without credentials, so who the
    client is must not be something a request can claim."""
    add_owner()
    port = free_port()
    monkeypatch.setenv("POCKETCODE_TRUSTED_NETWORKS", "10.0.0.0/8")
    monkeypatch.setenv("POCKETCODE_FORWARDED_ALLOW_IPS", proxies)
    seen: dict[str, int] = {}

    async def one_request_then_stop(self: uvicorn.Server) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"http://127.0.0.1:{port}/api/sessions",
                headers={"X-Forwarded-For": forwarded_for},
            )
        seen["status"] = response.status_code

    monkeypatch.setattr(uvicorn.Server, "main_loop", one_request_then_stop)

    code, _, err = run_cli(capsys, "serve", "--host", "127.0.0.1", "--port", str(port))

    assert code == 0, err
    assert seen["status"] == expected


def test_a_proxy_setting_that_is_not_an_address_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCKETCODE_FORWARDED_ALLOW_IPS", "127.0.0.1,proxy.example")

    code, out, err = run_cli(capsys, "serve")

    assert code == 1
    assert "Traceback" not in out + err
    assert "'proxy.example' is not an IP address or CIDR of a proxy" in err
