"""Encryption of secrets at rest (Fernet / MultiFernet).

The key comes from `POCKETCODE_SECRET_KEY` (comma-separated, newest first) or a key file created
0600 in the data directory (one key a line, newest first). A check value stored in app_settings
proves at start-up that the key is the one the stored secrets were encrypted with.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.db.tables import AppSettingRow, UserRow
from pocketcode.domain.errors import ConfigurationError, InvalidInput, SecretKeyMismatch

log = logging.getLogger(__name__)

KEY_CHECK_SETTING = "_pocketcode_key_check"
_KEY_CHECK_PLAINTEXT = "pocketcode key check"


class Keyring:
    """Encrypts with the newest key and decrypts with any of them."""

    def __init__(self, keys: list[bytes], source: str) -> None:
        if not keys:
            raise ConfigurationError(f"{source} holds no secret key")
        try:
            self._fernets = [Fernet(key) for key in keys]
        except ValueError:
            raise ConfigurationError(
                f"{source} holds a malformed key: a Fernet key is 32 url-safe base64 bytes "
                "(make one with `pocketcode secrets generate-key`)"
            ) from None
        self._multi = MultiFernet(self._fernets)
        self.keys = keys
        self.source = source

    def encrypt(self, plaintext: str) -> str:
        return self._multi.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._multi.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretKeyMismatch(
                f"a stored secret cannot be decrypted with the key from {self.source}: "
                "it is not the key the secrets were encrypted with"
            ) from None

    def rotate(self, ciphertext: str) -> str:
        try:
            return self._multi.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretKeyMismatch(
                f"a stored secret cannot be decrypted with the keys from {self.source}"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _parse_keys(text: str, separator: str) -> list[bytes]:
    return [part.strip().encode() for part in text.split(separator) if part.strip()]


def _new_key_file(path: Path, keys: list[bytes]) -> Path:
    """A fully written 0600 file next to `path` (mkstemp creates it 0600 and never reuses a
    name, so the key is never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"\n".join(keys) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return Path(name)


def _write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically."""
    os.replace(_new_key_file(path, keys), path)


def _create_key_file(path: Path) -> None:
    """Create the key file unless another process just did: two first starts at once must not
    each encrypt with a key the other then overwrites."""
    temporary = _new_key_file(path, [generate_key().encode()])
    try:
        os.link(temporary, path)
    except FileExistsError:
        return
    finally:
        temporary.unlink()
    log.info("created a new secret key file at %s", path)


def load_keyring(settings: Settings, *, create: bool = True) -> Keyring:
    if settings.secret_key is not None:
        keys = _parse_keys(settings.secret_key.get_secret_value(), ",")
        return Keyring(keys, "POCKETCODE_SECRET_KEY")
    path = settings.effective_secret_key_file
    try:
        if not path.exists():
            if not create:
                raise ConfigurationError(f"no secret key: {path} does not exist")
            _create_key_file(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("secret key file %s was readable by others; set it to 0600", path)
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use the secret key file {path}: {exc.strerror or exc}"
        ) from None
    return Keyring(_parse_keys(text, "\n"), str(path))


def verify_keyring(db: Database, keyring: Keyring) -> None:
    """Fail clearly at start-up when the key cannot read what was stored with another key."""
    try:
        _verify_or_store_check(db, keyring)
    except IntegrityError:  # another process stored the check value first: compare with it
        _verify_or_store_check(db, keyring)


def _verify_or_store_check(db: Database, keyring: Keyring) -> None:
    with db.write() as session:
        row = session.scalar(sa.select(AppSettingRow).where(AppSettingRow.key == KEY_CHECK_SETTING))
        if row is None:
            session.add(
                AppSettingRow(key=KEY_CHECK_SETTING, value=keyring.encrypt(_KEY_CHECK_PLAINTEXT))
            )
            return
        try:
            valid = keyring.decrypt(row.value or "") == _KEY_CHECK_PLAINTEXT
        except SecretKeyMismatch:
            valid = False
        if not valid:
            raise SecretKeyMismatch(
                f"the secret key from {keyring.source} is not the key this database's secrets "
                "were encrypted with; restore the original key (POCKETCODE_SECRET_KEY or the "
                "key file) to start"
            )


def _rotate_rows(session: Session, keyring: Keyring) -> int:
    count = 0
    for setting in session.scalars(
        sa.select(AppSettingRow).where(AppSettingRow.value.is_not(None))
    ):
        setting.value = keyring.rotate(setting.value or "")
        count += setting.key != KEY_CHECK_SETTING  # the user's secrets, not our check value
    for user in session.scalars(sa.select(UserRow).where(UserRow.totp_secret.is_not(None))):
        user.totp_secret = keyring.rotate(user.totp_secret or "")
        count += 1
    return count


def rotate_key(db: Database, settings: Settings, new_key: str | None = None) -> tuple[Keyring, int]:
    """Re-encrypt every stored secret with a new key; returns the new keyring and the count.

    With a key file, the new key is generated and written next to the old one before any row
    changes, so a crash at any point leaves every secret readable. With POCKETCODE_SECRET_KEY the
    caller must supply the new key (we cannot change the environment, and a key printed once is
    a key easily lost).
    """
    using_file = settings.secret_key is None
    if new_key is None and not using_file:
        raise InvalidInput(
            "the key comes from POCKETCODE_SECRET_KEY: pass --new-key (make one with "
            "`pocketcode secrets generate-key`), then set POCKETCODE_SECRET_KEY to it"
        )
    final_key = (new_key or generate_key()).strip().encode()
    Keyring([final_key], "--new-key")  # a malformed new key fails here, before any change
    old = load_keyring(settings, create=False)
    verify_keyring(db, old)
    rotated = Keyring([final_key, *old.keys], f"{old.source} (rotating)")
    path = settings.effective_secret_key_file
    if using_file:
        _write_key_file(path, rotated.keys)
    with db.write() as session:
        count = _rotate_rows(session, rotated)
    final = Keyring([final_key], old.source)
    if using_file:
        _write_key_file(path, final.keys)
    return final, count
