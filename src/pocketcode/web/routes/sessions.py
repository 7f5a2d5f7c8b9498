"""Sessions and messages: PokéCode's endpoints with its exact shapes (../shared/pokecode-api.md),
and pocketcode's own on the same resources (queue, permissions, pricing, usage).

Every route here is private (see `web.security`). The services do the work; blocking calls run
in sync routes (FastAPI's thread pool) or through `run_in_threadpool`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from pocketcode.db.tables import DeviceRow, ModelPricingRow, SessionRow
from pocketcode.domain.errors import Conflict, InvalidInput, NotFound
from pocketcode.domain.ids import parse_id
from pocketcode.domain.states import LifecycleStatus, Provider
from pocketcode.domain.timefmt import iso_z, now_iso_z
from pocketcode.services.app_settings import KnownSettings
from pocketcode.services.devices import DeviceService
from pocketcode.services.events import Event
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MAX_PAGE as MAX_MESSAGES
from pocketcode.services.messages import MessageService
from pocketcode.services.permissions import Answer, PermissionService, request_data
from pocketcode.services.pricing import Price, PricingService
from pocketcode.services.runs import validate_run_options
from pocketcode.services.sessions import MAX_SEARCH_CHARS, SessionService, SessionWithPending
from pocketcode.services.usage import UsageTotals, queue_counts, usage_summary
from pocketcode.web.app import AppState
from pocketcode.web.deps import Me, State
from pocketcode.web.presenters import job_view, pokecode_message, raw_message, session_view
from pocketcode.web.responses import model_response
from pocketcode.web.schemas import (
    AnsweredPermissionOut,
    CancelledJobOut,
    ConnectIn,
    ConnectOut,
    CreateSessionIn,
    DeviceListOut,
    MessagesPageOut,
    PermissionAnswerIn,
    PermissionsOut,
    PricesIn,
    PricesOut,
    PromptIn,
    QueueMetricsOut,
    QueueOut,
    SessionListOut,
    SessionOut,
    SuccessOut,
    UpdateSessionIn,
    UsageOut,
    errors,
)

router = APIRouter(prefix="/api", tags=["sessions"])

Json = dict[str, Any]
Responses = dict[str, Any]

POLL_INTERVAL_S = 5
# PokéCode's client sends these model names; the CLI knows opus-plan as `opusplan`.
_MODEL_ALIASES = {"opus-plan": "opusplan"}


# -- helpers ---------------------------------------------------------------------------------


def _sessions(state: AppState) -> SessionService:
    return SessionService(state.db, state.settings.allowed_roots)


def _permissions(state: AppState) -> PermissionService:
    return state.runtime.permissions if state.runtime else PermissionService(state.db)


@contextmanager
def _pokecode_404() -> Iterator[None]:
    """PokéCode's exact 404 for a session that is not there."""
    try:
        yield
    except NotFound:
        raise NotFound("Session not found") from None


def _load(state: AppState, session_id: str) -> SessionRow:
    """The session, or PokéCode's exact 404."""
    with _pokecode_404():
        return _sessions(state).get(session_id)


def _open(state: AppState, session_id: str | uuid.UUID) -> SessionWithPending:
    """The session with its pending permission count (one statement), or PokéCode's 404."""
    with _pokecode_404():
        return _sessions(state).get_with_pending(session_id)


def _view(found: SessionWithPending) -> Json:
    return session_view(found.row, pending_permissions=found.pending_permissions)


# -- sessions (PokéCode) ---------------------------------------------------------------------


_CREATED: Responses = {"status_code": 201, "response_model": SessionOut, "responses": errors(400)}


@router.post("/sessions/", include_in_schema=False, **_CREATED)
@router.post("/sessions", summary="Create a session in a project folder", **_CREATED)
def create_session(body: CreateSessionIn, state: State, _me: Me) -> Json:
    if body.provider in ("codex-cli", "codex"):
        raise InvalidInput("the Codex provider is not supported by this server yet")
    # What the request leaves out comes from the settings default_model / _permission_mode.
    defaults = KnownSettings(state.db, state.keyring).session_defaults()
    row = _sessions(state).create(
        body.project_path,
        provider=Provider.CLAUDE_CODE,
        title=body.title,
        context=body.context,
        model=body.model or defaults.model,
        permission_mode=body.permission_mode or defaults.permission_mode,
        metadata=body.metadata,
    )
    return session_view(row)


