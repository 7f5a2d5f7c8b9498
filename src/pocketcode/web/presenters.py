"""Rows as API JSON: PokéCode's `Session` and `Message` shapes (see ../shared/pokecode-api.md)
and pocketcode's richer session view.

PokéCode's client validates every response with closed Zod schemas: nullable keys are present
with null, optional keys are omitted (never null), enums are closed. So what PokéCode cannot
express is left out of its shapes (a thinking block, the CLI's init line) or said in a shape it
knows (an unknown tool becomes an assistant text), never given a new enum value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from pocketcode.db.tables import JobRow, MessageRow, SessionRow
from pocketcode.domain.states import LifecycleStatus, MessageType
from pocketcode.domain.timefmt import iso_z
from pocketcode.services.messages import MessageLine

# User message subtypes that are the user's own words (a queued prompt, a live text block).
_USER_TEXT_SUBTYPES = frozenset({"prompt", "text"})
# System lines of the CLI that say nothing to a reader of the conversation.
_HIDDEN_SYSTEM_SUBTYPES = frozenset({"init"})
# How much of an unknown tool's input an assistant text shows.
_TOOL_INPUT_PREVIEW = 2000
_TODO_STATUSES = frozenset({"pending", "in_progress", "completed"})


def _iso(value: Any) -> str | None:
    return iso_z(value) if value is not None else None


def _money(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


# -- sessions ----------------------------------------------------------------------------------


def session_name(row: SessionRow) -> str:
    """The title, else the project folder's name."""
    return row.title or PurePath(row.project_path).name or row.project_path


def pokecode_session(row: SessionRow) -> dict[str, Any]:
    """PokéCode's `Session`, exactly its keys. An archived session is 'inactive' there."""
    return {
        "id": str(row.id),
        "provider": row.provider.value,
        "projectPath": row.project_path,
        "name": session_name(row),
        "claudeDirectoryPath": row.claude_directory_path,
        "state": "active" if row.status is LifecycleStatus.ACTIVE else "inactive",
        "createdAt": iso_z(row.created_at),
        "updatedAt": iso_z(row.updated_at),
        "lastAccessedAt": iso_z(row.last_accessed_at),
        "lastMessageSentAt": _iso(row.last_message_sent_at),
        "isWorking": bool(row.is_working),
        "currentJobId": str(row.current_job_id) if row.current_job_id else None,
        "lastJobStatus": row.last_job_status.value if row.last_job_status else None,
        "messageCount": int(row.message_count),
        "tokenCount": int(row.token_count),
    }


def session_view(row: SessionRow, *, pending_permissions: int = 0) -> dict[str, Any]:
    """PokéCode's `Session` plus pocketcode's fields (PokéCode's client strips unknown keys)."""
    return {
        **pokecode_session(row),
        "title": row.title,
        "status": row.status.value,
        "context": row.context,
        "metadata": row.metadata_,
        "model": row.model,
        "permissionMode": row.permission_mode.value if row.permission_mode else None,
        "processStatus": row.process_status.value,
        "turnCount": int(row.turn_count),
        "tokens": {
            "input": int(row.input_tokens),
            "output": int(row.output_tokens),
            "cacheCreation": int(row.cache_creation_tokens),
            "cacheRead": int(row.cache_read_tokens),
        },
        "totalCostUsd": _money(row.total_cost_usd),
        "cliTotalCostUsd": _money(row.cli_total_cost_usd),
        "allowedTools": list(row.allowed_tools or []),
        "lastActivityAt": _iso(row.last_activity_at),
        "pendingPermissions": pending_permissions,
    }


# -- messages ----------------------------------------------------------------------------------

# A stored message: the ORM row, or the columns a page of the chat reads.
Line = MessageRow | MessageLine


def _block(row: Line) -> dict[str, Any]:
    """The one content block a stored message holds (the runner splits lines per block)."""
    raw = row.raw if isinstance(row.raw, dict) else {}
    message = raw.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0]
    return {}


