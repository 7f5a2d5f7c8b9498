"""PokéCode's response schemas (../shared/pokecode-api.md), written from the doc as pydantic
TypedDicts in strict mode, so a test fails exactly where PokéCode's Zod validation would: a
nullable key must be present (null allowed), an optional key may be absent but never null,
enums are closed, integers are integers, datetimes end in `Z`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, StringConstraints, TypeAdapter, with_config
from typing_extensions import TypedDict

Timestamp = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")]
STRICT = ConfigDict(strict=True, extra="forbid")
# The client strips keys it does not know: pocketcode's extra session fields are allowed.
STRIPPING = ConfigDict(strict=True, extra="ignore")


@with_config(STRIPPING)
class Session(TypedDict):
    id: str
    provider: Literal["claude-code", "codex-cli"]
    projectPath: str
    name: str
    claudeDirectoryPath: str | None
    state: Literal["active", "inactive"]
    createdAt: Timestamp
    updatedAt: Timestamp
    lastAccessedAt: Timestamp
    lastMessageSentAt: Timestamp | None
    isWorking: bool
    currentJobId: str | None
    lastJobStatus: str | None
    messageCount: int
    tokenCount: int


@with_config(STRICT)
class Content(TypedDict):
    content: str


@with_config(STRICT)
class ErrorData(TypedDict):
    message: str


@with_config(STRICT)
class TextData(TypedDict):
    type: Literal["message"]
    data: Content


@with_config(STRICT)
class ToolResult(TypedDict):
    toolUseId: str
    content: str
    isError: NotRequired[bool]


@with_config(STRICT)
class ToolResultData(TypedDict):
    type: Literal["tool_result"]
    data: ToolResult


@with_config(STRICT)
class Todo(TypedDict):
    content: str
    status: Literal["pending", "in_progress", "completed"]


@with_config(STRICT)
class TodoInput(TypedDict):
    todos: list[Todo]


@with_config(STRICT)
class ReadInput(TypedDict):
    filePath: str


@with_config(STRICT)
class BashInput(TypedDict):
    command: str
    timeout: NotRequired[int | float]
    description: NotRequired[str]


@with_config(STRICT)
class EditInput(TypedDict):
    filePath: str
    oldString: str
    newString: str


@with_config(STRICT)
class OneEdit(TypedDict):
    oldString: str
    newString: str
    replaceAll: NotRequired[bool]


@with_config(STRICT)
class MultiEditInput(TypedDict):
    filePath: str
    edits: list[OneEdit]


@with_config(STRICT)
class TaskInput(TypedDict):
    subagentType: str
    description: str
    prompt: str


@with_config(STRICT)
class GrepInput(TypedDict):
    pattern: str
    path: str
    outputMode: str
    lineNumbers: NotRequired[bool]
    headLimit: NotRequired[int | float]
    contextLines: NotRequired[int | float]


@with_config(STRICT)
class GlobInput(TypedDict):
    pattern: str
    path: NotRequired[str]


@with_config(STRICT)
class LsInput(TypedDict):
    path: str


def _tool(name: str, data: Any) -> Any:
    # The functional form: its field types are objects, not strings to resolve later.
    fields = {"type": Literal[name], "toolId": str, "data": data}
    tool = TypedDict(f"{name}Tool", fields)  # type: ignore[misc]
    return with_config(STRICT)(tool)


ToolUse = (
    _tool("todo", TodoInput)
    | _tool("read", ReadInput)
    | _tool("bash", BashInput)
    | _tool("edit", EditInput)
    | _tool("multiedit", MultiEditInput)
    | _tool("task", TaskInput)
    | _tool("grep", GrepInput)
    | _tool("glob", GlobInput)
    | _tool("ls", LsInput)
)


@with_config(STRICT)
class ToolUseData(TypedDict):
    type: Literal["tool_use"]
    data: ToolUse  # type: ignore[valid-type]


@with_config(STRICT)
class Message(TypedDict):
    id: str
    type: Literal["assistant", "user", "system", "result", "error"]
    data: Content | ErrorData | TextData | ToolResultData | ToolUseData  # type: ignore[valid-type]
    parentToolUseId: str | None


@with_config(STRICT)
class Pagination(TypedDict):
    hasNextPage: bool
    nextCursor: str | None
    totalFetched: int


@with_config(STRICT)
class MessagesPage(TypedDict):
    messages: list[Message]
    session: Session
    pagination: Pagination


@with_config(STRIPPING)
class SessionList(TypedDict):
    sessions: list[Session]
    total: int
    limit: int
    offset: int


@with_config(STRICT)
class Success(TypedDict):
    success: bool


@with_config(STRICT)
class ConnectOut(TypedDict):
    status: Literal["ok"]
    poll_interval_s: int
    server_time: str


@with_config(STRICT)
class Device(TypedDict):
    deviceId: str
    deviceName: str
    platform: str | None
    appVersion: str | None
    lastConnectedAt: Timestamp


@with_config(STRICT)
class DeviceList(TypedDict):
    devices: list[Device]
    total: int
    limit: int
    offset: int


@with_config(STRICT)
class QueueMetrics(TypedDict):
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int
    paused: int
    total: int


@with_config(ConfigDict(strict=True, extra="allow"))
class ErrorBody(TypedDict):
    error: str
    code: NotRequired[str]
    statusCode: NotRequired[int]


def check(shape: Any, value: Any) -> Any:
    """Validate like PokéCode's client; raises pydantic's ValidationError on a mismatch."""
    return TypeAdapter(shape).validate_python(value)
