"""A scripted fake of the Anthropic Messages API, for driving the real `claude` CLI offline.

The real CLI (bundled in claude-agent-sdk) is pointed at this server with `ANTHROPIC_BASE_URL`
(see `claude_cli_env`). Each request of the main conversation consumes the next scripted turn:
a reply made of thinking / text / tool_use blocks, an API error, a slow stream, a stall or a
broken stream. The CLI then does real work: it writes files and runs commands in its cwd.

    with FakeModelServer([tool_use("Write", {...}), text("done")]) as server:
        env = claude_cli_env(home, server.base_url)
        subprocess.run([str(bundled_claude_path()), "-p", "hi", ...], env=env, ...)
        server.main_requests[1].tool_results  # what the CLI sent back

Which request is which (observed with Claude Code 2.1.330; docs/claude-cli-offline.md):
- every request is `POST /v1/messages?beta=true`, streaming, `max_tokens` 32000–128000;
- a sub-agent's requests (Agent tool) carry the header `x-claude-code-agent-id`; they consume
  `Script.subagent_turns`, never the main turns, because they race with the main conversation;
- side requests never consume turns: compaction (`/compact`, auto-compact: same shape as the
  main conversation, its last user message starts with "CRITICAL: Respond with TEXT ONLY"),
  and the helpers the CLI can make but did not make in `-p` or SDK mode here — tool-free
  helpers (no `tools` key; title generation asks for `output_config.format`) and probes with a
  tiny `max_tokens` (model validation sends `max_tokens: 1`).

After a broken or stalled stream the CLI retries once without streaming (`"stream": false`),
even with CLAUDE_CODE_MAX_RETRIES=0; that retry is a main request and takes the next turn.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pocketcode.devtools.loopback import LoopbackServer
from pocketcode.domain.errors import InvalidInput

EXHAUSTED_TEXT = "(fake model: script exhausted)"
SUBAGENT_EXHAUSTED_TEXT = "(fake model: no scripted sub-agent turn)"
SIDE_REQUEST_TEXT = "(fake model: side request)"
COMPACTION_PREFIX = "CRITICAL: Respond with TEXT ONLY"
COMPACTION_SUMMARY = (
    "<analysis>(fake model)</analysis>\n<summary>(fake model: conversation summary)</summary>"
)
SIDE_REQUEST_MAX_TOKENS = 1024
"""Requests asking for fewer output tokens than this are probes or helpers, never the main
conversation (which asks for 32000 or more)."""

RequestKind: TypeAlias = Literal["main", "subagent", "side", "count_tokens", "other"]


# --- scripted turns -----------------------------------------------------------------------


@dataclass(frozen=True)
class TextBlock:
    text: str


@dataclass(frozen=True)
class ThinkingBlock:
    thinking: str
    signature: str = ""
    """Sent as a `signature_delta`; a random one is made when empty."""


@dataclass(frozen=True)
class ToolUseBlock:
    name: str
    input: Mapping[str, Any]
    id: str = ""
    """The `toolu_…` id; a unique one is made per request when empty."""


Block: TypeAlias = TextBlock | ThinkingBlock | ToolUseBlock


@dataclass(frozen=True)
class Usage:
    """Token counts to report instead of the estimate made from the request size."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class Reply:
    """One assistant message. `a + b` joins the blocks of two replies into one message."""

    blocks: tuple[Block, ...]
    chunk_delay: float = 0.0
    """Seconds to wait before each delta (a slow stream)."""
    chunk_chars: int = 48
    """Characters per text/thinking/tool-input delta."""
    usage: Usage | None = None

    def __add__(self, other: Reply) -> Reply:
        return Reply(
            blocks=self.blocks + other.blocks,
            chunk_delay=max(self.chunk_delay, other.chunk_delay),
            chunk_chars=min(self.chunk_chars, other.chunk_chars),
            usage=self.usage or other.usage,
        )

    @property
    def stop_reason(self) -> str:
        if any(isinstance(block, ToolUseBlock) for block in self.blocks):
            return "tool_use"
        return "end_turn"


