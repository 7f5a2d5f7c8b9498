"""The incremental index of Claude Code's transcripts: every terminal session, kept forever.

`TranscriptIndexer.scan()` walks `<config dir>/projects/` and, per `.jsonl` file, compares the
file's inode, size and mtime with its `transcript_files` row:
- unchanged: skipped without being opened, so re-scanning a big corpus costs one `stat` a file;
- grown: only the bytes after `parsed_offset` are read (`parsed_offset` is always the end of a
  complete line; a partial last line waits for the next scan);
- truncated or replaced (smaller than the offset, or another inode): read again from the start,
  which is safe because messages are de-duplicated by uuid;
- deleted: marked gone, its messages stay (Claude Code deletes transcripts after 30 days).

A session is found by its provider session id (the lines' `sessionId`, never the lossy folder
name), so a session run by pocketcode and continued in a terminal, or the reverse, is one
session with one history. The prompts pocketcode stored itself (stream-json does not echo them)
are matched to their transcript lines by text and take the line's uuid instead of being stored
twice. Sub-agent files (`<session>/subagents/agent-*.jsonl`) go to their parent session.

Lines are read one at a time in bounded memory; malformed JSON, lines over `max_line_bytes` and
non-UTF-8 bytes are skipped and counted, never a crash.

Within a process, one thread parses while another stores (the server's watcher). A big import
(`pocketcode import`, `workers` > 1) instead shares the sessions out among processes that each
parse and store their own files: parsing holds a process's GIL, so only processes overlap it
with storing (`TranscriptIndexer._scan_in_workers`).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import multiprocessing
import multiprocessing.queues
import os
import queue
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.orm import Session

from pocketcode.agents.claude_code import LineContext
from pocketcode.db.engine import Database, create_db_engine
from pocketcode.db.tables import MessageRow, SessionRow, TranscriptFileRow
from pocketcode.db.types import new_id, utcnow
from pocketcode.domain.states import MessageType, Provider
from pocketcode.services.messages import NewMessage
from pocketcode.services.pricing import Price, PricingService, TokenUsage, compute_cost
from pocketcode.services.sessions import claude_config_dir
from pocketcode.services.transcript_store import (
    LOOKUP_SLICE,
    NUL_REPLACEMENT,
    STORED_COLUMNS,
    RawMessage,
    raw_json_of,
    statement_for,
    store_messages,
)
from pocketcode.services.transcripts import (
    READ_BUFFER,
    complete_lines,
    messages_from_line,
    parse_line,
    parse_timestamp,
    prompt_title,
)

log = logging.getLogger(__name__)

INDEX_MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longer lines (pasted images, huge tool outputs) are skipped and counted: parsing one costs
many times its size in memory."""
_FLUSH_MESSAGES = 2000
_FLUSH_BYTES = 8 * 1024 * 1024
"""A file's messages are stored once this many bytes of them were read (half on PostgreSQL,
whose rows hold the raw lines uncompressed, and whose driver copies them twice more)."""
_BATCH_BYTES = 4 * 1024 * 1024
"""A worker commits the flushes of small files together once they hold this much."""

ScanProgress = Callable[[Path, int, int], None]
"""Called after each file with (file, files done, files total)."""


@dataclass
class ScanSummary:
    files_total: int = 0
    files_scanned: int = 0
    """Opened and read (grown, new, truncated or replaced)."""
    files_unchanged: int = 0
    files_skipped: int = 0
    """Unreadable, vanished during the scan, or belonging to a deleted session."""
    files_gone: int = 0
    sessions_new: int = 0
    sessions_updated: int = 0
    messages_imported: int = 0
    lines_parsed: int = 0
    lines_skipped: int = 0
    bytes_read: int = 0
    new_session_ids: set[uuid.UUID] = field(default_factory=set)
    updated_session_ids: set[uuid.UUID] = field(default_factory=set)
    messages: list[MessageRow] | None = None
    """The messages stored by this scan, with `keep_messages` (else None): what to publish."""

    def add(self, other: ScanSummary) -> None:
        """Count a worker's part of the scan in this one."""
        for name, value in vars(other).items():
            if isinstance(value, int) and name != "files_total":
                setattr(self, name, getattr(self, name) + value)
        self.new_session_ids |= other.new_session_ids
        self.updated_session_ids |= other.updated_session_ids


@dataclass
class _Mark:
    """A file's watermark as loaded from `transcript_files`."""

    inode: int | None
    size: int
    mtime_ns: int
    parsed_offset: int
    session_id: uuid.UUID | None
    provider_session_id: str | None
    gone: bool
    parent_tool_use_id: str | None = None


@dataclass
class _Chunk:
    """What was read of one file since the last flush."""

    messages: list[RawMessage] = field(default_factory=list)
    raw_bytes: int = 0
    provider_session_id: str | None = None
    cwd: str | None = None
    title: str | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    cli_cost_usd: Decimal | None = None
    lines_skipped: int = 0
    sidechain_prompt: NewMessage | None = None
    """A sub-agent file's first prompt in this chunk: what finds the Agent call it answers."""
    earlier_uuids: list[str] = field(default_factory=list)
    """A sub-agent file read again from its start because its call was not found then: the
    messages stored before, to move under the call once it is found."""

    def successor(self) -> _Chunk:
        """The next chunk of the same file (this one goes to the writer)."""
        return _Chunk(provider_session_id=self.provider_session_id, cwd=self.cwd)


