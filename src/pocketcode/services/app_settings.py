"""Encrypted settings (seed 004 `app_settings`): values are Fernet ciphertext at rest.

`AppSettingsService` is the encrypted key-value store. `KnownSettings` is what users edit: a
registry of known keys, each plain (its value is shown) or secret (write-only, shown masked),
each checked by its kind before it is stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from pocketcode.db.engine import Database, insert_or_update
from pocketcode.db.tables import AppSettingRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import InvalidInput, NotFound
from pocketcode.domain.states import PermissionMode
from pocketcode.services.pricing import PricingService
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
        upsert = insert_or_update(self.db.dialect, AppSettingRow, "key", ["value", "updated_at"])
        with self.db.write() as session:
            session.execute(upsert, {"key": key, "value": ciphertext, "updated_at": utcnow()})

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


# -- the settings pocketcode knows -------------------------------------------------------------

ANTHROPIC_API_KEY = "anthropic_api_key"
TRANSCRIPTION_URL = "transcription_url"
TRANSCRIPTION_API_KEY = "transcription_api_key"
TRANSCRIPTION_MODEL = "transcription_model"
DEFAULT_MODEL = "default_model"
DEFAULT_PERMISSION_MODE = "default_permission_mode"

# Model names the Claude Code CLI resolves itself (`--model sonnet`), beside the full names
# that have a price; PokéCode's client says `opus-plan` for the CLI's `opusplan`.
CLI_MODEL_ALIASES = frozenset(
    {"default", "sonnet", "opus", "haiku", "opusplan", "opus-plan", "sonnet[1m]", "opus[1m]"}
)
_MAX_SECRET_CHARS = 4096
_MAX_URL_CHARS = 2048
_MAX_NAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _token(value: str) -> str:
    """An API key: one word of printable ASCII characters (it travels in an HTTP header,
    which carries nothing else). The message never repeats the value."""
    if (
        len(value) > _MAX_SECRET_CHARS
        or not value.isascii()
        or re.search(r"\s", value)
        or _CONTROL.search(value)
    ):
        raise InvalidInput(
            f"a key is one word of at most {_MAX_SECRET_CHARS} printable ASCII characters"
        )
    return value


def _http_url(value: str) -> str:
    if len(value) > _MAX_URL_CHARS or re.search(r"\s", value) or _CONTROL.search(value):
        raise InvalidInput(f"the URL must be at most {_MAX_URL_CHARS} characters, no spaces")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        # What the HTTP client will make of it (it refuses some hosts urlsplit takes, such
        # as `xn--.com`): refused here rather than at every use.
        httpx.Request("GET", value)
    except (ValueError, httpx.InvalidURL):  # IDNAError is a ValueError (UnicodeError)
        raise InvalidInput("the URL is not valid") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            "the URL must start with http:// or https:// and name a host, "
            "e.g. https://api.openai.com/v1"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("put the key in transcription_api_key, not in the URL")
    if parts.query or parts.fragment:
        raise InvalidInput("the URL is the API's base (…/v1), without a query or fragment")
    # The base URL; `/audio/transcriptions` is appended to it.
    return value.rstrip("/")


def _name(value: str) -> str:
    if len(value) > _MAX_NAME_CHARS or _CONTROL.search(value):
        raise InvalidInput(f"a name is at most {_MAX_NAME_CHARS} printable characters")
    return value


def _known_model(db: Database, value: str) -> str:
    _name(value)
    if value.lower() in CLI_MODEL_ALIASES or PricingService(db).lookup(value) is not None:
        return value
    aliases = ", ".join(sorted(CLI_MODEL_ALIASES - {"opus-plan", "default"}))
    raise InvalidInput(
        f"unknown model {value[:80]!r}: use an alias ({aliases}) or a model listed in the pricing"
    )


def _permission_mode(value: str) -> str:
    modes = [mode.value for mode in PermissionMode]
    if value not in modes:
        raise InvalidInput(f"the permission mode must be one of {', '.join(modes)}")
    return value


@dataclass(frozen=True)
class SettingSpec:
    key: str
    description: str
    # A secret is write-only: stored encrypted, shown masked, never returned or logged.
    secret: bool = False
    default: str | None = None
    # Checks a stripped, non-empty value and returns what to store; raises InvalidInput.
    check: Callable[[Database, str], str] = lambda _db, value: _name(value)


KNOWN_SETTINGS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        SettingSpec(
            ANTHROPIC_API_KEY,
            "API key the agent runs with; without it, ANTHROPIC_API_KEY from the server's "
            "environment, else the user's own Claude login",
            secret=True,
            check=lambda _db, value: _token(value),
        ),
        SettingSpec(
            TRANSCRIPTION_URL,
            "Base URL of an OpenAI-compatible API for voice input, e.g. https://api.openai.com/v1",
            check=lambda _db, value: _http_url(value),
        ),
        SettingSpec(
            TRANSCRIPTION_API_KEY,
            "Bearer key of the transcription API",
            secret=True,
            check=lambda _db, value: _token(value),
        ),
        SettingSpec(
            TRANSCRIPTION_MODEL, "Model name sent to the transcription API", default="whisper-1"
        ),
        SettingSpec(
            DEFAULT_MODEL,
            "Model of new sessions that do not choose one: an alias or a priced model",
            check=_known_model,
        ),
        SettingSpec(
            DEFAULT_PERMISSION_MODE,
            "Permission mode of new sessions that do not choose one",
            check=lambda _db, value: _permission_mode(value),
        ),
    )
}


def known_setting(key: str) -> SettingSpec:
    spec = KNOWN_SETTINGS.get(key)
    if spec is None:
        raise NotFound(
            f"unknown setting {key[:80]!r}; the settings are {', '.join(KNOWN_SETTINGS)}"
        )
    return spec


@dataclass(frozen=True)
class SettingView:
    """What a client may see of a setting. A plain setting's value is the stored one or its
    default (`is_set` tells them apart); a secret shows only `masked`."""

    key: str
    secret: bool
    is_set: bool
    value: str | None
    masked: str | None


@dataclass(frozen=True)
class SessionDefaults:
    model: str | None
    permission_mode: PermissionMode | None


class KnownSettings:
    """The settings a user edits (KNOWN_SETTINGS), each checked by its kind, on top of the
    encrypted store. Unknown keys are NotFound."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db = db
        self.store = AppSettingsService(db, keyring)

    def _view(self, spec: SettingSpec, stored: str | None) -> SettingView:
        if spec.secret:
            return SettingView(
                spec.key, True, stored is not None, None, mask(stored) if stored else None
            )
        value = stored if stored is not None else spec.default
        return SettingView(spec.key, False, stored is not None, value, None)

    def describe(self, key: str) -> SettingView:
        _check_key(key)
        spec = known_setting(key)
        return self._view(spec, self.store.get(key))

    def describe_all(self) -> list[SettingView]:
        return [self._view(spec, self.store.get(spec.key)) for spec in KNOWN_SETTINGS.values()]

    def update(self, key: str, value: str) -> SettingView:
        _check_key(key)
        spec = known_setting(key)
        value = value.strip()
        if not value:
            raise InvalidInput(f"{key} needs a value; DELETE the setting to clear it")
        stored = spec.check(self.db, value)
        self.store.set(key, stored)
        return self._view(spec, stored)

    def clear(self, key: str) -> None:
        """Forget the stored value (a plain setting falls back to its default); no error when
        nothing was stored."""
        _check_key(key)
        known_setting(key)
        self.store.delete(key)

    def value(self, key: str) -> str | None:
        """The value to use, a secret's too (for the server's own use only): stored, else the
        default."""
        spec = known_setting(key)
        stored = self.store.get(key)
        return stored if stored is not None else spec.default

    def session_defaults(self) -> SessionDefaults:
        mode = self.value(DEFAULT_PERMISSION_MODE)
        return SessionDefaults(
            self.value(DEFAULT_MODEL), PermissionMode(mode) if mode is not None else None
        )