def _line_parent(row: Line) -> str | None:
    """The sub-agent call a line belongs to. For tool results the column holds the id of the
    tool use answered, so the line's own field is read instead."""
    raw = row.raw if isinstance(row.raw, dict) else {}
    parent = raw.get("parent_tool_use_id")
    return parent if isinstance(parent, str) else None


def _assistant(row: Line, data: dict[str, Any], parent: str | None) -> dict[str, Any]:
    return {"id": str(row.id), "type": "assistant", "data": data, "parentToolUseId": parent}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _with_optional(data: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """`data` plus the optional keys that have a value: PokéCode omits, never nulls, them."""
    return {**data, **{key: value for key, value in optional.items() if value is not None}}


ToolData = dict[str, Any] | None


def _read(args: dict[str, Any]) -> ToolData:
    path = _text(args.get("file_path"))
    return {"filePath": path} if path is not None else None


def _bash(args: dict[str, Any]) -> ToolData:
    command = _text(args.get("command"))
    if command is None:
        return None
    return _with_optional(
        {"command": command},
        timeout=_int(args.get("timeout")),
        description=_text(args.get("description")),
    )


def _edit(args: dict[str, Any]) -> ToolData:
    values = [_text(args.get(key)) for key in ("file_path", "old_string", "new_string")]
    if any(value is None for value in values):
        return None
    return dict(zip(("filePath", "oldString", "newString"), values, strict=True))


def _multiedit(args: dict[str, Any]) -> ToolData:
    path, edits = _text(args.get("file_path")), args.get("edits")
    if path is None or not isinstance(edits, list):
        return None
    mapped = []
    for edit in edits:
        if not isinstance(edit, dict):
            return None
        old, new = _text(edit.get("old_string")), _text(edit.get("new_string"))
        if old is None or new is None:
            return None
        replace_all = edit.get("replace_all")
        mapped.append(
            _with_optional(
                {"oldString": old, "newString": new},
                replaceAll=replace_all if isinstance(replace_all, bool) else None,
            )
        )
    return {"filePath": path, "edits": mapped}


def _task(args: dict[str, Any]) -> ToolData:
    prompt = _text(args.get("prompt"))
    if prompt is None:
        return None
    return {
        "subagentType": _text(args.get("subagent_type")) or "general-purpose",
        "description": _text(args.get("description")) or "",
        "prompt": prompt,
    }


def _grep(args: dict[str, Any]) -> ToolData:
    pattern = _text(args.get("pattern"))
    if pattern is None:
        return None
    line_numbers = args.get("-n")
    return _with_optional(
        {
            "pattern": pattern,
            "path": _text(args.get("path")) or ".",
            "outputMode": _text(args.get("output_mode")) or "files_with_matches",
        },
        lineNumbers=line_numbers if isinstance(line_numbers, bool) else None,
        headLimit=_int(args.get("head_limit")),
        contextLines=_int(args.get("-C")),
    )


def _glob(args: dict[str, Any]) -> ToolData:
    pattern = _text(args.get("pattern"))
    if pattern is None:
        return None
    return _with_optional({"pattern": pattern}, path=_text(args.get("path")))


def _ls(args: dict[str, Any]) -> ToolData:
    path = _text(args.get("path"))
    return {"path": path} if path is not None else None


def _todo_write(args: dict[str, Any]) -> ToolData:
    todos = args.get("todos")
    if not isinstance(todos, list):
        return None
    mapped = []
    for todo in todos:
        if not isinstance(todo, dict):
            return None
        content, status = _text(todo.get("content")), todo.get("status")
        if content is None or status not in _TODO_STATUSES:
            return None
        mapped.append({"content": content, "status": status})
    return {"todos": mapped}


def _task_create(args: dict[str, Any]) -> ToolData:
    subject = _text(args.get("subject")) or _text(args.get("description"))
    return {"todos": [{"content": subject, "status": "pending"}]} if subject else None


# Claude Code tool name → (PokéCode tool type, input mapper). PokéCode knows these nine types.
_TOOLS: dict[str, tuple[str, Callable[[dict[str, Any]], ToolData]]] = {
    "Read": ("read", _read),
    "Bash": ("bash", _bash),
    "Edit": ("edit", _edit),
    "MultiEdit": ("multiedit", _multiedit),
    "Task": ("task", _task),
    "Agent": ("task", _task),
    "Grep": ("grep", _grep),
    "Glob": ("glob", _glob),
    "LS": ("ls", _ls),
    "TodoWrite": ("todo", _todo_write),
    "TaskCreate": ("todo", _task_create),
}


def _tool_use(row: Line, parent: str | None) -> dict[str, Any]:
    block = _block(row)
    name = _text(block.get("name")) or row.text or "tool"
    given = block.get("input")
    args: dict[str, Any] = given if isinstance(given, dict) else {}
    tool_id = _text(block.get("id")) or str(row.id)
    known = _TOOLS.get(name)
    data = known[1](args) if known else None
    if known is not None and data is not None:
        tool = {"type": known[0], "toolId": tool_id, "data": data}
        return _assistant(row, {"type": "tool_use", "data": tool}, parent)
    # A tool PokéCode has no type for (or an input it could not show): said in words.
    shown = json.dumps(args, ensure_ascii=False, default=str)
    if len(shown) > _TOOL_INPUT_PREVIEW:
        shown = shown[: _TOOL_INPUT_PREVIEW - 1] + "…"
    content = f"Used tool {name}: {shown}"
    return _assistant(row, {"type": "message", "data": {"content": content}}, parent)


def _tool_result(row: Line) -> dict[str, Any]:
    block = _block(row)
    tool_use_id = _text(block.get("tool_use_id")) or row.parent_tool_use_id or ""
    is_error = block.get("is_error")
    result = _with_optional(
        {"toolUseId": tool_use_id, "content": row.text},
        isError=is_error if isinstance(is_error, bool) else None,
    )
    return _assistant(row, {"type": "tool_result", "data": result}, _line_parent(row))


def pokecode_message(row: Line) -> dict[str, Any] | None:
    """PokéCode's `Message` for a stored message, or None when PokéCode's view leaves it out
    (thinking, the CLI's bookkeeping lines, run results: the end of a run is a state event)."""
    parent = row.parent_tool_use_id
    if row.type is MessageType.USER:
        if row.subtype == "tool_result":
            return _tool_result(row)
        if row.subtype in _USER_TEXT_SUBTYPES or row.subtype is None:
            return {
                "id": str(row.id),
                "type": "user",
                "data": {"content": row.text},
                "parentToolUseId": parent,
            }
        return None
    if row.type is MessageType.ASSISTANT:
        if row.subtype == "text":
            return _assistant(row, {"type": "message", "data": {"content": row.text}}, parent)
        if row.subtype in ("tool_use", "server_tool_use"):
            return _tool_use(row, parent)
        return None
    if row.type is MessageType.ERROR:
        return {
            "id": str(row.id),
            "type": "error",
            "data": {"message": row.text or "The run failed."},
            "parentToolUseId": parent,
        }
    if row.type is MessageType.SYSTEM:
        if row.subtype in _HIDDEN_SYSTEM_SUBTYPES or not row.text:
            return None
        # PokéCode's `system` messages carry `{content}` (its Codex legacy shape).
        return {
            "id": str(row.id),
            "type": "system",
            "data": {"content": row.text},
            "parentToolUseId": parent,
        }
    return None  # results: the run's end reaches PokéCode's client as `state: done`


def raw_message(row: MessageRow) -> dict[str, Any]:
    """What the agent sent for this message; a prompt pocketcode stored has no raw line, so
    one is written in the CLI's own shape."""
    if isinstance(row.raw, dict):
        return row.raw
    return {"type": row.type.value, "message": {"role": row.type.value, "content": row.text}}


# -- jobs --------------------------------------------------------------------------------------


def job_view(row: JobRow) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "sessionId": str(row.session_id),
        "status": row.status.value,
        "prompt": row.prompt,
        "options": row.options,
        "attempts": int(row.attempts),
        "error": row.error,
        "errorCode": row.error_code,
        "createdAt": iso_z(row.created_at),
        "claimedAt": _iso(row.claimed_at),
        "finishedAt": _iso(row.finished_at),
    }
