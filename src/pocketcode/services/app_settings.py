"""Encrypted settings (seed 004 `app_settings`): values are Fernet ciphertext at rest."""

from __future__ import annotations

import re

import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import AppSettingRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import InvalidInput
from pocketcode.services.secrets import KEY_CHECK_SETTING, Keyring

_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_.]{0,254}$")
MAX_VALUE_CHARS = 64 * 1024


def _check_key(key: str) -> None:
    if not _KEY_PATTERN.fullmatch(key):
        raise InvalidInput(
            "a setting key is lower-case letters, digits, '_' and '.', starting with a letter"
        )


def mask(value: str) -> str:
    """What a UI may show of a secret: its length class and last four characters at most."""
    if len(value) <= 8:
        return "•" * len(value)
    return "•" * 8 + value[-4:]


class AppSettingsService:
    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring

    def get(self, key: str) -> str | None:
        _check_key(key)
        with self.db.read() as session:
            ciphertext = session.scalar(
                sa.select(AppSettingRow.value).where(AppSettingRow.key == key)
            )
        return self.keyring.decrypt(ciphertext) if ciphertext is not None else None

    def set(self, key: str, value: str) -> None:
        _check_key(key)
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidInput(f"a setting value is at most {MAX_VALUE_CHARS} characters")
        ciphertext = self.keyring.encrypt(value)
        with self.db.write() as session:
            row = session.scalar(sa.select(AppSettingRow).where(AppSettingRow.key == key))
            if row is None:
                session.add(AppSettingRow(key=key, value=ciphertext))
            else:
                row.value = ciphertext
                row.updated_at = utcnow()

    def delete(self, key: str) -> bool:
        _check_key(key)
        with self.db.write() as session:
            result = session.execute(sa.delete(AppSettingRow).where(AppSettingRow.key == key))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def keys(self) -> list[str]:
        """Every stored key except pocketcode's own key-check value."""
        with self.db.read() as session:
            return list(
                session.scalars(
                    sa.select(AppSettingRow.key)
                    .where(AppSettingRow.key != KEY_CHECK_SETTING)
                    .order_by(AppSettingRow.key)
                )
            )
