"""Model prices and the cost formula (seed 004 `model_pricing`).

cost = input × input price
     + output × output price
     + cache write × input price × cache write multiplier
     + cache read × input price × cache read multiplier      (prices per million tokens)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pocketcode.db.engine import Database, insert_or_update
from pocketcode.db.tables import ModelPricingRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import InvalidInput, NotFound

MILLION = Decimal(1_000_000)
_DATE_SUFFIX = re.compile(r"-\d{8}$")
_PROVIDER_SUFFIX = re.compile(r"(\[1m\]|-v\d+(:\d+)?|@\d{8})$")


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0


@dataclass(frozen=True)
class Price:
    model_name: str
    input_per_million: Decimal
    output_per_million: Decimal
    cache_write_multiplier: Decimal = Decimal("1.25")
    cache_read_multiplier: Decimal = Decimal("0.1")

    @classmethod
    def from_row(cls, row: ModelPricingRow) -> Price:
        return cls(
            row.model_name,
            row.input_price_per_million or Decimal(0),
            row.output_price_per_million or Decimal(0),
            row.cache_write_multiplier,
            row.cache_read_multiplier,
        )


def compute_cost(usage: TokenUsage, price: Price) -> Decimal:
    for name in ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens"):
        if getattr(usage, name) < 0:
            raise InvalidInput(f"{name} must not be negative")
    per_input = price.input_per_million / MILLION
    return (
        usage.input_tokens * per_input
        + usage.output_tokens * price.output_per_million / MILLION
        + usage.cache_creation_tokens * per_input * price.cache_write_multiplier
        + usage.cache_read_tokens * per_input * price.cache_read_multiplier
    )


def _candidates(model: str) -> list[str]:
    """Names to try, most specific first: as given, without a provider suffix, without a date."""
    names = [model.strip().lower()]
    bare = _PROVIDER_SUFFIX.sub("", names[0])
    bare = bare.removeprefix("us.anthropic.").removeprefix("anthropic.")
    names.append(bare)
    names.append(_DATE_SUFFIX.sub("", bare))
    return list(dict.fromkeys(name for name in names if name))


def lookup_in(session: Session, model: str) -> Price | None:
    """The price of `model`, read in the caller's transaction: an exact row, else the same
    name without a provider suffix or date, else the newest dated row of that name
    (`claude-sonnet-4-5` → `claude-sonnet-4-5-20250929`)."""
    if not model or not model.strip():
        return None
    candidates = _candidates(model)
    rows = {
        row.model_name.lower(): row
        for row in session.scalars(
            sa.select(ModelPricingRow).where(
                sa.func.lower(ModelPricingRow.model_name).in_(candidates)
            )
        )
    }
    for name in candidates:
        if name in rows:
            return Price.from_row(rows[name])
    base = candidates[-1]
    dated = session.scalars(
        sa.select(ModelPricingRow)
        .where(sa.func.lower(ModelPricingRow.model_name).like(f"{base}-________"))
        .order_by(ModelPricingRow.model_name.desc())
    ).first()
    return Price.from_row(dated) if dated is not None else None


# Column → (what it is, its scale, the first value it cannot hold): NUMERIC(10, 6) and (5, 3).
_PRICE_COLUMNS = {
    "input_price_per_million": ("input price", Decimal("0.000001"), Decimal(10_000)),
    "output_price_per_million": ("output price", Decimal("0.000001"), Decimal(10_000)),
    "cache_write_multiplier": ("cache write multiplier", Decimal("0.001"), Decimal(100)),
    "cache_read_multiplier": ("cache read multiplier", Decimal("0.001"), Decimal(100)),
}


def _checked(price: Price) -> dict[str, Any]:
    """The row of a price, as the columns will hold it, or InvalidInput. Rounded first:
    PostgreSQL would round 9999.9999999 to 10000.000000 itself, and then refuse it."""
    name = price.model_name.strip()
    if not name or len(name) > 255:
        raise InvalidInput("model name must be 1 to 255 characters")
    given = (
        price.input_per_million,
        price.output_per_million,
        price.cache_write_multiplier,
        price.cache_read_multiplier,
    )
    row: dict[str, Any] = {"model_name": name}
    for (column, (label, scale, limit)), value in zip(_PRICE_COLUMNS.items(), given, strict=True):
        if not value.is_finite() or value < 0 or value >= limit:
            raise InvalidInput(f"{label} must be between 0 and {limit}")
        rounded = value.quantize(scale, ROUND_HALF_UP)
        if rounded >= limit:
            raise InvalidInput(f"{label} must be between 0 and {limit}")
        row[column] = rounded
    return row


class PricingService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list_prices(self) -> list[ModelPricingRow]:
        with self.db.read() as session:
            return list(
                session.scalars(sa.select(ModelPricingRow).order_by(ModelPricingRow.model_name))
            )

    def lookup(self, model: str) -> Price | None:
        """The price of `model` (`lookup_in`)."""
        if not model or not model.strip():
            return None
        with self.db.read() as session:
            return lookup_in(session, model)

    def cost(self, model: str, usage: TokenUsage) -> Decimal | None:
        """The cost of `usage` on `model`, or None when the model has no price."""
        price = self.lookup(model)
        return compute_cost(usage, price) if price is not None else None

    def upsert(
        self,
        model_name: str,
        *,
        input_per_million: Decimal,
        output_per_million: Decimal,
        cache_write_multiplier: Decimal = Decimal("1.25"),
        cache_read_multiplier: Decimal = Decimal("0.1"),
    ) -> None:
        self.set_prices(
            [
                Price(
                    model_name,
                    input_per_million,
                    output_per_million,
                    cache_write_multiplier,
                    cache_read_multiplier,
                )
            ]
        )

    def set_prices(self, prices: Sequence[Price]) -> None:
        """Set the prices of these models (new ones added): all or, if one is refused
        (InvalidInput), none. Values are rounded to what the columns hold (6 decimals for a
        price, 3 for a multiplier) before they are checked against the limits."""
        rows = [_checked(price) for price in prices]
        upsert = insert_or_update(
            self.db.dialect, ModelPricingRow, "model_name", [*_PRICE_COLUMNS, "updated_at"]
        )
        now = utcnow()
        with self.db.write() as session:
            for row in rows:
                session.execute(upsert, {**row, "updated_at": now})

    def delete(self, model_name: str) -> None:
        with self.db.write() as session:
            result = session.execute(
                sa.delete(ModelPricingRow).where(ModelPricingRow.model_name == model_name)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"no price for model {model_name!r}")