@dataclass(frozen=True)
class ApiError:
    """An HTTP error with the Anthropic error body, e.g. 429 rate_limit_error."""

    status: int
    message: str
    error_type: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Stall:
    """Send 200 and the SSE headers, then nothing for `seconds`, then close the connection."""

    seconds: float


@dataclass(frozen=True)
class Malformed:
    """Start a stream, then send a truncated event and invalid JSON, then close."""


Turn: TypeAlias = Reply | ApiError | Stall | Malformed

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_DEFAULT_ERROR_MESSAGES: dict[int, str] = {
    401: "invalid x-api-key",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


def text(reply: str) -> Reply:
    return Reply(blocks=(TextBlock(reply),))


def thinking(thought: str, *, signature: str = "") -> Reply:
    """A thinking block; add the answer: `thinking("hmm") + text("42")`."""
    return Reply(blocks=(ThinkingBlock(thought, signature),))


def tool_use(name: str, tool_input: Mapping[str, Any], *, id: str = "") -> Reply:
    """A tool call (stop_reason `tool_use`); several calls: `tool_use(…) + tool_use(…)`."""
    return Reply(blocks=(ToolUseBlock(name, dict(tool_input), id),))


def error(status: int, message: str | None = None, *, retry_after: float | None = None) -> ApiError:
    """An API error; 429 says `retry-after: 1` unless told otherwise."""
    if status == 429 and retry_after is None:
        retry_after = 1
    return ApiError(
        status=status,
        message=message or _DEFAULT_ERROR_MESSAGES.get(status, "Error"),
        error_type=ERROR_TYPES.get(status, "api_error"),
        retry_after=retry_after,
    )


def slow(reply: str, delay_per_chunk: float = 0.05, *, chunk_chars: int = 8) -> Reply:
    """A text reply streamed in small pieces, waiting `delay_per_chunk` before each one."""
    return Reply(blocks=(TextBlock(reply),), chunk_delay=delay_per_chunk, chunk_chars=chunk_chars)


def stall(seconds: float) -> Stall:
    return Stall(seconds)


def malformed() -> Malformed:
    return Malformed()


@dataclass
class Script:
    """Turns for the main conversation, and separately for sub-agents (Agent tool).

    `by_prompt` answers a main request by what its last user message says instead of by its
    place in line: a request whose last user message contains one of its keys gets that
    key's turn (the first key found, in order), every time — a retry of the request included
    — and consumes nothing. Many CLIs at once (a load test) each get their own reply that way,
    whatever order their requests arrive in; other requests take `turns` in order."""

    turns: list[Turn] = field(default_factory=list)
    subagent_turns: list[Turn] = field(default_factory=list)
    by_prompt: dict[str, Turn] = field(default_factory=dict)


# --- scripts as JSON (for `pocketcode dev fake-model --script FILE`) ------------------------


def turn_from_json(data: Any) -> Turn:
    """Parse one turn: {"type": "text" | "thinking" | "tool_use" | "reply" | "error" | "slow"
    | "stall" | "malformed", …}. A "reply" holds "blocks" of text/thinking/tool_use."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise InvalidInput(f'a turn must be an object with a "type": {data!r}')
    kind = data["type"]
    try:
        if kind in ("text", "thinking", "tool_use"):
            return Reply(blocks=(_block_from_json(data),), usage=_usage_from_json(data))
        if kind == "reply":
            return Reply(
                blocks=tuple(_block_from_json(block) for block in data["blocks"]),
                chunk_delay=float(data.get("chunk_delay", 0.0)),
                chunk_chars=int(data.get("chunk_chars", 48)),
                usage=_usage_from_json(data),
            )
        if kind == "slow":
            return slow(
                str(data["text"]),
                float(data.get("delay_per_chunk", 0.05)),
                chunk_chars=int(data.get("chunk_chars", 8)),
            )
        if kind == "error":
            retry_after = data.get("retry_after")
            return error(
                int(data["status"]),
                data.get("message"),
                retry_after=None if retry_after is None else float(retry_after),
            )
        if kind == "stall":
            return stall(float(data["seconds"]))
        if kind == "malformed":
            return malformed()
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid {kind!r} turn {data!r}: {exc!r}") from exc
    raise InvalidInput(f"unknown turn type {kind!r}")


def _block_from_json(data: Any) -> Block:
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "text":
        return TextBlock(str(data["text"]))
    if kind == "thinking":
        return ThinkingBlock(str(data["thinking"]), str(data.get("signature", "")))
    if kind == "tool_use":
        tool_input = data.get("input", {})
        if not isinstance(tool_input, dict):
            raise TypeError("tool_use input must be an object")
        return ToolUseBlock(str(data["name"]), tool_input, str(data.get("id", "")))
    raise ValueError(f"unknown block {data!r}")


def _usage_from_json(data: dict[str, Any]) -> Usage | None:
    usage = data.get("usage")
    if usage is None:
        return None
    return Usage(
        input_tokens=int(usage["input_tokens"]),
        output_tokens=int(usage["output_tokens"]),
        cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens", 0)),
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens", 0)),
    )


def turn_to_json(turn: Turn) -> dict[str, Any]:
    """The inverse of `turn_from_json`."""
    if isinstance(turn, ApiError):
        return {
            "type": "error",
            "status": turn.status,
            "message": turn.message,
            "retry_after": turn.retry_after,
        }
    if isinstance(turn, Stall):
        return {"type": "stall", "seconds": turn.seconds}
    if isinstance(turn, Malformed):
        return {"type": "malformed"}
    data: dict[str, Any] = {
        "type": "reply",
        "blocks": [_block_to_json(block) for block in turn.blocks],
        "chunk_delay": turn.chunk_delay,
        "chunk_chars": turn.chunk_chars,
    }
    if turn.usage is not None:
        data["usage"] = turn.usage.as_json()
    return data


def _block_to_json(block: Block) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    return {"type": "tool_use", "name": block.name, "input": dict(block.input), "id": block.id}


_SCRIPT_KEYS = {"turns", "subagent_turns", "by_prompt"}
_SCRIPT_SHAPE = (
    'a script is a list of turns or {"turns": [...], "subagent_turns": [...], '
    '"by_prompt": {"text in the prompt": turn, ...}}'
)


def script_from_json(data: Any) -> Script:
    """A list of turns, or {"turns": [...], "subagent_turns": [...], "by_prompt": {...}}."""
    if isinstance(data, list):
        return Script(turns=[turn_from_json(item) for item in data])
    if isinstance(data, dict) and set(data) <= _SCRIPT_KEYS:
        turns = data.get("turns", [])
        subagent_turns = data.get("subagent_turns", [])
        by_prompt = data.get("by_prompt", {})
        if (
            isinstance(turns, list)
            and isinstance(subagent_turns, list)
            and isinstance(by_prompt, dict)
            and all(isinstance(key, str) and key for key in by_prompt)
        ):
            return Script(
                turns=[turn_from_json(item) for item in turns],
                subagent_turns=[turn_from_json(item) for item in subagent_turns],
                by_prompt={key: turn_from_json(turn) for key, turn in by_prompt.items()},
            )
    raise InvalidInput(_SCRIPT_SHAPE)


def load_script(path: Path) -> Script:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read script {path}: {exc}") from exc
    return script_from_json(data)


def script_to_json(script: Script) -> dict[str, Any]:
    return {
        "turns": [turn_to_json(turn) for turn in script.turns],
        "subagent_turns": [turn_to_json(turn) for turn in script.subagent_turns],
        "by_prompt": {key: turn_to_json(turn) for key, turn in script.by_prompt.items()},
    }


# --- what the CLI sent ---------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    """Parsed JSON, or None when the body was empty or not JSON."""
    kind: RequestKind
    turn: Turn | None = None
    """The scripted turn that answered it; None for defaults and side requests."""
    received_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    """When the response ended (monotonic clock); None while it is still being sent."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages", []) if isinstance(self.body, dict) else []
        return [message for message in messages if isinstance(message, dict)]

    def content_blocks(self, block_type: str) -> list[dict[str, Any]]:
        """Every content block of this type in the request's messages, in order."""
        return [
            block
            for message in self.messages
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == block_type
        ]

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        return self.content_blocks("tool_result")

    @property
    def texts(self) -> list[str]:
        """Every text of the user and assistant messages, in order. (The CLI also sends
        `system`-role messages, e.g. the environment description, after the prompt.)"""
        return [
            text
            for message in self.messages
            if message.get("role") in ("user", "assistant")
            for text in _texts_of(message)
        ]

    @property
    def last_user_text(self) -> str:
        """The texts of the last user message, one per line ("" when it has none: a message
        of tool results)."""
        users = [message for message in self.messages if message.get("role") == "user"]
        return "\n".join(_texts_of(users[-1])) if users else ""


