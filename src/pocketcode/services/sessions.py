"""Sessions: create, find, update, the seeds' scopes, and the process-state methods of seed
004's ClaudeSession model (increment_turn, mark_completed, start_streaming…)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pocketcode.db.engine import Database
from pocketcode.db.tables import CONTEXT_MAX_CHARS, JobRow, PermissionRequestRow, SessionRow
from pocketcode.db.types import utcnow
from pocketcode.domain.claude_paths import encode_project_dir_name
from pocketcode.domain.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from pocketcode.domain.ids import parse_id
from pocketcode.domain.states import (
    ACTIVE_PROCESS_STATUSES,
    JobStatus,
    LifecycleStatus,
    PermissionMode,
    PermissionStatus,
    ProcessStatus,
    Provider,
    can_move_process,
)
from pocketcode.services.paths import resolve_project_dir

TITLE_MAX_CHARS = 255
DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_SEARCH_CHARS = 200
# How finely last_accessed_at follows reads (it orders the list and decides what `db archive`
# takes, where a minute does not matter).
ACCESS_RESOLUTION = timedelta(minutes=1)


def claude_config_dir() -> Path:
    """The CLI's configuration folder: `CLAUDE_CONFIG_DIR`, else `~/.claude`."""
    configured = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".claude"


def claude_transcript_dir(project_path: Path, config_dir: Path | None = None) -> Path:
    base = config_dir or claude_config_dir()
    return base / "projects" / encode_project_dir_name(str(project_path))


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one turn or one run, added to a session's totals."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    cli_cost_usd: Decimal | None = None


def _check_context(context: str | None) -> None:
    if context is not None and len(context) > CONTEXT_MAX_CHARS:
        raise InvalidInput(f"context is longer than {CONTEXT_MAX_CHARS} characters")


def _check_title(title: str | None) -> str | None:
    if title is None:
        return None
    title = title.strip()
    if not title:
        raise InvalidInput("title is empty")
    if len(title) > TITLE_MAX_CHARS:
        raise InvalidInput(f"title is longer than {TITLE_MAX_CHARS} characters")
    return title


def _check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise InvalidInput("offset must not be negative")


def _parse_id(session_id: uuid.UUID | str) -> uuid.UUID:
    return parse_id(session_id, "session")


# The number of a session's tool uses waiting for an answer, next to the session in the same
# statement (a view of a session shows it): one index probe per session row.
PENDING_PERMISSIONS = (
    sa.select(sa.func.count())
    .where(
        PermissionRequestRow.session_id == SessionRow.id,
        PermissionRequestRow.status == PermissionStatus.PENDING,
    )
    .correlate(SessionRow)
    .scalar_subquery()
    .label("pending_permissions")
)
_WITH_PENDING = sa.select(SessionRow, PENDING_PERMISSIONS).where(
    SessionRow.id == sa.bindparam("session_id"), SessionRow.deleted_at.is_(None)
)


_RECENT_FIRST = (SessionRow.last_accessed_at.desc(), SessionRow.id.desc())


@functools.cache
def _listing_queries(
    by_status: bool, by_project: bool, by_search: bool
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The session list's page (rows with their pending permission counts) and its count,
    for a combination of filters, with bound `status`, `project_path`, `pattern`, `limit`
    and `offset`. Built once: building and hashing them cost more than running them.

    Both descending: the index on (last_accessed_at, id) read backwards. The ids come from the
    index alone (PostgreSQL: an index-only scan), so an offset skips index entries rather than
    whole rows, and only the page's rows are read and have their pending permissions counted.
    Selecting the rows themselves with the offset read all the skipped ones (6 ms for
    offset=4000 of 10,000 on PostgreSQL, 0.4 ms this way). The count is over the ordered ids:
    the ORDER BY steers PostgreSQL's planner to an index-only scan (0.9 ms for 10,000
    sessions) instead of a sequential scan of the table's wide rows (3.6 ms)."""
    conditions: list[sa.ColumnElement[bool]] = [SessionRow.deleted_at.is_(None)]
    if by_status:
        conditions.append(SessionRow.status == sa.bindparam("status"))
    if by_project:
        conditions.append(SessionRow.project_path == sa.bindparam("project_path"))
    if by_search:
        pattern = sa.bindparam("pattern", type_=sa.String())
        conditions.append(
            sa.or_(
                SessionRow.title.ilike(pattern, escape="\\"),
                SessionRow.project_path.ilike(pattern, escape="\\"),
            )
        )
    matching = sa.select(SessionRow.id).where(*conditions).order_by(*_RECENT_FIRST)
    page = matching.limit(sa.bindparam("limit")).offset(sa.bindparam("offset")).subquery()
    rows = (
        sa.select(SessionRow, PENDING_PERMISSIONS)
        .join(page, SessionRow.id == page.c.id)
        .order_by(*_RECENT_FIRST)
    )
    return rows, sa.select(sa.func.count()).select_from(matching.subquery())