@dataclass
class _Tally:
    """Usage per model of a session's stored messages."""

    by_model: dict[str | None, TokenUsage] = field(default_factory=dict)

    def add(self, message: NewMessage) -> None:
        if message.type is MessageType.ASSISTANT and message.provider_message_id is not None:
            # Within a file only an API message's first block carries its usage.
            usage = self.by_model.get(message.model, TokenUsage())
            self.by_model[message.model] = TokenUsage(
                usage.input_tokens + (message.input_tokens or 0),
                usage.output_tokens + (message.output_tokens or 0),
                usage.cache_creation_tokens + (message.cache_creation_tokens or 0),
                usage.cache_read_tokens + (message.cache_read_tokens or 0),
            )


def _has_usage(message: NewMessage) -> bool:
    return message.type is MessageType.ASSISTANT and (
        message.input_tokens is not None
        or message.output_tokens is not None
        or message.cache_creation_tokens is not None
        or message.cache_read_tokens is not None
    )


@dataclass
class _Target:
    """What a flush needs of the session it stores into."""

    id: uuid.UUID
    title: str | None
    last_accessed_at: datetime
    cli_cost_usd: Decimal


_TARGET = sa.select(
    SessionRow.deleted_at,
    SessionRow.id,
    SessionRow.title,
    SessionRow.last_accessed_at,
    SessionRow.cli_total_cost_usd,
)


@functools.cache
def _upsert_file_row(dialect: str) -> Any:
    """Insert a file's watermark row or move it: one statement per flush (built once: building
    the ON CONFLICT construct each time was 3 % of the writer thread's samples)."""
    module = sqlite_dialect if dialect == "sqlite" else postgresql_dialect
    insert = module.insert(TranscriptFileRow)
    table = TranscriptFileRow.__table__.c
    return insert.on_conflict_do_update(
        index_elements=[table.path],
        set_={
            "inode": insert.excluded.inode,
            "size": insert.excluded.size,
            "mtime_ns": insert.excluded.mtime_ns,
            "parsed_offset": insert.excluded.parsed_offset,
            "provider_session_id": sa.func.coalesce(
                insert.excluded.provider_session_id, table.provider_session_id
            ),
            "session_id": sa.func.coalesce(insert.excluded.session_id, table.session_id),
            "parent_tool_use_id": sa.func.coalesce(
                insert.excluded.parent_tool_use_id, table.parent_tool_use_id
            ),
            "lines_skipped": table.lines_skipped + insert.excluded.lines_skipped,
            "last_error": insert.excluded.last_error,
            "gone_at": None,
            "last_scanned_at": insert.excluded.last_scanned_at,
            "updated_at": insert.excluded.updated_at,
        },
    )


@dataclass
class _FileState:
    """What the writer carries from one flush of a file to the next."""

    session_id: uuid.UUID | None
    totals_stale: bool = False
    """Messages were stored or adopted since the session's totals were last computed."""
    usage_stale: bool = False
    """Among them, messages carrying token usage (else only the turn count can change)."""
    parent_tool_use_id: str | None = None
    """A sub-agent file's Agent call, once found."""
    new_prompts: int = 0
    """The user's prompts stored since the session's turn count was last moved."""


