"""PokéCode's shapes: every stored message maps to a `Message` PokéCode's client accepts (or is
left out of its view), and every PokéCode endpoint answers in its documented shape."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow
from pocketcode.domain.states import MessageType
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.web.presenters import pokecode_message
from tests.api.pokecode_schema import (
    ConnectOut,
    DeviceList,
    ErrorBody,
    Message,
    MessagesPage,
    QueueMetrics,
    Session,
    SessionList,
    Success,
    Timestamp,
    check,
)


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


# -- the endpoints, through the real app -------------------------------------------------------


def _create(api: TestClient, project: Path, path: str = "/api/sessions/") -> dict[str, Any]:
    response = api.post(path, json={"projectPath": str(project), "provider": "claude-code"})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _store(db: Database, session_id: str, *messages: NewMessage) -> None:
    MessageService(db).append_many(uuid.UUID(session_id), list(messages))


def test_session_endpoints_answer_in_pokecodes_shapes(
    api: TestClient, project: Path, db: Database
) -> None:
    for path, provider in (("/api/sessions", "claude"), ("/api/sessions/", "claude-code")):
        response = api.post(path, json={"projectPath": str(project), "provider": provider})
        assert response.status_code == 201, response.text
        created = check(Session, response.json())
        assert created["provider"] == "claude-code"
        assert (created["state"], created["isWorking"], created["messageCount"]) == (
            "active",
            False,
            0,
        )
        assert created["lastMessageSentAt"] is None and created["currentJobId"] is None
        assert created["name"] == "my-project"
    session_id = created["id"]

    for path in ("/api/sessions", "/api/sessions/"):
        listed = check(SessionList, api.get(path).json())
        assert (listed["total"], listed["limit"], listed["offset"]) == (2, 20, 0)
    check(Session, api.get(f"/api/sessions/{session_id}").json())
    patched = api.patch(f"/api/sessions/{session_id}", json={"context": "c", "metadata": {"a": 1}})
    assert patched.status_code == 200, patched.text
    check(Session, patched.json())

    _store(
        db,
        session_id,
        NewMessage(MessageType.USER, "hi", subtype="prompt"),
        NewMessage(MessageType.ASSISTANT, "thinking", subtype="thinking"),
        NewMessage(
            MessageType.ASSISTANT,
            "Read",
            subtype="tool_use",
            raw=_line(
                "assistant",
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/a"}},
            ),
        ),
        NewMessage(
            MessageType.USER,
            "text of a",
            subtype="tool_result",
            raw=_line("user", {"type": "tool_result", "tool_use_id": "t1", "content": "x"}),
            parent_tool_use_id="t1",
        ),
        NewMessage(MessageType.ASSISTANT, "done", subtype="text"),
        NewMessage(MessageType.RESULT, "done", subtype="success"),
    )
    page = check(MessagesPage, api.get(f"/api/sessions/{session_id}/messages?limit=1000").json())
    assert [m["type"] for m in page["messages"]] == ["user", "assistant", "assistant", "assistant"]
    assert page["pagination"] == {"hasNextPage": False, "nextCursor": None, "totalFetched": 4}
    assert page["session"]["messageCount"] == 6
    check(Timestamp, page["session"]["lastMessageSentAt"])

    raw = api.get(f"/api/sessions/{session_id}/messages/raw")
    assert raw.status_code == 200 and len(raw.json()) == 6
    assert all(isinstance(item, dict) for item in raw.json())

    deleted = api.delete(f"/api/sessions/{session_id}")
    assert check(Success, deleted.json()) == {"success": True}
    gone = api.get(f"/api/sessions/{session_id}")
    assert gone.status_code == 404
    assert gone.json() == {"error": "Session not found", "code": "NOT_FOUND", "statusCode": 404}


def test_prompt_is_an_empty_202_and_cancel_an_empty_204(api: TestClient, project: Path) -> None:
    session_id = _create(api, project)["id"]
    sent = api.post(f"/api/sessions/{session_id}/messages", json={"content": "hello"})
    assert sent.status_code == 202
    assert sent.content == b""
    assert sent.headers.get("content-length") == "0"
    assert "content-type" not in sent.headers  # an empty body must not claim to be JSON

    cancelled = api.post(f"/api/sessions/{session_id}/cancel")
    assert cancelled.status_code == 204
    assert cancelled.content == b""

    page = check(MessagesPage, api.get(f"/api/sessions/{session_id}/messages").json())
    assert [m["data"] for m in page["messages"]] == [{"content": "hello"}]
    assert page["session"]["lastMessageSentAt"] is not None


def test_connect_devices_and_queue_metrics_shapes(api: TestClient) -> None:
    body = {"device_id": "dev-1", "device_name": "  Phone  ", "platform": "ios"}
    connected = check(ConnectOut, api.post("/api/connect", json=body).json())
    assert connected["poll_interval_s"] > 0
    api.post("/api/connect", json={"device_id": "dev-2", "device_name": "Tablet"})

    devices = check(DeviceList, api.get("/api/connect/devices").json())
    assert devices["total"] == 2 and (devices["limit"], devices["offset"]) == (100, 0)
    by_id = {d["deviceId"]: d for d in devices["devices"]}
    assert by_id["dev-1"]["deviceName"] == "Phone"
    assert (by_id["dev-2"]["platform"], by_id["dev-2"]["appVersion"]) == (None, None)

    metrics = check(QueueMetrics, api.get("/api/queue/metrics").json())
    assert metrics == {
        "waiting": 0,
        "active": 0,
        "completed": 0,
        "failed": 0,
        "delayed": 0,
        "paused": 0,
        "total": 0,
    }


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"device_id": "", "device_name": "x"}',
        b'{"device_id": "d", "device_name": "x", "platform": "windows"}',
        b'{"device_id": "d", "device_name": "' + b"x" * 129 + b'"}',
        b'{"device_id": "d", "device_name": "   "}',
        b'{"device_id": 5, "device_name": "x"}',
    ],
)
def test_connect_refuses_bad_bodies_with_400(api: TestClient, body: bytes) -> None:
    response = api.post("/api/connect", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = check(ErrorBody, response.json())
    assert (error["code"], error["statusCode"]) == ("INVALID_INPUT", 400)
