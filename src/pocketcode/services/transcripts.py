"""Reading Claude Code's JSONL transcripts: the messages of a run the server missed.

A transcript line (`~/.claude/projects/<encoded cwd>/<session>.jsonl`) carries `type`, `uuid`,
`sessionId`, `cwd`, `timestamp` and, for user and assistant lines, the API `message`. The
stream-json lines the runner reads carry the same `uuid`, which is what de-duplicates a message
stored live from the same message recovered here. (Incremental indexing of whole corpora is the
transcript importer's job; this module reads one file.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pocketcode.domain.states import MessageType
from pocketcode.services.messages import NewMessage

MAX_LINE_BYTES = 64 * 1024 * 1024


def parse_timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Complete JSON object lines of a transcript; malformed, oversized or partial lines are
    skipped (the last line may still be being written)."""
    try:
        handle = path.open("rb")
    except OSError:
        return
    with handle:
        for raw in handle:
            if not raw.endswith(b"\n") or len(raw) > MAX_LINE_BYTES:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                yield line


def _block_text(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "thinking":
        return str(block.get("thinking", ""))
    if kind == "tool_use":
        return json.dumps(block.get("input", {}), ensure_ascii=False)[:10_000]
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return "\n".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        return str(content or "")
    return ""


def messages_from_line(line: dict[str, Any], *, include_prompts: bool) -> list[NewMessage]:
    """The messages one transcript line holds (one per content block)."""
    kind = line.get("type")
    uuid = line.get("uuid")
    message = line.get("message")
    if (
        kind not in ("user", "assistant")
        or not isinstance(uuid, str)
        or not isinstance(message, dict)
    ):
        return []
    session_id = line.get("sessionId") if isinstance(line.get("sessionId"), str) else None
    content = message.get("content")
    if kind == "user":
        if isinstance(content, str):
            if not include_prompts or line.get("isMeta"):
                return []
            return [
                NewMessage(
                    MessageType.USER,
                    content,
                    subtype="prompt",
                    raw=line,
                    provider_session_id=session_id,
                    provider_message_uuid=uuid,
                )
            ]
        blocks = [
            b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        return [
            NewMessage(
                MessageType.USER,
                _block_text(block),
                subtype="tool_result",
                raw=line,
                provider_session_id=session_id,
                provider_message_uuid=uuid if index == 0 else f"{uuid}#{index}",
                parent_tool_use_id=str(block.get("tool_use_id") or "") or None,
            )
            for index, block in enumerate(blocks)
        ]
    blocks = [b for b in content or [] if isinstance(b, dict)]
    return [
        NewMessage(
            MessageType.ASSISTANT,
            _block_text(block),
            subtype=str(block.get("type") or "unknown"),
            raw=line,
            provider_session_id=session_id,
            provider_message_uuid=uuid if index == 0 else f"{uuid}#{index}",
            provider_message_id=str(message.get("id") or "") or None,
            model=str(message.get("model") or "") or None,
        )
        for index, block in enumerate(blocks)
    ]


def run_messages_since(path: Path, since: datetime) -> list[NewMessage]:
    """Assistant messages and tool results written at or after `since` (a run's start): what
    a server that died mid-run may not have stored. Prompts are skipped: the server stores
    each prompt itself when it is queued."""
    found: list[NewMessage] = []
    for line in read_lines(path):
        if line.get("isSidechain"):
            continue
        stamp = parse_timestamp(line.get("timestamp"))
        if stamp is None or stamp < since:
            continue
        found.extend(messages_from_line(line, include_prompts=False))
    return found
