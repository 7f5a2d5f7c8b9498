"""PokéCode's shapes: every stored message maps to a `Message` PokéCode's client accepts (or is
left out of its view), and every PokéCode endpoint answers in its documented shape."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pocketcode.db.tables import MessageRow
from pocketcode.domain.states import MessageType
from pocketcode.web.presenters import pokecode_message
from tests.api.pokecode_schema import Message, check


def _row(
    type_: MessageType,
    subtype: str | None,
    text: str = "",
    raw: dict[str, Any] | None = None,
    parent: str | None = None,
) -> MessageRow:
    return MessageRow(
        id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        seq=1,
        type=type_,
        subtype=subtype,
        text=text,
        raw=raw,
        parent_tool_use_id=parent,
    )


def _line(role: str, block: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": role, "uuid": "u-1", "message": {"role": role, "content": [block]}, **extra}


def _tool_use(name: str, tool_input: dict[str, Any]) -> MessageRow:
    block = {"type": "tool_use", "id": "toolu_1", "name": name, "input": tool_input}
    return _row(MessageType.ASSISTANT, "tool_use", name, _line("assistant", block))


TOOL_CASES = [
    ("Read", {"file_path": "/p/a.py"}, "read", {"filePath": "/p/a.py"}),
    ("Bash", {"command": "ls"}, "bash", {"command": "ls"}),
    (
        "Bash",
        {"command": "ls", "timeout": 5000, "description": "list"},
        "bash",
        {"command": "ls", "timeout": 5000, "description": "list"},
    ),
    (
        "Edit",
        {"file_path": "/p/a", "old_string": "a", "new_string": "b"},
        "edit",
        {"filePath": "/p/a", "oldString": "a", "newString": "b"},
    ),
    (
        "MultiEdit",
        {
            "file_path": "/p/a",
            "edits": [{"old_string": "a", "new_string": "b", "replace_all": True}],
        },
        "multiedit",
        {"filePath": "/p/a", "edits": [{"oldString": "a", "newString": "b", "replaceAll": True}]},
    ),
    (
        "Task",
        {"subagent_type": "explore", "description": "d", "prompt": "p"},
        "task",
        {"subagentType": "explore", "description": "d", "prompt": "p"},
    ),
    (
        "Agent",
        {"description": "d", "prompt": "p"},
        "task",
        {"subagentType": "general-purpose", "description": "d", "prompt": "p"},
    ),
    (
        "Grep",
        {"pattern": "x", "-n": True, "head_limit": 3, "-C": 2, "output_mode": "content"},
        "grep",
        {
            "pattern": "x",
            "path": ".",
            "outputMode": "content",
            "lineNumbers": True,
            "headLimit": 3,
            "contextLines": 2,
        },
    ),
    ("Glob", {"pattern": "*.py"}, "glob", {"pattern": "*.py"}),
    ("Glob", {"pattern": "*.py", "path": "/p"}, "glob", {"pattern": "*.py", "path": "/p"}),
    ("LS", {"path": "/p"}, "ls", {"path": "/p"}),
    (
        "TodoWrite",
        {"todos": [{"content": "a", "status": "in_progress", "activeForm": "A-ing"}]},
        "todo",
        {"todos": [{"content": "a", "status": "in_progress"}]},
    ),
    (
        "TaskCreate",
        {"subject": "write tests", "description": "all of them"},
        "todo",
        {"todos": [{"content": "write tests", "status": "pending"}]},
    ),
]


@pytest.mark.parametrize(("name", "tool_input", "kind", "data"), TOOL_CASES)
def test_known_tools_map_to_pokecodes_tool_types(
    name: str, tool_input: dict[str, Any], kind: str, data: dict[str, Any]
) -> None:
    message = pokecode_message(_tool_use(name, tool_input))
    check(Message, message)
    assert message is not None
    assert message["type"] == "assistant"
    assert message["data"] == {
        "type": "tool_use",
        "data": {"type": kind, "toolId": "toolu_1", "data": data},
    }


@pytest.mark.parametrize(
    ("name", "tool_input"),
    [
        ("WebFetch", {"url": "https://example.org"}),  # a tool PokéCode has no type for
        ("mcp__github__list", {}),
        ("Read", {}),  # a known tool with an input PokéCode's schema would refuse
        ("Edit", {"file_path": "/p", "old_string": 1, "new_string": "b"}),
        ("TodoWrite", {"todos": [{"content": "a", "status": "blocked"}]}),
        ("Bash", {"command": None}),
    ],
)
def test_other_tool_calls_are_told_as_assistant_text(name: str, tool_input: dict[str, Any]) -> None:
    message = pokecode_message(_tool_use(name, tool_input))
    check(Message, message)
    assert message is not None
    assert message["data"]["type"] == "message"
    assert message["data"]["data"]["content"].startswith(f"Used tool {name}")


def test_optional_tool_fields_are_omitted_never_null() -> None:
    message = pokecode_message(_tool_use("Bash", {"command": "ls", "timeout": None}))
    assert message is not None
    assert message["data"]["data"]["data"] == {"command": "ls"}


def test_prompts_text_errors_results_and_system_lines() -> None:
    prompt = pokecode_message(_row(MessageType.USER, "prompt", "hello"))
    check(Message, prompt)
    assert prompt is not None
    assert (prompt["type"], prompt["data"], prompt["parentToolUseId"]) == (
        "user",
        {"content": "hello"},
        None,
    )

    text = pokecode_message(_row(MessageType.ASSISTANT, "text", "hi there", parent="toolu_9"))
    check(Message, text)
    assert text is not None
    assert text["data"] == {"type": "message", "data": {"content": "hi there"}}
    assert text["parentToolUseId"] == "toolu_9"

    error = pokecode_message(_row(MessageType.ERROR, "run_failed", "it broke"))
    check(Message, error)
    assert error is not None
    assert (error["type"], error["data"]) == ("error", {"message": "it broke"})

    cancelled = pokecode_message(_row(MessageType.SYSTEM, "cancelled", "Cancelled."))
    check(Message, cancelled)
    assert cancelled is not None
    assert (cancelled["type"], cancelled["data"]) == ("system", {"content": "Cancelled."})

    # What PokéCode's view leaves out: thinking, the CLI's init line, run results, meta lines.
    assert pokecode_message(_row(MessageType.ASSISTANT, "thinking", "hmm")) is None
    assert pokecode_message(_row(MessageType.SYSTEM, "init", "Claude Code started")) is None
    assert pokecode_message(_row(MessageType.RESULT, "success", "done")) is None
    assert pokecode_message(_row(MessageType.USER, "meta", "<caveat>")) is None


def test_tool_results_keep_their_tool_use_id_and_error_flag() -> None:
    block = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "out", "is_error": True}
    row = _row(MessageType.USER, "tool_result", "out", _line("user", block), parent="toolu_1")
    message = pokecode_message(row)
    check(Message, message)
    assert message is not None
    assert message["type"] == "assistant"
    assert message["data"] == {
        "type": "tool_result",
        "data": {"toolUseId": "toolu_1", "content": "out", "isError": True},
    }
    # The column holds the answered tool use; the sub-agent parent is the line's own field.
    assert message["parentToolUseId"] is None

    plain = {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text"}]}
    nested = _line("user", plain, parent_tool_use_id="toolu_task")
    message = pokecode_message(_row(MessageType.USER, "tool_result", "", nested, "toolu_2"))
    check(Message, message)
    assert message is not None
    assert "isError" not in message["data"]["data"]
    assert message["parentToolUseId"] == "toolu_task"
