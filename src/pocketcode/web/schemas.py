"""Request bodies and response models of the API.

Bodies PokéCode's client sends ignore unknown keys, as PokéCode's Zod parsing did; bodies only
pocketcode's own clients send refuse them, so a misspelt field is an error, not a no-op.
Responses are described below their section marker.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Annotated, Any, Literal, TypeVar, Union

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from pocketcode.db.tables import CONTEXT_MAX_CHARS
from pocketcode.domain.errors import InvalidInput
from pocketcode.domain.states import (
    JobStatus,
    LifecycleStatus,
    PermissionMode,
    PermissionStatus,
    ProcessStatus,
    Provider,
)
from pocketcode.domain.text import is_utf8
from pocketcode.domain.timefmt import iso_z
from pocketcode.services.app_settings import MAX_VALUE_CHARS
from pocketcode.services.auth import TokenInfo, UserInfo
from pocketcode.services.git import Change
from pocketcode.services.jobs import MAX_PROMPT_CHARS
from pocketcode.services.paths import MAX_PATH_LENGTH
from pocketcode.services.projects import SourceType
from pocketcode.services.sessions import TITLE_MAX_CHARS
from pocketcode.web.security import UNSAFE_METHODS, is_public

UNSTORABLE_TEXT = "text in the request must not contain NUL characters or lone surrogates"
MAX_NESTING = 32


def _is_storable(text: str) -> bool:
    """No NUL and no lone surrogate (JSON's `\\ud800` decodes to one): PostgreSQL can store
    neither, so such text would fail there (and not on SQLite) instead of being refused."""
    return "\x00" not in text and is_utf8(text)


def _unstorable(data: Any) -> str | None:
    """Why a request body cannot be stored, or None. A loop, not recursion: free-form JSON
    (metadata) may nest deeper than Python's stack."""
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if not _is_storable(value):
                return UNSTORABLE_TEXT
        elif isinstance(value, float) and not math.isfinite(value):
            # Python's JSON reads NaN and Infinity, which JSON (and PostgreSQL's jsonb) lacks.
            return "numbers in the request must be finite: NaN and Infinity are not JSON"
        elif isinstance(value, dict | list):
            if depth >= MAX_NESTING:
                return f"the request nests JSON deeper than {MAX_NESTING} levels"
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
    return None


class Body(BaseModel):
    """A request body, whose text (free-form metadata included) must be storable on both
    backends. The refusal is the services' own for NUL (400 INVALID_INPUT): pydantic lets an
    exception that is not a ValueError through to the app's error handler."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unstorable_text(cls, data: Any) -> Any:
        problem = _unstorable(data)
        if problem is not None:
            raise InvalidInput(problem)
        return data


class PokecodeBody(Body):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class OwnBody(Body):
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


class ConnectIn(Body):
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


# == responses ====================================================================================
# Every JSON route declares one of these as its response model: FastAPI validates what the route
# returns against it, and the OpenAPI schema (which Schemathesis checks responses against) says
# exactly what a client gets. The presenters keep building dicts (the event streams send the same
# shapes); a route's model checks them on the way out.
#
# PokéCode's conventions (../shared/pokecode-api.md): nullable keys are present with null (`X |
# None`, no default); optional keys are omitted, never null (`Omittable[X]`, and the route sets
# `response_model_exclude_unset`, so a key the presenter left out stays out).

T = TypeVar("T")

# A key that is either present with a value or absent: null is not among its documented values.
Omittable = Union[T, SkipJsonSchema[None]]  # noqa: UP007 - a generic alias needs Union

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", examples=["2026-01-02T03:04:05.678Z"]
    ),
]


class Out(BaseModel):
    """A response body: camelCase keys, nothing undeclared."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ErrorBody(BaseModel):
    """The one error shape of the API (PokéCode's `{error, code?, statusCode?}`, always full)."""

    model_config = ConfigDict(extra="forbid")

    error: str
    code: str
    statusCode: int  # the wire name (camelCase like the rest of the API)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer these error statuses."""
    return {
        status: {"model": ErrorBody, "description": HTTPStatus(status).phrase}
        for status in statuses
    }


class SuccessOut(Out):
    success: bool


# -- health --------------------------------------------------------------------------------------


class RootOut(Out):
    name: str
    version: str
    status: Literal["ok"]
    timestamp: Timestamp


class LiveOut(Out):
    status: Literal["ok"]
    timestamp: Timestamp


class ReadyOut(Out):
    status: Literal["ready"]
    timestamp: Timestamp


class NotReadyOut(Out):
    status: Literal["not_ready"]
    timestamp: Timestamp
    reason: str


ServiceHealth = Literal["healthy", "unhealthy"]


class ServicesOut(Out):
    database: ServiceHealth
    queue: Literal["healthy", "unhealthy", "unknown"]


class HealthOut(Out):
    status: ServiceHealth
    timestamp: Timestamp
    services: ServicesOut
    version: str
    uptime: float
    reason: Omittable[str] = None  # why, when unhealthy


# -- sessions ------------------------------------------------------------------------------------


class TokensOut(Out):
    input: int
    output: int
    cache_creation: int
    cache_read: int


class SessionOut(Out):
    """PokéCode's `Session` (its client strips the other keys) plus pocketcode's fields."""

    id: str
    provider: Provider
    project_path: str
    name: str
    claude_directory_path: str | None
    state: Literal["active", "inactive"]
    created_at: Timestamp
    updated_at: Timestamp
    last_accessed_at: Timestamp
    last_message_sent_at: Timestamp | None
    is_working: bool
    current_job_id: str | None
    last_job_status: JobStatus | None
    message_count: int
    token_count: int
    title: str | None
    status: LifecycleStatus
    context: str | None
    metadata: dict[str, Any] | None
    model: str | None
    permission_mode: PermissionMode | None
    process_status: ProcessStatus
    turn_count: int
    tokens: TokensOut
    total_cost_usd: float
    cli_total_cost_usd: float
    allowed_tools: list[str]
    last_activity_at: Timestamp | None
    pending_permissions: int


class SessionListOut(Out):
    sessions: list[SessionOut]
    total: int
    limit: int
    offset: int


# -- messages (PokéCode's `Message`) -------------------------------------------------------------


class ContentData(Out):
    content: str


class ErrorData(Out):
    message: str


class TextBlock(Out):
    type: Literal["message"]
    data: ContentData


class ToolResultData(Out):
    tool_use_id: str
    content: str
    is_error: Omittable[bool] = None


class ToolResultBlock(Out):
    type: Literal["tool_result"]
    data: ToolResultData


class TodoItem(Out):
    content: str
    status: Literal["pending", "in_progress", "completed"]


class TodoInput(Out):
    todos: list[TodoItem]


class ReadInput(Out):
    file_path: str


class BashInput(Out):
    command: str
    timeout: Omittable[int] = None
    description: Omittable[str] = None


class EditInput(Out):
    file_path: str
    old_string: str
    new_string: str


class OneEdit(Out):
    old_string: str
    new_string: str
    replace_all: Omittable[bool] = None


class MultiEditInput(Out):
    file_path: str
    edits: list[OneEdit]


class TaskInput(Out):
    subagent_type: str
    description: str
    prompt: str


class GrepInput(Out):
    pattern: str
    path: str
    output_mode: str
    line_numbers: Omittable[bool] = None
    head_limit: Omittable[int] = None
    context_lines: Omittable[int] = None


class GlobInput(Out):
    pattern: str
    path: Omittable[str] = None


class LsInput(Out):
    path: str


class _Tool(Out):
    tool_id: str


class TodoTool(_Tool):
    type: Literal["todo"]
    data: TodoInput


class ReadTool(_Tool):
    type: Literal["read"]
    data: ReadInput


class BashTool(_Tool):
    type: Literal["bash"]
    data: BashInput


class EditTool(_Tool):
    type: Literal["edit"]
    data: EditInput


class MultiEditTool(_Tool):
    type: Literal["multiedit"]
    data: MultiEditInput


class TaskTool(_Tool):
    type: Literal["task"]
    data: TaskInput


class GrepTool(_Tool):
    type: Literal["grep"]
    data: GrepInput


class GlobTool(_Tool):
    type: Literal["glob"]
    data: GlobInput


class LsTool(_Tool):
    type: Literal["ls"]
    data: LsInput


ToolUse = Annotated[
    TodoTool
    | ReadTool
    | BashTool
    | EditTool
    | MultiEditTool
    | TaskTool
    | GrepTool
    | GlobTool
    | LsTool,
    Field(discriminator="type"),
]


class ToolUseBlock(Out):
    type: Literal["tool_use"]
    data: ToolUse


AssistantData = Annotated[TextBlock | ToolResultBlock | ToolUseBlock, Field(discriminator="type")]


class MessageOut(Out):
    id: str
    type: Literal["assistant", "user", "system", "result", "error"]
    # user and system: {content}; error: {message}; assistant: a text, tool use or tool result.
    data: ContentData | ErrorData | AssistantData
    parent_tool_use_id: str | None


class PaginationOut(Out):
    has_next_page: bool
    next_cursor: str | None
    total_fetched: int


class MessagesPageOut(Out):
    messages: list[MessageOut]
    session: SessionOut
    pagination: PaginationOut


# -- the queue, permissions, pricing, usage ------------------------------------------------------


class JobOut(Out):
    id: str
    session_id: str
    status: JobStatus
    prompt: str
    options: dict[str, Any] | None
    attempts: int
    error: str | None
    error_code: str | None
    created_at: Timestamp
    claimed_at: Timestamp | None
    finished_at: Timestamp | None


class QueueOut(Out):
    jobs: list[JobOut]


class CancelledJobOut(Out):
    job: JobOut


class PermissionOut(Out):
    id: str
    session_id: str
    job_id: str | None
    tool_name: str
    tool_input: Any
    tool_use_id: str | None
    status: PermissionStatus
    scope: str | None
    reason: str | None
    created_at: Timestamp
    expires_at: Timestamp | None
    decided_at: Timestamp | None


class PermissionsOut(Out):
    permissions: list[PermissionOut]


class AnsweredPermissionOut(Out):
    permission: PermissionOut


class PriceOut(Out):
    model_name: str
    input_price_per_million: float | None
    output_price_per_million: float | None
    cache_write_multiplier: float | None
    cache_read_multiplier: float | None
    updated_at: Timestamp


class PricesOut(Out):
    prices: list[PriceOut]


class UsageTotalsOut(Out):
    jobs: int
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_usd: float


class UsageDayOut(UsageTotalsOut):
    day: str


class UsageProjectOut(UsageTotalsOut):
    project_path: str


class UsageModelOut(UsageTotalsOut):
    model: str


class UsageOut(Out):
    days: int
    total: UsageTotalsOut
    by_day: list[UsageDayOut]
    by_project: list[UsageProjectOut]
    by_model: list[UsageModelOut]


# -- auth ----------------------------------------------------------------------------------------

Secret = Annotated[str, Field(min_length=1, max_length=4096)]


def _iso_or_none(value: datetime | None) -> str | None:
    return iso_z(value) if value is not None else None


class UserOut(Out):
    id: str
    username: str
    is_owner: bool
    totp_enabled: bool
    created_at: Timestamp
    last_login_at: Timestamp | None

    @classmethod
    def of(cls, user: UserInfo) -> UserOut:
        return cls(
            id=str(user.id),
            username=user.username,
            is_owner=user.is_owner,
            totp_enabled=user.totp_enabled,
            created_at=iso_z(user.created_at),
            last_login_at=_iso_or_none(user.last_login_at),
        )


class StatusOut(Out):
    setup_required: bool
    authenticated: bool
    user: UserOut | None = None


class SetupIn(OwnBody):
    token: Secret
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Secret


class LoginIn(OwnBody):
    username: Annotated[str, Field(min_length=1, max_length=256)]
    password: Secret
    totp_code: Annotated[str, Field(max_length=32)] | None = None
    recovery_code: Annotated[str, Field(max_length=64)] | None = None


class LoginOut(Out):
    user: UserOut
    expires_at: Timestamp


class MeOut(Out):
    user: UserOut
    auth_method: Literal["cookie", "bearer", "trusted-network"]


class PasswordIn(OwnBody):
    current_password: Secret
    new_password: Secret


class PasswordOut(Out):
    revoked_sessions: int


class TotpEnrollOut(Out):
    secret: str
    otpauth_uri: str


class TotpConfirmIn(OwnBody):
    code: Annotated[str, Field(min_length=1, max_length=32)]


class TotpConfirmOut(Out):
    recovery_codes: list[str]


class TotpDisableIn(OwnBody):
    password: Secret


class TokenIn(OwnBody):
    name: Annotated[str, Field(min_length=1, max_length=128)]


class TokenOut(Out):
    id: str
    name: str
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    expires_at: Timestamp | None

    @classmethod
    def of(cls, token: TokenInfo) -> TokenOut:
        return cls(
            id=str(token.id),
            name=token.name,
            prefix=token.prefix,
            created_at=iso_z(token.created_at),
            last_used_at=_iso_or_none(token.last_used_at),
            expires_at=_iso_or_none(token.expires_at),
        )


class TokenCreatedOut(TokenOut):
    token: str  # the only time the plaintext is shown


# -- devices and the queue (PokéCode) ------------------------------------------------------------


class ConnectOut(BaseModel):
    """PokéCode's connect answer: snake_case, unlike the rest of the API."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"]
    poll_interval_s: int
    server_time: Timestamp


class DeviceOut(Out):
    device_id: str
    device_name: str
    platform: str | None
    app_version: str | None
    last_connected_at: Timestamp


class DeviceListOut(Out):
    devices: list[DeviceOut]
    total: int
    limit: int
    offset: int


class QueueMetricsOut(Out):
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int
    paused: int
    total: int


# -- projects ------------------------------------------------------------------------------------


class RepositoryOut(Out):
    folder_name: str
    path: str
    is_git_repository: bool


class RepositoriesOut(Out):
    repositories: list[RepositoryOut]
    total: int
    github_repos_directory: str


class DirectoryItemOut(Out):
    name: str
    path: str
    type: Literal["directory", "file"]
    is_git_repository: bool
    size: Omittable[int] = None
    modified_at: Omittable[Timestamp] = None


class DirectoryOut(Out):
    current_path: str
    parent_path: str | None
    items: list[DirectoryItemOut]


class ProjectFilesOut(Out):
    project_path: str
    path: str  # relative to the project; "" is the project itself
    parent_path: str | None
    items: list[DirectoryItemOut]


class FileContentOut(Out):
    path: str
    content: str
    encoding: Literal["utf8"]
    size: int
    modified_at: Timestamp


GitCode = Literal["A", "M", "D", "R", "C", "U", "T", "?", "!", " ", "."]


class GitStatsOut(Out):
    additions: int
    deletions: int


class GitScoresOut(Out):
    similarity: int


class GitStatusEntryOut(Out):
    path: str
    orig_path: Omittable[str] = None
    index: GitCode
    worktree: GitCode
    staged: bool
    untracked: bool
    rename: Omittable[bool] = None
    scores: Omittable[GitScoresOut] = None
    is_submodule: Omittable[bool] = None
    stats: Omittable[GitStatsOut] = None
    change: Change


class GitStatusOut(Out):
    repo_root: str
    branch: Omittable[str] = None
    ahead: Omittable[int] = None
    behind: Omittable[int] = None
    entries: list[GitStatusEntryOut]


class GitDiffOut(Out):
    path: str
    is_binary: bool
    unified: str
    stats: Omittable[GitStatsOut] = None


class GitFileOut(Out):
    path: str
    ref: str
    encoding: Literal["utf8", "base64"]
    content: str
    is_binary: bool


class CommandOut(Out):
    name: str
    body: str
    type: SourceType


class CommandSourcesOut(Out):
    user_commands_path: Omittable[str] = None
    project_commands_path: Omittable[str] = None


class CommandsOut(Out):
    commands: list[CommandOut]
    sources: CommandSourcesOut


class AgentOut(Out):
    name: str
    description: str
    color: Omittable[str] = None  # PokéCode's client refuses a null colour
    content: str
    type: SourceType


class AgentSourcesOut(Out):
    user_agents_path: Omittable[str] = None
    project_agents_path: Omittable[str] = None


class AgentsOut(Out):
    agents: list[AgentOut]
    sources: AgentSourcesOut


# -- errors the app answers for every route ------------------------------------------------------


def document_app_errors(app: FastAPI) -> None:
    """Add to `app.openapi` the errors that come from the app, not from its routes: the
    security middleware's (400 for a Host it does not serve, 401 on every path that is not
    public, 403 for an unsafe request from another site) and the validation handler's 422 in
    the one error shape (FastAPI would document its own default body), which only routes
    with something to validate keep."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_app_errors(build())
        return build()

    app.openapi = openapi  # type: ignore[method-assign]