def _texts_of(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        ]
    return []


def classify_request(method: str, path: str, headers: Mapping[str, str], body: Any) -> RequestKind:
    """Which queue a request takes its turn from; see the module docstring for the evidence."""
    if path == "/v1/messages/count_tokens":
        return "count_tokens"
    if method != "POST" or path != "/v1/messages" or not isinstance(body, dict):
        return "other"
    if "tools" not in body or _is_compaction(body):
        return "side"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens < SIDE_REQUEST_MAX_TOKENS:
        return "side"
    if headers.get("x-claude-code-agent-id"):
        return "subagent"
    return "main"


def _is_compaction(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return False
    content = messages[-1].get("content")
    if isinstance(content, list):
        content = next(
            (b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"),
            None,
        )
    return isinstance(content, str) and content.startswith(COMPACTION_PREFIX)


# --- the server ----------------------------------------------------------------------------

_BASE62 = string.digits + string.ascii_letters


def _new_id(prefix: str) -> str:
    """Ids shaped like the real ones: msg_01 / toolu_01 / req_011 + base62."""
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(22))


def _estimate_tokens(value: Any) -> int:
    """About four characters per token, as for English text and JSON."""
    if value is None:
        return 0
    serialized = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return max(1, len(serialized) // 4)


def _chunks(value: str, size: int) -> list[str]:
    size = max(1, size)
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class _State:
    """Everything the ASGI app shares with the thread that owns the server."""

    def __init__(
        self, script: Script, on_request: Callable[[RecordedRequest], None] | None
    ) -> None:
        self.lock = threading.Lock()
        self.turns: deque[Turn] = deque(script.turns)
        self.subagent_turns: deque[Turn] = deque(script.subagent_turns)
        self.by_prompt = dict(script.by_prompt)
        self.requests: list[RecordedRequest] = []
        self.stopping = threading.Event()
        self.on_request = on_request
        self._cached_tokens: dict[tuple[str, str], int] = {}

    def next_turn(self, record: RecordedRequest) -> Turn | None:
        if record.kind == "main" and self.by_prompt:
            said = record.last_user_text
            for key, turn in self.by_prompt.items():
                if key in said:
                    return turn
        with self.lock:
            queue = {"main": self.turns, "subagent": self.subagent_turns}.get(record.kind)
            return queue.popleft() if queue else None

    def usage_for(self, headers: Mapping[str, str], body: dict[str, Any], output: Any) -> Usage:
        """Prompt caching as the CLI uses it: it marks the end of the conversation as a cache
        breakpoint, so each request reads what the previous one of its conversation wrote."""
        total = sum(_estimate_tokens(body.get(key)) for key in ("system", "tools", "messages"))
        key = (
            headers.get("x-claude-code-session-id", ""),
            headers.get("x-claude-code-agent-id", ""),
        )
        uncached = min(3, total)
        with self.lock:
            cache_read = min(self._cached_tokens.get(key, 0), total - uncached)
            self._cached_tokens[key] = total
        return Usage(
            input_tokens=uncached,
            output_tokens=_estimate_tokens(output),
            cache_creation_input_tokens=total - uncached - cache_read,
            cache_read_input_tokens=cache_read,
        )

    async def pause(self, seconds: float) -> bool:
        """Sleep, waking early when the server stops; False means stop streaming."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(remaining, 0.05))
        return False


def _create_app(state: _State) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def finish(record: RecordedRequest) -> None:
        record.finished_at = time.monotonic()

    async def tracked(
        record: RecordedRequest, events: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in events:
                yield chunk
        finally:
            finish(record)

    def stream(record: RecordedRequest, events: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(
            tracked(record, events),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "request-id": _new_id("req_011")},
        )

    def answer(record: RecordedRequest, response: Response) -> Response:
        finish(record)
        return response

    async def handle(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = dict(request.headers)
        path = request.url.path
        kind = classify_request(request.method, path, headers, body)
        record = RecordedRequest(request.method, path, request.url.query, headers, body, kind)
        state.requests.append(record)
        if state.on_request is not None:
            state.on_request(record)

        if kind == "count_tokens":
            tokens = sum(_estimate_tokens(body.get(k)) for k in ("system", "tools", "messages"))
            return answer(record, JSONResponse({"input_tokens": tokens}))
        if kind == "other":
            if path == "/api/hello":  # the CLI's connectivity check
                return answer(record, Response(status_code=200))
            return answer(record, _error_response(error(404, f"Not found: {path}")))

        turn = state.next_turn(record)
        record.turn = turn
        if turn is None:
            turn = text(_default_text(kind, body))
        if isinstance(turn, ApiError):
            return answer(record, _error_response(turn))
        if isinstance(turn, Stall):
            return stream(record, _stalled(state, turn))
        if isinstance(turn, Malformed):
            return stream(record, _malformed(body))

        reply = _with_ids(turn)
        usage = reply.usage or state.usage_for(
            headers, body, [_block_json(b) for b in reply.blocks]
        )
        if body.get("stream"):
            return stream(record, _streamed(state, reply, body.get("model"), usage))
        message = _message_json(reply, body.get("model"), usage)
        message["content"] = [_block_json(block) for block in reply.blocks]
        message["stop_reason"] = reply.stop_reason
        return answer(record, JSONResponse(message, headers={"request-id": _new_id("req_011")}))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


def _default_text(kind: RequestKind, body: dict[str, Any]) -> str:
    if kind == "subagent":
        return SUBAGENT_EXHAUSTED_TEXT
    if kind == "main":
        return EXHAUSTED_TEXT
    if _is_compaction(body):
        return COMPACTION_SUMMARY
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and output_config.get("format"):
        return json.dumps({"title": "Fake model session"})
    return SIDE_REQUEST_TEXT


def _error_response(turn: ApiError) -> Any:
    from starlette.responses import JSONResponse

    request_id = _new_id("req_011")
    headers = {
        "request-id": request_id,
        "x-should-retry": "true"
        if turn.status in (408, 409, 429) or turn.status >= 500
        else "false",
    }
    if turn.retry_after is not None:
        headers["retry-after"] = f"{turn.retry_after:g}"
    body = {
        "type": "error",
        "error": {"type": turn.error_type, "message": turn.message},
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=turn.status, headers=headers)


def _with_ids(reply: Reply) -> Reply:
    blocks: list[Block] = []
    for block in reply.blocks:
        if isinstance(block, ToolUseBlock) and not block.id:
            block = ToolUseBlock(block.name, block.input, _new_id("toolu_01"))
        elif isinstance(block, ThinkingBlock) and not block.signature:
            block = ThinkingBlock(block.thinking, secrets.token_urlsafe(48))
        blocks.append(block)
    return Reply(tuple(blocks), reply.chunk_delay, reply.chunk_chars, reply.usage)


def _block_json(block: Block) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}


def _message_json(reply: Reply, model: Any, usage: Usage) -> dict[str, Any]:
    return {
        "id": _new_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model if isinstance(model, str) else "claude-fake",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage.as_json(), "service_tier": "standard"},
    }


async def _streamed(state: _State, reply: Reply, model: Any, usage: Usage) -> AsyncIterator[bytes]:
    """The event sequence of the real API: message_start, ping, per block start/deltas/stop,
    message_delta (stop_reason, final usage), message_stop."""
    message = _message_json(reply, model, usage)
    message["usage"]["output_tokens"] = 1
    yield _sse("message_start", {"type": "message_start", "message": message})
    yield _sse("ping", {"type": "ping"})
    for index, block in enumerate(reply.blocks):
        start: dict[str, Any]
        deltas: list[dict[str, Any]]
        if isinstance(block, TextBlock):
            start = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": part}
                for part in _chunks(block.text, reply.chunk_chars)
            ]
        elif isinstance(block, ThinkingBlock):
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": part}
                for part in _chunks(block.thinking, reply.chunk_chars)
            ]
            deltas.append({"type": "signature_delta", "signature": block.signature})
        else:
            start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in _chunks(json.dumps(dict(block.input)), reply.chunk_chars)
            ]
        yield _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        for delta in deltas:
            if reply.chunk_delay and not await state.pause(reply.chunk_delay):
                return
            yield _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": usage.as_json(),
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


async def _stalled(state: _State, turn: Stall) -> AsyncIterator[bytes]:
    await state.pause(turn.seconds)
    yield b""


async def _malformed(body: Any) -> AsyncIterator[bytes]:
    model = body.get("model") if isinstance(body, dict) else None
    message = _message_json(Reply(blocks=()), model, Usage(3, 1))
    yield _sse("message_start", {"type": "message_start", "message": message})
    yield _sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "del'
    yield b"\n\nevent: content_block_delta\ndata: }}not json{{\n\n"


class FakeModelServer(LoopbackServer):
    """The fake API served by uvicorn in a background thread, on 127.0.0.1 only.

    `requests` lists every request received, in order; `add_turns` appends to the script while
    the server runs. Use it as a context manager, or call `start()` and `stop()`.
    """

    _name = "fake model"

    def __init__(
        self,
        script: Script | Sequence[Turn] | None = None,
        *,
        port: int = 0,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        if script is None:
            script = Script()
        elif not isinstance(script, Script):
            script = Script(turns=list(script))
        self._state = _State(script, on_request)
        super().__init__(port=port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._state.requests)

    @property
    def main_requests(self) -> list[RecordedRequest]:
        """Requests of the main conversation, the ones that consume scripted turns."""
        return [request for request in self._state.requests if request.kind == "main"]

    @property
    def remaining_turns(self) -> int:
        with self._state.lock:
            return len(self._state.turns)

    def add_turns(self, *turns: Turn, subagent: bool = False) -> None:
        with self._state.lock:
            (self._state.subagent_turns if subagent else self._state.turns).extend(turns)

    def _app(self) -> Any:
        return _create_app(self._state)

    def _on_stop(self) -> None:
        self._state.stopping.set()


# --- running the real CLI against it -------------------------------------------------------


def offline_api_env(base_url: str, *, max_retries: int = 0) -> dict[str, str]:
    """The variables that point the CLI at `base_url` and stop every other network call."""
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
        # As root the CLI refuses bypassPermissions unless it is told it runs in a sandbox.
        "IS_SANDBOX": "1",
    }


def claude_cli_env(
    home: Path,
    base_url: str,
    *,
    max_retries: int = 0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A complete environment (nothing inherited but PATH) that keeps the real CLI offline and
    out of the developer's ~/.claude. Creates `home` and the CLI's temp dir inside it."""
    home.mkdir(parents=True, exist_ok=True)
    tmpdir = home / "claude-tmp"
    tmpdir.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", os.defpath),
        "CLAUDE_CODE_TMPDIR": str(tmpdir),
        **offline_api_env(base_url, max_retries=max_retries),
    }
    env.update(extra or {})
    return env
