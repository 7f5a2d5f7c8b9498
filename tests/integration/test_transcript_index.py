"""The transcript indexer on edge-case files written by hand: partial, malformed, oversized and
non-UTF-8 lines, truncated, replaced and deleted files, sub-agent files. Both backends."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow, SessionRow, TranscriptFileRow
from pocketcode.db.types import ZSTD_MAGIC
from pocketcode.domain.states import MessageType, Provider
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.sessions import SessionService
from pocketcode.services.transcript_index import TranscriptIndexer
from tests.helpers import run_cli

SID = "11111111-2222-3333-4444-555555555555"
CWD = "/home/dev/my_project.v2"


def line(kind: str, content: Any, *, uid: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {
        "type": kind,
        "uuid": uid or str(uuid.uuid4()),
        "sessionId": SID,
        "cwd": CWD,
        "timestamp": "2026-11-20T10:00:00.000Z",
        "message": {"role": kind, "content": content},
        **extra,
    }
    if kind == "assistant":
        data["message"].update(
            id=extra.pop("message_id", f"msg_{uuid.uuid4().hex[:8]}"),
            model="claude-sonnet-4-5",
            usage={"input_tokens": 10, "output_tokens": 5},
        )
        data.pop("message_id", None)
    return json.dumps(data).encode() + b"\n"


def prompt(text: str, **extra: Any) -> bytes:
    return line("user", text, **extra)


def reply(text: str, **extra: Any) -> bytes:
    return line("assistant", [{"type": "text", "text": text}], **extra)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "claude"


@pytest.fixture
def transcript(config_dir: Path) -> Path:
    folder = config_dir / "projects" / "-home-dev-my-project-v2"
    folder.mkdir(parents=True)
    return folder / f"{SID}.jsonl"


def stored(db: Database) -> list[MessageRow]:
    with db.read() as session:
        return list(session.scalars(sa.select(MessageRow).order_by(MessageRow.seq)))


def the_session(db: Database) -> SessionRow:
    row = SessionService(db, []).find_by_provider_session(Provider.CLAUDE_CODE, SID)
    assert row is not None
    return row


def file_row(db: Database, path: Path) -> TranscriptFileRow:
    with db.read() as session:
        row = session.scalar(
            sa.select(TranscriptFileRow).where(TranscriptFileRow.path == str(path))
        )
    assert row is not None
    return row


def test_a_transcript_becomes_a_session_with_title_project_and_usage(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    transcript.write_bytes(
        prompt("<command-name>/clear</command-name>", isMeta=True)
        + prompt("<local-command-stdout></local-command-stdout>")
        + prompt("Fix the   failing\ntest")
        + reply("Looking", message_id="msg_a")
        + line(
            "assistant",
            [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}],
            message_id="msg_a",
        )
        + line("user", [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}])
        + line("system", None, subtype="compact_boundary")
        + b'{"type":"attachment","uuid":"x","sessionId":"'
        + SID.encode()
        + b'"}\n'
    )
    summary = TranscriptIndexer(db, config_dir).scan()
    assert (summary.sessions_new, summary.files_scanned, summary.lines_skipped) == (1, 1, 0)
    row = the_session(db)
    assert row.title == "Fix the failing test"
    assert row.project_path == CWD  # from the lines, not the lossy folder name
    assert row.claude_directory_path == str(transcript.parent)
    # Two blocks of one API message: its usage counts once.
    assert (row.input_tokens, row.output_tokens) == (10, 5)
    subtypes = [(m.type, m.subtype) for m in stored(db)]
    assert (MessageType.SYSTEM, "compact_boundary") in subtypes
    assert (MessageType.USER, "tool_result") in subtypes
    assert (MessageType.ASSISTANT, "tool_use") in subtypes
    assert summary.messages_imported == len(subtypes) == 7  # the attachment is not a message


def test_unchanged_files_are_not_opened_and_growth_is_read_from_the_offset(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    transcript.write_bytes(prompt("first") + reply("one"))
    indexer = TranscriptIndexer(db, config_dir)
    first = indexer.scan()
    assert first.bytes_read == transcript.stat().st_size

    again = indexer.scan()
    assert (again.files_unchanged, again.bytes_read, again.messages_imported) == (1, 0, 0)

    before = transcript.stat().st_size
    addition = prompt("second") + reply("two")
    with transcript.open("ab") as handle:
        handle.write(addition)
    grown = indexer.scan()
    assert grown.bytes_read == len(addition)
    assert grown.messages_imported == 2 and grown.sessions_updated == 1
    assert file_row(db, transcript).parsed_offset == before + len(addition)
    assert [m.text for m in stored(db)] == ["first", "one", "second", "two"]


def test_a_partial_last_line_waits_until_it_is_complete(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    last = reply("the end")
    transcript.write_bytes(prompt("hi") + last[:20])
    indexer = TranscriptIndexer(db, config_dir)
    summary = indexer.scan()
    assert (summary.messages_imported, summary.lines_skipped) == (1, 0)
    assert file_row(db, transcript).parsed_offset == len(prompt("hi"))
    with transcript.open("ab") as handle:
        handle.write(last[20:])
    assert indexer.scan().messages_imported == 1
    assert [m.text for m in stored(db)] == ["hi", "the end"]


def test_malformed_oversized_and_non_utf8_lines_are_skipped_and_counted(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    huge = reply("x" * (5 * 1024 * 1024))
    transcript.write_bytes(
        prompt("before")
        + b'{"type": "user", "broken\n'
        + b"[1, 2, 3]\n"
        + huge
        + b'{"type":"user","uuid":"bad","message":{"content":"\xff\xfe"}}\n'
        + reply("after")
    )
    summary = TranscriptIndexer(db, config_dir, max_line_bytes=1024 * 1024).scan()
    assert summary.lines_skipped == 4
    assert [m.text for m in stored(db)] == ["before", "after"]
    assert file_row(db, transcript).lines_skipped == 4
    assert file_row(db, transcript).parsed_offset == transcript.stat().st_size


def test_an_oversized_partial_line_is_not_passed_over(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    transcript.write_bytes(prompt("before") + b'{"type":"assistant","x":"' + b"y" * 300_000)
    indexer = TranscriptIndexer(db, config_dir, max_line_bytes=100_000)
    assert indexer.scan().lines_skipped == 0
    assert file_row(db, transcript).parsed_offset == len(prompt("before"))
    with transcript.open("ab") as handle:
        handle.write(b'"}\n' + reply("after"))
    summary = indexer.scan()
    assert (summary.lines_skipped, summary.messages_imported) == (1, 1)


def test_a_truncated_or_replaced_file_is_read_again_without_duplicates(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    keep = prompt("kept", uid="u-1") + reply("also kept", uid="u-2")
    transcript.write_bytes(keep + reply("dropped later", uid="u-3"))
    indexer = TranscriptIndexer(db, config_dir)
    indexer.scan()
    transcript.write_bytes(keep)  # truncated: smaller than the offset
    summary = indexer.scan()
    assert (summary.files_scanned, summary.messages_imported) == (1, 0)
    assert file_row(db, transcript).parsed_offset == len(keep)

    replacement = transcript.with_suffix(".new")
    replacement.write_bytes(keep + reply("new", uid="u-4") + reply("newer", uid="u-5"))
    os.replace(replacement, transcript)  # another inode, larger than before
    assert indexer.scan().messages_imported == 2
    texts = [m.text for m in stored(db)]
    assert texts == ["kept", "also kept", "dropped later", "new", "newer"]
    assert the_session(db).message_count == 5


def test_a_deleted_file_keeps_its_messages(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    transcript.write_bytes(prompt("remember me") + reply("sure"))
    indexer = TranscriptIndexer(db, config_dir)
    indexer.scan()
    transcript.unlink()
    summary = indexer.scan()
    assert summary.files_gone == 1
    assert file_row(db, transcript).gone_at is not None
    assert [m.text for m in stored(db)] == ["remember me", "sure"]
    assert indexer.scan().files_gone == 0  # marked once


def agent_call(call_id: str, task: str) -> bytes:
    call = {"description": "d", "prompt": task, "subagent_type": "general-purpose"}
    block = {"type": "tool_use", "id": call_id, "name": "Agent", "input": call}
    return line("assistant", [block])


def test_a_subagent_file_attaches_to_its_parent_session_under_its_agent_call(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    transcript.write_bytes(
        prompt("use two agents")
        + agent_call("toolu_early", "sub task")
        + agent_call("toolu_other", "another task")
        + agent_call("toolu_late", "sub task")
        + reply("delegated")
    )
    folder = transcript.parent / SID / "subagents"
    folder.mkdir(parents=True)
    first, second = folder / "agent-a1.jsonl", folder / "agent-a2.jsonl"
    first.write_bytes(
        prompt("sub task", isSidechain=True, agentId="a1") + reply("a1 done", isSidechain=True)
    )
    second.write_bytes(
        prompt(" sub task", isSidechain=True, agentId="a2") + reply("a2 done", isSidechain=True)
    )
    summary = TranscriptIndexer(db, config_dir).scan()
    assert summary.sessions_new == 1 and summary.files_scanned == 3
    row = the_session(db)
    assert row.title == "use two agents"
    assert row.message_count == 9
    assert row.turn_count == 1  # a sub-agent's prompt is not a turn of the user
    assert file_row(db, first).is_subagent and file_row(db, first).session_id == row.id
    # Two calls with the same prompt: each file takes one, the latest first.
    parents = {m.text: m.parent_tool_use_id for m in stored(db)}
    assert {parents["a1 done"], parents["a2 done"]} == {"toolu_early", "toolu_late"}
    assert parents["a1 done"] == file_row(db, first).parent_tool_use_id
    main = [m for m in stored(db) if m.text in ("use two agents", "Agent", "delegated")]
    assert len(main) == 5 and {m.parent_tool_use_id for m in main} == {None}
    assert [m.subtype for m in stored(db) if m.text.strip() == "sub task"] == ["text", "text"]

    # Lines appended later are read from the offset, without the prompt: the call was kept.
    with first.open("ab") as handle:
        handle.write(reply("a1 again", isSidechain=True))
    TranscriptIndexer(db, config_dir).scan()
    parents = {m.text: m.parent_tool_use_id for m in stored(db)}
    assert parents["a1 again"] == parents["a1 done"]


def test_a_subagent_file_read_before_its_call_was_stored_moves_under_it_later(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    # The watcher can read a sub-agent's first lines before the main transcript's call.
    transcript.write_bytes(prompt("use an agent"))
    agent = transcript.parent / SID / "subagents" / "agent-a1.jsonl"
    agent.parent.mkdir(parents=True)
    agent.write_bytes(
        prompt("sub task", isSidechain=True, agentId="a1") + reply("a1 first", isSidechain=True)
    )
    TranscriptIndexer(db, config_dir).scan()
    assert {m.parent_tool_use_id for m in stored(db)} == {None}

    with transcript.open("ab") as handle:
        handle.write(agent_call("toolu_1", "sub task"))
    with agent.open("ab") as handle:
        handle.write(reply("a1 second", isSidechain=True))
    TranscriptIndexer(db, config_dir).scan()
    parents = {m.text: m.parent_tool_use_id for m in stored(db)}
    assert parents["sub task"] == parents["a1 first"] == parents["a1 second"] == "toolu_1"
    assert parents["use an agent"] is None and parents["Agent"] is None
    assert file_row(db, agent).parent_tool_use_id == "toolu_1"


def test_a_subagent_file_without_its_call_stays_in_the_main_conversation(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    transcript.write_bytes(prompt("use an agent") + reply("delegating"))
    agent = transcript.parent / SID / "subagents" / "agent-a1b2.jsonl"
    agent.parent.mkdir(parents=True)
    agent.write_bytes(
        prompt("sub task", isSidechain=True, agentId="a1b2") + reply("sub done", isSidechain=True)
    )
    summary = TranscriptIndexer(db, config_dir).scan()
    assert summary.files_scanned == 2 and the_session(db).message_count == 4
    assert [m.parent_tool_use_id for m in stored(db)] == [None] * 4
    assert file_row(db, agent).parent_tool_use_id is None


def test_a_session_created_here_is_found_again_by_provider_session_id(
    db: Database, config_dir: Path, transcript: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    ours = SessionService(db, [tmp_path]).create(str(project), provider_session_id=SID)
    MessageService(db).append(
        ours.id,
        NewMessage(MessageType.USER, "asked here", subtype="prompt"),
    )
    transcript.write_bytes(prompt("asked here", uid="p-1") + reply("answer", uid="r-1"))
    summary = TranscriptIndexer(db, config_dir).scan()
    assert (summary.sessions_new, summary.sessions_updated) == (0, 1)
    texts = [(m.text, m.provider_message_uuid) for m in stored(db)]
    # The prompt stored when it was queued takes its transcript uuid instead of repeating.
    assert texts == [("asked here", "p-1"), ("answer", "r-1")]


def test_a_deleted_session_is_not_brought_back(
    db: Database, config_dir: Path, transcript: Path, tmp_path: Path
) -> None:
    transcript.write_bytes(prompt("hello") + reply("hi"))
    indexer = TranscriptIndexer(db, config_dir)
    indexer.scan()
    SessionService(db, [tmp_path]).delete(the_session(db).id)
    with transcript.open("ab") as handle:
        handle.write(reply("more"))
    assert indexer.scan().messages_imported == 0


def test_a_file_vanishing_before_it_is_read_is_skipped(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    summary = TranscriptIndexer(db, config_dir).scan([transcript])
    assert (summary.files_skipped, summary.messages_imported) == (1, 0)


def test_nul_characters_from_a_tools_binary_output_are_stored_as_replacement_characters(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    # PostgreSQL text and jsonb cannot hold NUL: both backends store U+FFFD instead.
    binary = [{"type": "tool_result", "tool_use_id": "t1", "content": "ELF\u0000\u0001"}]
    transcript.write_bytes(
        prompt("Show \u0000 the binary") + line("user", binary) + reply("It is an ELF file")
    )
    summary = TranscriptIndexer(db, config_dir).scan()
    assert (summary.messages_imported, summary.lines_skipped) == (3, 0)
    rows = stored(db)
    assert [m.text for m in rows] == [
        "Show \ufffd the binary",
        "ELF\ufffd\u0001",
        "It is an ELF file",
    ]
    assert rows[1].raw is not None
    assert rows[1].raw["message"]["content"][0]["content"] == "ELF\ufffd\u0001"
    assert the_session(db).title == "Show \ufffd the binary"


def test_stored_raw_lines_leave_out_the_clis_copy_of_tool_output_and_are_compressed_on_sqlite(
    db: Database, config_dir: Path, transcript: Path
) -> None:
    output = "line of the file\n" * 2000
    result = [{"type": "tool_result", "tool_use_id": "t1", "content": output}]
    transcript.write_bytes(
        prompt("Read it")
        + line("user", result, toolUseResult={"file": {"content": output}}, isSidechain=False)
    )
    TranscriptIndexer(db, config_dir).scan()
    rows = stored(db)
    assert rows[1].text == output
    raw = rows[1].raw
    assert raw is not None
    assert "toolUseResult" not in raw
    assert raw["message"]["content"][0]["content"] == output
    assert raw["isSidechain"] is False and raw["sessionId"] == SID
    with db.engine.connect() as connection:
        stored_raw = connection.execute(
            sa.text("SELECT raw FROM session_messages WHERE id = :id"),
            {"id": MessageRow.__table__.c.id.type.bind_processor(db.engine.dialect)(rows[1].id)}
            if db.is_sqlite
            else {"id": rows[1].id},
        ).scalar_one()
        small = connection.execute(
            sa.text("SELECT raw FROM session_messages WHERE seq = 1")
        ).scalar_one()
    if db.is_sqlite:
        # zstd bytes, a fraction of the JSON: SQLite compresses nothing itself.
        assert isinstance(stored_raw, bytes) and stored_raw.startswith(ZSTD_MAGIC)
        assert len(stored_raw) < len(output) / 10
        # A small line (the prompt) is kept as its JSON bytes: zstd would hardly shrink it.
        assert isinstance(small, bytes) and json.loads(small) == rows[0].raw
    else:
        assert stored_raw == raw  # jsonb (PostgreSQL compresses big values itself)


def summary_counts(out: str) -> dict[str, str]:
    """The rows of the import summary table: label → count."""
    rows = [row.split("│") for row in out.splitlines() if row.count("│") == 3]
    return {" ".join(cells[1].split()): cells[2].strip() for cells in rows}


def test_the_import_command_prints_a_summary_and_reads_nothing_twice(
    config_dir: Path,
    transcript: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", f"sqlite:///{config_dir.parent / 'cli.db'}")
    transcript.write_bytes(prompt("Imported from the terminal") + reply("Hello") + b"{broken\n")
    code, out, _ = run_cli(capsys, "import", str(config_dir))
    assert code == 0
    counts = summary_counts(out)
    assert counts["sessions new"] == "1" and counts["messages imported"] == "2"
    assert counts["lines skipped"] == "1"
    code, out, _ = run_cli(capsys, "import", str(config_dir))
    counts = summary_counts(out)
    assert (counts["files unchanged"], counts["messages imported"]) == ("1", "0")
    code, out, _ = run_cli(capsys, "sessions", "list")
    assert code == 0 and "Sessions (1 of 1)" in out and "Imported" in out


def write_sessions(config_dir: Path, count: int) -> dict[str, Path]:
    """`count` sessions in two project folders, every other one with a sub-agent file, and
    the last one's lines continued in a file of another name (as after a resume)."""
    files: dict[str, Path] = {}
    for index in range(count):
        sid = f"00000000-0000-4000-8000-{index:012d}"
        folder = config_dir / "projects" / f"-home-dev-project-{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        files[sid] = folder / f"{sid}.jsonl"
        body = prompt(f"task {index}", sessionId=sid) + agent_call(f"toolu_{index}", "look")
        files[sid].write_bytes(body + reply(f"done {index}", sessionId=sid))
        if index % 2 == 0:
            subagents = folder / sid / "subagents"
            subagents.mkdir(parents=True)
            (subagents / "agent-a.jsonl").write_bytes(
                prompt("look", sessionId=sid, isSidechain=True)
                + reply(f"found {index}", sessionId=sid, isSidechain=True)
            )
    last = sid
    (files[last].parent / "continued.jsonl").write_bytes(reply("more", sessionId=last))
    return files


