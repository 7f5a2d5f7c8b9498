"""What runs used: tokens and cost by day, project and model, and the queue's counts.

Summed from jobs (one per prompt, with the usage of all its attempts). A job's model is the one
its run reported in its result, else the one the prompt asked for, else the session's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import JobRow, MessageRow, SessionRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import InvalidInput
from pocketcode.domain.states import JobStatus, MessageType

MAX_DAYS = 366
UNKNOWN_MODEL = "unknown"


@dataclass
class UsageTotals:
    jobs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def add(self, row: Any) -> None:
        self.jobs += 1
        self.input_tokens += int(row.input_tokens or 0)
        self.output_tokens += int(row.output_tokens or 0)
        self.cache_creation_tokens += int(row.cache_creation_tokens or 0)
        self.cache_read_tokens += int(row.cache_read_tokens or 0)
        self.cost_usd += Decimal(row.cost_usd or 0)


@dataclass
class UsageSummary:
    days: int
    total: UsageTotals = field(default_factory=UsageTotals)
    by_day: dict[str, UsageTotals] = field(default_factory=dict)
    by_project: dict[str, UsageTotals] = field(default_factory=dict)
    by_model: dict[str, UsageTotals] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueCounts:
    waiting: int
    active: int
    completed: int
    failed: int


def usage_summary(db: Database, days: int = 30) -> UsageSummary:
    """Usage of the jobs created in the last `days` days (UTC calendar days)."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be between 1 and {MAX_DAYS}")
    since = utcnow() - timedelta(days=days)
    result_model = (
        sa.select(sa.func.max(MessageRow.model))
        .where(MessageRow.job_id == JobRow.id, MessageRow.type == MessageType.RESULT)
        .correlate(JobRow)
        .scalar_subquery()
    )
    query = (
        sa.select(
            JobRow.created_at,
            JobRow.options,
            JobRow.input_tokens,
            JobRow.output_tokens,
            JobRow.cache_creation_tokens,
            JobRow.cache_read_tokens,
            JobRow.cost_usd,
            SessionRow.project_path,
            SessionRow.model.label("session_model"),
            result_model.label("result_model"),
        )
        .join(SessionRow, SessionRow.id == JobRow.session_id)
        .where(JobRow.created_at >= since)
        .order_by(JobRow.created_at)
    )
    summary = UsageSummary(days)
    with db.read() as session:
        for row in session.execute(query):
            options = row.options if isinstance(row.options, dict) else {}
            asked = options.get("model") if isinstance(options.get("model"), str) else None
            model = row.result_model or asked or row.session_model or UNKNOWN_MODEL
            day = row.created_at.strftime("%Y-%m-%d")
            for key, groups in (
                (day, summary.by_day),
                (row.project_path, summary.by_project),
                (model, summary.by_model),
            ):
                groups.setdefault(key, UsageTotals()).add(row)
            summary.total.add(row)
    return summary


def queue_counts(db: Database) -> QueueCounts:
    """Jobs by status: waiting, running, and finished well or badly (interrupted counts as
    failed)."""
    with db.read() as session:
        query = sa.select(JobRow.status, sa.func.count()).group_by(JobRow.status)
        counts: dict[JobStatus, int] = {status: int(n) for status, n in session.execute(query)}
    return QueueCounts(
        waiting=int(counts.get(JobStatus.PENDING, 0)),
        active=int(counts.get(JobStatus.PROCESSING, 0)),
        completed=int(counts.get(JobStatus.COMPLETED, 0)),
        failed=int(counts.get(JobStatus.FAILED, 0)) + int(counts.get(JobStatus.INTERRUPTED, 0)),
    )
