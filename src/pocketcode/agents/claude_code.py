"""The Claude Code runner: one prompt → the real `claude` CLI (through claude-agent-sdk) →
`AgentEvent`s and a `RunOutcome`.

Process model (numbers measured with Claude Code 2.1.330 against the fake model):
- One live `ClaudeSDKClient` (one CLI process) per session, kept between prompts: a follow-up
  prompt answers in tens of milliseconds instead of paying a ~0.4 s start again. It is
  restarted with `--resume` when an option that only applies at start-up changes (cwd, model,
  permission mode, tools, max turns, system prompt, thinking budget, environment), closed
  after `idle_timeout` seconds unused (`close_idle`), and start-ups are throttled.
- The SDK runs its `cli_path` with the server's whole environment and in the server's process
  group. Our `cli_path` is therefore a tiny launcher (written into `work_dir`) that starts a
  new session (`setsid`) and execs the real CLI with only the variables the runner chose
  (`agent_environment`), so the server's secrets never reach the CLI or its tools, and the
  CLI's process group can be killed without touching the server. It also lowers the CLI's
  CPU priority (`nice`, inherited by every tool the agent runs, and the nice of the session's
  autogroup: with autogroup scheduling each session is a group that gets an equal share of the
  CPU whatever its processes' nice), so a busy agent — ten turns starting at once, a build it
  runs — leaves the CPU to the server first, and the live views stay live. Measured with ten
  turns starting at once (bench/api.md section 6): the group's nice is what takes the events'
  p99 from 77–80 to 27–33 ms on SQLite.
- Cancel: `interrupt()` first (the CLI stops in milliseconds, keeps the partial reply and stays
  usable); if the run has not ended after `cancel_grace`, SIGTERM/SIGKILL the CLI's process
  group, then kill the tool processes that live in sessions of their own, found by the marker
  variables in their environment (`processes.MARKER_*`).

Events: each stream-json line of the CLI becomes zero or more events (`events_for_line`).
Assistant and user lines carry one content block each here, and their `uuid` is the same as
in the JSONL transcript, so a message recovered from the transcript de-duplicates against
the one stored live. Per-API-call usage is stored on the first block of each API message id
only; the `result` message carries the turn's usage (the CLI's sum over its API calls), which
is what the `RunOutcome` reports. Sum usage over result rows or over assistant rows, never both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketcode.agents import processes
from pocketcode.agents.base import (
    AgentEvent,
    AskPermission,
    EmitEvent,
    EventKind,
    RunOutcome,
    RunRequest,
    RunStatus,
)
from pocketcode.domain.errors import InvalidInput
from pocketcode.domain.states import MessageType, Provider
from pocketcode.services.messages import NewMessage
from pocketcode.services.paths import resolve_inside_roots
from pocketcode.services.pricing import TokenUsage

if TYPE_CHECKING:
    from claude_agent_sdk import ClaudeSDKClient
    from claude_agent_sdk.types import (
        PermissionResultAllow,
        PermissionResultDeny,
        ToolPermissionContext,
    )

logger = logging.getLogger(__name__)

# --- the agent's environment -----------------------------------------------------------------

_PASSED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "TMPDIR",
        "IS_SANDBOX",
        # Gateways and proxies, and the CA bundles they often need.
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
_PASSED_PREFIXES = ("LC_", "ANTHROPIC_", "CLAUDE_")
# Set by a Claude Code (or an SDK) the server itself may run under; they describe that outer
# process, not ours.
_DROPPED_NAMES = frozenset(
    {
        "CLAUDECODE",
        "CLAUDE_PID",
        "CLAUDE_CODE_SESSION_ID",
        "CLAUDE_CODE_ENTRYPOINT",
        "CLAUDE_CODE_SSE_PORT",
        "CLAUDE_AGENT_SDK_VERSION",
    }
)
_ENV_KEEP = "POCKETCODE_ENV_KEEP"
# What the SDK itself adds to the CLI's environment (client protocol, not secrets).
_SDK_NAMES = (
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_AGENT_SDK_VERSION",
    "CLAUDE_CODE_SDK_READS_SESSION_STATE",
    "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING",
    "CLAUDE_AGENT_SDK_CLIENT_APP",
    "CLAUDE_AGENT_SDK_DERIVED_CLIENT_APP",
    "PWD",
)


def agent_environment(
    server_env: Mapping[str, str],
    request_env: Mapping[str, str],
    markers: Mapping[str, str],
) -> dict[str, str]:
    """The whole environment of an agent process: the harmless and the agent-specific
    variables of the server's environment, then the request's own, then our markers."""
    env = {
        name: value
        for name, value in server_env.items()
        if name not in _DROPPED_NAMES
        and (name in _PASSED_NAMES or name.startswith(_PASSED_PREFIXES))
    }
    env.update(request_env)
    env.update(markers)
    return env


_LAUNCHER_PY = '''\
"""Written by pocketcode: run the claude CLI in a session of its own, at a lower CPU
priority (nice +{nice}), with only the environment variables the runner chose (named in
{keep})."""
import os
import sys

CLI = {cli!r}
names = os.environ.get({keep!r}, "").split(",")
names += {sdk_names!r}
env = {{name: os.environ[name] for name in names if name and name in os.environ}}
os.setsid()
if {nice}:
    os.nice({nice})
    # With autogroup scheduling (most desktop kernels) a new session is a group of its own
    # that the CPU is shared between, whatever the nice of its processes: lower the group.
    # (Unprivileged, the kernel takes one such change per 0.1 s for the whole machine: when
    # it refuses, the runner sets it from the server once the CLI runs, without delaying it.)
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write("{nice}")
    except OSError:
        pass
try:
    os.execve(CLI, [CLI, *sys.argv[1:]], env)
except OSError as exc:
    sys.stderr.write(f"pocketcode launcher: cannot run {{CLI}}: {{exc}}\\n")
    sys.exit(127)
'''


def write_launcher(work_dir: Path, cli_path: Path, nice: int = 0) -> Path:
    """Write (once) the launcher for `cli_path` into `work_dir` and return its path; the CLI
    runs `nice` steps below the server's CPU priority (0: the same)."""
    if not 0 <= nice <= 19:
        raise ValueError("nice must be 0..19")
    source = _LAUNCHER_PY.format(
        cli=str(cli_path), keep=_ENV_KEEP, sdk_names=list(_SDK_NAMES), nice=nice
    )
    shell = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S {{script}} "$@"\n'
    digest = hashlib.sha256((source + shell + sys.executable).encode()).hexdigest()[:12]
    script = work_dir / f"claude-launch-{digest}.py"
    launcher = work_dir / f"claude-launch-{digest}"
    if launcher.is_file() and script.is_file():
        return launcher
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path, text, mode in (
        (script, source, 0o600),
        (launcher, shell.format(script=shlex.quote(str(script))), 0o700),
    ):
        # A name of its own per writer: two runners of one process (or two processes) that
        # write the same launcher at once must never write into one file, or one of them
        # execs a file the other still has open for writing (ETXTBSY) or finds it gone.
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    return launcher