def test_workers_share_the_sessions_out_and_store_what_one_process_would(
    db: Database, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pocketcode.services import transcript_index

    files = write_sessions(config_dir, 7)
    shared: list[list[list[Path]]] = []
    in_workers = TranscriptIndexer._scan_in_workers

    def spy(self: TranscriptIndexer, shares: list[list[Path]], *args: Any) -> None:
        shared.append(shares)
        in_workers(self, shares, *args)

    monkeypatch.setattr(transcript_index, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(TranscriptIndexer, "_scan_in_workers", spy)
    progress: list[tuple[str, int, int]] = []
    summary = TranscriptIndexer(db, config_dir).scan(
        workers=2, progress=lambda path, done, total: progress.append((path.name, done, total))
    )

    # Two workers ran, each with whole sessions: the file named otherwise went with its session.
    assert len(shared) == 1 and len(shared[0]) == 2
    by_worker = [{p.name for p in share} for share in shared[0]]
    last = list(files)[-1]
    assert any({f"{last}.jsonl", "continued.jsonl"} <= names for names in by_worker)
    assert (summary.files_total, summary.files_scanned, summary.sessions_new) == (12, 12, 7)
    assert summary.messages_imported == 7 * 3 + 4 * 2 + 1
    assert sorted(done for _, done, _ in progress) == list(range(1, 13))
    for index, sid in enumerate(files):
        row = SessionService(db, []).find_by_provider_session(Provider.CLAUDE_CODE, sid)
        assert row is not None and row.title == f"task {index}"
        extra = (2 if index % 2 == 0 else 0) + (1 if sid == last else 0)
        assert (row.message_count, row.turn_count) == (3 + extra, 1)
        # Usage tallied per session by the worker that created it: one API message per reply,
        # the Agent call and the sub-agent's reply included.
        assert row.output_tokens == 5 * (2 + (1 if index % 2 == 0 else 0) + (sid == last))
        with db.read() as session:
            messages = session.scalars(
                sa.select(MessageRow).where(MessageRow.session_id == row.id)
            ).all()
        assert sorted(m.seq for m in messages) == list(range(1, len(messages) + 1))
        found = [m for m in messages if m.text.startswith("found")]
        assert [m.parent_tool_use_id for m in found] == ([f"toolu_{index}"] if extra else [])
        # Time-ordered ids: a message stored later has a greater id.
        ordered = sorted(messages, key=lambda m: m.seq)
        assert [m.id.version for m in ordered] == [7] * len(ordered)

    again = TranscriptIndexer(db, config_dir).scan(workers=2)
    assert (again.files_unchanged, again.messages_imported) == (12, 0)


def test_the_import_command_takes_a_number_of_workers(
    config_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pocketcode.services import transcript_index

    monkeypatch.setenv("POCKETCODE_DATABASE_URL", f"sqlite:///{config_dir.parent / 'cli.db'}")
    monkeypatch.setattr(transcript_index, "PARALLEL_MIN_BYTES", 0)
    write_sessions(config_dir, 4)
    code, out, _ = run_cli(capsys, "import", "--workers", "2", str(config_dir))
    assert code == 0
    counts = summary_counts(out)
    assert (counts["sessions new"], counts["files scanned"]) == ("4", "7")
    code, _, err = run_cli(capsys, "import", "--workers", "0", str(config_dir))
    assert code != 0 and "--workers" in err


def test_without_shared_semaphores_the_import_runs_in_one_process(
    db: Database, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing.context

    from pocketcode.services import transcript_index

    def no_semaphores(self: object) -> None:
        raise OSError(38, "Function not implemented")

    write_sessions(config_dir, 3)
    monkeypatch.setattr(transcript_index, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(multiprocessing.context.SpawnContext, "Queue", no_semaphores)
    monkeypatch.setattr(TranscriptIndexer, "_scan_in_workers", None)  # must not be reached
    summary = TranscriptIndexer(db, config_dir).scan(workers=2)
    assert (summary.sessions_new, summary.files_scanned) == (3, 6)
