"""`pocketcode user|totp|token`: headless administration, on SQLite and PostgreSQL, with the
password from stdin and one clear line for every mistake."""

from __future__ import annotations

import io
import sys

import pyotp
import pytest
from argon2 import PasswordHasher

from pocketcode.config import load_settings
from pocketcode.db.engine import Database
from pocketcode.services import auth as auth_module
from pocketcode.services.auth import AuthService
from pocketcode.services.secrets import load_keyring
from tests.helpers import run_cli

PASSWORD = "cli-password-canary-4d2e"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", database_url)
    monkeypatch.setattr(
        auth_module,
        "make_password_hasher",
        lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
    )


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def service() -> tuple[AuthService, Database]:
    settings = load_settings()
    db = Database.from_settings(settings)
    return AuthService(db, load_keyring(settings)), db


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code, out, err = run_cli(capsys, *args)
    assert "Traceback" not in out + err
    assert PASSWORD not in out + err
    return code, out, err


def create_owner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, PASSWORD + "\n")
    code, out, _ = cli(capsys, "user", "create", "--username", "Me")
    assert code == 0
    assert "created owner account 'me'" in out


def test_user_create_reads_the_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_owner(monkeypatch, capsys)
    auth, db = service()
    try:
        assert auth.login("me", PASSWORD).user_id == auth.find_user(None).id
    finally:
        db.dispose()

    stdin(monkeypatch, "another-password-1\n")
    code, out, _ = cli(capsys, "user", "create", "--username", "second")
    assert (code, out.strip()) == (0, "created user account 'second'")


@pytest.mark.parametrize(
    ("args", "text", "message"),
    [
        (["--username", "me"], "short\n", "at least 12 characters"),
        (["--username", "me"], "", "no password on stdin"),
        (["--username", "bad name!"], PASSWORD, "a username is 1 to 64"),
        (["--username", "me"], "x" * 1025, "at most 1024"),
    ],
)
def test_user_create_refuses_bad_input(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    text: str,
    message: str,
) -> None:
    stdin(monkeypatch, text)
    code, _, err = cli(capsys, "user", "create", *args)
    assert code == 1
    assert err.startswith("error: ")
    assert message in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1


def test_a_taken_username_and_a_missing_owner_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "token", "list")
    assert code == 1
    assert "no owner account exists" in err
    create_owner(monkeypatch, capsys)
    stdin(monkeypatch, PASSWORD)
    code, _, err = cli(capsys, "user", "create", "--username", "me")
    assert (code, err.strip()) == (1, "error: the user 'me' already exists")


def test_passwd_changes_the_password_and_ends_login_sessions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_owner(monkeypatch, capsys)
    auth, db = service()
    try:
        login = auth.login("me", PASSWORD)
        stdin(monkeypatch, "brand-new-password-9\n")
        code, out, _ = cli(capsys, "user", "passwd")
        assert code == 0
        assert "1 login session(s) ended" in out
        assert auth.authenticate_session(login.token) is None
        assert auth.login("me", "brand-new-password-9").user_id == login.user_id
        code, _, err = cli(capsys, "user", "passwd", "--username", "ghost")
        assert (code, err.strip()) == (1, "error: no user named 'ghost'")
    finally:
        db.dispose()


def test_tokens_are_printed_once_listed_by_prefix_and_revoked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_owner(monkeypatch, capsys)
    code, out, err = cli(capsys, "token", "create", "phone")
    assert code == 0
    token = out.strip()
    assert token.startswith("pct_")
    assert "shown this once" in err

    code, out, _ = cli(capsys, "token", "list")
    assert code == 0
    assert token not in out
    token_id, prefix, name = out.split()[:3]
    assert token.startswith(prefix.rstrip("…"))
    assert name == "phone"

    auth, db = service()
    try:
        assert auth.authenticate_token(token) is not None
        assert cli(capsys, "token", "revoke", token_id)[0] == 0
        assert auth.authenticate_token(token) is None
    finally:
        db.dispose()
    assert cli(capsys, "token", "list")[1].strip() == "no tokens"
    code, _, err = cli(capsys, "token", "revoke", token_id)
    assert code == 1
    assert "not found" in err
    code, _, err = cli(capsys, "token", "create", " ")
    assert (code, err.strip()) == (1, "error: a token name is 1 to 128 characters")


def test_totp_enroll_confirms_with_a_code_and_disable_turns_it_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_owner(monkeypatch, capsys)
    monkeypatch.setattr(pyotp, "random_base32", lambda *a, **k: SECRET)

    stdin(monkeypatch, "123\n")
    code, out, err = cli(capsys, "totp", "enroll")
    assert code == 1
    assert "otpauth://totp/pocketcode:me?secret=" + SECRET in out
    assert "not valid" in err

    stdin(monkeypatch, pyotp.TOTP(SECRET).now() + "\n")
    code, out, _ = cli(capsys, "totp", "enroll")
    assert code == 0
    assert "two-factor authentication is on for 'me'" in out
    recovery = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(recovery) == 10

    auth, db = service()
    try:
        with pytest.raises(auth_module.TotpRequired):
            auth.login("me", PASSWORD)
        assert auth.login("me", PASSWORD, recovery_code=recovery[0])
        code, _, err = cli(capsys, "totp", "enroll")
        assert (code, err.strip()) == (
            1,
            "error: two-factor authentication is already on; disable it first",
        )
        assert cli(capsys, "totp", "disable")[0] == 0
        assert auth.login("me", PASSWORD)
    finally:
        db.dispose()
