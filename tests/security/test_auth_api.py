"""Login, logout, sessions, tokens, TOTP and throttling through the real app, on SQLite and
PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pocketcode.db.engine import Database
from pocketcode.db.tables import AuthFailureRow
from pocketcode.domain.errors import Conflict, TooManyAttempts
from pocketcode.services.auth import AttemptThrottle
from tests.security.conftest import (
    BASE,
    PASSWORD,
    SETUP_TOKEN,
    USERNAME,
    MakeClient,
    auth_of,
    login,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NEW_PASSWORD = "a-new-password-canary-31b8"


def error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "error": response.json()["error"],
        "code": code,
        "statusCode": status,
    }


# --- setup ------------------------------------------------------------------------------------


def test_setup_needs_the_one_time_token_and_works_once(client: TestClient) -> None:
    assert client.get("/api/auth/status").json() == {
        "setupRequired": True,
        "authenticated": False,
        "user": None,
    }
    body = {"token": "wrong", "username": USERNAME, "password": PASSWORD}
    error(client.post("/api/auth/setup", json=body), 403, "FORBIDDEN")

    response = client.post("/api/auth/setup", json={**body, "token": SETUP_TOKEN})
    assert response.status_code == 201, response.text
    assert response.json()["user"]["isOwner"] is True
    assert client.get("/api/auth/me").json()["user"]["username"] == USERNAME
    status = client.get("/api/auth/status").json()
    assert (status["setupRequired"], status["authenticated"]) == (False, True)

    client.cookies.clear()
    again = {**body, "token": SETUP_TOKEN, "username": "second"}
    error(client.post("/api/auth/setup", json=again), 409, "CONFLICT")


def test_setup_refuses_a_short_password(client: TestClient) -> None:
    body = {"token": SETUP_TOKEN, "username": USERNAME, "password": "short-pw"}
    error(client.post("/api/auth/setup", json=body), 400, "INVALID_INPUT")
    assert client.get("/api/auth/status").json()["setupRequired"] is True


# --- login and logout -------------------------------------------------------------------------


@pytest.mark.usefixtures("owner")
def test_login_sets_a_strict_http_only_cookie_and_logout_revokes_it(client: TestClient) -> None:
    response = login(client)
    assert response.status_code == 200, response.text
    assert TIMESTAMP.match(response.json()["expiresAt"])
    assert TIMESTAMP.match(response.json()["user"]["lastLoginAt"])
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert cookie.startswith("pocketcode_session=")
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/" in cookie.lower()
    assert "secure" not in attributes  # plain http on localhost; https adds it (below)

    token = client.cookies["pocketcode_session"]
    assert client.get("/api/auth/me").json()["authMethod"] == "cookie"
    assert client.post("/api/auth/logout").status_code == 204

    client.cookies.set("pocketcode_session", token)  # replaying the old cookie
    error(client.get("/api/auth/me"), 401, "UNAUTHENTICATED")


@pytest.mark.usefixtures("owner")
def test_cookie_is_secure_behind_an_https_public_url(make_client: MakeClient) -> None:
    client = make_client(public_url="https://code.example.com")
    cookie = login(client).headers["set-cookie"].lower()
    assert "; secure" in cookie


@pytest.mark.usefixtures("owner")
def test_wrong_password_and_unknown_user_get_the_same_answer(client: TestClient) -> None:
    wrong = login(client, "not-the-password-at-all")
    unknown = client.post(
        "/api/auth/login", json={"username": "nobody", "password": "not-the-password-at-all"}
    )
    error(wrong, 401, "UNAUTHENTICATED")
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers


@pytest.mark.usefixtures("owner")
def test_an_unknown_user_is_checked_against_the_dummy_hash(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from argon2 import PasswordHasher

    auth = auth_of(client)
    verified: list[str] = []

    class SpyHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            verified.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(auth, "hasher", SpyHasher(time_cost=1, memory_cost=8, parallelism=1))
    client.post("/api/auth/login", json={"username": "nobody", "password": "whatever-pw-123"})
    assert verified == [auth.dummy_hash]
    assert verified[0].startswith("$argon2id$")


def test_a_weaker_stored_hash_is_upgraded_at_login(client: TestClient, owner: str) -> None:
    from argon2 import PasswordHasher

    from pocketcode.db.tables import UserRow

    auth = auth_of(client)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, salt_len=8).hash(PASSWORD)
    with auth.db.write() as session:
        row = session.get(UserRow, auth.find_user(USERNAME).id)
        assert row is not None
        row.password_hash = weak
    assert login(client).status_code == 200
    with auth.db.read() as session:
        row = session.get(UserRow, auth.find_user(USERNAME).id)
        assert row is not None
        assert row.password_hash != weak
        assert not auth.hasher.check_needs_rehash(row.password_hash)


@pytest.mark.usefixtures("owner")
def test_password_change_revokes_the_other_sessions(make_client: MakeClient) -> None:
    phone, laptop = make_client(), make_client()
    assert login(phone).status_code == 200
    assert login(laptop).status_code == 200

    response = laptop.post(
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"revokedSessions": 1}
    assert laptop.get("/api/auth/me").status_code == 200  # the session that changed it stays
    error(phone.get("/api/auth/me"), 401, "UNAUTHENTICATED")

    phone.cookies.clear()
    error(login(phone), 401, "UNAUTHENTICATED")
    assert login(phone, NEW_PASSWORD).status_code == 200


@pytest.mark.usefixtures("owner")
def test_password_change_needs_the_current_password(client: TestClient) -> None:
    login(client)
    response = client.post(
        "/api/auth/password",
        json={"currentPassword": "wrong-password-xx", "newPassword": NEW_PASSWORD},
    )
    error(response, 401, "UNAUTHENTICATED")
    assert client.get("/api/auth/me").status_code == 200


# --- throttling -------------------------------------------------------------------------------


@pytest.mark.usefixtures("owner")
def test_repeated_failures_are_throttled_with_retry_after(client: TestClient) -> None:
    auth = auth_of(client)
    for _ in range(auth.throttle.limit):
        error(login(client, "wrong-password-xx"), 401, "UNAUTHENTICATED")

    throttled = login(client)  # even the right password, until the window passes
    error(throttled, 429, "TOO_MANY_ATTEMPTS")
    retry_after = int(throttled.headers["retry-after"])
    assert 0 < retry_after <= auth.throttle.window


def _fail(throttle: AttemptThrottle, *keys: str) -> None:
    with throttle.attempt(*keys) as attempt:
        attempt.failed()


def test_the_window_slides(db: Database) -> None:
    now = [datetime(2026, 11, 22, 12, 0, tzinfo=UTC)]
    throttle = AttemptThrottle(db, limit=2, window=60, clock=lambda: now[0])
    _fail(throttle, "k")
    now[0] += timedelta(seconds=30)
    _fail(throttle, "k")
    with pytest.raises(TooManyAttempts, match="try again in 30 s") as info:
        _fail(throttle, "k")
    assert info.value.retry_after == 30
    now[0] += timedelta(seconds=30.5)  # the first failure aged out
    with throttle.attempt("k"):  # an attempt the block does not call a failure is not one
        pass
    _fail(throttle, "other")
    _fail(throttle, "k")
    with pytest.raises(TooManyAttempts, match="too many"):
        _fail(throttle, "k")
    throttle.succeeded("k")
    _fail(throttle, "k")
    with pytest.raises(RuntimeError), throttle.attempt("k"):
        raise RuntimeError("an error is no failed attempt")
    _fail(throttle, "k")  # the second failure since `succeeded`, not the third
    with pytest.raises(TooManyAttempts):
        _fail(throttle, "k")


def test_attempts_made_at_once_count_against_each_other(db: Database) -> None:
    """Forty guesses sent together must not all be judged: each is counted before its slow
    password check, so only the limit's worth get one and the rest are refused."""
    throttle = AttemptThrottle(db, limit=3, window=60)
    judged: list[int] = []
    refused: list[int] = []

    def guess(number: int) -> None:
        try:
            with throttle.attempt("login:owner:10.0.0.9", "login-ip:10.0.0.9") as attempt:
                time.sleep(0.2)  # the password hash
                judged.append(number)
                attempt.failed()
        except TooManyAttempts:
            refused.append(number)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert (len(judged), len(refused)) == (3, 9)
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuthFailureRow)) == 6


