"""Live sync of Claude Code's transcripts while the server runs.

One directory watcher (watchfiles: inotify on Linux, no per-file watchers) on
`<config dir>/projects/` hands the `.jsonl` files that changed to the indexer, which reads only
their new complete lines (`TranscriptIndexer.scan(paths)`). What the scan inserted is then
published on the event bus as the runner publishes it: a "message" event per stored message (in
seq order) and a "state" event per session it touched, so a session's stream shows the new
messages and the list of every session shows a new session, usually well within a second.

Only inserted messages are published. A run of pocketcode writes the transcript of its own
session while it stores the same messages from the CLI's stdout: whichever of the two stores a
message first publishes it, the other one finds its uuid stored and skips it (the store's
de-duplication). A file's partial last line is left for the next change; a truncated or replaced
file is read again from the start (de-duplicated by uuid); a deleted file is marked gone and its
messages stay.

When `projects/` does not exist yet (Claude Code never ran), the watcher polls for it every
`poll_interval` seconds and starts watching once it appears. On start, and whenever watching
(re)starts, one full scan catches up with what changed while nobody watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import sqlalchemy as sa
import watchfiles

from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow, SessionRow
from pocketcode.services.events import Event, EventBus, message_event, session_state_event
from pocketcode.services.transcript_index import (
    ScanSummary,
    TranscriptIndexer,
    transcript_files,
)

log = logging.getLogger(__name__)

PendingPermissions = Callable[[uuid.UUID], int]
"""How many permission requests of a session wait for an answer (for its "state" event)."""


def _is_wanted(change: watchfiles.Change, path: str) -> bool:
    """Transcripts, and new folders: inotify watches a new folder only once it is seen, so a
    file written into it at once raises no event of its own (the folder is listed instead)."""
    return path.endswith(".jsonl") or (change == watchfiles.Change.added and os.path.isdir(path))


def _expand(paths: set[str]) -> list[Path]:
    """The transcripts among the changed paths and inside the new folders."""
    found: set[Path] = set()
    for path in paths:
        if path.endswith(".jsonl"):
            found.add(Path(path))
        elif os.path.isdir(path):
            found.update(transcript_files(Path(path)))
    return sorted(found)


class TranscriptWatcher:
    """Watches `<config dir>/projects/` and publishes what the transcripts gained."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        config_dir: Path | None = None,
        *,
        pending_permissions: PendingPermissions | None = None,
        poll_interval: float = 1.0,
        debounce_ms: int = 300,
        step_ms: int = 30,
    ) -> None:
        self.db = db
        self.bus = bus
        self.indexer = TranscriptIndexer(db, config_dir)
        self.root = self.indexer.root
        self.pending_permissions = pending_permissions or (lambda _session_id: 0)
        self.poll_interval = poll_interval
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watching = asyncio.Event()
        self.scans = 0
        """Scans done, the catch-up one included."""

    async def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="pocketcode-transcript-watch")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        try:
            # The watch thread notices the stop event within one step.
            await asyncio.wait_for(asyncio.shield(task), 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_watching(self) -> None:
        """Until the directory watcher runs and the catch-up scan is done."""
        await self._watching.wait()

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stop.is_set():
            if not self.root.is_dir():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval)
                continue
            try:
                await self._watch()
            except Exception as exc:  # the folder vanished, inotify limits…: start again
                self._watching.clear()
                log.warning("watching transcripts failed (%s); retrying", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval)

    async def _watch(self) -> None:
        changes = watchfiles.awatch(
            self.root,
            watch_filter=_is_wanted,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=self._stop,
            rust_timeout=1000,
            yield_on_timeout=True,
        )
        pending: asyncio.Queue[set[str] | None] = asyncio.Queue()

        async def collect() -> None:
            try:
                async for batch in changes:
                    if batch:
                        pending.put_nowait({path for _, path in batch})
                    elif not self.root.is_dir():
                        break  # the folder was deleted: wait for it again
            finally:
                pending.put_nowait(None)

        collector = asyncio.create_task(collect(), name="pocketcode-transcript-changes")
        try:
            # The watcher exists once the collector reached its first wait; then catch up with
            # everything, so no change falls between the scan and the watch.
            await asyncio.sleep(0.05)
            await self._scan(None)
            self._watching.set()
            while True:
                batch = await pending.get()
                if batch is None:
                    break
                while not pending.empty():  # everything that queued up during the last scan
                    more = pending.get_nowait()
                    if more is None:
                        pending.put_nowait(None)
                        break
                    batch |= more
                await self._scan_changed(_expand(batch))
        finally:
            self._watching.clear()
            if not collector.done():
                collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector  # re-raises what stopped the watcher, if anything did

    async def _scan_changed(self, paths: list[Path]) -> None:
        """Scan the changed files; a failed scan (e.g. another server process created the same
        session at the same moment, on PostgreSQL) is tried once more, then left to the next
        change of those files."""
        for attempt in (1, 2):
            try:
                await self._scan(paths)
                return
            except Exception as exc:
                log.warning(
                    "indexing %d changed transcript(s) failed (%s)%s",
                    len(paths),
                    type(exc).__name__,
                    "; retrying" if attempt == 1 else "",
                )
                await asyncio.sleep(0.2)

    async def _scan(self, paths: Iterable[Path] | None) -> None:
        summary = await anyio.to_thread.run_sync(
            lambda: self.indexer.scan(paths, keep_messages=True)
        )
        self.scans += 1
        await self._publish(summary)

    # -- publishing ----------------------------------------------------------------------------

    async def _publish(self, summary: ScanSummary) -> None:
        touched = summary.new_session_ids | summary.updated_session_ids
        if not touched:
            return
        # Persist, then publish: the scan committed these rows.
        for row in sorted(summary.messages or (), key=_by_session_and_seq):
            await self.bus.publish(message_event(row))
        for event in await anyio.to_thread.run_sync(self._state_events, touched):
            await self.bus.publish(event)

    def _state_events(self, session_ids: set[uuid.UUID]) -> list[Event]:
        with self.db.read() as session:
            rows = list(
                session.scalars(sa.select(SessionRow).where(SessionRow.id.in_(session_ids)))
            )
        return [session_state_event(row, self.pending_permissions(row.id)) for row in rows]


def _by_session_and_seq(row: MessageRow) -> tuple[str, int]:
    return (str(row.session_id), row.seq)
