"""Configuration: `POCKETCODE_*` environment variables, then `<data dir>/config.toml`, then
defaults. The config file is found in the data directory the environment names (or the
default one); a `data_dir` key inside it moves the data (database, key file), not the place
the config file is read from."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pocketcode.domain.errors import ConfigurationError
from pocketcode.domain.text import is_utf8

ENV_PREFIX = "POCKETCODE_"
CONFIG_FILE_NAME = "config.toml"
DEFAULT_PORT = 3001  # PokéCode's port: its mobile app finds us where it found its own server.


def default_data_dir() -> Path:
    return platformdirs.user_data_path("pocketcode", appauthor=False)


def data_dir_from_env() -> Path:
    raw = os.environ.get(f"{ENV_PREFIX}DATA_DIR")
    return Path(raw).expanduser() if raw else default_data_dir()


def config_file_path() -> Path:
    raw = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    return Path(raw).expanduser() if raw else data_dir_from_env() / CONFIG_FILE_NAME


def _split_list_setting(value: Any, separator: str, *, of: str = "", strip: bool) -> Any:
    """A list setting given as text: a JSON list, or items joined by `separator` (empty items
    dropped; `strip` trims each one, which a path must not have done to it)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list{of} ({exc})") from None
    parts = (part.strip() if strip else part for part in text.split(separator))
    return [part for part in parts if part]


