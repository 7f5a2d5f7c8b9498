"""seed model_pricing with the prices of the Claude models

The prices are those of the model catalog shipped inside Claude Code 2.1.330 (the CLI bundled
with claude-agent-sdk 0.2.187), which are the published per-million-token list prices. Cache
multipliers are cache price / input price: 1.25 for 5-minute cache writes everywhere, 0.1 for
cache reads on most models (lower on a few newer ones). Each model is stored under its API id and,
where the catalog's short alias differs, under the alias too. Prices are data: edit them with the
API or `model_pricing` rows; a later release adds rows for new models in a new migration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (names, input $/M, output $/M, cache write $/M, cache read $/M)
_CATALOG: list[tuple[tuple[str, ...], str, str, str, str]] = [
    (("claude-3-5-haiku-20241022", "claude-3-5-haiku"), "0.8", "4", "1", "0.08"),
    (("claude-haiku-4-5-20251001", "claude-haiku-4-5"), "1", "5", "1.25", "0.1"),
    (("claude-haiku-5-5",), "0.1", "0.5", "0.125", "0.01"),
    (("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"), "3", "15", "3.75", "0.3"),
    (("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"), "3", "15", "3.75", "0.3"),
    (("claude-sonnet-4-20250514", "claude-sonnet-4-0"), "3", "15", "3.75", "0.3"),
    (("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"), "3", "15", "3.75", "0.3"),
    (("claude-sonnet-4-6",), "3", "15", "3.75", "0.3"),
    (("claude-sonnet-5",), "2", "10", "2.5", "0.2"),
    (("claude-sonnet-5-5",), "2", "10", "2.5", "0.1"),
    (("claude-opus-4-20250514", "claude-opus-4-0"), "15", "75", "18.75", "1.5"),
    (("claude-opus-4-1-20250805", "claude-opus-4-1"), "15", "75", "18.75", "1.5"),
    (("claude-opus-4-5-20251101", "claude-opus-4-5"), "5", "25", "6.25", "0.5"),
    (("claude-opus-4-6",), "5", "25", "6.25", "0.5"),
    (("claude-opus-4-7",), "5", "25", "6.25", "0.5"),
    (("claude-opus-4-8",), "5", "25", "6.25", "0.5"),
    (("claude-opus-5",), "5", "25", "6.25", "0.5"),
    (("claude-opus-5-5",), "4", "20", "5", "0.2"),
    (("claude-fable-5",), "10", "50", "12.5", "1"),
    (("claude-fable-5-1",), "10", "50", "12.5", "0.25"),
    (("claude-fable-5-2",), "8", "40", "10", "0.2"),
    (("claude-mythos-5",), "10", "50", "12.5", "1"),
    (("claude-mythos-5-1",), "10", "50", "12.5", "0.25"),
    (("claude-mythos-5-2",), "8", "40", "10", "0.2"),
]

_pricing = sa.table(
    "model_pricing",
    sa.column("model_name", sa.String),
    sa.column("input_price_per_million", sa.Numeric),
    sa.column("output_price_per_million", sa.Numeric),
    sa.column("cache_write_multiplier", sa.Numeric),
    sa.column("cache_read_multiplier", sa.Numeric),
)


def _rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for names, price_in, price_out, cache_write, cache_read in _CATALOG:
        for name in names:
            rows.append(
                {
                    "model_name": name,
                    "input_price_per_million": Decimal(price_in),
                    "output_price_per_million": Decimal(price_out),
                    "cache_write_multiplier": Decimal(cache_write) / Decimal(price_in),
                    "cache_read_multiplier": Decimal(cache_read) / Decimal(price_in),
                }
            )
    return rows


def upgrade() -> None:
    op.bulk_insert(_pricing, _rows())


def downgrade() -> None:
    names = [row["model_name"] for row in _rows()]
    op.execute(_pricing.delete().where(_pricing.c.model_name.in_(names)))
