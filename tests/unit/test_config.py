"""Configuration: environment over the config file over defaults, and every mistake a user can
make in either gives one readable error line from the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pocketcode.config import DEFAULT_PORT, Settings, load_settings
from pocketcode.domain.errors import ConfigurationError
from tests.helpers import run_cli

PASSWORD_CANARY = "pw-canary-7c1e"
QUERY_PASSWORD_CANARY = "qpw-canary-42ab"
KEY_CANARY = "key-canary-9d3f"


@pytest.fixture(autouse=True)
def _only_our_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No POCKETCODE_* variable of the developer's shell reaches these tests; returns the data
    dir (set by the suite's conftest)."""
    for name in list(os.environ):
        if name.upper().startswith("POCKETCODE_") and name.upper() != "POCKETCODE_DATA_DIR":
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return data_dir


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def shown_values(out: str) -> dict[str, str]:
    """`config show` lines `NAME=value  # about` as {NAME: value}."""
    values: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("POCKETCODE_"):
            name, _, rest = line.partition("=")
            values[name] = rest.rsplit("  # ", 1)[0]
    return values


# --- where values come from -------------------------------------------------------------------


def test_defaults(data_dir: Path) -> None:
    settings = load_settings()

    assert settings.data_dir == data_dir
    assert settings.effective_database_url == f"sqlite:///{data_dir / 'pocketcode.db'}"
    assert settings.effective_secret_key_file == data_dir / "secret.key"
    assert (settings.host, settings.port) == ("127.0.0.1", DEFAULT_PORT)
    assert settings.allowed_roots == [Path.home().resolve()]
    assert settings.log_level == "info"
    assert settings.secret_key is None


def test_pool_defaults_are_the_seeds() -> None:
    settings = load_settings()
    assert settings.pool_size == 20
    assert settings.pool_idle_timeout == 30.0
    assert settings.pool_connect_timeout == 2.0


def test_environment_overrides_the_config_file_which_overrides_defaults(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_dir / "config.toml").write_text('port = 4000\nlog_level = "debug"\npool_size = 5\n')
    monkeypatch.setenv("POCKETCODE_PORT", "5000")

    settings = load_settings()

    assert settings.port == 5000  # environment wins
    assert settings.log_level == "debug"  # from the file
    assert settings.pool_size == 5  # from the file
    assert settings.pool_idle_timeout == 30.0  # default


def test_config_file_variable_points_elsewhere(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_dir / "config.toml").write_text("port = 4200\n")
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('port = 4100\nhost = "::1"\n')
    monkeypatch.setenv("POCKETCODE_CONFIG_FILE", str(elsewhere))

    settings = load_settings()

    assert (settings.host, settings.port) == ("::1", 4100)


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POCKETCODE_LOG_LEVEL", "WARNING")
    assert load_settings().log_level == "warning"


# --- allowed roots ----------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A real folder, a symlink to it, and a second folder."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    other = tmp_path / "other"
    other.mkdir()
    return real, link, other


