"""The key that encrypts secrets at rest: where it lives, how a wrong key is reported, and
rotation, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pocketcode.config import Settings
from pocketcode.db import migrate
from pocketcode.db.engine import Database
from pocketcode.db.tables import AppSettingRow, UserRow
from pocketcode.domain.errors import ConfigurationError, SecretKeyMismatch
from pocketcode.services.secrets import (
    KEY_CHECK_SETTING,
    Keyring,
    generate_key,
    load_keyring,
    verify_keyring,
)
from pocketcode.web.app import create_app
from tests.helpers import run_cli

MISMATCH = "is not the key this database's secrets were encrypted with"
PLAINTEXTS = {"github_token": "ghp-plaintext-1", "anthropic_api_key": "sk-plaintext-2"}
TOTP_PLAINTEXT = "JBSWY3DPEHPK3PXP"


def error_text(code: int, out: str, err: str) -> str:
    """The one `error:` line of a failed command, whitespace normalised."""
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    text = " ".join(err.split())
    assert text.startswith("error:"), err
    return text


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_file_keys(settings: Settings) -> list[bytes]:
    return [line.encode() for line in settings.effective_secret_key_file.read_text().split()]


@pytest.fixture
def use_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI uses the test database (the data dir is the suite's temporary one)."""
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", database_url)
    return database_url


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """uvicorn never runs; records that it was asked to."""
    import uvicorn

    calls: list[str] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: calls.append("run"))
    return calls


# --- the key file -----------------------------------------------------------------------------


def test_key_file_is_created_0600_on_first_use_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    path = tmp_path / "data" / "secret.key"
    assert not path.exists()

    first = load_keyring(settings)

    assert path.is_file()
    assert mode_of(path) == 0o600
    content = path.read_bytes()
    second = load_keyring(settings)
    assert second.keys == first.keys
    assert path.read_bytes() == content
    assert second.decrypt(first.encrypt("hello")) == "hello"
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left


def test_two_first_starts_at_once_agree_on_one_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    start = threading.Barrier(8)

    def first_start() -> list[bytes]:
        start.wait()
        return load_keyring(settings).keys

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: first_start(), range(8)))

    assert all(keys == key_file_keys(settings) for keys in results)
    assert [p.name for p in settings.data_dir.iterdir()] == ["secret.key"]


def test_a_readable_key_file_is_tightened_to_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    keyring = load_keyring(settings)
    path = settings.effective_secret_key_file
    path.chmod(0o644)

    with caplog.at_level(logging.WARNING):
        again = load_keyring(settings)

    assert mode_of(path) == 0o600
    assert again.keys == keyring.keys
    assert "readable by others" in caplog.text
    assert keyring.keys[0].decode() not in caplog.text


def test_a_key_file_elsewhere_is_used(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pocketcode.key"
    settings = Settings(data_dir=tmp_path / "data", secret_key_file=path)

    keyring = load_keyring(settings)

    assert key_file_keys(settings) == keyring.keys
    assert mode_of(path) == 0o600
    assert not (tmp_path / "data" / "secret.key").exists()


@pytest.mark.parametrize("bad_key", ["not-a-fernet-key", "c2hvcnQ=", "ключ"])
def test_a_malformed_secret_key_is_a_clear_configuration_error(
    bad_key: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", secret_key=bad_key)

    with pytest.raises(ConfigurationError) as error:
        load_keyring(settings)

    message = str(error.value)
    assert "POCKETCODE_SECRET_KEY holds a malformed key" in message
    assert "pocketcode secrets generate-key" in message
    assert bad_key not in message
    assert not settings.effective_secret_key_file.exists()


def test_a_malformed_key_file_is_a_clear_configuration_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    settings.effective_secret_key_file.write_text("garbage\n")

    with pytest.raises(ConfigurationError, match=r"secret\.key holds a malformed key"):
        load_keyring(settings)


def test_an_empty_key_file_is_a_clear_configuration_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    settings.effective_secret_key_file.write_text("\n")

    with pytest.raises(ConfigurationError, match=r"secret\.key holds no secret key"):
        load_keyring(settings)


# --- the start-up check -----------------------------------------------------------------------


def test_verify_keyring_stores_a_check_value_and_accepts_the_same_key(
    db: Database, settings: Settings
) -> None:
    keyring = load_keyring(settings)

    verify_keyring(db, keyring)

    with db.read() as session:
        stored = session.scalar(
            sa.select(AppSettingRow.value).where(AppSettingRow.key == KEY_CHECK_SETTING)
        )
    assert stored
    assert "pocketcode" not in stored  # ciphertext, not the plaintext check phrase
    verify_keyring(db, keyring)
    verify_keyring(db, load_keyring(settings))  # the same key, read again from the file


def test_two_first_starts_at_once_store_one_check_value(db: Database, settings: Settings) -> None:
    keyring = load_keyring(settings)
    start = threading.Barrier(4)

    def first_start() -> None:
        start.wait()
        verify_keyring(db, keyring)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: first_start(), range(4)))

    with db.read() as session:
        count = session.scalar(
            sa.select(sa.func.count()).where(AppSettingRow.key == KEY_CHECK_SETTING)
        )
    assert count == 1