_LISTED: Responses = {"response_model": SessionListOut, "responses": errors(400)}


@router.get("/sessions/", include_in_schema=False, **_LISTED)
@router.get("/sessions", summary="Sessions, most recently accessed first", **_LISTED)
def list_sessions(
    state: State,
    _me: Me,
    session_state: Annotated[
        Literal["active", "inactive", "archived"] | None, Query(alias="state")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_SEARCH_CHARS, description="Part of the title or project path, any case"
        ),
    ] = None,
) -> Response:
    status = LifecycleStatus(session_state) if session_state else None
    listing = _sessions(state).listing(status=status, search=q, limit=limit, offset=offset)
    body = {
        "sessions": [_view(found) for found in listing.sessions],
        "total": listing.total,
        "limit": limit,
        "offset": offset,
    }
    return model_response(body, SessionListOut)


@router.get(
    "/sessions/{session_id}",
    summary="One session",
    response_model=SessionOut,
    responses=errors(404),
)
def get_session(session_id: str, state: State, _me: Me) -> Response:
    found = _open(state, session_id)
    _sessions(state).touch_if_stale(found.row)
    return model_response(_view(found), SessionOut)


@router.patch(
    "/sessions/{session_id}",
    summary="Change context, metadata, title, model, permission mode; archive or unarchive",
    response_model=SessionOut,
    responses=errors(400, 404, 409),
)
def update_session(session_id: str, body: UpdateSessionIn, state: State, _me: Me) -> Json:
    _load(state, session_id)
    row = _sessions(state).update(
        session_id,
        title=body.title,
        context=body.context,
        model=body.model,
        permission_mode=body.permission_mode,
        metadata=body.metadata,
        status=LifecycleStatus(body.status) if body.status else None,
    )
    return _view(_open(state, row.id))


@router.delete(
    "/sessions/{session_id}",
    summary="Delete a session (refused while it runs)",
    response_model=SuccessOut,
    responses=errors(404, 409),
)
def delete_session(session_id: str, state: State, _me: Me) -> Json:
    _load(state, session_id)
    _sessions(state).delete(session_id)
    return {"success": True}


# -- messages (PokéCode) ---------------------------------------------------------------------


@router.get(
    "/sessions/{session_id}/messages",
    summary="Messages in PokéCode's shape, oldest first",
    response_model=MessagesPageOut,
    response_model_exclude_unset=True,
    responses=errors(400, 404),
)
def list_messages(
    session_id: str,
    state: State,
    _me: Me,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MESSAGES)] = 50,
) -> Response:
    with _pokecode_404():
        chat = MessageService(state.db).chat_page(session_id, after_id=after, limit=limit)
    _sessions(state).touch_if_stale(chat.session.row)
    page = chat.page
    messages = [m for m in map(pokecode_message, page.messages) if m is not None]
    body = {
        "messages": messages,
        "session": _view(chat.session),
        "pagination": {
            "hasNextPage": page.has_next_page,
            "nextCursor": page.next_cursor,
            "totalFetched": len(messages),
        },
    }
    return model_response(body, MessagesPageOut, exclude_unset=True)


@router.get(
    "/sessions/{session_id}/messages/raw",
    summary="What the agent sent, as stored",
    response_model=list[dict[str, Any]],
    responses=errors(400, 404),
)
def raw_messages(
    session_id: str,
    state: State,
    _me: Me,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MESSAGES)] = MAX_MESSAGES,
) -> list[Json]:
    row = _load(state, session_id)
    _sessions(state).touch_if_stale(row)
    page = MessageService(state.db).page(row.id, after_id=after, limit=limit)
    return [raw_message(m) for m in page.messages]