def bundled_claude_path() -> Path:
    """The Claude Code executable shipped inside the installed claude_agent_sdk wheel."""
    import importlib.util

    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("claude_agent_sdk is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "_bundled" / "claude"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("claude_agent_sdk has no bundled claude executable")


def default_cli_path() -> Path:
    return bundled_claude_path()


# --- stream-json lines → events ------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(item.get("text", ""))
            for item in content
            if isinstance(item, dict) and item.get("type") == "text"
        )
    return ""


def _usage_fields(usage: Any) -> dict[str, int | None]:
    if not isinstance(usage, dict):
        return {}
    return {
        "input_tokens": _int(usage.get("input_tokens")),
        "output_tokens": _int(usage.get("output_tokens")),
        "cache_creation_tokens": _int(usage.get("cache_creation_input_tokens")),
        "cache_read_tokens": _int(usage.get("cache_read_input_tokens")),
    }


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


# Beside a tool_result block the CLI writes the tool's output again, structured for its
# terminal UI (`toolUseResult` in transcripts, `tool_use_result` in stream-json): for a Read
# the whole file, for an Edit the original file as well. Nothing here reads it, and it was a
# fifth to a half of a transcript's bytes: stored messages leave it out.
_TERMINAL_COPIES = ("toolUseResult", "tool_use_result")


def _blocks(line: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], str | None]]:
    """(block, raw, uuid) per content block: a line with several blocks is split, each part
    keeping the line's fields, its own block, and a uuid made unique with the block index."""
    message = line.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    line_uuid = line.get("uuid") if isinstance(line.get("uuid"), str) else None
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not isinstance(message, dict):
        return []
    blocks = [block for block in content if isinstance(block, dict)]
    if any(key in line for key in _TERMINAL_COPIES):
        line = {key: value for key, value in line.items() if key not in _TERMINAL_COPIES}
    if len(blocks) == 1:
        return [(blocks[0], line, line_uuid)]
    parts = []
    for index, block in enumerate(blocks):
        raw = {**line, "message": {**message, "content": [block]}, "blockIndex": index}
        part_uuid = line_uuid if index == 0 or line_uuid is None else f"{line_uuid}#{index}"
        parts.append((block, raw, part_uuid))
    return parts