def test_verify_keyring_rejects_another_key(db: Database, settings: Settings) -> None:
    verify_keyring(db, load_keyring(settings))
    other = Keyring([generate_key().encode()], "POCKETCODE_SECRET_KEY")

    with pytest.raises(SecretKeyMismatch) as error:
        verify_keyring(db, other)

    assert "the secret key from POCKETCODE_SECRET_KEY" in str(error.value)
    assert MISMATCH in str(error.value)


def test_the_web_app_does_not_start_with_another_key(db: Database, settings: Settings) -> None:
    verify_keyring(db, load_keyring(settings))
    wrong = settings.model_copy(update={"secret_key": SecretStr(generate_key())})

    with pytest.raises(SecretKeyMismatch, match=MISMATCH), TestClient(create_app(wrong, db)):
        pass

    with TestClient(create_app(settings, db), base_url="http://localhost") as client:
        assert client.get("/health/ready").status_code == 200


@pytest.mark.usefixtures("use_db")
def test_serve_does_not_start_with_another_key(
    db: Database,
    settings: Settings,
    no_server: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verify_keyring(db, load_keyring(settings))
    monkeypatch.setenv("POCKETCODE_SECRET_KEY", generate_key())

    text = error_text(*run_cli(capsys, "serve"))

    assert MISMATCH in text
    assert no_server == []


@pytest.mark.usefixtures("use_db")
def test_serve_reports_a_malformed_key(
    no_server: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCKETCODE_SECRET_KEY", "definitely-not-a-key")

    text = error_text(*run_cli(capsys, "serve"))

    assert "POCKETCODE_SECRET_KEY holds a malformed key" in text
    assert "definitely-not-a-key" not in text
    assert no_server == []


# --- rotation ---------------------------------------------------------------------------------


def store_secrets(db: Database, keyring: Keyring) -> dict[str, str]:
    """Secrets encrypted with `keyring` as the app stores them; returns their raw columns."""
    with db.write() as session:
        for key, plaintext in PLAINTEXTS.items():
            session.add(AppSettingRow(key=key, value=keyring.encrypt(plaintext)))
        session.add(AppSettingRow(key="unset", value=None))
        session.add(
            UserRow(
                username="owner", password_hash="x", totp_secret=keyring.encrypt(TOTP_PLAINTEXT)
            )
        )
        session.add(UserRow(username="no-totp", password_hash="x"))
    return raw_secrets(db)


def raw_secrets(db: Database) -> dict[str, str]:
    with db.read() as session:
        rows: dict[str, str] = {
            key: value or ""
            for key, value in session.execute(sa.select(AppSettingRow.key, AppSettingRow.value))
        }
        for username, totp in session.execute(sa.select(UserRow.username, UserRow.totp_secret)):
            rows[f"user:{username}"] = totp or ""
    return rows


def assert_rotated(
    before: dict[str, str], after: dict[str, str], old: Keyring, new: Keyring
) -> None:
    assert after["unset"] == "" and after["user:no-totp"] == ""
    secrets = {key: value for key, value in before.items() if value}
    assert set(secrets) == {*PLAINTEXTS, "user:owner", KEY_CHECK_SETTING}
    for key, raw in secrets.items():
        assert after[key] != raw, key
        with pytest.raises(SecretKeyMismatch):
            old.decrypt(after[key])
        assert new.decrypt(after[key]) == old.decrypt(raw)
    for key, plaintext in PLAINTEXTS.items():
        assert new.decrypt(after[key]) == plaintext
    assert new.decrypt(after["user:owner"]) == TOTP_PLAINTEXT


@pytest.mark.usefixtures("use_db")
def test_rotate_with_a_key_file_reencrypts_every_secret(
    db: Database, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    old = load_keyring(settings)
    verify_keyring(db, old)
    before = store_secrets(db, old)

    code, out, err = run_cli(capsys, "secrets", "rotate")

    assert code == 0, err
    assert "re-encrypted 3 stored secret(s)" in out
    keys = key_file_keys(settings)
    assert len(keys) == 1
    assert keys != old.keys
    assert mode_of(settings.effective_secret_key_file) == 0o600
    new = load_keyring(settings)
    assert_rotated(before, raw_secrets(db), old, new)
    verify_keyring(db, new)
    with pytest.raises(SecretKeyMismatch):
        verify_keyring(db, old)


@pytest.mark.usefixtures("use_db")
def test_rotate_with_the_environment_key_needs_new_key(
    db: Database,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_key = generate_key()
    monkeypatch.setenv("POCKETCODE_SECRET_KEY", old_key)
    old = Keyring([old_key.encode()], "test")
    verify_keyring(db, old)
    before = store_secrets(db, old)

    text = error_text(*run_cli(capsys, "secrets", "rotate"))
    assert "the key comes from POCKETCODE_SECRET_KEY: pass --new-key" in text
    assert raw_secrets(db) == before

    text = error_text(*run_cli(capsys, "secrets", "rotate", "--new-key", "not-a-key"))
    assert "--new-key holds a malformed key" in text
    assert raw_secrets(db) == before

    new_key = generate_key()
    code, out, err = run_cli(capsys, "secrets", "rotate", "--new-key", new_key)

    assert code == 0, err
    assert "re-encrypted 3 stored secret(s)" in out
    assert "now set POCKETCODE_SECRET_KEY to the new key" in out
    assert old_key not in out + err
    assert new_key not in out + err
    assert not settings.effective_secret_key_file.exists()
    assert_rotated(before, raw_secrets(db), old, Keyring([new_key.encode()], "test"))


@pytest.mark.usefixtures("use_db")
def test_rotate_changes_nothing_when_a_secret_cannot_be_read(
    db: Database, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    old = load_keyring(settings)
    verify_keyring(db, old)
    before = store_secrets(db, old)
    stranger = Keyring([generate_key().encode()], "elsewhere")
    with db.write() as session:
        session.add(AppSettingRow(key="foreign", value=stranger.encrypt("x")))
    before = raw_secrets(db)

    text = error_text(*run_cli(capsys, "secrets", "rotate"))

    assert "cannot be decrypted" in text
    assert raw_secrets(db) == before
    assert old.keys[0] in key_file_keys(settings)  # every stored secret is still readable
    verify_keyring(db, load_keyring(settings))


@pytest.mark.usefixtures("use_db")
def test_rotate_without_a_key_says_so(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    text = error_text(*run_cli(capsys, "secrets", "rotate"))
    assert f"no secret key: {settings.effective_secret_key_file} does not exist" in text


def test_generate_key_prints_a_new_fernet_key(capsys: pytest.CaptureFixture[str]) -> None:
    keys = []
    for _ in range(2):
        code, out, _ = run_cli(capsys, "secrets", "generate-key")
        assert code == 0
        keys.append(out.strip())
    for key in keys:
        fernet = Fernet(key.encode())
        assert fernet.decrypt(fernet.encrypt(b"x")) == b"x"
    assert keys[0] != keys[1]


def test_a_failed_start_up_leaves_no_database_file_open(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = Database.from_settings(settings)
    migrate.upgrade(first)
    verify_keyring(first, load_keyring(settings))
    first.dispose()
    wrong = settings.model_copy(update={"secret_key": SecretStr(generate_key())})

    with pytest.raises(SecretKeyMismatch), TestClient(create_app(wrong)):
        pass

    open_paths = [item.path for item in psutil.Process().open_files()]
    assert not [path for path in open_paths if path.startswith(str(settings.data_dir))]