# What makes FastAPI check a string parameter.
_CONSTRAINTS = {"minLength", "maxLength", "pattern", "enum", "format"}


def _can_be_invalid(operation: dict[str, Any]) -> bool:
    """Whether FastAPI's validation can refuse a request of `operation` (422): not when its
    only inputs are strings it takes as they come (a path segment, an optional query or
    header)."""
    if "requestBody" in operation:
        return True
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        options = schema.get("anyOf", [schema])
        plain = all(option.get("type") in ("string", "null") for option in options) and not any(
            _CONSTRAINTS & option.keys() for option in (schema, *options)
        )
        optional = parameter.get("in") == "path" or not parameter.get("required", False)
        if not (plain and optional):
            return True
    return False


def _add_app_errors(schema: dict[str, Any]) -> None:
    def error(description: str) -> dict[str, Any]:
        body = {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
        return {"description": description, "content": {"application/json": body}}

    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                if _can_be_invalid(operation):
                    responses["422"] = error("The request is not valid")
                else:
                    del responses["422"]
            if "requestBody" in operation:  # `Body` refuses NUL characters with 400
                responses.setdefault("400", error("Invalid input"))
            responses.setdefault(
                "400", error("Invalid input, or a Host this server does not serve")
            )
            if not is_public(path):
                responses.setdefault("401", error("Authentication required"))
            if method.upper() in UNSAFE_METHODS:
                responses.setdefault(
                    "403",
                    error("From another site (Origin), or with a session cookie and no Origin"),
                )
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