@dataclass(frozen=True)
class SessionWithPending:
    row: SessionRow
    pending_permissions: int


@dataclass(frozen=True)
class SessionListing:
    """A page of the session list, each with its pending permission count, and the total."""

    sessions: list[SessionWithPending]
    total: int


def load_with_pending(session: Session, session_id: uuid.UUID | str) -> SessionWithPending:
    """`load_session` and the number of its pending permission requests, in one statement."""
    found = session.execute(_WITH_PENDING, {"session_id": _parse_id(session_id)}).first()
    if found is None:
        raise NotFound(f"session {session_id} not found")
    return SessionWithPending(found[0], int(found[1]))


def load_session(
    session: Session, session_id: uuid.UUID | str, *, lock: bool = False
) -> SessionRow:
    """The row of a session (not soft-deleted), or NotFound. `lock` takes a row lock on
    PostgreSQL (SQLite's write transactions are already exclusive)."""
    query = sa.select(SessionRow).where(
        SessionRow.id == _parse_id(session_id), SessionRow.deleted_at.is_(None)
    )
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"session {session_id} not found")
    return row


def _has_processing_job(session: Session, session_id: uuid.UUID) -> bool:
    return bool(
        session.scalar(
            sa.select(
                sa.exists().where(
                    JobRow.session_id == session_id, JobRow.status == JobStatus.PROCESSING
                )
            )
        )
    )


def move_process_in(row: SessionRow, target: ProcessStatus, **values: Any) -> None:
    """Move a session's process status (InvalidTransition if it may not) and set `values`,
    on a row loaded (locked) in the caller's write transaction."""
    if row.process_status != target and not can_move_process(row.process_status, target):
        raise InvalidTransition(
            f"session {row.id} cannot go from {row.process_status.value} to {target.value}"
        )
    row.process_status = target
    for name, value in values.items():
        setattr(row, name, value)
    now = utcnow()
    row.last_activity_at = now
    row.updated_at = now


