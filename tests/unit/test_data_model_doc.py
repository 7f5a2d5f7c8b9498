"""docs/data-model.md stays true to the schema and to the two seed designs.

A column added to tables.py without a row in its table's section, a section or mapping row that
names a column that does not exist, or a seed column that loses its mapping row fails here.
No database is needed: the test reads `Base.metadata` and the Markdown.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from pocketcode.db.tables import ARCHIVED_TABLES, Base

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-model.md"

# Seed 000 (PokéCode): every table and column of /work/shared/seeds/000_1a093db9425f1a5a.txt.
SEED_000_TABLES: tuple[str, ...] = ("sessions", "session_messages", "files", "archived_sessions")
SEED_000_COLUMNS: tuple[str, ...] = (
    "sessions.id",
    "sessions.project_path",
    "sessions.claude_directory_path",
    "sessions.claude_code_session_id",
    "sessions.context",
    "sessions.status",
    "sessions.metadata",
    "sessions.is_working",
    "sessions.current_job_id",
    "sessions.last_job_status",
    "sessions.created_at",
    "sessions.updated_at",
    "sessions.last_accessed_at",
    "session_messages.id",
    "session_messages.session_id",
    "session_messages.text",
    "session_messages.type",
    "session_messages.claude_session_id",
    "session_messages.created_at",
    "files.id",
    "files.session_id",
    "files.path",
    "files.content",
    "files.encoding",
    "files.size",
    "files.mime_type",
    "files.created_at",
    "files.updated_at",
)
SEED_000_INDEXES: tuple[str, ...] = (
    "idx_sessions_status",
    "idx_sessions_last_accessed",
    "idx_sessions_project_path",
    "idx_messages_session_id",
    "idx_messages_created_at",
    "idx_messages_claude_session",
    "idx_files_session_path",
    "idx_files_session_id",
    "idx_files_updated_at",
)

# Seed 004 (PocketDev): its own tables, every column of /work/shared/seeds/004_d638e8cea76adc9a.txt.
SEED_004_TABLES: tuple[str, ...] = ("claude_sessions", "model_pricing", "app_settings")
SEED_004_COLUMNS: tuple[str, ...] = (
    "claude_sessions.id",
    "claude_sessions.claude_session_id",
    "claude_sessions.title",
    "claude_sessions.project_path",
    "claude_sessions.model",
    "claude_sessions.turn_count",
    "claude_sessions.status",
    "claude_sessions.process_pid",
    "claude_sessions.process_status",
    "claude_sessions.last_message_index",
    "claude_sessions.last_activity_at",
    "claude_sessions.created_at",
    "claude_sessions.updated_at",
    "model_pricing.id",
    "model_pricing.model_name",
    "model_pricing.input_price_per_million",
    "model_pricing.output_price_per_million",
    "model_pricing.cache_write_multiplier",
    "model_pricing.cache_read_multiplier",
    "model_pricing.created_at",
    "model_pricing.updated_at",
    "app_settings.id",
    "app_settings.key",
    "app_settings.value",
    "app_settings.created_at",
    "app_settings.updated_at",
)
SEED_004_INDEXES: tuple[str, ...] = (
    "claude_sessions(status)",
    "claude_sessions(last_activity_at)",
    "claude_sessions(project_path)",
)

# Seed 004's Laravel framework tables. The seed names the tables only; the columns are those of
# Laravel 11's default migrations (0001_01_01_00000{0,1,2}).
LARAVEL_TABLES: tuple[str, ...] = (
    "users",
    "password_reset_tokens",
    "sessions",
    "cache",
    "cache_locks",
    "jobs",
    "job_batches",
    "failed_jobs",
    "migrations",
)
LARAVEL_COLUMNS: tuple[str, ...] = (
    "users.id",
    "users.name",
    "users.email",
    "users.email_verified_at",
    "users.password",
    "users.remember_token",
    "users.created_at",
    "users.updated_at",
    "password_reset_tokens.email",
    "password_reset_tokens.token",
    "password_reset_tokens.created_at",
    "sessions.id",
    "sessions.user_id",
    "sessions.ip_address",
    "sessions.user_agent",
    "sessions.payload",
    "sessions.last_activity",
    "cache.key",
    "cache.value",
    "cache.expiration",
    "cache_locks.key",
    "cache_locks.owner",
    "cache_locks.expiration",
    "jobs.id",
    "jobs.queue",
    "jobs.payload",
    "jobs.attempts",
    "jobs.reserved_at",
    "jobs.available_at",
    "jobs.created_at",
    "job_batches.id",
    "job_batches.name",
    "job_batches.total_jobs",
    "job_batches.pending_jobs",
    "job_batches.failed_jobs",
    "job_batches.failed_job_ids",
    "job_batches.options",
    "job_batches.cancelled_at",
    "job_batches.created_at",
    "job_batches.finished_at",
    "failed_jobs.id",
    "failed_jobs.uuid",
    "failed_jobs.connection",
    "failed_jobs.queue",
    "failed_jobs.payload",
    "failed_jobs.exception",
    "failed_jobs.failed_at",
    "migrations.id",
    "migrations.migration",
    "migrations.batch",
)

NOT_STORED = "not stored"
# Tables that are ours but live outside Base.metadata.
EXTERNAL_COLUMNS: dict[str, frozenset[str]] = {"alembic_version": frozenset({"version_num"})}

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_CODE = re.compile(r"`([^`]+)`")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_CONSTRAINT_NAME = re.compile(r"(?:pk|fk|uq|ix|ck)_[a-z0-9_]+")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _split(text: str, level: int) -> list[tuple[str, str]]:
    """(heading, body) for each heading of exactly `level` #s; a body ends at the next heading
    of that level or higher."""
    sections: list[tuple[str, str]] = []
    heading: str | None = None
    body: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match and len(match.group(1)) <= level:
            if heading is not None:
                sections.append((heading, "\n".join(body)))
            heading = match.group(2) if len(match.group(1)) == level else None
            body = []
        elif heading is not None:
            body.append(line)
    if heading is not None:
        sections.append((heading, "\n".join(body)))
    return sections


def _chapter(title: str) -> str:
    bodies = [body for heading, body in _split(_doc(), 2) if heading == title]
    assert len(bodies) == 1, f"docs/data-model.md needs exactly one '## {title}' section"
    return bodies[0]


def _table_sections() -> dict[str, str]:
    """Table name → its section, from the `###` headings of '## Tables' (a heading may name
    several tables in backticks)."""
    sections: dict[str, str] = {}
    for heading, body in _split(_chapter("Tables"), 3):
        for name in _CODE.findall(heading):
            assert name not in sections, f"table {name!r} has two sections"
            sections[name] = body
    return sections


def _rows(body: str) -> list[list[str]]:
    """The cells of every Markdown table row in `body`, header rows included."""
    rows: list[list[str]] = []
    for line in body.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"\|[\s:|-]+\|?", line):
            continue
        cells = [cell.strip() for cell in _CELL_SPLIT.split(line)]
        rows.append(cells[1:-1] if line.endswith("|") else cells[1:])
    return rows


def _first_cells(body: str) -> set[str]:
    """The backticked name that opens each row (`x` in "| `x` | … |")."""
    names: set[str] = set()
    for row in _rows(body):
        match = _CODE.match(row[0]) if row else None
        if match:
            names.add(match.group(1))
    return names


def _mapping_subsection(keyword: str) -> str:
    bodies = [body for heading, body in _split(_chapter("Seed mapping"), 3) if keyword in heading]
    assert len(bodies) == 1, f"'## Seed mapping' needs exactly one '###' heading with {keyword!r}"
    return bodies[0]


def _our_tables() -> list[str]:
    archives = set(ARCHIVED_TABLES.values())
    return sorted(name for name in Base.metadata.tables if name not in archives)


def test_every_table_has_a_section() -> None:
    sections = set(_table_sections())
    missing = set(Base.metadata.tables) - sections
    assert not missing, f"tables without a section in docs/data-model.md: {sorted(missing)}"
    stale = sections - set(Base.metadata.tables)
    assert not stale, f"docs/data-model.md documents tables that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("table_name", _our_tables())
def test_every_column_is_documented(table_name: str) -> None:
    table: sa.Table = Base.metadata.tables[table_name]
    documented = _first_cells(_table_sections()[table_name])
    columns = {column.name for column in table.columns}
    missing = columns - documented
    assert not missing, f"columns of {table_name} missing from its section: {sorted(missing)}"
    stale = documented - columns
    assert not stale, f"{table_name}'s section lists columns that do not exist: {sorted(stale)}"


def test_archive_tables_document_their_own_columns() -> None:
    sections = _table_sections()
    for source, archive in ARCHIVED_TABLES.items():
        source_columns = {column.name for column in Base.metadata.tables[source].columns}
        own = {c.name for c in Base.metadata.tables[archive].columns} - source_columns
        text = set(_CODE.findall(sections[archive]))
        missing = own - text
        assert not missing, f"{archive}: undocumented archive-only columns {sorted(missing)}"


@pytest.mark.parametrize(
    ("keyword", "entries"),
    [
        pytest.param("Seed 000", SEED_000_TABLES + SEED_000_COLUMNS, id="seed-000"),
        pytest.param("`claude_sessions`", SEED_004_TABLES + SEED_004_COLUMNS, id="seed-004"),
        pytest.param("Laravel", LARAVEL_TABLES + LARAVEL_COLUMNS, id="seed-004-laravel"),
        pytest.param("Seed indexes", SEED_000_INDEXES + SEED_004_INDEXES, id="seed-indexes"),
    ],
)
def test_every_seed_table_and_column_is_mapped(keyword: str, entries: tuple[str, ...]) -> None:
    mapped = _first_cells(_mapping_subsection(keyword))
    missing = [entry for entry in entries if entry not in mapped]
    assert not missing, f"seed entries without a row under '{keyword}': {missing}"


@pytest.mark.parametrize("keyword", ["Seed 000", "`claude_sessions`", "Laravel"])
def test_mapping_targets_exist(keyword: str) -> None:
    """Every row names real tables/columns of ours, or says "not stored" and why."""
    tables = Base.metadata.tables
    for row in _rows(_mapping_subsection(keyword)):
        if not row or not _CODE.match(row[0]):
            continue  # the header row
        assert len(row) >= 3, f"mapping row needs seed, ours and note: {row}"
        seed, ours, note = row[0], row[1], row[2]
        if ours == NOT_STORED:
            assert note, f"{seed} is not stored but no reason is given"
            continue
        targets = _CODE.findall(ours)
        assert targets, f"{seed}: the 'ours' cell names no table or column: {ours!r}"
        for target in targets:
            table_name, _, column = target.partition(".")
            if table_name in EXTERNAL_COLUMNS:
                assert not column or column in EXTERNAL_COLUMNS[table_name], target
                continue
            assert table_name in tables, f"{seed} → {target}: no such table"
            assert not column or column in tables[table_name].columns, (
                f"{seed} → {target}: no such column"
            )


def test_constraint_and_index_names_exist() -> None:
    names: set[str] = set()
    for table in Base.metadata.tables.values():
        names.update(str(index.name) for index in table.indexes)
        names.update(str(constraint.name) for constraint in table.constraints)
    quoted = {code for code in _CODE.findall(_doc()) if _CONSTRAINT_NAME.fullmatch(code)}
    unknown = quoted - names
    assert not unknown, f"docs/data-model.md names constraints that do not exist: {sorted(unknown)}"
