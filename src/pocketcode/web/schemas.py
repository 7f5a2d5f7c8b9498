"""Request bodies of the sessions API.

Bodies PokéCode's client sends ignore unknown keys, as PokéCode's Zod parsing did; bodies only
pocketcode's own clients send refuse them, so a misspelt field is an error, not a no-op.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pocketcode.db.tables import CONTEXT_MAX_CHARS
from pocketcode.domain.states import PermissionMode
from pocketcode.services.app_settings import MAX_VALUE_CHARS
from pocketcode.services.jobs import MAX_PROMPT_CHARS
from pocketcode.services.paths import MAX_PATH_LENGTH
from pocketcode.services.sessions import TITLE_MAX_CHARS


class PokecodeBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class OwnBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


Title = Annotated[str, Field(min_length=1, max_length=TITLE_MAX_CHARS)]
Context = Annotated[str, Field(max_length=CONTEXT_MAX_CHARS)]
Model = Annotated[str, Field(min_length=1, max_length=255)]


class CreateSessionIn(PokecodeBody):
    project_path: Annotated[str, Field(min_length=1, max_length=MAX_PATH_LENGTH)]
    # PokéCode's client always sends it; pocketcode's default is Claude Code.
    provider: Literal["claude-code", "codex-cli", "claude", "codex"] = "claude-code"
    title: Title | None = None
    context: Context | None = None
    model: Model | None = None
    permission_mode: PermissionMode | None = None
    metadata: dict[str, Any] | None = None


class UpdateSessionIn(PokecodeBody):
    context: Context | None = None
    metadata: dict[str, Any] | None = None
    title: Title | None = None
    status: Literal["active", "inactive", "archived"] | None = None
    model: Annotated[str, Field(max_length=255)] | None = None
    permission_mode: PermissionMode | None = None


class PromptIn(PokecodeBody):
    content: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    allowed_tools: (
        Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=200)] | None
    ) = None
    # PokéCode's values are opus, sonnet and opus-plan; any model name the CLI takes works too.
    model: Model | None = None
    permission_mode: PermissionMode | None = None


class ConnectIn(BaseModel):
    """PokéCode's connect body: snake_case, unlike the rest of the API."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    device_id: Annotated[str, Field(min_length=1, max_length=128)]
    device_name: Annotated[str, Field(min_length=1, max_length=128)]
    platform: Literal["ios", "android"] | None = None
    app_version: Annotated[str, Field(max_length=64)] | None = None


class PermissionAnswerIn(OwnBody):
    decision: Literal["allow", "deny", "always"]
    reason: Annotated[str, Field(max_length=2000)] | None = None


Price = Annotated[Decimal, Field(ge=0, lt=10_000, allow_inf_nan=False)]
Multiplier = Annotated[Decimal, Field(ge=0, lt=100, allow_inf_nan=False)]


class PriceIn(OwnBody):
    model_name: Annotated[str, Field(min_length=1, max_length=255)]
    input_price_per_million: Price
    output_price_per_million: Price
    cache_write_multiplier: Multiplier = Decimal("1.25")
    cache_read_multiplier: Multiplier = Decimal("0.1")


class PricesIn(OwnBody):
    prices: Annotated[list[PriceIn], Field(min_length=1, max_length=500)]


class SettingIn(OwnBody):
    value: Annotated[str, Field(max_length=MAX_VALUE_CHARS)]
