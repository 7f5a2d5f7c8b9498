"""Sessions, messages and files services on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pocketcode.db.engine import Database
from pocketcode.db.tables import (
    FileRow,
    JobRow,
    MessageRow,
    PermissionRequestRow,
    SessionRow,
)
from pocketcode.db.types import ZSTD_MAGIC, utcnow
from pocketcode.domain.claude_paths import encode_project_dir_name
from pocketcode.domain.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from pocketcode.domain.states import (
    JobStatus,
    LifecycleStatus,
    MessageType,
    PermissionMode,
    ProcessStatus,
)
from pocketcode.services.files import FileService
from pocketcode.services.messages import MessageService, NewMessage, append_batch_in
from pocketcode.services.sessions import SessionService, Usage
from tests.helpers import run_in_threads


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "projects" / "demo.app"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def sessions(db: Database, tmp_path: Path) -> SessionService:
    return SessionService(db, [tmp_path / "projects"])


@pytest.fixture
def messages(db: Database) -> MessageService:
    return MessageService(db)


def test_create_resolves_the_project_and_knows_its_transcript_folder(
    sessions: SessionService, project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude"))
    row = sessions.create(str(project / ".." / project.name), title="  Fix the bug ")
    assert row.project_path == str(project)
    assert row.title == "Fix the bug"
    assert row.claude_directory_path == str(
        tmp_path / "claude" / "projects" / encode_project_dir_name(str(project))
    )
    stored = sessions.get(row.id)
    assert stored.status is LifecycleStatus.ACTIVE
    assert stored.process_status is ProcessStatus.IDLE
    assert stored.created_at.tzinfo is not None
    assert stored.metadata_ == {}


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: str(tmp / "elsewhere"), "outside the allowed project roots"),
        (lambda tmp: str(tmp / "projects" / "missing"), "not an existing directory"),
        (lambda tmp: "relative/path", "must be absolute"),
        (lambda tmp: str(tmp / "projects") + "\x00x", "NUL"),
        (lambda tmp: "   ", "empty"),
    ],
)
def test_create_refuses_bad_project_paths(
    sessions: SessionService, tmp_path: Path, make_path: Callable[[Path], str], message: str
) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InvalidInput, match=message):
        sessions.create(make_path(tmp_path))


def test_a_symlink_out_of_the_roots_is_refused(sessions: SessionService, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (tmp_path / "projects").mkdir(exist_ok=True)
    (tmp_path / "projects" / "link").symlink_to(outside)
    with pytest.raises(InvalidInput, match="outside"):
        sessions.create(str(tmp_path / "projects" / "link"))


def test_context_is_limited_to_5000_characters_by_service_and_database(
    sessions: SessionService, project: Path, db: Database
) -> None:
    row = sessions.create(str(project), context="x" * 5000)
    with pytest.raises(InvalidInput, match="5000"):
        sessions.update(row.id, context="x" * 5001)
    with pytest.raises(IntegrityError), db.write() as session:
        session.add(SessionRow(project_path=str(project), context="y" * 5001))


def test_unknown_sessions_are_not_found(sessions: SessionService) -> None:
    with pytest.raises(NotFound):
        sessions.get(uuid.uuid4())
    with pytest.raises(NotFound):
        sessions.get("not-a-uuid")


def test_list_scopes_and_paging(sessions: SessionService, project: Path, db: Database) -> None:
    rows = [sessions.create(str(project), title=f"s{i}") for i in range(5)]
    now = utcnow()
    with db.write() as session:
        for index, row in enumerate(rows):
            session.execute(
                sa.update(SessionRow)
                .where(SessionRow.id == row.id)
                .values(
                    last_accessed_at=now - timedelta(hours=index),
                    last_activity_at=now - timedelta(days=index * 3),
                )
            )
    sessions.update(rows[4].id, status=LifecycleStatus.ARCHIVED)
    listed, total = sessions.list_sessions(limit=2)
    assert total == 5
    assert [row.title for row in listed] == ["s0", "s1"]
    assert [row.title for row in sessions.active()] == ["s0", "s1", "s2", "s3"]
    assert [row.title for row in sessions.recent(days=4)] == ["s0", "s1"]
    archived, total = sessions.list_sessions(status=LifecycleStatus.ARCHIVED)
    assert (total, [row.title for row in archived]) == (1, ["s4"])
    with pytest.raises(InvalidInput):
        sessions.list_sessions(limit=0)
    with pytest.raises(InvalidInput):
        sessions.recent(days=0)


def test_update_changes_only_what_is_given(sessions: SessionService, project: Path) -> None:
    row = sessions.create(str(project), title="first", model="claude-sonnet-4-5")
    sessions.update(
        row.id, permission_mode=PermissionMode.ACCEPT_EDITS, metadata={"repository": "my-repo"}
    )
    updated = sessions.get(row.id)
    assert updated.title == "first"
    assert updated.model == "claude-sonnet-4-5"
    assert updated.permission_mode is PermissionMode.ACCEPT_EDITS
    assert updated.metadata_ == {"repository": "my-repo"}
    with pytest.raises(InvalidInput):
        sessions.update(row.id, title=" ")


def test_run_state_follows_the_process(sessions: SessionService, project: Path) -> None:
    row = sessions.create(str(project))
    job_id = uuid.uuid4()
    assert not sessions.is_streaming(row.id)
    sessions.mark_starting(row.id, job_id)
    assert sessions.is_streaming(row.id)
    sessions.start_streaming(row.id, pid=4242, create_time=1700000000.25)
    running = sessions.get(row.id)
    assert (running.process_status, running.process_pid, running.is_working) == (
        ProcessStatus.STREAMING,
        4242,
        True,
    )
    assert running.current_job_id == job_id
    assert running.process_create_time == 1700000000.25
    assert sessions.increment_turn(row.id) == 1
    assert sessions.increment_turn(row.id) == 2
    sessions.complete_streaming(row.id)
    done = sessions.get(row.id)
    assert done.process_status is ProcessStatus.COMPLETED
    assert done.process_pid is None
    assert done.is_working is False
    assert done.current_job_id is None
    assert done.last_job_status is JobStatus.COMPLETED
    assert done.turn_count == 2
    assert done.last_activity_at is not None
    with pytest.raises(InvalidTransition):
        sessions.cancel_streaming(row.id)
    sessions.start_streaming(row.id, pid=1)
    sessions.cancel_streaming(row.id)
    assert sessions.get(row.id).last_job_status is JobStatus.CANCELLED
    sessions.start_streaming(row.id, pid=2)
    sessions.fail_streaming(row.id)
    assert sessions.get(row.id).process_status is ProcessStatus.FAILED
    sessions.mark_completed(row.id)
    assert sessions.get(row.id).last_job_status is JobStatus.COMPLETED
    sessions.mark_failed(row.id)
    assert sessions.get(row.id).last_job_status is JobStatus.FAILED


def test_usage_adds_up_and_the_cli_total_is_the_latest(
    sessions: SessionService, project: Path
) -> None:
    row = sessions.create(str(project))
    sessions.add_usage(row.id, Usage(10, 20, 30, 40, Decimal("0.5"), Decimal("0.6")))
    sessions.add_usage(row.id, Usage(1, 2, 3, 4, Decimal("0.25"), Decimal("0.9")))
    totals = sessions.get(row.id)
    assert (totals.input_tokens, totals.output_tokens) == (11, 22)
    assert (totals.cache_creation_tokens, totals.cache_read_tokens) == (33, 44)
    assert totals.token_count == 110
    assert totals.total_cost_usd == Decimal("0.75")
    assert totals.cli_total_cost_usd == Decimal("0.9")


def test_delete_is_soft_and_refused_while_running(sessions: SessionService, project: Path) -> None:
    row = sessions.create(str(project))
    sessions.start_streaming(row.id, pid=1)
    with pytest.raises(Conflict):
        sessions.delete(row.id)
    sessions.complete_streaming(row.id)
    sessions.delete(row.id)
    with pytest.raises(NotFound):
        sessions.get(row.id)
    assert sessions.list_sessions()[1] == 0


def test_purge_cascades_to_everything_the_session_owns(
    sessions: SessionService, messages: MessageService, project: Path, db: Database
) -> None:
    keep = sessions.create(str(project))
    gone = sessions.create(str(project))
    for row in (keep, gone):
        with db.write() as session:
            job = JobRow(session_id=row.id, prompt="hi")
            session.add(job)
            session.flush()
            session.add(FileRow(session_id=row.id, path="a.txt", content="a"))
            session.add(PermissionRequestRow(session_id=row.id, job_id=job.id, tool_name="Bash"))
        messages.append(row.id, NewMessage(MessageType.USER, "hello"))
    sessions.purge(gone.id)
    with db.read() as session:
        for table in (MessageRow, FileRow, JobRow, PermissionRequestRow):
            owners = set(session.scalars(sa.select(table.session_id)))
            assert owners == {keep.id}, table.__tablename__


def test_messages_get_contiguous_seq_and_page_in_order(
    sessions: SessionService, messages: MessageService, project: Path
) -> None:
    row = sessions.create(str(project))
    stored = [
        messages.append(row.id, NewMessage(MessageType.ASSISTANT, f"m{i}", subtype="text"))
        for i in range(7)
    ]
    assert [message.seq for message in stored] == list(range(1, 8))
    first = messages.page(row.id, limit=3)
    assert [message.text for message in first.messages] == ["m0", "m1", "m2"]
    assert first.has_next_page
    assert first.next_cursor == str(stored[2].id)
    second = messages.page(row.id, after_id=first.next_cursor, limit=10)
    assert [message.text for message in second.messages] == ["m3", "m4", "m5", "m6"]
    assert not second.has_next_page
    assert second.next_cursor is None
    assert [message.seq for message in messages.since(row.id, 5)] == [6, 7]
    assert messages.count(row.id) == 7
    session_row = sessions.get(row.id)
    assert (session_row.message_count, session_row.last_message_index) == (7, 7)
    with pytest.raises(InvalidInput):
        messages.page(row.id, limit=1001)
    with pytest.raises(InvalidInput):
        messages.page(row.id, after_id="nonsense")
    with pytest.raises(NotFound):
        messages.append(uuid.uuid4(), NewMessage(MessageType.USER, "x"))


def test_a_user_message_records_when_the_user_last_wrote(
    sessions: SessionService, messages: MessageService, project: Path
) -> None:
    row = sessions.create(str(project))
    messages.append(row.id, NewMessage(MessageType.ASSISTANT, "hi"))
    assert sessions.get(row.id).last_message_sent_at is None
    messages.append(row.id, NewMessage(MessageType.USER, "do it"))
    assert sessions.get(row.id).last_message_sent_at is not None


def test_messages_are_deduplicated_by_provider_uuid(
    sessions: SessionService, messages: MessageService, project: Path
) -> None:
    row = sessions.create(str(project))
    first = messages.append(
        row.id, NewMessage(MessageType.USER, "hi", provider_message_uuid="u-1", raw={"a": 1})
    )
    again = messages.append(row.id, NewMessage(MessageType.USER, "hi", provider_message_uuid="u-1"))
    assert again.id == first.id
    batch = messages.append_many(
        row.id,
        [
            NewMessage(MessageType.USER, "hi", provider_message_uuid="u-1"),
            NewMessage(MessageType.ASSISTANT, "yo", provider_message_uuid="u-2"),
        ],
    )
    assert [message.provider_message_uuid for message in batch] == ["u-2"]
    assert [m.seq for m in messages.page(row.id).messages] == [1, 2]
    assert sessions.get(row.id).message_count == 2
    assert messages.page(row.id).messages[0].raw == {"a": 1}


def test_concurrent_appends_get_unique_contiguous_seq(
    sessions: SessionService, messages: MessageService, project: Path
) -> None:
    row = sessions.create(str(project))
    other = sessions.create(str(project))

    def work(index: int) -> None:
        for n in range(25):
            target = row.id if n % 5 else other.id
            messages.append(target, NewMessage(MessageType.ASSISTANT, f"{index}-{n}"))

    run_in_threads(8, work)
    for session_id, expected in ((row.id, 160), (other.id, 40)):
        seqs = [message.seq for message in messages.page(session_id, limit=1000).messages]
        assert seqs == list(range(1, expected + 1))
        assert sessions.get(session_id).message_count == expected


def test_concurrent_duplicates_store_one_message(
    sessions: SessionService, messages: MessageService, project: Path
) -> None:
    row = sessions.create(str(project))
    run_in_threads(
        6,
        lambda index: messages.append(
            row.id, NewMessage(MessageType.USER, "same", provider_message_uuid="dup")
        ),
    )
    assert [m.seq for m in messages.page(row.id).messages] == [1]


def test_files_are_tracked_per_session_and_path(
    sessions: SessionService, project: Path, db: Database
) -> None:
    files = FileService(db)
    row = sessions.create(str(project))
    files.track(row.id, "./src//index.js", "console.log('hi')")
    files.track(row.id, "src/index.js", "console.log('héllo')")
    files.track(row.id, "README.md", "# readme")
    listed = files.list_files(row.id)
    assert [file.path for file in listed] == ["README.md", "src/index.js"]
    index = files.get(row.id, "src/index.js")
    assert index.content == "console.log('héllo')"
    assert index.size == len("console.log('héllo')".encode())
    assert index.mime_type == "text/javascript"
    assert index.encoding == "utf-8"
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", "", "."):
        with pytest.raises(InvalidInput):
            files.track(row.id, bad, "x")
    files.delete(row.id, "README.md")
    with pytest.raises(NotFound):
        files.get(row.id, "README.md")
    with pytest.raises(NotFound):
        files.delete(row.id, "README.md")
    with pytest.raises(IntegrityError), db.write() as session:
        session.add(FileRow(session_id=row.id, path="src/index.js"))


@pytest.mark.parametrize("size", [3, 100])
def test_batches_skip_stored_uuids_without_seq_gaps(
    sessions: SessionService, messages: MessageService, project: Path, size: int
) -> None:
    row = sessions.create(str(project))
    other = sessions.create(str(project))
    messages.append_many(
        row.id, [NewMessage(MessageType.ASSISTANT, "old", provider_message_uuid="u-1")]
    )
    batch = [
        NewMessage(MessageType.ASSISTANT, f"m{i}", provider_message_uuid=f"u-{i}")
        for i in range(size)
    ]
    stored = messages.append_grouped({row.id: batch, other.id: batch[:2]})
    # u-1 was stored already in `row` only; each session numbers its rows without a gap.
    assert [m.provider_message_uuid for m in stored[row.id]] == [
        f"u-{i}" for i in range(size) if i != 1
    ]
    assert [m.seq for m in messages.page(row.id, limit=1000).messages] == list(range(1, size + 1))
    assert [m.seq for m in messages.page(other.id).messages] == [1, 2]
    assert sessions.get(row.id).message_count == size


def test_every_field_of_a_batch_is_stored_as_given(
    sessions: SessionService, messages: MessageService, project: Path, db: Database
) -> None:
    """What the batch returns (and the live stream shows) is what the database holds, field
    by field, in order (on PostgreSQL the batch travels as one array per column)."""
    row = sessions.create(str(project))
    with db.write() as session:
        job = JobRow(session_id=row.id, prompt="hi")
        session.add(job)
    batch = [
        NewMessage(
            MessageType.ASSISTANT,
            f"text {index} é",
            subtype="text" if index % 2 else None,
            raw={"index": index, "nested": [None, index]} if index != 1 else None,
            job_id=job.id if index else None,
            provider_session_id=f"ps-{index}",
            provider_message_uuid=f"u-{index}",
            provider_message_id=f"msg-{index}" if index else None,
            parent_tool_use_id="toolu_1" if index == 2 else None,
            model="claude-sonnet-4-5",
            input_tokens=10 * index or None,
            output_tokens=index,
            cache_creation_tokens=None,
            cache_read_tokens=2**40 if index == 2 else None,
            cost_usd=Decimal("0.000081") * index if index else None,
        )
        for index in range(3)
    ]
    returned = messages.append_grouped({row.id: batch})[row.id]
    fields = ["id", "session_id", "seq", "created_at", *NewMessage.__dataclass_fields__]
    read_back = messages.page(row.id).messages

    def values(rows: list[MessageRow]) -> list[tuple[object, ...]]:
        return [tuple(getattr(message, name) for name in fields) for message in rows]

    assert values(read_back) == values(returned)
    assert [m.seq for m in read_back] == [1, 2, 3]
    assert [m.text for m in read_back] == ["text 0 é", "text 1 é", "text 2 é"]
    assert read_back[2].cache_read_tokens == 2**40
    assert read_back[2].cost_usd == Decimal("0.000162")


def test_appending_to_a_missing_or_deleted_session_stores_nothing(
    sessions: SessionService, messages: MessageService, project: Path
) -> None:
    live = sessions.create(str(project))
    deleted = sessions.create(str(project))
    sessions.delete(deleted.id)
    message = NewMessage(MessageType.ASSISTANT, "x")
    for target in (uuid.uuid4(), deleted.id):
        with pytest.raises(NotFound):
            messages.append_many(target, [message])
        # With another session in the batch: one transaction, nothing stored for either.
        with pytest.raises(NotFound):
            messages.append_grouped({live.id: [message], target: [message]})
    assert messages.page(live.id).messages == []
    assert sessions.get(live.id).last_message_index == 0
    assert messages.append(live.id, message).seq == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_batch_of_one_session_is_one_statement_without_a_transaction(
    sessions: SessionService, messages: MessageService, project: Path, db: Database
) -> None:
    """Storing what an agent just said is one round trip: the seq bump and the insert are one
    statement, which commits by itself (no BEGIN, no COMMIT). Inside a caller's transaction
    (a queued prompt and its job) the append is that one statement too."""
    row = sessions.create(str(project))
    executed: list[tuple[str, object]] = []

    def record(conn: sa.Connection, *args: object) -> None:
        executed.append(
            (str(args[1]).split()[0], conn.get_execution_options().get("isolation_level"))
        )

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        batch = [NewMessage(MessageType.ASSISTANT, f"m{i}") for i in range(3)]
        assert [m.seq for m in messages.append_grouped({row.id: batch})[row.id]] == [1, 2, 3]
        assert executed == [("WITH", "AUTOCOMMIT")]
        executed.clear()
        with db.write_connection() as connection:
            assert [m.seq for m in append_batch_in(connection, row.id, batch)] == [4, 5, 6]
        assert [statement for statement, _ in executed] == ["WITH"]
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


def test_inside_a_transaction_stored_uuids_are_skipped_without_seq_gaps(
    sessions: SessionService, messages: MessageService, project: Path, db: Database
) -> None:
    """The append a caller runs in its own transaction (a queued prompt is stored with its
    job): a provider uuid stored already is skipped and the rest numbered without a gap."""
    row = sessions.create(str(project))
    messages.append(row.id, NewMessage(MessageType.ASSISTANT, "old", provider_message_uuid="u-1"))
    batch = [
        NewMessage(MessageType.ASSISTANT, f"m{i}", provider_message_uuid=f"u-{i}") for i in range(4)
    ]
    with db.write() as session:
        stored = append_batch_in(session, row.id, batch)
        session.add(JobRow(session_id=row.id, prompt="in the same transaction"))
    assert [(m.provider_message_uuid, m.seq) for m in stored] == [
        ("u-0", 2),
        ("u-2", 3),
        ("u-3", 4),
    ]
    assert [m.seq for m in messages.page(row.id).messages] == [1, 2, 3, 4]
    assert (sessions.get(row.id).message_count, sessions.get(row.id).last_message_index) == (4, 4)


def test_raw_documents_round_trip_and_rows_written_as_json_text_still_read(
    sessions: SessionService, messages: MessageService, project: Path, db: Database
) -> None:
    session = sessions.create(str(project))
    raw = {"type": "assistant", "n": 2**70, "text": "é" * 5000, "nested": [None, 1.5, True]}
    stored = messages.append(
        session.id, NewMessage(type=MessageType.ASSISTANT, subtype="text", text="x", raw=raw)
    )
    empty = messages.append(session.id, NewMessage(type=MessageType.USER, text="no raw"))
    if db.is_sqlite:
        with db.read() as tx:
            packed = tx.execute(
                sa.text("SELECT raw FROM session_messages WHERE id = :id"), {"id": stored.id.hex}
            ).scalar_one()
        assert packed.startswith(ZSTD_MAGIC) and len(packed) < 1000  # 10 KB of JSON
        # A row of a database written before raw documents were compressed: JSON text.
        with db.write() as tx:
            tx.execute(
                sa.text("UPDATE session_messages SET raw = :raw WHERE id = :id"),
                {"raw": '{"legacy": [1, 2]}', "id": empty.id.hex},
            )
    page = {m.id: m.raw for m in messages.page(session.id, limit=10).messages}
    assert page[stored.id] == raw  # an integer past 64 bits too (orjson refuses it)
    assert page[empty.id] == ({"legacy": [1, 2]} if db.is_sqlite else None)
