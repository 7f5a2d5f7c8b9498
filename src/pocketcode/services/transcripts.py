"""Reading Claude Code's JSONL transcripts and mapping their lines to messages.

A transcript line (`~/.claude/projects/<encoded cwd>/<session>.jsonl`) carries `type`, `uuid`,
`sessionId`, `cwd`, `timestamp` and, for user and assistant lines, the API `message`. The
stream-json lines the runner reads carry the same `uuid` and shape, and lines map to messages
exactly as the runner maps stream-json lines (`events_for_line`), which is what de-duplicates a
message stored live from the same message read here. Incremental indexing of whole corpora is
`transcript_index`'s job; this module reads lines and maps them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pocketcode.agents.claude_code import LineContext, events_for_line
from pocketcode.domain.states import MessageType
from pocketcode.services.messages import NewMessage

MAX_LINE_BYTES = 64 * 1024 * 1024
READ_BUFFER = 1024 * 1024
"""Transcripts are read in big chunks: a few system calls per megabyte."""
_SKIP_CHUNK = 1024 * 1024


def parse_timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def complete_lines(handle: BinaryIO, max_line_bytes: int) -> Iterator[tuple[bytes | None, int]]:
    """(line, bytes consumed) for each complete line from the handle's position, in bounded
    memory: a line longer than `max_line_bytes` is read past in chunks and given as None. Stops
    before a partial last line (one without its newline yet): the writer may still be on it."""
    while True:
        raw = handle.readline(max_line_bytes + 1)
        if not raw:
            return
        if raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        if len(raw) <= max_line_bytes:
            return
        consumed = len(raw)
        while True:
            chunk = handle.readline(_SKIP_CHUNK)
            if not chunk:
                return
            consumed += len(chunk)
            if chunk.endswith(b"\n"):
                break
        yield None, consumed


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """The JSON object of one line, or None when it is malformed, not UTF-8 or not an
    object. orjson parses; the few lines it refuses that the standard library reads
    (integers past 64 bits, NaN) get a second chance."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
    return line if isinstance(line, dict) else None


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Complete JSON object lines of a transcript; malformed, oversized or partial lines are
    skipped (the last line may still be being written)."""
    try:
        handle = path.open("rb", buffering=READ_BUFFER)
    except OSError:
        return
    with handle:
        for raw, _ in complete_lines(handle, MAX_LINE_BYTES):
            line = parse_line(raw) if raw is not None else None
            if line is not None:
                yield line


# Transcript line types that hold conversation messages; the others (attachment,
# queue-operation, api-request*, cost-state, last-prompt…) are the CLI's own bookkeeping.
MESSAGE_LINE_TYPES = frozenset({"user", "assistant", "system"})
# A user line starting like this is a slash command or its output, not a prompt to title by.
_WRAPPER_PREFIXES = (
    "<command-",
    "<local-command-",
    "<system-reminder>",
    "<bash-",
    "Caveat:",
    "[Request interrupted",
)


def _prompt_subtype(line: dict[str, Any]) -> str:
    if line.get("isSidechain"):
        return "text"  # a sub-agent's prompt, written by the main agent: not a turn of the user
    if line.get("isCompactSummary"):
        return "compact_summary"
    if line.get("isMeta"):
        return "meta"
    return "prompt"


def messages_from_line(
    line: dict[str, Any], *, include_prompts: bool, context: LineContext | None = None
) -> list[NewMessage]:
    """The messages one transcript line holds (one per content block), mapped by the runner's
    own `events_for_line`: the same uuid (the n-th extra block of a line is `<uuid>#<n>`),
    type, subtype and text as the message stored live. A prompt, which stream-json does not
    echo, gets the subtype `prompt` (`meta` or `compact_summary` for the CLI's own user
    lines); `include_prompts=False` leaves prompts out. Pass one `context` for the lines of a
    file, so the usage of an API message is kept on its first block only."""
    if line.get("type") not in MESSAGE_LINE_TYPES or not isinstance(line.get("uuid"), str):
        return []
    events = events_for_line(line, context if context is not None else LineContext())
    session_id = line.get("sessionId") if isinstance(line.get("sessionId"), str) else None
    messages: list[NewMessage] = []
    for event in events:
        message = event.message
        if message is None:
            continue
        if message.provider_session_id is None:
            message.provider_session_id = session_id
        if message.type is MessageType.USER and message.subtype != "tool_result":
            if not include_prompts:
                continue
            if message.subtype == "text":
                message.subtype = _prompt_subtype(line)
        messages.append(message)
    return messages


def prompt_title(line: dict[str, Any], max_chars: int = 100) -> str | None:
    """A session title from a user line that is a real prompt: not a meta line, a compaction
    summary, a sub-agent's line, a tool result or a slash-command wrapper."""
    if (
        line.get("type") != "user"
        or line.get("isMeta")
        or line.get("isCompactSummary")
        or line.get("isSidechain")
    ):
        return None
    message = line.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        blocks = [block for block in content if isinstance(block, dict)]
        if any(block.get("type") == "tool_result" for block in blocks):
            return None
        text = "\n".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    else:
        return None
    text = " ".join(text.split())
    if not text or text.startswith(_WRAPPER_PREFIXES):
        return None
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def run_messages_since(path: Path, since: datetime) -> list[NewMessage]:
    """Assistant messages and tool results written at or after `since` (a run's start): what
    a server that died mid-run may not have stored. Prompts are skipped: the server stores
    each prompt itself when it is queued."""
    found: list[NewMessage] = []
    context = LineContext()
    for line in read_lines(path):
        if line.get("isSidechain"):
            continue
        stamp = parse_timestamp(line.get("timestamp"))
        if stamp is None or stamp < since:
            continue
        found.extend(messages_from_line(line, include_prompts=False, context=context))
    return found