def test_allowed_roots_as_a_path_list_are_resolved(
    roots: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real, link, other = roots
    monkeypatch.setenv("POCKETCODE_ALLOWED_ROOTS", f"{link}{os.pathsep}{other}{os.pathsep}")

    assert load_settings().allowed_roots == [real.resolve(), other.resolve()]


def test_allowed_roots_as_json_are_resolved(
    roots: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, _link, other = roots
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POCKETCODE_ALLOWED_ROOTS", json.dumps(["~/link", "other"]))

    assert load_settings().allowed_roots == [real.resolve(), other.resolve()]


def test_allowed_roots_from_the_config_file(roots: tuple[Path, Path, Path], data_dir: Path) -> None:
    real, link, _other = roots
    (data_dir / "config.toml").write_text(f"allowed_roots = [{json.dumps(str(link))}]\n")

    assert load_settings().allowed_roots == [real.resolve()]


@pytest.mark.parametrize("value", ["", "[]", os.pathsep, "  "])
def test_empty_allowed_roots_are_rejected(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POCKETCODE_ALLOWED_ROOTS", value)

    with pytest.raises(ConfigurationError) as error:
        load_settings()

    assert "POCKETCODE_ALLOWED_ROOTS: at least one allowed project root is required" in str(
        error.value
    )


# --- mistakes, as the CLI reports them --------------------------------------------------------

BAD_ENVIRONMENT = [
    ("POCKETCODE_PORT", "abc", "POCKETCODE_PORT: Input should be a valid integer"),
    ("POCKETCODE_PORT", "70000", "POCKETCODE_PORT: Input should be less than or equal to 65535"),
    ("POCKETCODE_LOG_LEVEL", "loud", "POCKETCODE_LOG_LEVEL: must be one of debug, info"),
    (
        "POCKETCODE_DATABASE_URL",
        f"mysql://user:{PASSWORD_CANARY}@localhost/db",
        "POCKETCODE_DATABASE_URL: only sqlite and postgresql databases are supported",
    ),
    (
        "POCKETCODE_DATABASE_URL",
        f"not a url {PASSWORD_CANARY}",
        "POCKETCODE_DATABASE_URL: not a database URL",
    ),
    ("POCKETCODE_ALLOWED_ROOTS", "[oops", "POCKETCODE_ALLOWED_ROOTS: not a JSON list of paths"),
    ("POCKETCODE_POOL_SIZE", "0", "POCKETCODE_POOL_SIZE: Input should be greater than or equal"),
]


def fails_with(capsys: pytest.CaptureFixture[str], message: str) -> str:
    code, out, err = run_cli(capsys, "config", "show")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert out == ""
    text = " ".join(err.split())
    assert text.startswith("error:"), err
    assert message in text
    return text


@pytest.mark.parametrize(("name", "value", "message"), BAD_ENVIRONMENT)
def test_a_bad_environment_value_is_one_clear_error(
    name: str,
    value: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(name, value)
    text = fails_with(capsys, message)
    assert PASSWORD_CANARY not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("colour = 'blue'\n", "unknown setting 'colour' in {file}"),
        ("port = 'abc'\n", "port in {file}: Input should be a valid integer"),
        ("log_level = 'loud'\n", "log_level in {file}: must be one of debug"),
        ("port = [\n", "the config file {file} is not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_clear_error(
    content: str, message: str, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = data_dir / "config.toml"
    config_file.write_text(content)
    fails_with(capsys, message.format(file=config_file))


def test_a_missing_named_config_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "typo.toml"
    monkeypatch.setenv("POCKETCODE_CONFIG_FILE", str(missing))
    fails_with(capsys, f"POCKETCODE_CONFIG_FILE names {missing}, which does not exist")


# --- config show ------------------------------------------------------------------------------


def test_config_show_prints_every_setting(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_dir / "config.toml").write_text("port = 4000\n")
    monkeypatch.setenv("POCKETCODE_LOG_LEVEL", "debug")

    code, out, err = run_cli(capsys, "config", "show")

    assert (code, err) == (0, "")
    values = shown_values(out)
    assert set(values) == {f"POCKETCODE_{name.upper()}" for name in Settings.model_fields}
    assert values["POCKETCODE_PORT"] == "4000"
    assert values["POCKETCODE_LOG_LEVEL"] == "debug"
    assert values["POCKETCODE_POOL_SIZE"] == "20"
    assert values["POCKETCODE_DATA_DIR"] == str(data_dir)
    assert values["POCKETCODE_DATABASE_URL"] == f"sqlite:///{data_dir / 'pocketcode.db'}"
    assert values["POCKETCODE_SECRET_KEY_FILE"] == str(data_dir / "secret.key")
    assert values["POCKETCODE_SECRET_KEY"] == ""
    assert f"config file {data_dir / 'config.toml'} (found)" in out


def test_config_show_masks_passwords_and_the_secret_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "POCKETCODE_DATABASE_URL",
        f"postgresql://team:{PASSWORD_CANARY}@db.example:5432/pocketcode"
        f"?password={QUERY_PASSWORD_CANARY}&sslmode=require",
    )
    monkeypatch.setenv("POCKETCODE_SECRET_KEY", KEY_CANARY)

    code, out, err = run_cli(capsys, "config", "show")

    assert code == 0, err
    for canary in (PASSWORD_CANARY, QUERY_PASSWORD_CANARY, KEY_CANARY):
        assert canary not in out + err
    values = shown_values(out)
    assert values["POCKETCODE_DATABASE_URL"] == (
        "postgresql://team:***@db.example:5432/pocketcode?password=***&sslmode=require"
    )
    assert values["POCKETCODE_SECRET_KEY"] == "********"


def test_config_show_masks_a_password_from_the_config_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data_dir / "config.toml").write_text(
        f'database_url = "postgresql://team:{PASSWORD_CANARY}@db.example/pocketcode"\n'
        f'secret_key = "{KEY_CANARY}"\n'
    )

    code, out, err = run_cli(capsys, "config", "show")

    assert code == 0, err
    assert PASSWORD_CANARY not in out + err
    assert KEY_CANARY not in out + err
    assert (
        shown_values(out)["POCKETCODE_DATABASE_URL"]
        == "postgresql://team:***@db.example/pocketcode"
    )


def test_an_allowed_root_that_is_not_utf8_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every listing and path of the API lies under a root: one whose real path is not UTF-8
    could be neither shown nor sent back (a symlink with a UTF-8 name may lead there)."""
    try:
        os.mkdir(os.fsencode(tmp_path) + b"/caf\xe9")
    except OSError:
        pytest.skip("this filesystem refuses names that are not UTF-8")
    (tmp_path / "link").symlink_to(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    monkeypatch.setenv("POCKETCODE_ALLOWED_ROOTS", str(tmp_path / "link"))

    with pytest.raises(ConfigurationError) as error:
        load_settings()

    assert "is not valid UTF-8" in str(error.value) and "caf\\xe9" in str(error.value)