def _system_text(line: dict[str, Any]) -> str:
    subtype = line.get("subtype")
    if subtype == "init":
        return (
            f"Claude Code {line.get('claude_code_version', '')} started (model {line.get('model')})"
        )
    if subtype == "api_retry":
        status = line.get("error_status")
        delay = _int(line.get("retry_delay_ms"))
        seconds = f"{delay / 1000:.1f} s" if delay is not None else "a moment"
        return (
            f"API error {status if status is not None else ''} ({line.get('error', 'error')}); "
            f"retrying in {seconds} (attempt {line.get('attempt')} of {line.get('max_retries')})"
        )
    if subtype == "compact_boundary":
        return "Conversation compacted"
    for key in ("summary", "description", "message", "content"):
        if isinstance(line.get(key), str):
            return str(line[key])
    return str(subtype or "")


# System lines that change many times a second or only say "requesting": not worth a row.
_UNSTORED_SYSTEM_SUBTYPES = frozenset({"status", "thinking_tokens", "session_state_changed"})


@dataclass
class LineContext:
    """What mapping a line needs to know beyond the line itself."""

    job_id: uuid.UUID | None = None
    usage_message_ids: set[str] = field(default_factory=set)
    """API message ids whose usage was already attached to a stored block."""
    stream_message_id: str | None = None
    run_cost_usd: Decimal | None = None
    """Set on the result line: this run's cost (the CLI's total is cumulative)."""


def events_for_line(line: dict[str, Any], context: LineContext) -> list[AgentEvent]:
    """The events for one stream-json line of the CLI (also usable on transcript lines)."""
    line_type = line.get("type")
    session = _str(line.get("session_id"))
    line_uuid = _str(line.get("uuid"))

    def message(**values: Any) -> AgentEvent:
        values.setdefault("provider_session_id", session)
        return AgentEvent(EventKind.MESSAGE, NewMessage(job_id=context.job_id, **values))

    if line_type == "stream_event":
        return _delta_events(line, context)
    if line_type == "assistant":
        api_message = _dict(line.get("message"))
        message_id = _str(api_message.get("id"))
        model = _str(api_message.get("model"))
        error_kind = _str(line.get("error"))
        events = []
        for block, raw, block_uuid in _blocks(line):
            block_type = str(block.get("type", "unknown"))
            usage: dict[str, int | None] = {}
            if message_id is not None and message_id not in context.usage_message_ids:
                context.usage_message_ids.add(message_id)
                usage = _usage_fields(api_message.get("usage"))
            if block_type == "text":
                text = str(block.get("text", ""))
            elif block_type == "thinking":
                text = str(block.get("thinking", ""))
            elif block_type in ("tool_use", "server_tool_use"):
                text = str(block.get("name", ""))
            else:
                text = _text_of([block])
            events.append(
                message(
                    type=MessageType.ERROR if error_kind else MessageType.ASSISTANT,
                    subtype=error_kind or block_type,
                    text=text,
                    raw=raw,
                    provider_message_uuid=block_uuid,
                    provider_message_id=message_id,
                    parent_tool_use_id=line.get("parent_tool_use_id"),
                    model=model,
                    **usage,
                )
            )
        return events
    if line_type == "user":
        events = []
        for block, raw, block_uuid in _blocks(line):
            if block.get("type") == "tool_result":
                events.append(
                    message(
                        type=MessageType.USER,
                        subtype="tool_result",
                        text=_text_of(block.get("content")),
                        raw=raw,
                        provider_message_uuid=block_uuid,
                        parent_tool_use_id=block.get("tool_use_id"),
                    )
                )
            else:
                events.append(
                    message(
                        type=MessageType.USER,
                        subtype=str(block.get("type", "text")),
                        text=_text_of([block]),
                        raw=raw,
                        provider_message_uuid=block_uuid,
                        parent_tool_use_id=line.get("parent_tool_use_id"),
                    )
                )
        return events
    if line_type == "result":
        usage_fields = _usage_fields(line.get("usage"))
        since = line.get("model_usage_since_last_result") or line.get("modelUsage")
        model = next(iter(since), None) if isinstance(since, dict) else None
        text = _str(line.get("result")) or ""
        if not text and line.get("is_error"):
            text = "; ".join(str(error) for error in line.get("errors") or [])
        return [
            message(
                type=MessageType.RESULT,
                subtype=str(line.get("subtype", "")) or None,
                text=text,
                raw=line,
                provider_message_uuid=line_uuid,
                model=model,
                cost_usd=context.run_cost_usd,
                **usage_fields,
            )
        ]
    if line_type == "system":
        if line.get("subtype") in _UNSTORED_SYSTEM_SUBTYPES:
            return []
        model = line.get("model") if isinstance(line.get("model"), str) else None
        return [
            message(
                type=MessageType.SYSTEM,
                subtype=line.get("subtype") if isinstance(line.get("subtype"), str) else None,
                text=_system_text(line),
                raw=line,
                provider_message_uuid=line_uuid,
                model=model,
            )
        ]
    # rate_limit_event, conversation_reset and types newer than this code: keep them.
    return [
        message(
            type=MessageType.SYSTEM,
            subtype=str(line_type),
            text="",
            raw=line,
            provider_message_uuid=line_uuid,
        )
    ]