@router.post(
    "/sessions/{session_id}/messages",
    status_code=202,
    response_class=Response,
    summary="Queue a prompt (202, empty body: PokéCode's client parses no body then)",
    responses={202: {"description": "Queued; no body"}, **errors(400, 404, 409)},
)
async def send_prompt(session_id: str, body: PromptIn, state: State, _me: Me) -> Response:
    options: Json = {"allowedTools": body.allowed_tools, "permissionMode": body.permission_mode}
    if body.model is not None:
        options["model"] = _MODEL_ALIASES.get(body.model, body.model)
    checked = validate_run_options(options)
    # No read of the session first: storing the prompt refuses a missing or archived one.
    with _pokecode_404():
        parsed = parse_id(session_id, "session")
        if state.runtime is not None:
            await state.runtime.runs.submit(parsed, body.content, checked)
        else:
            # Without a run manager here, the prompt waits for a server process that has one.
            await run_in_threadpool(JobService(state.db).enqueue, parsed, body.content, checked)
    return Response(status_code=202)


@router.post(
    "/sessions/{session_id}/cancel",
    status_code=204,
    response_class=Response,
    summary="Stop the session's current run (queued prompts stay queued)",
    responses={204: {"description": "Cancelled, or nothing ran"}, **errors(404, 409)},
)
async def cancel_run(session_id: str, state: State, _me: Me) -> Response:
    row = await run_in_threadpool(_load, state, session_id)
    if state.runtime is not None:
        await state.runtime.runs.cancel_session(row.id)
    elif row.is_working:
        raise Conflict("this server process runs no prompts; cancel on the one running it")
    return Response(status_code=204)


# -- the prompt queue ------------------------------------------------------------------------


@router.get(
    "/sessions/{session_id}/queue",
    summary="Prompts waiting to run, next first",
    response_model=QueueOut,
    responses=errors(404),
)
def list_queue(session_id: str, state: State, _me: Me) -> Json:
    row = _load(state, session_id)
    return {"jobs": [job_view(job) for job in JobService(state.db).list_queue(row.id)]}


@router.delete(
    "/sessions/{session_id}/queue/{job_id}",
    summary="Cancel one queued prompt",
    response_model=CancelledJobOut,
    responses=errors(404, 409),
)
async def cancel_queued(session_id: str, job_id: str, state: State, _me: Me) -> Json:
    row = await run_in_threadpool(_load, state, session_id)
    jobs = JobService(state.db)
    job = await run_in_threadpool(jobs.get, job_id)
    if job.session_id != row.id:
        raise NotFound(f"job {job_id} not found")
    if state.runtime is not None:
        job = await state.runtime.runs.cancel_job(job.id)
    else:
        job = await run_in_threadpool(jobs.cancel_pending, job.id)
    return {"job": job_view(job)}


# -- permissions -----------------------------------------------------------------------------


@router.get(
    "/sessions/{session_id}/permissions",
    summary="Tool uses waiting for an answer",
    response_model=PermissionsOut,
    responses=errors(404),
)
def list_permissions(session_id: str, state: State, _me: Me) -> Json:
    row = _load(state, session_id)
    return {"permissions": [request_data(r) for r in _permissions(state).pending(row.id)]}


@router.post(
    "/permissions/{request_id}",
    summary="Answer a tool use: allow, deny or always",
    response_model=AnsweredPermissionOut,
    responses=errors(400, 404, 409),
)
async def answer_permission(
    request_id: str, body: PermissionAnswerIn, state: State, me: Me
) -> Json:
    answered, *also_allowed = await run_in_threadpool(
        lambda: _permissions(state).answer_all(
            request_id, Answer(body.decision), reason=body.reason, user_id=me.user_id
        )
    )
    if state.runtime is not None:
        for row in (answered, *also_allowed):
            await state.runtime.bus.publish(
                Event(row.session_id, "permission", None, request_data(row))
            )
    return {"permission": request_data(answered)}


# -- pricing ---------------------------------------------------------------------------------


def _price_view(row: ModelPricingRow) -> Json:
    def number(value: Decimal | None) -> float | None:
        return float(value) if value is not None else None

    return {
        "modelName": row.model_name,
        "inputPricePerMillion": number(row.input_price_per_million),
        "outputPricePerMillion": number(row.output_price_per_million),
        "cacheWriteMultiplier": number(row.cache_write_multiplier),
        "cacheReadMultiplier": number(row.cache_read_multiplier),
        "updatedAt": iso_z(row.updated_at),
    }


