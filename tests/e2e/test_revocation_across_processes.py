"""`pocketcode token revoke` and `pocketcode user passwd`, run next to a `pocketcode serve` (real
processes, SQLite and PostgreSQL): the server refuses the revoked credential at once, although
it had just checked it and keeps what it checked for a few seconds (CREDENTIAL_CACHE_SECONDS)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from pocketcode.services.auth import CREDENTIAL_CACHE_SECONDS
from tests.e2e.server_process import ServerProcess, pocketcode_cli, server_env

pytestmark = pytest.mark.timeout(180)

USERNAME = "owner"
PASSWORD = "e2e-revocation-canary-5b1d"
# The announcement travels in milliseconds (SQLite: before the CLI exits; PostgreSQL: one
# NOTIFY); the credential cache alone would answer for up to CREDENTIAL_CACHE_SECONDS.
AT_ONCE = 1.0


def _new_token(env: dict[str, str], name: str) -> str:
    return pocketcode_cli(env, "token", "create", name).strip().splitlines()[-1]


def _accepted_after(
    client: httpx.Client, path: str, env: dict[str, str], *argv: str, stdin: str = ""
) -> float | None:
    """Check the client's credential (the server caches it), revoke it with the CLI, and
    return how long after the CLI's exit the server went on accepting it; None when the CLI
    took so long that the cache alone could have ended it in time."""
    assert client.get(path).status_code == 200
    checked = time.monotonic()
    pocketcode_cli(env, *argv, stdin=stdin)
    exited = time.monotonic()
    if exited - checked > CREDENTIAL_CACHE_SECONDS - 2 * AT_ONCE:
        return None
    while client.get(path).status_code == 200:
        assert time.monotonic() - exited < CREDENTIAL_CACHE_SECONDS
        time.sleep(0.02)
    return time.monotonic() - exited


def test_credentials_revoked_with_the_cli_are_refused_by_the_server_at_once(
    database_url: str, tmp_path: Path
) -> None:
    env = server_env(tmp_path, database_url, "http://127.0.0.1:9")  # no prompt runs here
    pocketcode_cli(env, "user", "create", "--username", USERNAME, stdin=PASSWORD + "\n")
    server = ServerProcess.start(env, tmp_path / "server.log")
    canaries = [PASSWORD]
    try:
        kept = _new_token(env, "kept")
        canaries.append(kept)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            waited: float | None = None
            for attempt in range(3):  # another try only if the CLI was too slow to tell
                token = _new_token(env, f"phone-{attempt}")
                canaries.append(token)
                listed = pocketcode_cli(env, "token", "list").splitlines()
                token_id = next(line.split()[0] for line in listed if f"phone-{attempt}" in line)
                client.headers["authorization"] = f"Bearer {token}"
                waited = _accepted_after(client, "/api/sessions", env, "token", "revoke", token_id)
                if waited is not None:
                    break
            assert waited is not None and waited < AT_ONCE, waited
            # The other token is unaffected.
            client.headers["authorization"] = f"Bearer {kept}"
            assert client.get("/api/sessions").status_code == 200

        with httpx.Client(
            base_url=server.url, timeout=10, headers={"origin": server.url}
        ) as browser:
            waited = None
            for attempt in range(3):
                login = browser.post(
                    "/api/auth/login", json={"username": USERNAME, "password": canaries[0]}
                )
                assert login.status_code == 200, login.text
                canaries.insert(0, f"{PASSWORD}-changed-{attempt}")
                waited = _accepted_after(
                    browser, "/api/auth/me", env, "user", "passwd", stdin=canaries[0] + "\n"
                )
                if waited is not None:
                    break
            assert waited is not None and waited < AT_ONCE, waited
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert not any(secret in log for secret in canaries)