def _delta_events(line: dict[str, Any], context: LineContext) -> list[AgentEvent]:
    event = line.get("event")
    if not isinstance(event, dict):
        return []
    if event.get("type") == "message_start":
        started = event.get("message")
        if isinstance(started, dict) and isinstance(started.get("id"), str):
            context.stream_message_id = started["id"]
        return []
    if event.get("type") != "content_block_delta":
        return []
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return []
    if delta.get("type") == "text_delta":
        block_type, text = "text", delta.get("text")
    elif delta.get("type") == "thinking_delta":
        block_type, text = "thinking", delta.get("thinking")
    else:
        return []
    message_id = line.get("api_message_id") or context.stream_message_id
    payload: dict[str, Any] = {
        "text": str(text or ""),
        "messageId": message_id,
        "index": event.get("index"),
        "blockType": block_type,
    }
    if line.get("parent_tool_use_id"):
        payload["parentToolUseId"] = line["parent_tool_use_id"]
    return [AgentEvent(EventKind.DELTA, delta=payload)]


# --- outcomes ----------------------------------------------------------------------------------

_API_ERRORS: dict[int, tuple[str, str]] = {
    401: ("api_401", "The API rejected the credentials"),
    403: ("api_403", "The API refused the request"),
    429: ("api_429", "Rate limited by the API"),
    500: ("api_500", "The API had an internal error"),
    529: ("api_overloaded", "The API is overloaded"),
}


def _result_error(line: dict[str, Any]) -> tuple[str, str]:
    """(error_code, readable message) for a result line with `is_error`."""
    detail = line.get("result") if isinstance(line.get("result"), str) else ""
    errors = "; ".join(str(error) for error in line.get("errors") or [])
    detail = (detail or errors).strip().removeprefix("API Error: ")
    status = _int(line.get("api_error_status"))
    if status is not None:
        code, text = _API_ERRORS.get(status, (f"api_{status}", "The API returned an error"))
        return code, f"{text} (HTTP {status}): {detail or 'no details'}"
    subtype = str(line.get("subtype", ""))
    if subtype == "error_max_turns":
        return "max_turns", "Stopped: the maximum number of turns was reached."
    if subtype.startswith("error_max_budget"):
        return "max_budget", "Stopped: the cost budget was reached."
    if line.get("terminal_reason") == "api_error":
        return "api_error", f"The API call failed: {detail or 'no details'}"
    return "agent_error", f"Claude Code reported an error: {detail or subtype or 'no details'}"


def _run_cost(line: dict[str, Any], previous_total: Decimal | None) -> Decimal | None:
    since = line.get("model_usage_since_last_result")
    if isinstance(since, dict):
        costs = [
            _decimal(usage.get("costUSD")) for usage in since.values() if isinstance(usage, dict)
        ]
        if costs and all(cost is not None for cost in costs):
            return sum((cost for cost in costs if cost is not None), Decimal(0))
    total = _decimal(line.get("total_cost_usd"))
    if total is not None and previous_total is not None:
        return total - previous_total
    return None


class _RunFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _start_failure(exc: Exception, stderr_tail: deque[str], resume: str | None) -> _RunFailed:
    from claude_agent_sdk import CLIJSONDecodeError, CLINotFoundError, ResultError

    tail = " | ".join(stderr_tail)
    stderr = f" — stderr: {tail[-1500:]}" if tail else ""
    if isinstance(exc, ResultError) and resume is not None:
        # The CLI refused the session before any turn, e.g. "No conversation found with
        # session ID" (another config dir or cwd, or a transcript deleted after 30 days).
        detail = str(exc).removeprefix("Claude Code returned an error result: ")
        return _RunFailed(
            "resume_failed", f"Claude Code could not resume session {resume}: {detail}"
        )
    if isinstance(exc, CLIJSONDecodeError):
        return _RunFailed(
            "cli_protocol_error",
            f"Claude Code printed output pocketcode cannot read: {str(exc)[:300]}{stderr}",
        )
    if isinstance(exc, CLINotFoundError):
        return _RunFailed("cli_missing", f"The Claude Code CLI was not found: {exc}")
    return _RunFailed("cli_crashed", f"Claude Code failed to start: {exc}{stderr}")