class _Writer:
    """Runs a scan's database work on a thread of its own, in order, while the scanning thread
    reads and parses the next lines: SQLite and PostgreSQL drivers release the GIL while the
    database works, so on two cores parsing and storing overlap. At most `depth` pieces of
    work wait (each holds at most one flush of messages), which bounds the memory."""

    def __init__(self, depth: int = 1) -> None:
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="transcript-writer", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], object]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(work)

    def store(self, flush: Callable[..., object], size: int) -> None:
        """Submit a flush of `size` bytes of messages (a transaction of its own)."""
        self.submit(flush)

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            if self._error is None:
                try:
                    work()
                except BaseException as exc:  # handed to the scanning thread
                    self._error = exc

    def finish(self) -> None:
        """Wait for the work submitted; raise what failed."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _BatchingWriter(_Writer):
    """Does the database work on the scanning thread, for a share of a scan in a worker
    process: its parsing overlaps with the other workers' storing instead. (Two busy threads of
    one process take turns on the GIL: parsing and storing on threads overlapped less than on
    processes, and the turns themselves cost CPU.) Flushes wait until about `_BATCH_BYTES` of
    messages are queued, then go in one transaction: most transcripts are small, and a
    transaction for each made 2,300 commits of a 2.2 GB corpus, each a turn at the writers'
    lock. What else is submitted meanwhile (progress, errors) runs after that commit. On
    PostgreSQL, where workers write at once, each flush commits at once (a batch would only
    hold more memory: the driver copies a batch's parameters twice)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._budget = _BATCH_BYTES if db.is_sqlite else 0
        self._flushes: list[Callable[..., object]] = []
        self._after: list[Callable[[], object]] = []
        self._bytes = 0

    def submit(self, work: Callable[[], object]) -> None:
        if self._flushes:
            self._after.append(work)
        else:
            work()

    def store(self, flush: Callable[..., object], size: int) -> None:
        self._flushes.append(flush)
        self._bytes += size
        if self._bytes >= self._budget:
            self._commit()

    def _commit(self) -> None:
        flushes, after = self._flushes, self._after
        self._flushes, self._after, self._bytes = [], [], 0
        if flushes:
            with self._db.write_connection() as connection:
                for flush in flushes:
                    flush(connection=connection)
        for work in after:
            work()

    def finish(self) -> None:
        self._commit()


PARALLEL_MIN_BYTES = 64 * 1024 * 1024
"""A scan asked to use workers still runs in its own process below this many bytes to read:
starting a worker costs ~0.5 s of CPU."""


MAX_WORKERS = 4
"""More workers than this gain nothing on SQLite, where one of them writes at a time."""


def default_workers() -> int:
    """Worker processes for an import: one per CPU this process may use, at most
    `MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _shared_database(db: Database) -> bool:
    """Whether another process can open the database (not an in-memory SQLite one)."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite":
        return True
    name = url.database or ""
    return bool(name) and name != ":memory:" and "mode=memory" not in name


@dataclass
class _WorkerJob:
    """What a worker process gets: where the database and transcripts are, its files and their
    watermarks, and the lock file of SQLite writers (None on PostgreSQL)."""

    url: str
    config_dir: str
    max_line_bytes: int
    files: list[Path]
    marks: dict[str, _Mark]
    write_lock: str | None


_done_files: multiprocessing.queues.Queue[str] | None = None


def _done_queue() -> multiprocessing.queues.Queue[str] | None:
    """The queue on which workers report the files they finished; None where processes cannot
    share one (no POSIX semaphores, as in some containers): the scan then runs in-process."""
    try:
        return multiprocessing.get_context("spawn").Queue()
    except (OSError, ImportError) as exc:
        log.info("import workers unavailable (%s): importing in one process", exc)
        return None


def _init_worker(done: multiprocessing.queues.Queue[str]) -> None:
    global _done_files
    _done_files = done


def _worker_scan(job: _WorkerJob) -> ScanSummary:
    """A worker process's share of a scan; the files done go to the scanning process."""

    def report(path: Path, _done: int, _total: int) -> None:
        if _done_files is not None:
            _done_files.put(str(path))

    return _scan_share(job, report)


_M_MMAP_THRESHOLD = -3
_BIG_BLOCK = 1024 * 1024


def _give_big_blocks_back() -> None:
    """Have glibc map blocks of 1 MiB and more (a long line, its parsed parts, a batch's
    parameters) on their own, so that freeing one returns its memory. By default glibc moves
    that threshold up to the biggest block freed so far (up to 32 MiB), after which such
    blocks come from the heap, which keeps its high-water mark: a worker of a 2.2 GB import
    held 127 MB instead of 118 MB, and the import ran no faster. Nothing on another libc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, _BIG_BLOCK)


def _scan_share(job: _WorkerJob, progress: ScanProgress) -> ScanSummary:
    """One share of a scan shared out (see `TranscriptIndexer._scan_in_workers`), on a
    database connection of its own that takes the writers' lock."""
    _give_big_blocks_back()
    lock = Path(job.write_lock) if job.write_lock else None
    db = Database(create_db_engine(job.url, pool_size=2), process_lock=lock)
    try:
        indexer = TranscriptIndexer(db, Path(job.config_dir), max_line_bytes=job.max_line_bytes)
        summary = ScanSummary()
        indexer._scan_files(
            job.files, job.marks, summary, progress, pause_gc=True, writer=_BatchingWriter(db)
        )
        return summary
    finally:
        db.dispose()


def _subagent_parent(path: Path) -> str | None:
    """The parent session id of `<session>/subagents/agent-*.jsonl`, else None."""
    if path.parent.name == "subagents" and path.name.startswith("agent-"):
        return path.parent.parent.name
    return None


def _scan_order(paths: Iterable[Path]) -> list[Path]:
    """Session files before sub-agent files (so a parent session exists before its sub-agents
    attach to it)."""
    return sorted(paths, key=lambda path: (_subagent_parent(path) is not None, str(path)))


_HEAD_BYTES = 1024 * 1024


def _session_key(path: Path, mark: _Mark | None) -> str:
    """The provider session a file's messages go to, as the scan will find it (a sub-agent
    file's parent; the session id its watermark recorded; else the first `sessionId` of its
    lines, looked for in its first MiB; else its name): the files of one session must go to
    one worker, or two workers could create the same session."""
    parent = _subagent_parent(path)
    if parent is not None:
        return parent
    if mark is not None and mark.provider_session_id:
        return mark.provider_session_id
    try:
        with path.open("rb") as handle:
            for raw, _consumed in complete_lines(handle, _HEAD_BYTES):
                line = parse_line(raw) if raw is not None else None
                session_id = line.get("sessionId") if line is not None else None
                if isinstance(session_id, str) and session_id:
                    return session_id
                if handle.tell() >= _HEAD_BYTES:
                    break
    except OSError:
        pass
    return path.stem


def transcript_files(root: Path) -> list[Path]:
    """Every `.jsonl` file under `root`, in scan order."""
    found: list[Path] = []
    for directory, _, names in os.walk(root):
        found.extend(Path(directory, name) for name in names if name.endswith(".jsonl"))
    return _scan_order(found)


class TranscriptIndexer:
    def __init__(
        self,
        db: Database,
        config_dir: Path | None = None,
        *,
        max_line_bytes: int = INDEX_MAX_LINE_BYTES,
    ) -> None:
        self.db = db
        self.root = (config_dir or claude_config_dir()) / "projects"
        self.max_line_bytes = max_line_bytes
        self.pricing = PricingService(db)
        self.statement = statement_for(db.engine.dialect)
        self._flush_bytes = _FLUSH_BYTES if db.is_sqlite else _FLUSH_BYTES // 2
        self._fresh: dict[uuid.UUID, _Tally] = {}
        """Sessions created by the running scan: their totals are tallied as they are stored."""
        self._keep_rows = False
        """The scan keeps the rows it stores (`keep_messages`)."""
        self._known_session: uuid.UUID | None = None
        self._known_uuids: set[str] = set()
        """The provider uuids of the session this scan created last, while the scan stays on
        it (its files are read one after the other): they need not be looked up."""
        self._prices: dict[str, Price | None] = {}

    # -- the scan --------------------------------------------------------------------------

    def scan(
        self,
        paths: Iterable[Path] | None = None,
        progress: ScanProgress | None = None,
        *,
        keep_messages: bool = False,
        pause_gc: bool = False,
        workers: int = 1,
    ) -> ScanSummary:
        """Index the given transcript files, or every file under the config dir's
        `projects/` (then files that disappeared are marked gone). With `keep_messages` the
        summary lists the messages stored (the live watcher publishes them). `pause_gc` turns
        the cyclic garbage collector off during the scan: for `pocketcode import`, not for a
        server, whose other work needs it. With `workers` > 1 and at least
        `PARALLEL_MIN_BYTES` to read, the files are shared out by session among that many
        worker processes (see `_scan_in_workers`)."""
        whole_tree = paths is None
        files = (
            transcript_files(self.root) if paths is None else _scan_order(Path(p) for p in paths)
        )
        marks = self._load_marks(None if whole_tree else files)
        summary = ScanSummary(files_total=len(files), messages=[] if keep_messages else None)
        shares = None if keep_messages else self._worker_shares(files, marks, workers)
        done = _done_queue() if shares is not None else None
        if shares is None or done is None:
            self._scan_files(files, marks, summary, progress, pause_gc=pause_gc)
        else:
            self._scan_in_workers(shares, marks, summary, progress, done)
        if whole_tree:
            prefix = str(self.root) + os.sep
            seen = {str(path) for path in files}
            vanished = [
                p
                for p, mark in marks.items()
                if p.startswith(prefix) and p not in seen and not mark.gone
            ]
            self._mark_gone(vanished, summary)
        summary.sessions_new = len(summary.new_session_ids)
        summary.sessions_updated = len(summary.updated_session_ids - summary.new_session_ids)
        return summary

    def _scan_files(
        self,
        files: list[Path],
        marks: dict[str, _Mark],
        summary: ScanSummary,
        progress: ScanProgress | None,
        *,
        pause_gc: bool,
        writer: _Writer | None = None,
    ) -> None:
        self._fresh = {}
        # What a scan knows of a session it created holds during that scan only: later, a run
        # of ours may have stored messages in it.
        self._known_session, self._known_uuids = None, set()
        self._keep_rows = summary.messages is not None
        writer = writer or _Writer()
        # A scan makes millions of short-lived objects and few cycles: the cyclic collector
        # would walk the whole heap again and again (a fifth of an import's time).
        collecting = pause_gc and gc.isenabled()
        if collecting:
            gc.disable()
        try:
            for index, path in enumerate(files):
                self._scan_file(path, marks.get(str(path)), summary, writer)
                if progress is not None:
                    writer.submit(partial(progress, path, index + 1, len(files)))
        finally:
            try:
                writer.finish()
            finally:
                if collecting:
                    gc.enable()

    # -- worker processes --------------------------------------------------------------------

    def _worker_shares(
        self, files: list[Path], marks: dict[str, _Mark], workers: int
    ) -> list[list[Path]] | None:
        """The files shared out among `workers` processes, whole sessions to one worker and
        about as many bytes to read for each; None to scan here (one worker asked, little to
        read, a database only this process can open)."""
        if workers < 2 or not _shared_database(self.db):
            return None
        unread: dict[Path, int] = {}
        for path in files:
            mark = marks.get(str(path))
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            unread[path] = size if mark is None or mark.gone else max(size - mark.parsed_offset, 0)
        if sum(unread.values()) < PARALLEL_MIN_BYTES:
            return None
        sessions: dict[str, list[Path]] = {}
        todo: dict[str, int] = {}
        for path in files:
            key = _session_key(path, marks.get(str(path))) if unread[path] else str(path)
            sessions.setdefault(key, []).append(path)
            todo[key] = todo.get(key, 0) + unread[path]
        if len(sessions) < 2:
            return None
        shares: list[list[Path]] = [[] for _ in range(min(workers, len(sessions)))]
        loads = [0] * len(shares)
        for key in sorted(sessions, key=lambda key: -todo[key]):
            lightest = loads.index(min(loads))
            # A session's files one after the other (its own before its sub-agents'), so
            # what the worker knows of a session it created stays of use.
            shares[lightest].extend(_scan_order(sessions[key]))
            loads[lightest] += todo[key]
        return shares

    def _scan_in_workers(
        self,
        shares: list[list[Path]],
        marks: dict[str, _Mark],
        summary: ScanSummary,
        progress: ScanProgress | None,
        done: multiprocessing.queues.Queue[str],
    ) -> None:
        """Scan the first share here and each other one in a worker process (spawned: no
        thread or connection of this process is inherited). Each parses its files and stores
        them itself, a flush at a time: parsing needs a core and holds its process's GIL, so
        processes overlap it with the others' storing where threads of one process could not.
        On SQLite they take turns at writing through a lock file (one writer at a time
        anyway); on PostgreSQL they write at once. A session's files all go to one share, so
        no two of them touch one session."""
        context = multiprocessing.get_context("spawn")
        url = self.db.engine.url.render_as_string(hide_password=False)
        total = sum(len(share) for share in shares)
        finished = 0

        def report(path: Path) -> None:
            nonlocal finished
            finished += 1
            if progress is not None:
                progress(path, finished, total)

        def reported(timeout: float | None) -> bool:
            """Report a file a worker finished, if one is reported within `timeout`."""
            try:
                path = done.get(timeout=timeout) if timeout else done.get_nowait()
            except queue.Empty:
                return False
            report(Path(path))
            return True

        def own_file(path: Path, _done: int, _total: int) -> None:
            report(path)
            while reported(None):
                pass

        with tempfile.TemporaryDirectory(prefix="pocketcode-import-") as folder:
            lock = str(Path(folder, "write.lock")) if self.db.is_sqlite else None
            jobs = [
                _WorkerJob(
                    url,
                    str(self.root.parent),
                    self.max_line_bytes,
                    share,
                    {str(p): marks[str(p)] for p in share if str(p) in marks},
                    lock,
                )
                for share in shares
            ]
            with ProcessPoolExecutor(
                len(jobs) - 1, mp_context=context, initializer=_init_worker, initargs=(done,)
            ) as pool:
                futures = [pool.submit(_worker_scan, job) for job in jobs[1:]]
                summary.add(_scan_share(jobs[0], own_file))
                while not all(future.done() for future in futures):
                    reported(0.2)
            # The workers have exited: what they reported is in the queue's pipe.
            while finished < total and reported(0.05):
                pass
            for future in futures:
                summary.add(future.result())

    def _load_marks(self, files: list[Path] | None) -> dict[str, _Mark]:
        query = sa.select(
            TranscriptFileRow.path,
            TranscriptFileRow.inode,
            TranscriptFileRow.size,
            TranscriptFileRow.mtime_ns,
            TranscriptFileRow.parsed_offset,
            TranscriptFileRow.session_id,
            TranscriptFileRow.provider_session_id,
            TranscriptFileRow.gone_at,
            TranscriptFileRow.parent_tool_use_id,
        )
        if files is not None:
            query = query.where(TranscriptFileRow.path.in_([str(p) for p in files]))
        with self.db.read() as session:
            return {
                row.path: _Mark(
                    row.inode,
                    row.size,
                    row.mtime_ns,
                    row.parsed_offset,
                    row.session_id,
                    row.provider_session_id,
                    row.gone_at is not None,
                    row.parent_tool_use_id,
                )
                for row in session.execute(query)
            }

    def _mark_gone(self, paths: list[str], summary: ScanSummary) -> None:
        if not paths:
            return
        now = utcnow()
        with self.db.write() as session:
            session.execute(
                sa.update(TranscriptFileRow)
                .where(TranscriptFileRow.path.in_(paths), TranscriptFileRow.gone_at.is_(None))
                .values(gone_at=now, updated_at=now, last_scanned_at=now),
                execution_options={"synchronize_session": False},
            )
        summary.files_gone += len(paths)

    def _scan_file(
        self, path: Path, mark: _Mark | None, summary: ScanSummary, writer: _Writer
    ) -> None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            if mark is not None and not mark.gone:
                writer.submit(partial(self._mark_gone, [str(path)], summary))
            else:
                summary.files_skipped += 1
            return
        except OSError as exc:
            error = f"cannot stat: {exc.strerror or exc}"
            summary.files_skipped += 1
            writer.submit(partial(self._record_error, path, error))
            return
        if (
            mark is not None
            and not mark.gone
            and mark.inode == stat.st_ino
            and mark.size == stat.st_size
            and mark.mtime_ns == stat.st_mtime_ns
        ):
            summary.files_unchanged += 1
            return
        try:
            handle = path.open("rb", buffering=READ_BUFFER)
        except FileNotFoundError:
            summary.files_skipped += 1
            return
        except OSError as exc:
            error = f"cannot open: {exc.strerror or exc}"
            summary.files_skipped += 1
            writer.submit(partial(self._record_error, path, error))
            return
        with handle:
            # The file may have been replaced between stat and open: trust the open one.
            stat = os.fstat(handle.fileno())
            offset = 0
            if (
                mark is not None
                and mark.inode == stat.st_ino
                and mark.parsed_offset <= stat.st_size
                and _ends_a_line(handle, mark.parsed_offset)
            ):
                offset = mark.parsed_offset
            handle.seek(offset)
            summary.files_scanned += 1
            self._read(path, handle, offset, stat, mark, summary, writer)

    def _read(
        self,
        path: Path,
        handle: Any,
        offset: int,
        stat: os.stat_result,
        mark: _Mark | None,
        summary: ScanSummary,
        writer: _Writer,
    ) -> None:
        parent = _subagent_parent(path)
        chunk = _Chunk(provider_session_id=parent or (mark.provider_session_id if mark else None))
        state = _FileState(
            mark.session_id if mark is not None else None,
            parent_tool_use_id=mark.parent_tool_use_id if mark is not None else None,
        )
        context = LineContext()
        error: str | None = None
        if parent is not None and state.parent_tool_use_id is None and offset > 0:
            # The call was not stored yet when the file's start was read: look again.
            chunk.sidechain_prompt, chunk.earlier_uuids = _sidechain_head(
                handle, offset, self.max_line_bytes
            )
        try:
            for raw, consumed in complete_lines(handle, self.max_line_bytes):
                offset += consumed
                summary.bytes_read += consumed
                line = parse_line(raw) if raw is not None else None
                if line is None or raw is None:
                    chunk.lines_skipped += 1
                    continue
                summary.lines_parsed += 1
                self._take(line, raw, chunk, context)
                if len(chunk.messages) >= _FLUSH_MESSAGES or chunk.raw_bytes >= self._flush_bytes:
                    flush = partial(self._flush, path, chunk, offset, stat, state, summary)
                    writer.store(flush, chunk.raw_bytes)
                    chunk = chunk.successor()
        except OSError as exc:  # vanished or unreadable underneath: keep what was read
            error = f"read failed: {exc.strerror or exc}"
        flush = partial(
            self._flush, path, chunk, offset, stat, state, summary, error=error, final=True
        )
        writer.store(flush, chunk.raw_bytes)

    def _take(
        self, line: dict[str, Any], line_bytes: bytes, chunk: _Chunk, context: LineContext
    ) -> None:
        line_session = line.get("sessionId")
        if chunk.provider_session_id is None and isinstance(line_session, str) and line_session:
            chunk.provider_session_id = line_session
        cwd = line.get("cwd")
        if chunk.cwd is None and isinstance(cwd, str) and cwd:
            chunk.cwd = cwd
        if line.get("type") == "cost-state":
            total = line.get("totalCostUSD")
            if isinstance(total, int | float) and not isinstance(total, bool):
                value = Decimal(str(total))
                chunk.cli_cost_usd = max(chunk.cli_cost_usd or value, value)
            return
        messages = messages_from_line(line, include_prompts=True, context=context)
        if not messages:
            return
        if chunk.title is None:
            title = prompt_title(line)
            chunk.title = title.replace("\x00", NUL_REPLACEMENT) if title else None
        stamp = parse_timestamp(line.get("timestamp"))
        if stamp is not None:
            chunk.first_at = chunk.first_at or stamp
            chunk.last_at = stamp
        if chunk.sidechain_prompt is None and _is_sidechain_prompt(line, messages[0]):
            chunk.sidechain_prompt = messages[0]
        for message in messages:
            raw_json = raw_json_of(message, line, line_bytes)
            message.raw = None  # kept as text only: the parsed line is dropped now
            chunk.messages.append(
                self.statement.prepare(message, raw_json, keep_raw=self._keep_rows)
            )
            chunk.raw_bytes += len(message.text) + len(raw_json or b"") + 512

    # -- writing ---------------------------------------------------------------------------

    def _flush(
        self,
        path: Path,
        chunk: _Chunk,
        offset: int,
        stat: os.stat_result,
        state: _FileState,
        summary: ScanSummary,
        *,
        error: str | None = None,
        final: bool = False,
        connection: sa.Connection | None = None,
    ) -> None:
        """Store the chunk's messages and move the file's watermark, with a few Core statements
        whatever the number of messages, in a transaction of its own or in `connection`'s.
        The session's totals are computed again in the file's last flush only."""
        if connection is None:
            with self.db.write_connection() as connection:
                self._flush(
                    path,
                    chunk,
                    offset,
                    stat,
                    state,
                    summary,
                    error=error,
                    final=final,
                    connection=connection,
                )
            return
        now = utcnow()
        target: _Target | None = None
        if chunk.messages or state.session_id is not None:
            target = self._target_session(connection, path, chunk, state.session_id, summary)
        if target is None or target.id != self._known_session:
            # The scan moved on: this set is never completed again, so it is dropped.
            self._known_session, self._known_uuids = None, set()
        changes: dict[str, Any] = {}
        if target is not None:
            if chunk.messages and _subagent_parent(path) is not None:
                self._attach_to_agent_call(connection, path, target.id, chunk, state)
            if chunk.messages:
                keep = summary.messages is not None
                stored, rows = self._store(connection, target, chunk, state, keep_rows=keep)
                summary.messages_imported += stored
                if stored:
                    summary.updated_session_ids.add(target.id)
                    if summary.messages is not None:
                        summary.messages.extend(rows)
                    if chunk.last_at is not None:
                        changes["last_activity_at"] = chunk.last_at
                        changes["last_accessed_at"] = max(target.last_accessed_at, chunk.last_at)
                if chunk.title and not target.title:
                    changes["title"] = target.title = chunk.title
            if chunk.cli_cost_usd is not None and chunk.cli_cost_usd > target.cli_cost_usd:
                changes["cli_total_cost_usd"] = target.cli_cost_usd = chunk.cli_cost_usd
            if final and state.totals_stale:
                changes.update(self._totals(connection, target, new_usage=state.usage_stale))
                state.totals_stale = state.usage_stale = False
            if state.new_prompts:
                # Added in SQL: a run of ours counts its own turn when it ends, and its
                # prompt is adopted here, never stored again, so no turn counts twice.
                changes["turn_count"] = SessionRow.turn_count + state.new_prompts
                state.new_prompts = 0
            if changes:
                connection.execute(
                    sa.update(SessionRow).where(SessionRow.id == target.id).values(**changes)
                )
        connection.execute(
            _upsert_file_row(connection.dialect.name),
            {
                "id": uuid.uuid4(),
                "path": str(path),
                "is_subagent": _subagent_parent(path) is not None,
                "inode": stat.st_ino,
                # After a failed read the size seen may be past what was read: -1 makes
                # the next scan look at the file again.
                "size": stat.st_size if error is None else -1,
                "mtime_ns": stat.st_mtime_ns,
                "parsed_offset": offset,
                "provider_session_id": chunk.provider_session_id,
                "session_id": target.id if target is not None else None,
                "parent_tool_use_id": state.parent_tool_use_id,
                "lines_skipped": chunk.lines_skipped,
                "last_error": error,
                "gone_at": None,
                "last_scanned_at": now,
                "created_at": now,
                "updated_at": now,
            },
        )
        state.session_id = target.id if target is not None else None
        summary.lines_skipped += chunk.lines_skipped

    def _target_session(
        self,
        connection: sa.Connection,
        path: Path,
        chunk: _Chunk,
        session_id: uuid.UUID | None,
        summary: ScanSummary,
    ) -> _Target | None:
        """The session the file's messages go to, created for a transcript seen first; None
        for a session the user deleted (its transcript is not brought back)."""
        if session_id is not None:
            found = connection.execute(_TARGET.where(SessionRow.id == session_id)).first()
            if found is not None:
                return _Target(*found[1:]) if found.deleted_at is None else None
        provider_id = chunk.provider_session_id or path.stem
        chunk.provider_session_id = provider_id
        found = connection.execute(
            _TARGET.where(
                SessionRow.provider == Provider.CLAUDE_CODE,
                SessionRow.provider_session_id == provider_id,
            )
        ).first()
        if found is not None:
            return _Target(*found[1:]) if found.deleted_at is None else None
        if not chunk.messages:
            return None
        folder = path.parent.parent.parent if _subagent_parent(path) else path.parent
        started = chunk.first_at or utcnow()
        target = _Target(new_id(), None, chunk.last_at or started, Decimal(0))
        connection.execute(
            sa.insert(SessionRow).values(
                id=target.id,
                provider=Provider.CLAUDE_CODE,
                project_path=chunk.cwd or str(folder),
                claude_directory_path=str(folder),
                provider_session_id=provider_id,
                metadata_={"importedFrom": "transcript"},
                created_at=started,
                last_accessed_at=target.last_accessed_at,
            )
        )
        summary.new_session_ids.add(target.id)
        self._fresh[target.id] = _Tally()
        self._known_session, self._known_uuids = target.id, set()
        return target

    def _attach_to_agent_call(
        self,
        connection: sa.Connection,
        path: Path,
        session_id: uuid.UUID,
        chunk: _Chunk,
        state: _FileState,
    ) -> None:
        """Store a sub-agent file's messages under the Agent (Task) call it answers, as a run
        stores the sub-agent messages the CLI streams (the file itself does not name it)."""
        if state.parent_tool_use_id is None and chunk.sidechain_prompt is not None:
            state.parent_tool_use_id = _agent_call(
                connection, path, session_id, chunk.sidechain_prompt
            )
        parent = state.parent_tool_use_id
        if parent is None:
            return
        for start in range(0, len(chunk.earlier_uuids), LOOKUP_SLICE):
            connection.execute(
                sa.update(MessageRow)
                .where(
                    MessageRow.session_id == session_id,
                    MessageRow.parent_tool_use_id.is_(None),
                    MessageRow.provider_message_uuid.in_(
                        chunk.earlier_uuids[start : start + LOOKUP_SLICE]
                    ),
                )
                .values(parent_tool_use_id=parent),
                execution_options={"synchronize_session": False},
            )
        for item in chunk.messages:
            if item.message.parent_tool_use_id is None:
                item.message.parent_tool_use_id = parent
                item.row[_PARENT_COLUMN] = parent

    def _store(
        self,
        connection: sa.Connection,
        target: _Target,
        chunk: _Chunk,
        state: _FileState,
        *,
        keep_rows: bool,
    ) -> tuple[int, list[MessageRow]]:
        tally = self._fresh.get(target.id)
        messages = chunk.messages
        if tally is None:  # a session of its own has no prompts of pocketcode's waiting
            messages = self._adopt_prompts(connection, target.id, messages)
        adopted = len(chunk.messages) - len(messages)
        known = self._known_uuids if self._known_session == target.id else None
        stored, rows = store_messages(
            connection, target.id, messages, utcnow(), keep_rows=keep_rows, stored_uuids=known
        )
        if tally is not None:
            for item in stored:
                tally.add(item.message)
        state.new_prompts += sum(
            item.message.type is MessageType.USER and item.message.subtype == "prompt"
            for item in stored
        )
        if stored or adopted:
            state.totals_stale = True
        if any(_has_usage(item.message) for item in stored):
            state.usage_stale = True
        return len(stored), rows

    @staticmethod
    def _adopt_prompts(
        session: sa.Connection, session_id: uuid.UUID, items: list[RawMessage]
    ) -> list[RawMessage]:
        """Give the prompts pocketcode stored itself (no uuid: stream-json never echoes them)
        the uuid of their transcript line, and drop those lines from the batch."""
        messages = [item.message for item in items]
        prompts = [m for m in messages if m.subtype == "prompt" and m.provider_message_uuid]
        if not prompts:
            return items
        waiting = list(
            session.execute(
                sa.select(MessageRow.id, MessageRow.text)
                .where(
                    MessageRow.session_id == session_id,
                    MessageRow.type == MessageType.USER,
                    MessageRow.subtype == "prompt",
                    MessageRow.provider_message_uuid.is_(None),
                )
                .order_by(MessageRow.seq)
            )
        )
        if not waiting:
            return items
        stored = set(
            session.scalars(
                sa.select(MessageRow.provider_message_uuid).where(
                    MessageRow.session_id == session_id,
                    MessageRow.provider_message_uuid.in_(
                        [m.provider_message_uuid for m in prompts]
                    ),
                )
            )
        )
        adopted: set[int] = set()
        for message in prompts:
            if message.provider_message_uuid in stored:
                continue
            match = next((w for w in waiting if w.text.strip() == message.text.strip()), None)
            if match is None:
                continue
            waiting.remove(match)
            session.execute(
                sa.update(MessageRow)
                .where(MessageRow.id == match.id)
                .values(
                    provider_message_uuid=message.provider_message_uuid,
                    provider_session_id=message.provider_session_id,
                ),
                execution_options={"synchronize_session": False},
            )
            adopted.add(id(message))
        return [item for item in items if id(item.message) not in adopted]

    def _totals(
        self, connection: sa.Connection, target: _Target, *, new_usage: bool
    ) -> dict[str, Any]:
        """Tokens and cost of the session from its stored messages; for a session this scan
        created, from the tally kept while storing (reading every row back costs as much as
        writing it: SQLite keeps the token columns after the big text ones). Without
        `new_usage`, nothing changes."""
        tally = self._fresh.get(target.id)
        if tally is None and not new_usage:
            return {}
        if tally is None:
            tally = self._stored_tally(connection, target.id)
        totals = TokenUsage()
        cost = Decimal(0)
        for model, usage in tally.by_model.items():
            totals = TokenUsage(
                totals.input_tokens + usage.input_tokens,
                totals.output_tokens + usage.output_tokens,
                totals.cache_creation_tokens + usage.cache_creation_tokens,
                totals.cache_read_tokens + usage.cache_read_tokens,
            )
            price = self._price(model)
            if price is not None:
                cost += compute_cost(usage, price)
        return {
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "cache_creation_tokens": totals.cache_creation_tokens,
            "cache_read_tokens": totals.cache_read_tokens,
            "total_cost_usd": cost,
        }

    @staticmethod
    def _stored_tally(session: sa.Connection, session_id: uuid.UUID) -> _Tally:
        """Usage per model of the stored assistant messages, each API message id counted once
        (its blocks may repeat the usage)."""
        per_message = (
            sa.select(
                sa.func.max(MessageRow.model).label("model"),
                sa.func.max(MessageRow.input_tokens).label("input"),
                sa.func.max(MessageRow.output_tokens).label("output"),
                sa.func.max(MessageRow.cache_creation_tokens).label("cache_write"),
                sa.func.max(MessageRow.cache_read_tokens).label("cache_read"),
            )
            .where(
                MessageRow.session_id == session_id,
                MessageRow.type == MessageType.ASSISTANT,
                MessageRow.provider_message_id.is_not(None),
            )
            .group_by(MessageRow.provider_message_id)
            .subquery()
        )
        tally = _Tally()
        for model, inputs, outputs, writes, reads in session.execute(
            sa.select(
                per_message.c.model,
                sa.func.coalesce(sa.func.sum(per_message.c.input), 0),
                sa.func.coalesce(sa.func.sum(per_message.c.output), 0),
                sa.func.coalesce(sa.func.sum(per_message.c.cache_write), 0),
                sa.func.coalesce(sa.func.sum(per_message.c.cache_read), 0),
            ).group_by(per_message.c.model)
        ):
            tally.by_model[model] = TokenUsage(int(inputs), int(outputs), int(writes), int(reads))
        return tally

    def _price(self, model: str | None) -> Price | None:
        if not model:
            return None
        if model not in self._prices:
            self._prices[model] = self.pricing.lookup(model)
        return self._prices[model]

    def _record_error(self, path: Path, error: str) -> None:
        log.warning("transcript %s skipped: %s", path, error)
        now = utcnow()
        with self.db.write() as session:
            row = _file_row(session, path)
            row.last_error = error
            row.last_scanned_at = now
            row.updated_at = now


_AGENT_TOOLS = ("Agent", "Task")
_HEAD_LIMIT = 8 * 1024 * 1024
"""A sub-agent file whose call is still unknown is read again from its start only up to this
size: an orphan file growing forever must not be re-read on every append."""


def _is_sidechain_prompt(line: dict[str, Any], message: NewMessage) -> bool:
    """Whether the message is a sub-agent's prompt (what finds the Agent call it answers)."""
    return bool(line.get("isSidechain")) and (
        message.type is MessageType.USER and message.subtype == "text"
    )


def _sidechain_head(
    handle: BinaryIO, end: int, max_line_bytes: int
) -> tuple[NewMessage | None, list[str]]:
    """The first sub-agent prompt and the message uuids of a file's bytes before `end`; the
    handle is left at `end`."""
    prompt: NewMessage | None = None
    uuids: list[str] = []
    if end <= _HEAD_LIMIT:
        handle.seek(0)
        read = 0
        context = LineContext()
        for raw, consumed in complete_lines(handle, max_line_bytes):
            read += consumed
            line = parse_line(raw) if raw is not None else None
            if line is not None:
                for message in messages_from_line(line, include_prompts=True, context=context):
                    if message.provider_message_uuid is not None:
                        uuids.append(message.provider_message_uuid)
                    if prompt is None and _is_sidechain_prompt(line, message):
                        prompt = message
            if read >= end:
                break
    handle.seek(end)
    return prompt, uuids


_PARENT_COLUMN = STORED_COLUMNS.index("parent_tool_use_id")


def _agent_call(
    connection: sa.Connection, path: Path, session_id: uuid.UUID, prompt: NewMessage
) -> str | None:
    """The id of the Agent call whose sub-agent wrote `path`, from its first prompt: the call
    a run of ours stored that prompt under (the CLI streams it), else the latest call of the
    session with that prompt that no other sub-agent file has claimed."""
    if prompt.provider_message_uuid is not None:
        stored = connection.scalar(
            sa.select(MessageRow.parent_tool_use_id).where(
                MessageRow.session_id == session_id,
                MessageRow.provider_message_uuid == prompt.provider_message_uuid,
                MessageRow.parent_tool_use_id.is_not(None),
            )
        )
        if stored is not None:
            return str(stored)
    claimed = set(
        connection.scalars(
            sa.select(TranscriptFileRow.parent_tool_use_id).where(
                TranscriptFileRow.session_id == session_id,
                TranscriptFileRow.parent_tool_use_id.is_not(None),
                TranscriptFileRow.path != str(path),
            )
        )
    )
    calls = connection.scalars(
        sa.select(MessageRow.raw)
        .where(
            MessageRow.session_id == session_id,
            MessageRow.type == MessageType.ASSISTANT,
            MessageRow.subtype == "tool_use",
            MessageRow.text.in_(_AGENT_TOOLS),
        )
        .order_by(MessageRow.seq.desc())
    )
    wanted = prompt.text.strip()
    for raw in calls:
        message = raw.get("message") if isinstance(raw, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            call_input = block.get("input")
            call_id = block.get("id")
            if (
                isinstance(call_id, str)
                and call_id not in claimed
                and isinstance(call_input, dict)
                and str(call_input.get("prompt", "")).strip() == wanted
            ):
                return call_id
    return None


def _ends_a_line(handle: BinaryIO, offset: int) -> bool:
    """Whether the byte before `offset` is a newline: a file truncated and written again past
    the old watermark does not, and is read again from the start."""
    if offset == 0:
        return True
    handle.seek(offset - 1)
    return handle.read(1) == b"\n"


def _file_row(session: Session, path: Path) -> TranscriptFileRow:
    """The watermark row of `path`, created (not yet flushed) on first sight."""
    row = session.scalar(sa.select(TranscriptFileRow).where(TranscriptFileRow.path == str(path)))
    if row is None:
        row = TranscriptFileRow(path=str(path), is_subagent=_subagent_parent(path) is not None)
        session.add(row)
    return row