@router.get("/pricing", summary="Model prices (USD per million tokens)", response_model=PricesOut)
def list_pricing(state: State, _me: Me) -> Json:
    return {"prices": [_price_view(r) for r in PricingService(state.db).list_prices()]}


@router.put(
    "/pricing",
    summary="Set the prices of the given models",
    response_model=PricesOut,
    responses=errors(400),
)
def update_pricing(body: PricesIn, state: State, _me: Me) -> Json:
    pricing = PricingService(state.db)
    pricing.set_prices(
        [
            Price(
                price.model_name,
                price.input_price_per_million,
                price.output_price_per_million,
                price.cache_write_multiplier,
                price.cache_read_multiplier,
            )
            for price in body.prices
        ]
    )
    return {"prices": [_price_view(r) for r in pricing.list_prices()]}


# -- usage -----------------------------------------------------------------------------------


def _totals(totals: UsageTotals) -> Json:
    return {
        "jobs": totals.jobs,
        "inputTokens": totals.input_tokens,
        "outputTokens": totals.output_tokens,
        "cacheCreationTokens": totals.cache_creation_tokens,
        "cacheReadTokens": totals.cache_read_tokens,
        "costUsd": float(totals.cost_usd),
    }


@router.get("/usage", summary="Tokens and cost by day, project and model", response_model=UsageOut)
def get_usage(state: State, _me: Me, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Json:
    summary = usage_summary(state.db, days)
    return {
        "days": summary.days,
        "total": _totals(summary.total),
        "byDay": [{"day": k, **_totals(v)} for k, v in summary.by_day.items()],
        "byProject": [{"projectPath": k, **_totals(v)} for k, v in summary.by_project.items()],
        "byModel": [{"model": k, **_totals(v)} for k, v in summary.by_model.items()],
    }


# -- devices and the queue (PokéCode) ----------------------------------------------------------


@router.post(
    "/connect",
    summary="A mobile client reports in; answers how often to poll",
    response_model=ConnectOut,
    responses=errors(400),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ConnectIn.model_json_schema()}},
        }
    },
)
async def connect(request: Request, state: State, _me: Me) -> Json:
    # PokéCode answered 400 to a bad body here (elsewhere validation is 422).
    # pydantic's own JSON parser: bad UTF-8, lone surrogates and nesting too deep for
    # Python's parser are all a ValidationError.
    try:
        body = ConnectIn.model_validate_json(await request.body())
    except ValidationError as exc:
        where = ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors())
        raise InvalidInput(f"invalid connect request: {where}") from None
    await run_in_threadpool(
        lambda: DeviceService(state.db).connect(
            body.device_id,
            body.device_name.strip(),
            platform=body.platform,
            app_version=body.app_version,
        )
    )
    return {"status": "ok", "poll_interval_s": POLL_INTERVAL_S, "server_time": now_iso_z()}


def _device_view(row: DeviceRow) -> Json:
    return {
        "deviceId": row.device_id,
        "deviceName": row.device_name,
        "platform": row.platform,
        "appVersion": row.app_version,
        "lastConnectedAt": iso_z(row.last_connected_at),
    }


@router.get("/connect/devices", summary="Devices seen recently", response_model=DeviceListOut)
def list_devices(
    state: State,
    _me: Me,
    active_within_seconds: Annotated[
        int, Query(alias="activeWithinSeconds", ge=1, le=86400)
    ] = 3600,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Json:
    rows, total = DeviceService(state.db).list_active(
        active_within_seconds=active_within_seconds, limit=limit, offset=offset
    )
    return {
        "devices": [_device_view(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get(
    "/queue/metrics",
    summary="Prompts waiting, running and finished",
    response_model=QueueMetricsOut,
)
def queue_metrics(state: State, _me: Me) -> Json:
    counts = queue_counts(state.db)
    return {
        "waiting": counts.waiting,
        "active": counts.active,
        "completed": counts.completed,
        "failed": counts.failed,
        "delayed": 0,
        "paused": 0,
        "total": counts.waiting + counts.active,
    }