# --- claude_agent_sdk internals ------------------------------------------------------------
# The two places the runner reads private SDK state (checked with claude-agent-sdk 0.2.187).
# A newer SDK that moves them fails every run with `sdk_incompatible`, loudly, instead of
# running CLI processes we cannot see or kill.


def _sdk_cli_pid(client: ClaudeSDKClient) -> int:
    """The pid of the process the SDK spawned (our launcher, which execs the CLI in place)."""
    process = getattr(getattr(client, "_transport", None), "_process", None)
    pid = getattr(process, "pid", None)
    if not isinstance(pid, int):
        raise _RunFailed(
            "sdk_incompatible",
            "This claude-agent-sdk does not expose its CLI process where pocketcode expects it "
            "(client._transport._process); the runner needs updating.",
        )
    return pid


def _sdk_raw_messages(client: ClaudeSDKClient) -> AsyncIterator[dict[str, Any]]:
    """The CLI's stream-json lines as dicts (the public iterator drops fields we store)."""
    query = getattr(client, "_query", None)
    receive = getattr(query, "receive_messages", None)
    if receive is None:
        raise _RunFailed(
            "sdk_incompatible",
            "This claude-agent-sdk has no client._query.receive_messages(); "
            "the runner needs updating.",
        )
    messages: AsyncIterator[dict[str, Any]] = receive()
    return messages


# --- the runner --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StartOptions:
    """The options a CLI process takes at start-up: a change means a restart (with resume)."""

    cwd: str
    model: str | None
    permission_mode: str | None
    allowed_tools: tuple[str, ...]
    disallowed_tools: tuple[str, ...]
    max_turns: int | None
    append_system_prompt: str | None
    max_thinking_tokens: int | None
    env: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, request: RunRequest) -> _StartOptions:
        return cls(
            cwd=str(request.cwd),
            model=request.model,
            permission_mode=str(request.permission_mode) if request.permission_mode else None,
            allowed_tools=request.allowed_tools,
            disallowed_tools=request.disallowed_tools,
            max_turns=request.max_turns,
            append_system_prompt=request.append_system_prompt,
            max_thinking_tokens=request.max_thinking_tokens,
            env=tuple(sorted(request.env.items())),
        )