def test_failures_count_across_server_processes_and_leave_no_names(
    make_client: MakeClient, db: Database
) -> None:
    """Two servers on one database (two apps here) share the count: alternating between them
    gives an attacker no more tries than one server would."""
    first, second = make_client(), make_client()
    auth_of(first).create_user(USERNAME, PASSWORD)
    limit = auth_of(first).throttle.limit
    for attempt in range(limit):
        client = first if attempt % 2 else second
        error(login(client, "wrong-password-xx"), 401, "UNAUTHENTICATED")

    error(login(first), 429, "TOO_MANY_ATTEMPTS")
    error(login(second), 429, "TOO_MANY_ATTEMPTS")
    with db.read() as session:
        stored = " ".join(session.scalars(sa.select(AuthFailureRow.key_hash)))
    assert stored
    assert USERNAME not in stored
    assert "127.0.0.1" not in stored


# --- API tokens -------------------------------------------------------------------------------


@pytest.mark.usefixtures("owner")
def test_api_tokens_authenticate_with_bearer_and_not_in_a_query_string(
    make_client: MakeClient,
) -> None:
    browser = make_client()
    login(browser)
    created = browser.post("/api/auth/tokens", json={"name": "phone"})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    token_id = created.json()["id"]
    assert token.startswith(created.json()["prefix"])

    cli = make_client(headers={})
    me = cli.get("/api/auth/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["authMethod"] == "bearer"
    for name in ("token", "access_token", "api_key", "pocketcode_session"):
        error(cli.get(f"/api/auth/me?{name}={token}"), 401, "UNAUTHENTICATED")
    error(
        cli.get("/api/auth/me", headers={"authorization": "Bearer pct_nope"}),
        401,
        "UNAUTHENTICATED",
    )
    error(
        cli.get("/api/auth/me", headers={"authorization": f"Basic {token}"}), 401, "UNAUTHENTICATED"
    )

    listed = browser.get("/api/auth/tokens").json()
    assert [item["id"] for item in listed] == [token_id]
    assert "token" not in listed[0]
    assert TIMESTAMP.match(listed[0]["lastUsedAt"])

    assert browser.delete(f"/api/auth/tokens/{token_id}").status_code == 204
    error(
        cli.get("/api/auth/me", headers={"authorization": f"Bearer {token}"}),
        401,
        "UNAUTHENTICATED",
    )
    assert browser.get("/api/auth/tokens").json() == []
    error(browser.delete(f"/api/auth/tokens/{token_id}"), 404, "NOT_FOUND")
    error(browser.delete("/api/auth/tokens/not-an-id"), 404, "NOT_FOUND")


@pytest.mark.usefixtures("owner")
def test_bearer_clients_need_no_origin_for_unsafe_methods(client: TestClient) -> None:
    login(client)
    token = client.post("/api/auth/tokens", json={"name": "cli"}).json()["token"]
    script = TestClient(client.app, base_url=BASE)
    response = script.post(
        "/api/auth/tokens",
        json={"name": "from-script"},
        headers={"authorization": f"Bearer {token}", "origin": "https://evil.example"},
    )
    assert response.status_code == 201, response.text


# --- TOTP -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("owner")
def test_totp_codes_and_recovery_codes_work_once(make_client: MakeClient) -> None:
    client = make_client()
    login(client)
    enrolled = client.post("/api/auth/totp/enroll").json()
    secret = enrolled["secret"]
    assert enrolled["otpauthUri"].startswith("otpauth://totp/pocketcode:owner?")
    totp = pyotp.TOTP(secret)

    error(client.post("/api/auth/totp/confirm", json={"code": "000000"}), 400, "INVALID_INPUT")
    # Six digits of another script pass `str.isdigit`; they are no code, not a 500.
    for foreign in ("١٢٣٤٥٦", "１２３４５６"):
        error(client.post("/api/auth/totp/confirm", json={"code": foreign}), 400, "INVALID_INPUT")
    # Codes are taken from the step of the confirmation, not from the clock again later: a
    # test crossing a 30 s boundary would otherwise log in with a fresh, unspent code.
    confirmed_at = time.time()
    code = totp.at(confirmed_at)
    confirmed = client.post("/api/auth/totp/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    recovery = confirmed.json()["recoveryCodes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert client.get("/api/auth/me").json()["user"]["totpEnabled"] is True

    other = make_client()
    error(login(other), 401, "TOTP_REQUIRED")
    # The code that confirmed enrolment is spent: a login with it fails.
    error(login(other, totpCode=code), 401, "UNAUTHENTICATED")
    error(login(other, totpCode="١٢٣٤٥٦"), 401, "UNAUTHENTICATED")
    next_code = totp.at(confirmed_at + 30)  # the next step
    assert login(other, totpCode=next_code).status_code == 200
    other.cookies.clear()
    error(login(other, totpCode=next_code), 401, "UNAUTHENTICATED")  # reuse

    assert login(other, recoveryCode=recovery[0].upper()).status_code == 200
    other.cookies.clear()
    error(login(other, recoveryCode=recovery[0]), 401, "UNAUTHENTICATED")
    assert login(other, recoveryCode=recovery[1]).status_code == 200

    error(
        client.post("/api/auth/totp/disable", json={"password": "wrong-pw-xx"}),
        401,
        "UNAUTHENTICATED",
    )
    assert client.post("/api/auth/totp/disable", json={"password": PASSWORD}).status_code == 204
    other.cookies.clear()
    assert login(other).status_code == 200


# --- errors -----------------------------------------------------------------------------------


def test_malformed_requests_get_the_error_shape_without_echoing_input(client: TestClient) -> None:
    canary = "input-canary-9a7e"
    response = client.post("/api/auth/login", json={"username": canary, "password": ""})
    error(response, 422, "VALIDATION_ERROR")
    assert "password" in response.json()["error"]
    assert canary not in response.text
    error(
        client.post(
            "/api/auth/login", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
        "VALIDATION_ERROR",
    )
    error(
        client.post("/api/auth/login", json={"username": "x", "password": "y", "extra": 1}),
        422,
        "VALIDATION_ERROR",
    )
    error(client.put("/api/auth/login", json={}), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize("meanwhile", ["disable", "enroll again"])
def test_a_confirmation_overtaken_by_a_change_of_the_secret_turns_nothing_on(
    client: TestClient, owner: str, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """Between a confirmation's check of the code and its write, another request disabled
    two-factor auth or enrolled a new secret: turning it on then would leave it on with no
    secret, or with one the user's app does not have."""
    auth = auth_of(client)
    user_id = uuid.UUID(owner)
    secret = auth.enroll_totp(user_id).secret
    accept = auth._accept_totp

    def overtaken(*args: Any, **kwargs: Any) -> bool:
        accepted = accept(*args, **kwargs)
        if meanwhile == "disable":
            auth.disable_totp(user_id, password=None)
        else:
            auth.enroll_totp(user_id)
        return accepted

    monkeypatch.setattr(auth, "_accept_totp", overtaken)
    with pytest.raises(Conflict, match="start again"):
        auth.confirm_totp(user_id, pyotp.TOTP(secret).now())
    assert auth.find_user(None).totp_enabled is False