class Settings(BaseSettings):
    """Every value the server and the CLI read. Field docs are shown by `pocketcode config show`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the database, secret key file and logs live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite in the data dir. postgresql://… for teams.",
    )
    pool_size: int = Field(default=20, ge=1, le=1000, description="Maximum open connections.")
    pool_idle_timeout: float = Field(
        default=30.0, gt=0, description="Seconds an idle pooled connection is kept."
    )
    pool_connect_timeout: float = Field(
        default=2.0, gt=0, description="Seconds to wait when opening a new connection."
    )
    pool_checkout_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a free pooled connection."
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds.")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="Port the server binds.")
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.home()],
        description="Project folders must lie inside one of these (os.pathsep or JSON list).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma separated, newest first; else the key file is used.",
    )
    secret_key_file: Path | None = Field(
        default=None, description="Key file; default <data dir>/secret.key, created 0600."
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    claude_path: Path | None = Field(
        default=None, description="A system `claude` to run; default the CLI bundled with the SDK."
    )
    max_concurrent_runs: int = Field(
        default=4, ge=1, le=64, description="Prompts run at once by this server process."
    )
    agent_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU priority of the agent CLI and its tools below the server's (0 = same).",
    )
    agent_idle_timeout: float = Field(
        default=600.0, gt=0, description="Seconds an idle session keeps its live CLI process."
    )
    agent_max_concurrent_starts: int = Field(
        default=2, ge=1, le=16, description="CLI processes starting at once (start-up is costly)."
    )
    cancel_grace: float = Field(
        default=2.0, gt=0, le=60, description="Seconds a cancelled run gets before it is killed."
    )
    permission_timeout: float = Field(
        default=300.0, gt=0, description="Seconds a tool approval waits before it is denied."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names served besides localhost (DNS rebinding guard), comma-separated.",
    )
    public_url: str | None = Field(
        default=None,
        description="The URL clients use (behind a proxy); its host is allowed, https sets Secure.",
    )
    trusted_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs whose clients act as the owner WITHOUT credentials (risky).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to call the API from other sites (CORS); default none.",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Reverse proxies (IPs or CIDRs) whose X-Forwarded-For/-Proto are believed; "
            "default none: the client is the peer of the TCP connection."
        ),
    )
    session_ttl_days: int = Field(
        default=30, ge=1, le=365, description="Days a browser login stays valid."
    )
    transcript_watch: bool = Field(
        default=True,
        description="While serving, watch Claude Code's transcripts and show new terminal "
        "sessions and messages live.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file_path())
        return (init_settings, env_settings, toml)

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        return _split_list_setting(value, os.pathsep, of=" of paths", strip=False)

    @field_validator("allowed_roots")
    @classmethod
    def _resolve_roots(cls, value: list[Path]) -> list[Path]:
        if not value:
            raise ValueError("at least one allowed project root is required")
        roots = [root.expanduser().resolve() for root in value]
        for root in roots:
            if not is_utf8(str(root)):
                raise ValueError(
                    f"the allowed root {os.fsencode(root)!r} is not valid UTF-8: its paths "
                    "could not be shown or sent back by a client"
                )
        return roots

    @field_validator(
        "allowed_hosts", "trusted_networks", "cors_origins", "forwarded_allow_ips", mode="before"
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        return _split_list_setting(value, ",", strip=True)

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        hosts = [host.strip().lower().removeprefix("[").removesuffix("]") for host in value]
        for host in hosts:
            if not host or any(char in host for char in "/ *@"):
                raise ValueError(f"{host!r} is not a host name (no scheme, port or wildcard)")
        return hosts

    @field_validator("trusted_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        networks: list[str] = []
        for text in value:
            try:
                network = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a CIDR such as 100.64.0.0/10") from None
            if network.prefixlen == 0:
                raise ValueError(f"{text!r} is every address: anyone could run commands here")
            networks.append(str(network))
        return networks

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        import ipaddress

        proxies: list[str] = []
        for text in value:
            try:
                ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or CIDR of a proxy") from None
            proxies.append(text.strip())
        return proxies

    @field_validator("cors_origins", "public_url")
    @classmethod
    def _check_origins(cls, value: Any) -> Any:
        from urllib.parse import urlsplit

        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        checked: list[str] = []
        for item in items:
            parts = urlsplit(item.strip())
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError(f"{item!r} is not an http(s) URL")
            checked.append(item.strip().rstrip("/"))
        return checked[0] if isinstance(value, str) else checked

    @field_validator("data_dir", "secret_key_file", "claude_path")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return level

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value.strip())
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("only sqlite and postgresql databases are supported")
        return value.strip()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'pocketcode.db'}"

    @property
    def effective_secret_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"


def load_settings(**overrides: Any) -> Settings:
    """The effective settings; a bad value or config file raises one readable
    `ConfigurationError` that names where the value came from and never repeats it."""
    path = config_file_path()
    if f"{ENV_PREFIX}CONFIG_FILE" in os.environ and not path.exists():
        raise ConfigurationError(f"{ENV_PREFIX}CONFIG_FILE names {path}, which does not exist")
    if path.exists() and not path.is_file():
        raise ConfigurationError(f"the config file {path} is not a file")
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"the config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc.strerror}") from None
    except ValidationError as exc:
        problems = "; ".join(_explain(error, path, overrides) for error in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from None


def _explain(error: Any, config_file: Path, overrides: dict[str, Any]) -> str:
    # Only the message, never the input: the input may be a password or a key.
    name = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name!r} in {config_file}"
    message = str(error["msg"]).removeprefix("Value error, ")
    env_name = f"{ENV_PREFIX}{name.upper()}"
    if name in overrides:
        source = name
    elif any(key.upper() == env_name for key in os.environ):
        source = env_name
    else:
        source = f"{name} in {config_file}"
    return f"{source}: {message}"


def mask_url_password(url: str) -> str:
    """The URL with its password hidden, also when libpq gets it as `?password=`."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def describe_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, effective value with secrets masked, description) for `config show`."""
    rows: list[tuple[str, str, str]] = []
    for name, field in Settings.model_fields.items():
        value: Any = getattr(settings, name)
        if name == "database_url":
            value = mask_url_password(settings.effective_database_url)
        elif name == "secret_key_file":
            value = settings.effective_secret_key_file
        elif isinstance(value, SecretStr):
            value = "********" if value.get_secret_value() else ""
        elif isinstance(value, list) and name == "allowed_roots":
            value = os.pathsep.join(str(item) for item in value)
        elif isinstance(value, list):
            value = ",".join(str(item) for item in value)
        rows.append((name, "" if value is None else str(value), field.description or ""))
    return rows