@dataclass(eq=False)
class _PermissionRelay:
    """The SDK's can_use_tool callback is fixed at connect; the asker changes with each run."""

    ask: AskPermission | None = None

    async def __call__(
        self, tool_name: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        from claude_agent_sdk.types import PermissionResultAllow, PermissionResultDeny

        if self.ask is None:
            return PermissionResultDeny(message="No one is there to approve this tool use.")
        try:
            decision = await self.ask(tool_name, tool_input, context.tool_use_id)
        except Exception:
            logger.exception("permission callback failed for tool %s", tool_name)
            return PermissionResultDeny(message="The approval could not be obtained.")
        if decision.allow:
            return PermissionResultAllow(updated_input=decision.updated_input)
        return PermissionResultDeny(message=decision.message or "The user denied this tool use.")


@dataclass(eq=False)
class _LiveClient:
    session_id: uuid.UUID
    client: ClaudeSDKClient
    options: _StartOptions
    provider_session_id: str
    pid: int
    create_time: float
    messages: AsyncIterator[dict[str, Any]]
    relay: _PermissionRelay
    stderr_tail: deque[str]
    last_used: float = field(default_factory=time.monotonic)
    busy: bool = False
    last_total_cost: Decimal | None = None
    context: LineContext = field(default_factory=LineContext)
    closing: asyncio.Future[None] | None = None

    def is_alive(self) -> bool:
        return processes.is_same_process(self.pid, self.create_time)


@dataclass(eq=False)
class _ActiveRun:
    request: RunRequest
    live: _LiveClient | None = None
    cancel_requested: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ClaudeCodeRunner:
    """`AgentRunner` for Claude Code. See the module docstring for the process model."""

    provider = Provider.CLAUDE_CODE

    def __init__(
        self,
        *,
        cli_path: Path | None = None,
        idle_timeout: float = 600.0,
        max_concurrent_starts: int = 2,
        cancel_grace: float = 2.0,
        instance_id: str | None = None,
        work_dir: Path | None = None,
        config_dir: Path | None = None,
        server_env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        nice: int = 0,
        allowed_roots: Sequence[Path] | None = None,
    ) -> None:
        self._cli_path = cli_path
        # Runs only in a folder inside these (the server's POCKETCODE_ALLOWED_ROOTS); None:
        # anywhere. A session imported from a transcript may name any folder.
        self._allowed_roots = allowed_roots
        self._nice = nice
        self._idle_timeout = idle_timeout
        self._cancel_grace = cancel_grace
        self._start_timeout = start_timeout
        self.instance_id = instance_id or f"pocketcode-{uuid.uuid4().hex[:12]}"
        self._work_dir = work_dir
        self._config_dir = config_dir
        self._server_env = server_env
        self._start_slots = asyncio.Semaphore(max_concurrent_starts)
        self._background: set[asyncio.Task[None]] = set()
        self._live: dict[uuid.UUID, _LiveClient] = {}
        self._runs: dict[uuid.UUID, _ActiveRun] = {}

    # -- the protocol --

    async def run(
        self, request: RunRequest, emit: EmitEvent, ask_permission: AskPermission
    ) -> RunOutcome:
        if request.session_id in self._runs:
            return self._failed(request, "busy", "A run is already active for this session.")
        active = _ActiveRun(request)
        self._runs[request.session_id] = active
        try:
            return await self._run(active, emit, ask_permission)
        except _RunFailed as failure:
            await self._discard(active.live)
            if active.cancel_requested:
                return self._cancelled(active)
            return self._failed(request, failure.code, failure.message, active.live)
        except Exception as exc:
            # Not an agent failure we know of: still an outcome, never an exception.
            logger.exception("claude run failed (session %s)", request.session_id)
            await self._discard(active.live)
            if active.cancel_requested:
                return self._cancelled(active)
            return self._failed(request, "runner_error", f"Unexpected runner error: {exc!r}")
        except BaseException:
            # Cancelled by the caller (or the emit callback raised a BaseException): the CLI
            # is mid-turn and cannot be trusted with the next prompt.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._discard(active.live))
            raise
        finally:
            if active.live is not None:
                active.live.busy = False
                active.live.relay.ask = None
                active.live.last_used = time.monotonic()
            active.done.set()
            self._runs.pop(request.session_id, None)

    async def cancel(self, session_id: uuid.UUID) -> None:
        active = self._runs.get(session_id)
        if active is None:
            return
        active.cancel_requested = True
        deadline = time.monotonic() + self._cancel_grace
        live = active.live
        if live is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(live.client.interrupt(), self._cancel_grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(active.done.wait(), max(0.0, deadline - time.monotonic()))
            return
        logger.info("run of session %s ignored the interrupt; killing it", session_id)
        await self._kill_session_processes(session_id, active.live, keep_cli=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(active.done.wait(), 10)

    async def close_idle(self) -> int:
        now = time.monotonic()
        idle = [
            live
            for live in list(self._live.values())
            if not live.busy and now - live.last_used > self._idle_timeout
        ]
        for live in idle:
            await self._discard(live)
        return len(idle)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        for active in list(self._runs.values()):
            active.cancel_requested = True
        await asyncio.gather(
            *(self._discard(live) for live in list(self._live.values())),
            return_exceptions=True,
        )
        for active in list(self._runs.values()):
            await self._kill_session_processes(active.request.session_id, None, keep_cli=False)

    # -- introspection (tests, status pages) --

    def live_pid(self, session_id: uuid.UUID) -> int | None:
        live = self._live.get(session_id)
        return live.pid if live is not None else None

    @property
    def live_count(self) -> int:
        return len(self._live)

    # -- one run --

    async def _run(
        self, active: _ActiveRun, emit: EmitEvent, ask_permission: AskPermission
    ) -> RunOutcome:
        request = active.request
        cli = self._cli_path if self._cli_path is not None else default_cli_path()
        if not (cli.is_file() and os.access(cli, os.X_OK)):
            raise _RunFailed("cli_missing", f"The Claude Code CLI was not found at {cli}.")
        if not request.cwd.is_dir():
            raise _RunFailed("cwd_missing", f"The project folder {request.cwd} does not exist.")
        if self._allowed_roots is not None:
            try:
                resolve_inside_roots(str(request.cwd), self._allowed_roots)
            except InvalidInput:
                raise _RunFailed(
                    "cwd_outside_roots",
                    f"The project folder {request.cwd} is outside the folders this server may "
                    "work in (POCKETCODE_ALLOWED_ROOTS); add it there to run prompts in it.",
                ) from None
        live = await self._client_for(active, cli)
        active.live = live
        live.busy = True
        live.relay.ask = ask_permission
        # Per run: message ids never span two turns, so the seen-ids set stays small.
        live.context = LineContext(job_id=request.job_id)
        await emit(
            AgentEvent(
                EventKind.PROCESS,
                pid=live.pid,
                create_time=live.create_time,
                provider_session_id=live.provider_session_id,
            )
        )
        if active.cancel_requested:
            return self._cancelled(active)
        try:
            await live.client.query(request.prompt)
        except Exception as exc:
            raise _RunFailed("cli_crashed", self._crash_message(live, exc)) from exc
        return await self._consume(active, live, emit)

    async def _consume(self, active: _ActiveRun, live: _LiveClient, emit: EmitEvent) -> RunOutcome:
        from claude_agent_sdk import CLIJSONDecodeError

        while True:
            try:
                line = await anext(live.messages)
            except StopAsyncIteration:
                await self._discard(live)
                if active.cancel_requested:
                    return self._cancelled(active)
                raise _RunFailed(
                    "cli_crashed",
                    self._crash_message(live, None, "exited before finishing its answer"),
                ) from None
            except CLIJSONDecodeError as exc:
                await self._discard(live)
                if active.cancel_requested:
                    return self._cancelled(active)
                raise _RunFailed(
                    "cli_protocol_error",
                    f"Claude Code printed output pocketcode cannot read: {str(exc)[:300]}",
                ) from exc
            except Exception as exc:
                await self._discard(live)
                if active.cancel_requested:
                    return self._cancelled(active)
                raise _RunFailed("cli_crashed", self._crash_message(live, exc)) from exc
            if line.get("type") == "result":
                live.context.run_cost_usd = _run_cost(line, live.last_total_cost)
            for event in events_for_line(line, live.context):
                await emit(event)
            if line.get("type") == "result":
                return await self._finish(active, live, line)

    async def _finish(
        self, active: _ActiveRun, live: _LiveClient, line: dict[str, Any]
    ) -> RunOutcome:
        total = _decimal(line.get("total_cost_usd"))
        run_cost = live.context.run_cost_usd
        live.last_total_cost = total
        usage = _usage_fields(line.get("usage"))
        since = line.get("model_usage_since_last_result")
        model = next(iter(since), None) if isinstance(since, dict) and since else None
        common: dict[str, Any] = {
            "provider_session_id": live.provider_session_id,
            "usage": TokenUsage(**{name: value or 0 for name, value in usage.items()}),
            "model": model or live.options.model,
            "cli_cost_usd": run_cost,
            "cli_total_cost_usd": total,
            "num_turns": _int(line.get("num_turns")),
            "duration_ms": _int(line.get("duration_ms")),
        }
        reason = str(line.get("terminal_reason") or "")
        if active.cancel_requested or reason.startswith("aborted"):
            # The CLI survives an interrupt, but a tool command it started may not have.
            await self._kill_session_processes(live.session_id, live, keep_cli=True)
            return RunOutcome(RunStatus.CANCELLED, **common, error_code="cancelled")
        if line.get("is_error"):
            code, message = _result_error(line)
            await self._discard(live)
            return RunOutcome(RunStatus.FAILED, **common, error=message, error_code=code)
        return RunOutcome(RunStatus.COMPLETED, **common)

    # -- live clients --

    async def _client_for(self, active: _ActiveRun, cli: Path) -> _LiveClient:
        request = active.request
        options = _StartOptions.of(request)
        live = self._live.get(request.session_id)
        if live is not None:
            if (
                live.options == options
                and request.resume_provider_session_id == live.provider_session_id
                and live.is_alive()
            ):
                return live
            await self._discard(live)
        async with self._start_slots:
            if active.cancel_requested:
                raise _RunFailed("cancelled", "Cancelled before the agent started.")
            live = await self._start(request, options, cli)
        self._live[request.session_id] = live
        return live

    async def _start(self, request: RunRequest, options: _StartOptions, cli: Path) -> _LiveClient:
        from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient

        work_dir = self._ensure_work_dir()
        launcher = await asyncio.to_thread(write_launcher, work_dir, cli, self._nice)
        tmpdir = work_dir / "claude-tmp"
        tmpdir.mkdir(mode=0o700, exist_ok=True)
        base: dict[str, str] = {"CLAUDE_CODE_TMPDIR": str(tmpdir)}
        if self._config_dir is not None:
            base["CLAUDE_CONFIG_DIR"] = str(self._config_dir)
        server_env = self._server_env if self._server_env is not None else os.environ
        env = agent_environment(
            {**server_env, **base},
            request.env,
            {
                processes.MARKER_INSTANCE: self.instance_id,
                processes.MARKER_JOB_ID: str(request.job_id),
                processes.MARKER_SESSION_ID: str(request.session_id),
            },
        )
        env[_ENV_KEEP] = ",".join(sorted(env))
        resume = request.resume_provider_session_id
        provider_session_id = resume or request.new_provider_session_id
        system_prompt: dict[str, str] = {"type": "preset", "preset": "claude_code"}
        if request.append_system_prompt:
            system_prompt["append"] = request.append_system_prompt
        stderr_tail: deque[str] = deque(maxlen=40)
        relay = _PermissionRelay()
        sdk_options = ClaudeAgentOptions(
            cli_path=launcher,
            cwd=str(request.cwd),
            env=env,
            resume=resume,
            session_id=None if resume else request.new_provider_session_id,
            model=request.model,
            permission_mode=options.permission_mode,  # type: ignore[arg-type]
            allowed_tools=list(request.allowed_tools),
            disallowed_tools=list(request.disallowed_tools),
            max_turns=request.max_turns,
            system_prompt=system_prompt,  # type: ignore[arg-type]
            max_thinking_tokens=request.max_thinking_tokens,
            include_partial_messages=True,
            # bypassPermissions never asks (and the SDK warns when both are set).
            can_use_tool=None if options.permission_mode == "bypassPermissions" else relay,
            stderr=stderr_tail.append,
        )
        client = ClaudeSDKClient(sdk_options)
        started = time.monotonic()
        try:
            await asyncio.wait_for(client.connect(), self._start_timeout)
        except TimeoutError:
            await self._kill_session_processes(request.session_id, None, keep_cli=False)
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise _RunFailed(
                "cli_start_timeout",
                f"Claude Code did not start within {self._start_timeout:g} s.",
            ) from None
        except Exception as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise _start_failure(exc, stderr_tail, resume) from exc
        try:
            pid = _sdk_cli_pid(client)
            messages = _sdk_raw_messages(client)
        except _RunFailed:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        create_time = await asyncio.to_thread(processes.process_create_time, pid)
        if self._nice and processes.autogroup_nice(pid) not in (None, self._nice):
            task = asyncio.create_task(processes.lower_autogroup(pid, self._nice))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        logger.info(
            "started claude (session %s, pid %s) in %.0f ms",
            request.session_id,
            pid,
            (time.monotonic() - started) * 1000,
        )
        return _LiveClient(
            session_id=request.session_id,
            client=client,
            options=options,
            provider_session_id=provider_session_id,
            pid=pid,
            create_time=create_time if create_time is not None else 0.0,
            messages=messages,
            relay=relay,
            stderr_tail=stderr_tail,
        )

    async def _discard(self, live: _LiveClient | None) -> None:
        """Close a live client and make sure its process group and tools are gone. Callers
        racing to close the same client (a failing run and `aclose`) share one closing."""
        if live is None:
            return
        if self._live.get(live.session_id) is live:
            del self._live[live.session_id]
        if live.closing is None:
            live.closing = asyncio.ensure_future(self._close(live))
        await asyncio.shield(live.closing)

    async def _close(self, live: _LiveClient) -> None:
        try:
            await asyncio.wait_for(live.client.disconnect(), 8)
        except Exception:
            logger.warning("closing claude (pid %s) failed; killing it", live.pid, exc_info=True)
        await self._kill_session_processes(live.session_id, live, keep_cli=False)

    async def _kill_session_processes(
        self, session_id: uuid.UUID, live: _LiveClient | None, *, keep_cli: bool
    ) -> None:
        """Kill the CLI's process group (unless `keep_cli`), then every other process marked
        with this session outside the CLI's own session (tool commands)."""
        grace = min(self._cancel_grace, 1.0)
        cli_pid = live.pid if live is not None else None
        create_time = live.create_time if live is not None else None

        def kill() -> None:
            if cli_pid is not None and not keep_cli:
                processes.kill_process_group(cli_pid, grace, create_time=create_time)
            marked = processes.find_marked_processes(
                processes.MARKER_SESSION_ID,
                str(session_id),
                also={processes.MARKER_INSTANCE: self.instance_id},
            )
            doomed = []
            for process in marked:
                if keep_cli and cli_pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        if process.pid == cli_pid or os.getsid(process.pid) == cli_pid:
                            continue
                doomed.append(process.pid)
            if doomed:
                processes.kill_processes(doomed, grace)

        await asyncio.to_thread(kill)

    # -- helpers --

    def _ensure_work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="pocketcode-runner-"))
        self._work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._work_dir

    def _crash_message(
        self, live: _LiveClient, exc: BaseException | None, what: str = "stopped unexpectedly"
    ) -> str:
        detail = f": {exc}" if exc is not None else ""
        tail = " | ".join(live.stderr_tail)
        message = f"Claude Code {what}{detail}"
        if tail:
            message += f" — stderr: {tail[-1500:]}"
        return message

    def _cancelled(self, active: _ActiveRun) -> RunOutcome:
        live = active.live
        return RunOutcome(
            RunStatus.CANCELLED,
            provider_session_id=live.provider_session_id if live else None,
            error_code="cancelled",
        )

    def _failed(
        self,
        request: RunRequest,
        code: str,
        message: str,
        live: _LiveClient | None = None,
    ) -> RunOutcome:
        logger.warning("claude run failed (session %s): %s", request.session_id, code)
        return RunOutcome(
            RunStatus.FAILED,
            provider_session_id=live.provider_session_id if live else None,
            error=message,
            error_code=code,
        )
