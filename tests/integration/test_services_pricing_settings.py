"""Model pricing, the cost formula and encrypted settings on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from pocketcode.config import Settings
from pocketcode.db.engine import Database
from pocketcode.db.tables import AppSettingRow
from pocketcode.domain.errors import InvalidInput, NotFound, SecretKeyMismatch
from pocketcode.services.app_settings import AppSettingsService, mask
from pocketcode.services.pricing import Price, PricingService, TokenUsage, compute_cost
from pocketcode.services.secrets import KEY_CHECK_SETTING, Keyring, generate_key, load_keyring


def test_published_prices_are_seeded(db: Database) -> None:
    pricing = PricingService(db)
    names = {row.model_name for row in pricing.list_prices()}
    assert {"claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5"} <= names
    sonnet = pricing.lookup("claude-sonnet-4-5-20250929")
    assert sonnet == Price(
        "claude-sonnet-4-5-20250929", Decimal(3), Decimal(15), Decimal("1.25"), Decimal("0.1")
    )
    haiku = pricing.lookup("claude-3-5-haiku-20241022")
    assert haiku is not None
    assert (haiku.input_per_million, haiku.output_per_million) == (Decimal("0.8"), Decimal(4))


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("claude-opus-4-1-20250805", "claude-opus-4-1-20250805"),
        ("Claude-Opus-4-1-20250805", "claude-opus-4-1-20250805"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5"),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
        ("claude-opus-4-6-20991231", "claude-opus-4-6"),
    ],
)
def test_lookup_finds_a_model_by_its_usual_names(db: Database, asked: str, found: str) -> None:
    price = PricingService(db).lookup(asked)
    assert price is not None
    assert price.model_name == found


def test_lookup_of_an_unknown_model_is_none(db: Database) -> None:
    pricing = PricingService(db)
    assert pricing.lookup("gpt-5") is None
    assert pricing.lookup("") is None
    assert pricing.cost("gpt-5", TokenUsage(1, 1)) is None


def test_a_dated_row_serves_its_undated_name(db: Database) -> None:
    pricing = PricingService(db)
    pricing.upsert(
        "acme-model-20250101", input_per_million=Decimal(1), output_per_million=Decimal(2)
    )
    pricing.upsert(
        "acme-model-20250601", input_per_million=Decimal(3), output_per_million=Decimal(4)
    )
    price = pricing.lookup("acme-model")
    assert price is not None
    assert price.model_name == "acme-model-20250601"


def test_cost_formula_matches_hand_computed_cases(db: Database) -> None:
    pricing = PricingService(db)
    # Sonnet 4.5: 1000 in × $3/M = 0.003; 500 out × $15/M = 0.0075;
    # 2000 cache write × $3 × 1.25 /M = 0.0075; 10000 cache read × $3 × 0.1 /M = 0.003.
    assert pricing.cost(
        "claude-sonnet-4-5-20250929", TokenUsage(1000, 500, 2000, 10000)
    ) == Decimal("0.021")
    # Opus 4.1, a million of each: 15 + 75 + 18.75 + 1.5.
    million = 1_000_000
    assert pricing.cost(
        "claude-opus-4-1-20250805", TokenUsage(million, million, million, million)
    ) == Decimal("110.25")
    # Haiku 3.5: one output token is $0.000004; one cache read token is $0.00000008.
    assert pricing.cost("claude-3-5-haiku-20241022", TokenUsage(0, 1, 0, 1)) == Decimal(
        "0.00000408"
    )
    assert pricing.cost("claude-sonnet-4-5", TokenUsage()) == 0


def test_cost_formula_uses_the_row_multipliers() -> None:
    price = Price("m", Decimal(10), Decimal(20), Decimal(2), Decimal("0.5"))
    # 100 000 cache write × $10 × 2 /M = 2; 100 000 cache read × $10 × 0.5 /M = 0.5.
    assert compute_cost(TokenUsage(0, 0, 100_000, 100_000), price) == Decimal("2.5")
    with pytest.raises(InvalidInput):
        compute_cost(TokenUsage(-1, 0, 0, 0), price)


def test_prices_can_be_edited_and_validated(db: Database) -> None:
    pricing = PricingService(db)
    pricing.upsert(
        "claude-sonnet-4-5-20250929",
        input_per_million=Decimal("2.5"),
        output_per_million=Decimal("12.5"),
        cache_write_multiplier=Decimal("1.5"),
        cache_read_multiplier=Decimal("0.05"),
    )
    edited = pricing.lookup("claude-sonnet-4-5-20250929")
    assert edited == Price(
        "claude-sonnet-4-5-20250929",
        Decimal("2.5"),
        Decimal("12.5"),
        Decimal("1.5"),
        Decimal("0.05"),
    )
    for bad in (
        {"input_per_million": Decimal(-1), "output_per_million": Decimal(1)},
        {"input_per_million": Decimal("NaN"), "output_per_million": Decimal(1)},
        {"input_per_million": Decimal(1), "output_per_million": Decimal(10**6)},
    ):
        with pytest.raises(InvalidInput):
            pricing.upsert("x", **bad)
    with pytest.raises(InvalidInput):
        pricing.upsert(" ", input_per_million=Decimal(1), output_per_million=Decimal(1))
    pricing.delete("claude-sonnet-4-5-20250929")
    with pytest.raises(NotFound):
        pricing.delete("claude-sonnet-4-5-20250929")


@pytest.fixture
def keyring(settings: Settings) -> Keyring:
    return load_keyring(settings)


def test_settings_are_encrypted_at_rest(db: Database, keyring: Keyring) -> None:
    canary = "sk-canary-1f0e2d3c4b5a"
    store = AppSettingsService(db, keyring)
    assert store.get("openai_api_key") is None
    store.set("openai_api_key", canary)
    store.set("user_claude_model", "claude-sonnet-4-5")
    assert store.get("openai_api_key") == canary
    with db.read() as session:
        raw = session.scalars(sa.select(AppSettingRow.value)).all()
        dumped = session.execute(sa.text("SELECT * FROM app_settings")).all()
    assert raw
    assert all(canary not in (value or "") for value in raw)
    assert canary not in repr(dumped)
    store.set("openai_api_key", "sk-rotated")
    assert store.get("openai_api_key") == "sk-rotated"
    assert store.keys() == ["openai_api_key", "user_claude_model"]
    assert store.delete("openai_api_key") is True
    assert store.delete("openai_api_key") is False
    assert store.get("openai_api_key") is None


def test_the_key_check_value_is_not_a_user_setting(db: Database, keyring: Keyring) -> None:
    store = AppSettingsService(db, keyring)
    for bad in (KEY_CHECK_SETTING, "Upper", "", "has space", "x" * 300):
        with pytest.raises(InvalidInput):
            store.set(bad, "v")


def test_a_wrong_key_cannot_read_settings(db: Database, keyring: Keyring, tmp_path: Path) -> None:
    AppSettingsService(db, keyring).set("openai_api_key", "sk-secret")
    other = Keyring([generate_key().encode()], "test")
    with pytest.raises(SecretKeyMismatch):
        AppSettingsService(db, other).get("openai_api_key")


def test_mask_shows_at_most_the_last_four_characters() -> None:
    assert mask("sk-abcdefghijkl") == "••••••••ijkl"
    assert mask("short") == "•••••"


def _at_once(count: int, write: Callable[[int], None]) -> list[BaseException]:
    """`write(n)` from `count` threads released together; the exceptions they raised."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(number: int) -> None:
        start.wait(10)
        try:
            write(number)
        except BaseException as exc:  # collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return failures


def test_first_writes_of_one_new_key_at_once_all_succeed(db: Database, keyring: Keyring) -> None:
    """Each looked the key up, found nothing and inserted it: all but one hit the unique
    index (a 500 on PostgreSQL). One statement that inserts or updates cannot."""
    store, pricing = AppSettingsService(db, keyring), PricingService(db)
    assert _at_once(6, lambda n: store.set("default_model", f"model-{n}")) == []
    assert store.get("default_model") in {f"model-{n}" for n in range(6)}
    price = Decimal(1)
    assert (
        _at_once(
            6,
            lambda n: pricing.upsert(
                "new-model", input_per_million=price, output_per_million=Decimal(n)
            ),
        )
        == []
    )
    stored = pricing.lookup("new-model")
    assert stored is not None and stored.input_per_million == price
    with db.read() as session:
        count = sa.select(sa.func.count()).select_from(AppSettingRow)
        assert session.scalar(count.where(AppSettingRow.key == "default_model")) == 1
