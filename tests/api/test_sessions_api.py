"""pocketcode's sessions API beyond PokéCode's shapes: what a user sees when they create, page,
archive, queue, approve, price and cancel — and that bad input is a 4xx."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
from fastapi.testclient import TestClient

from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, PermissionRequestRow
from pocketcode.services.events import EventBus
from pocketcode.services.permissions import PermissionService
from pocketcode.services.runs import RunManager, make_worker_id
from pocketcode.services.runtime import Runtime
from pocketcode.services.sessions import SessionService
from tests.integration.test_run_recovery import WaitingRunner


def error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {"error": body["error"], "code": code, "statusCode": status}
    return str(body["error"])


def create(api: TestClient, project: Path, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/sessions", json={"projectPath": str(project), **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_refuses_codex_paths_outside_the_roots_and_missing_folders(
    api: TestClient, project: Path, tmp_path: Path
) -> None:
    body = {"projectPath": str(project), "provider": "codex-cli"}
    assert "Codex" in error(api.post("/api/sessions", json=body), 400, "INVALID_INPUT")
    for path in (
        "/etc",
        str(tmp_path),
        str(project / "missing"),
        "relative/dir",
        f"{project}/../..",
    ):
        error(api.post("/api/sessions", json={"projectPath": path}), 400, "INVALID_INPUT")
    error(api.post("/api/sessions", json={"projectPath": ""}), 422, "VALIDATION_ERROR")
    error(api.post("/api/sessions", json={"provider": "claude"}), 422, "VALIDATION_ERROR")
    assert api.get("/api/sessions").json()["total"] == 0


def test_rename_archive_unarchive_and_the_state_filter(api: TestClient, project: Path) -> None:
    first = create(api, project, title="First", model="sonnet", permissionMode="plan")
    assert (first["title"], first["model"], first["permissionMode"]) == ("First", "sonnet", "plan")
    second = create(api, project)
    assert (second["name"], second["processStatus"], second["turnCount"]) == (
        "my-project",
        "idle",
        0,
    )
    assert second["tokens"] == {"input": 0, "output": 0, "cacheCreation": 0, "cacheRead": 0}

    renamed = api.patch(f"/api/sessions/{first['id']}", json={"title": "Renamed"}).json()
    assert (renamed["name"], renamed["title"]) == ("Renamed", "Renamed")
    archived = api.patch(f"/api/sessions/{first['id']}", json={"status": "archived"}).json()
    assert (archived["status"], archived["state"]) == ("archived", "inactive")
    assert [s["id"] for s in api.get("/api/sessions?state=active").json()["sessions"]] == [
        second["id"]
    ]
    assert api.get("/api/sessions?state=archived").json()["total"] == 1
    # An archived session takes no prompts until it is unarchived.
    prompt = {"content": "hi"}
    error(api.post(f"/api/sessions/{first['id']}/messages", json=prompt), 409, "CONFLICT")
    api.patch(f"/api/sessions/{first['id']}", json={"status": "active"})
    assert api.post(f"/api/sessions/{first['id']}/messages", json=prompt).status_code == 202

    page = api.get("/api/sessions?limit=1&offset=1").json()
    assert (page["total"], len(page["sessions"]), page["limit"], page["offset"]) == (2, 1, 1, 1)


def test_bad_input_is_a_4xx_in_the_one_error_shape(api: TestClient, project: Path) -> None:
    session_id = create(api, project)["id"]
    for path in ("/api/sessions/not-a-uuid", f"/api/sessions/{uuid.uuid4()}"):
        assert error(api.get(path), 404, "NOT_FOUND") == "Session not found"
    error(api.get(f"/api/sessions/{uuid.uuid4()}/messages"), 404, "NOT_FOUND")
    error(api.post(f"/api/sessions/{uuid.uuid4()}/cancel"), 404, "NOT_FOUND")
    for query in ("limit=0", "limit=101", "offset=-1", "state=deleted", "limit=x"):
        error(api.get(f"/api/sessions?{query}"), 422, "VALIDATION_ERROR")
    for query in ("limit=0", "limit=1001"):
        error(api.get(f"/api/sessions/{session_id}/messages?{query}"), 422, "VALIDATION_ERROR")
    for cursor in ("nope", str(uuid.uuid4())):
        error(api.get(f"/api/sessions/{session_id}/messages?after={cursor}"), 400, "INVALID_INPUT")
    messages = f"/api/sessions/{session_id}/messages"
    for body in ({}, {"content": ""}, {"content": 5}, {"content": "x", "allowedTools": "Bash"}):
        error(api.post(messages, json=body), 422, "VALIDATION_ERROR")
    error(api.post(messages, json={"content": "a\x00b"}), 400, "INVALID_INPUT")
    error(
        api.post(messages, content=b"{", headers={"content-type": "application/json"}),
        422,
        "VALIDATION_ERROR",
    )
    long_context = {"context": "x" * 5001}
    error(api.patch(f"/api/sessions/{session_id}", json=long_context), 422, "VALIDATION_ERROR")
    error(api.patch(f"/api/sessions/{session_id}", json={"metadata": [1]}), 422, "VALIDATION_ERROR")
    # Python's JSON reads NaN and Infinity; JSON has neither, and jsonb refuses them.
    for number in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = '{"metadata": {"a": [' + number + "]}}"
        patched = api.patch(
            f"/api/sessions/{session_id}",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )
        assert "finite" in error(patched, 400, "INVALID_INPUT"), number
    project = api.get(f"/api/sessions/{session_id}").json()["projectPath"]
    created = api.post(
        "/api/sessions",
        content=json.dumps({"projectPath": project})
        .replace("}", ', "metadata": {"n": NaN}}')
        .encode(),
        headers={"content-type": "application/json"},
    )
    error(created, 400, "INVALID_INPUT")
    assert api.get(f"/api/sessions/{session_id}").json()["metadata"] == {}
    error(
        api.post(f"/api/permissions/{uuid.uuid4()}", json={"decision": "allow"}), 404, "NOT_FOUND"
    )
    error(api.post("/api/permissions/x", json={"decision": "maybe"}), 422, "VALIDATION_ERROR")


def test_the_queue_lists_and_cancels_one_prompt(api: TestClient, project: Path) -> None:
    session_id = create(api, project)["id"]
    for prompt in ("first", "second"):
        api.post(
            f"/api/sessions/{session_id}/messages", json={"content": prompt, "model": "opus-plan"}
        )
    queue = api.get(f"/api/sessions/{session_id}/queue").json()["jobs"]
    assert [job["prompt"] for job in queue] == ["first", "second"]
    assert queue[0]["options"] == {"model": "opusplan"}
    assert api.get("/api/queue/metrics").json()["waiting"] == 2

    cancelled = api.delete(f"/api/sessions/{session_id}/queue/{queue[1]['id']}")
    assert cancelled.json()["job"]["status"] == "cancelled"
    assert [j["prompt"] for j in api.get(f"/api/sessions/{session_id}/queue").json()["jobs"]] == [
        "first"
    ]
    error(api.delete(f"/api/sessions/{session_id}/queue/{queue[1]['id']}"), 409, "CONFLICT")
    other = create(api, project)["id"]
    error(api.delete(f"/api/sessions/{other}/queue/{queue[0]['id']}"), 404, "NOT_FOUND")


def test_a_running_session_cannot_be_deleted(api: TestClient, project: Path, db: Database) -> None:
    session_id = create(api, project)["id"]
    SessionService(db, []).mark_starting(session_id, None)
    assert api.get(f"/api/sessions/{session_id}").json()["isWorking"] is True
    error(api.delete(f"/api/sessions/{session_id}"), 409, "CONFLICT")
    assert api.get(f"/api/sessions/{session_id}").status_code == 200


def test_pending_permissions_are_listed_and_answered_once(
    api: TestClient, project: Path, db: Database
) -> None:
    session_id = create(api, project)["id"]
    with db.write() as s:
        request = PermissionRequestRow(
            session_id=uuid.UUID(session_id), tool_name="Bash", tool_input={"command": "ls"}
        )
        s.add(request)
        s.flush()
        request_id = str(request.id)
    listed = api.get(f"/api/sessions/{session_id}/permissions").json()["permissions"]
    assert [(p["id"], p["toolName"], p["status"]) for p in listed] == [
        (request_id, "Bash", "pending")
    ]
    assert api.get(f"/api/sessions/{session_id}").json()["pendingPermissions"] == 1

    answer = api.post(f"/api/permissions/{request_id}", json={"decision": "always"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["permission"]["status"], answer.json()["permission"]["scope"]) == (
        "allowed",
        "session",
    )
    error(api.post(f"/api/permissions/{request_id}", json={"decision": "deny"}), 409, "CONFLICT")
    session = api.get(f"/api/sessions/{session_id}").json()
    assert (session["pendingPermissions"], session["allowedTools"]) == (0, ["Bash"])
    assert PermissionService(db).is_always_allowed(uuid.UUID(session_id), "Bash")


def test_prices_are_listed_and_updated(api: TestClient) -> None:
    body = {
        "prices": [
            {"modelName": "my-model", "inputPricePerMillion": 3, "outputPricePerMillion": "15"}
        ]
    }
    updated = api.put("/api/pricing", json=body)
    assert updated.status_code == 200, updated.text
    mine = [p for p in api.get("/api/pricing").json()["prices"] if p["modelName"] == "my-model"]
    assert [
        (p["inputPricePerMillion"], p["outputPricePerMillion"], p["cacheReadMultiplier"])
        for p in mine
    ] == [(3.0, 15.0, 0.1)]
    for bad in (
        {"prices": []},
        {"prices": [{"modelName": "m", "inputPricePerMillion": -1, "outputPricePerMillion": 1}]},
    ):
        error(api.put("/api/pricing", json=bad), 422, "VALIDATION_ERROR")


def test_prices_are_stored_as_the_columns_hold_them_all_or_none(api: TestClient) -> None:
    """Prices have 6 decimals, multipliers 3 (NUMERIC(10, 6) and (5, 3)): a value is rounded
    to that on both databases, and one that rounds to the limit is refused — PostgreSQL
    would round it itself and then fail. A refused entry stores none of its request."""
    before = api.get("/api/pricing").json()["prices"]
    ok = {"modelName": "kept-out", "inputPricePerMillion": 1, "outputPricePerMillion": 2}
    for bad in (
        {"inputPricePerMillion": "9999.9999999"},
        {"outputPricePerMillion": 9999.9999996},
        {"cacheWriteMultiplier": "99.9999"},
        {"cacheReadMultiplier": 99.9996},
    ):
        entry = {"modelName": "rounds-over", "inputPricePerMillion": 1}
        entry["outputPricePerMillion"] = 1
        response = api.put("/api/pricing", json={"prices": [ok, {**entry, **bad}]})
        assert "between 0 and" in error(response, 400, "INVALID_INPUT"), bad
    assert api.get("/api/pricing").json()["prices"] == before

    rounded = {
        "modelName": "rounded",
        "inputPricePerMillion": "1.0000005",
        "outputPricePerMillion": "9999.9999994",
        "cacheWriteMultiplier": "1.2345",
        "cacheReadMultiplier": "0.0004",
    }
    assert api.put("/api/pricing", json={"prices": [rounded]}).status_code == 200
    [stored] = [p for p in api.get("/api/pricing").json()["prices"] if p["modelName"] == "rounded"]
    assert (
        stored["inputPricePerMillion"],
        stored["outputPricePerMillion"],
        stored["cacheWriteMultiplier"],
        stored["cacheReadMultiplier"],
    ) == (1.000001, 9999.999999, 1.235, 0.0)


def test_usage_sums_jobs_by_day_project_and_model(
    api: TestClient, project: Path, db: Database
) -> None:
    session_id = create(api, project, model="claude-sonnet-4-5")["id"]
    for prompt in ("a", "b"):
        api.post(f"/api/sessions/{session_id}/messages", json={"content": prompt})
    with db.write() as s:
        for job in s.query(JobRow).all():
            job.input_tokens, job.output_tokens, job.cost_usd = 100, 10, Decimal("0.25")
    usage = api.get("/api/usage?days=7").json()
    assert usage["total"]["jobs"] == 2
    assert (usage["total"]["inputTokens"], usage["total"]["costUsd"]) == (200, 0.5)
    assert [(p["projectPath"], p["outputTokens"]) for p in usage["byProject"]] == [
        (str(project), 20)
    ]
    assert [m["model"] for m in usage["byModel"]] == ["claude-sonnet-4-5"]
    assert len(usage["byDay"]) == 1
    error(api.get("/api/usage?days=0"), 422, "VALIDATION_ERROR")


def test_cancel_stops_the_running_prompt(api: TestClient, project: Path, db: Database) -> None:
    """With a run manager (a runner that works until cancelled): the prompt runs, cancel
    stops it, the session is released and says how the run ended."""
    session_id = create(api, project)["id"]
    runner = WaitingRunner()
    portal = api.portal
    assert portal is not None

    async def start() -> Runtime:
        bus = EventBus(db)
        await bus.start()
        permissions = PermissionService(db)
        runs = RunManager(
            db, bus, runner, permissions=permissions, worker_id=make_worker_id(), poll_interval=0.1
        )
        await runs.start()
        return Runtime(bus, runner, permissions, runs)  # type: ignore[arg-type]

    runtime = portal.call(start)
    state = api.app.state.pocketcode  # type: ignore[attr-defined]
    state.runtime = runtime
    try:
        sent = api.post(f"/api/sessions/{session_id}/messages", json={"content": "long work"})
        assert sent.status_code == 202

        async def started() -> None:
            with anyio.fail_after(10):
                await runner.started.wait()

        portal.call(started)
        assert api.get(f"/api/sessions/{session_id}").json()["isWorking"] is True
        error(api.delete(f"/api/sessions/{session_id}"), 409, "CONFLICT")

        cancelled = api.post(f"/api/sessions/{session_id}/cancel")
        assert (cancelled.status_code, cancelled.content) == (204, b"")
        session = api.get(f"/api/sessions/{session_id}").json()
        assert (session["isWorking"], session["lastJobStatus"]) == (False, "cancelled")
        assert api.delete(f"/api/sessions/{session_id}").json() == {"success": True}
    finally:
        state.runtime = None
        portal.call(runtime.stop)