class SessionService:
    def __init__(self, db: Database, allowed_roots: Sequence[Path]) -> None:
        self.db = db
        self.allowed_roots = list(allowed_roots)

    # -- create, find, update ------------------------------------------------------------

    def create(
        self,
        project_path: str,
        *,
        provider: Provider = Provider.CLAUDE_CODE,
        title: str | None = None,
        context: str | None = None,
        model: str | None = None,
        permission_mode: PermissionMode | None = None,
        metadata: dict[str, Any] | None = None,
        provider_session_id: str | None = None,
    ) -> SessionRow:
        project = resolve_project_dir(project_path, self.allowed_roots)
        _check_context(context)
        row = SessionRow(
            provider=provider,
            project_path=str(project),
            claude_directory_path=(
                str(claude_transcript_dir(project)) if provider is Provider.CLAUDE_CODE else None
            ),
            provider_session_id=provider_session_id,
            title=_check_title(title),
            context=context,
            model=model,
            permission_mode=permission_mode,
            metadata_=dict(metadata or {}),
        )
        with self.db.write() as session:
            if provider_session_id is not None:
                existing = session.scalar(
                    sa.select(SessionRow.id).where(
                        SessionRow.provider == provider,
                        SessionRow.provider_session_id == provider_session_id,
                    )
                )
                if existing is not None:
                    raise Conflict(
                        f"provider session {provider_session_id} is already session {existing}"
                    )
            session.add(row)
        return row

    def get(self, session_id: uuid.UUID | str) -> SessionRow:
        with self.db.read() as session:
            return load_session(session, session_id)

    def get_with_pending(self, session_id: uuid.UUID | str) -> SessionWithPending:
        """The session and the number of its pending permission requests."""
        with self.db.read() as session:
            return load_with_pending(session, session_id)

    def find_by_provider_session(
        self, provider: Provider, provider_session_id: str
    ) -> SessionRow | None:
        with self.db.read() as session:
            return session.scalar(
                sa.select(SessionRow).where(
                    SessionRow.provider == provider,
                    SessionRow.provider_session_id == provider_session_id,
                    SessionRow.deleted_at.is_(None),
                )
            )

    def list_sessions(
        self,
        *,
        status: LifecycleStatus | None = None,
        project_path: str | None = None,
        search: str | None = None,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
    ) -> tuple[list[SessionRow], int]:
        """Sessions, most recently accessed first, and the total matching. `search` keeps
        those whose title or project path contains it, ignoring case."""
        listing = self.listing(
            status=status, project_path=project_path, search=search, limit=limit, offset=offset
        )
        return [listed.row for listed in listing.sessions], listing.total

    def listing(
        self,
        *,
        status: LifecycleStatus | None = None,
        project_path: str | None = None,
        search: str | None = None,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
    ) -> SessionListing:
        """`list_sessions` with each session's pending permission count (what the API shows),
        in one read transaction."""
        _check_page(limit, offset)
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        if project_path is not None:
            params["project_path"] = project_path
        if search:
            if len(search) > MAX_SEARCH_CHARS:
                raise InvalidInput(f"a search is at most {MAX_SEARCH_CHARS} characters")
            if "\x00" in search:
                # No stored title or path holds a NUL (PostgreSQL cannot even be asked).
                return SessionListing([], 0)
            # `%` and `_` typed by the user are literal characters, not wildcards.
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["pattern"] = f"%{escaped}%"
        page_query, count_query = _listing_queries(
            status is not None, project_path is not None, bool(search)
        )
        with self.db.read() as session:
            rows = session.execute(page_query, params).all()
            if (rows or offset == 0) and len(rows) < limit:
                # The last page, and it has a row or starts at the top: the total is known
                # without counting.
                total = offset + len(rows)
            else:
                total = int(session.scalar(count_query, params) or 0)
        return SessionListing([SessionWithPending(row, int(n)) for row, n in rows], total)

    def active(self, limit: int = DEFAULT_PAGE) -> list[SessionRow]:
        """Seed 000's "find active sessions": status active, most recently accessed first."""
        rows, _ = self.list_sessions(status=LifecycleStatus.ACTIVE, limit=limit)
        return rows

    def recent(self, days: float, limit: int = MAX_PAGE) -> list[SessionRow]:
        """Seed 004's `recent($days)` scope: activity within the last `days` days."""
        if days <= 0:
            raise InvalidInput("days must be positive")
        _check_page(limit, 0)
        cutoff = utcnow() - timedelta(days=days)
        with self.db.read() as session:
            return list(
                session.scalars(
                    sa.select(SessionRow)
                    .where(SessionRow.deleted_at.is_(None), SessionRow.last_activity_at >= cutoff)
                    .order_by(SessionRow.last_activity_at.desc())
                    .limit(limit)
                ).all()
            )

    def update(
        self,
        session_id: uuid.UUID | str,
        *,
        title: str | None = None,
        context: str | None = None,
        model: str | None = None,
        permission_mode: PermissionMode | None = None,
        metadata: dict[str, Any] | None = None,
        status: LifecycleStatus | None = None,
    ) -> SessionRow:
        """Change the given fields; a field left at None keeps its value."""
        _check_context(context)
        title = _check_title(title)
        with self.db.write() as session:
            row = load_session(session, session_id, lock=True)
            if title is not None:
                row.title = title
            if context is not None:
                row.context = context
            if model is not None:
                row.model = model.strip() or None
            if permission_mode is not None:
                row.permission_mode = permission_mode
            if metadata is not None:
                row.metadata_ = dict(metadata)
            if status is not None:
                row.status = status
            row.updated_at = utcnow()
        return row

    def touch(self, session_id: uuid.UUID | str) -> None:
        """Record that the user looked at the session (seed 000's last_accessed_at)."""
        self._update_where(session_id, last_accessed_at=utcnow())

    def touch_if_stale(self, row: SessionRow) -> None:
        """`touch` a session just read, unless that was done less than a minute ago: opening a
        chat polls it, and a write per read would cost every reader the write lock."""
        if utcnow() - row.last_accessed_at >= ACCESS_RESOLUTION:
            self.touch(row.id)

    def delete(self, session_id: uuid.UUID | str) -> None:
        """Soft delete, as PokéCode's DELETE did; refused while a run is active, also one
        claimed and not yet started (its job is processing before the session is working)."""
        with self.db.write() as session:
            row = load_session(session, session_id, lock=True)
            if row.is_working or _has_processing_job(session, row.id):
                raise Conflict("the session is running; cancel it before deleting")
            row.deleted_at = utcnow()
            row.status = LifecycleStatus.INACTIVE

    def purge(self, session_id: uuid.UUID | str) -> None:
        """Delete the row for good; messages, files, jobs and requests go by cascade."""
        with self.db.write() as session:
            row = session.get(SessionRow, _parse_id(session_id))
            if row is None:
                raise NotFound(f"session {session_id} not found")
            if row.is_working:
                raise Conflict("the session is running; cancel it before deleting")
            session.delete(row)

    # -- run state (seed 004's ClaudeSession methods) -------------------------------------

    def increment_turn(self, session_id: uuid.UUID | str) -> int:
        with self.db.write() as session:
            turns = session.scalar(
                sa.update(SessionRow)
                .where(SessionRow.id == _parse_id(session_id), SessionRow.deleted_at.is_(None))
                .values(
                    turn_count=SessionRow.turn_count + 1,
                    last_activity_at=utcnow(),
                    updated_at=utcnow(),
                )
                .returning(SessionRow.turn_count)
            )
        if turns is None:
            raise NotFound(f"session {session_id} not found")
        return int(turns)

    def mark_completed(self, session_id: uuid.UUID | str) -> None:
        """The last run succeeded (seed 004 set status=completed; ours keeps lifecycle apart)."""
        self._update_where(
            session_id, last_job_status=JobStatus.COMPLETED, last_activity_at=utcnow()
        )

    def mark_failed(self, session_id: uuid.UUID | str) -> None:
        self._update_where(session_id, last_job_status=JobStatus.FAILED, last_activity_at=utcnow())

    def mark_starting(self, session_id: uuid.UUID | str, job_id: uuid.UUID | None) -> None:
        self._move(session_id, ProcessStatus.STARTING, is_working=True, current_job_id=job_id)

    def start_streaming(
        self, session_id: uuid.UUID | str, pid: int | None, create_time: float | None = None
    ) -> None:
        """The agent process is up and producing output."""
        self._move(
            session_id,
            ProcessStatus.STREAMING,
            is_working=True,
            process_pid=pid,
            process_create_time=create_time,
        )

    def complete_streaming(self, session_id: uuid.UUID | str) -> None:
        self._finish(session_id, ProcessStatus.COMPLETED, JobStatus.COMPLETED)

    def fail_streaming(self, session_id: uuid.UUID | str) -> None:
        self._finish(session_id, ProcessStatus.FAILED, JobStatus.FAILED)

    def cancel_streaming(self, session_id: uuid.UUID | str) -> None:
        self._finish(session_id, ProcessStatus.CANCELLED, JobStatus.CANCELLED)

    def is_streaming(self, session_id: uuid.UUID | str) -> bool:
        return self.get(session_id).process_status in ACTIVE_PROCESS_STATUSES

    def add_usage(self, session_id: uuid.UUID | str, usage: Usage) -> None:
        """Add a turn's tokens and cost to the session's totals, atomically."""
        values: dict[str, Any] = {
            "input_tokens": SessionRow.input_tokens + usage.input_tokens,
            "output_tokens": SessionRow.output_tokens + usage.output_tokens,
            "cache_creation_tokens": SessionRow.cache_creation_tokens + usage.cache_creation_tokens,
            "cache_read_tokens": SessionRow.cache_read_tokens + usage.cache_read_tokens,
            "total_cost_usd": SessionRow.total_cost_usd + usage.cost_usd,
            "updated_at": utcnow(),
        }
        if usage.cli_cost_usd is not None:
            # The CLI reports a cumulative total across resumes: keep the latest, not a sum.
            values["cli_total_cost_usd"] = usage.cli_cost_usd
        self._update_where(session_id, **values)

    # -- internals --------------------------------------------------------------------------

    def _update_where(self, session_id: uuid.UUID | str, **values: Any) -> None:
        with self.db.write() as session:
            result = session.execute(
                sa.update(SessionRow)
                .where(SessionRow.id == _parse_id(session_id), SessionRow.deleted_at.is_(None))
                .values(**values)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"session {session_id} not found")

    def _move(self, session_id: uuid.UUID | str, target: ProcessStatus, **values: Any) -> None:
        with self.db.write() as session:
            move_process_in(load_session(session, session_id, lock=True), target, **values)

    def _finish(
        self, session_id: uuid.UUID | str, target: ProcessStatus, outcome: JobStatus
    ) -> None:
        self._move(
            session_id,
            target,
            is_working=False,
            current_job_id=None,
            process_pid=None,
            process_create_time=None,
            last_job_status=outcome,
        )
