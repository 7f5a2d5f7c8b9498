"""Live transcript sync: while the watcher runs, what Claude Code appends to a transcript is
stored and published on the event bus (new lines within a second, a new file as a new session),
exactly once even when the run manager stored some of it already; partial last lines wait for
their newline; truncated, rotated and deleted files lose nothing. Both backends."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import TranscriptFileRow
from pocketcode.domain.states import MessageType
from pocketcode.services.events import Event, EventBus, Subscription
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.sessions import SessionService
from pocketcode.services.transcript_watch import TranscriptWatcher
from tests.integration.test_transcript_index import SID, prompt, reply, stored, the_session

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "claude"


@pytest.fixture
def folder(config_dir: Path) -> Path:
    path = config_dir / "projects" / "-home-dev-my-project-v2"
    path.mkdir(parents=True)
    return path


@pytest.fixture
async def bus(db: Database) -> AsyncIterator[EventBus]:
    event_bus = EventBus(db)
    await event_bus.start()
    yield event_bus
    await event_bus.stop()


@pytest.fixture
async def watch(
    db: Database, bus: EventBus, config_dir: Path
) -> AsyncIterator[Callable[[], TranscriptWatcher]]:
    """Start a watcher (after the test wrote what should exist before it)."""
    started: list[TranscriptWatcher] = []

    def start() -> TranscriptWatcher:
        watcher = TranscriptWatcher(db, bus, config_dir, poll_interval=0.1)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        await watcher.stop()


async def running(watcher: TranscriptWatcher) -> TranscriptWatcher:
    await watcher.start()
    with anyio.fail_after(10):
        await watcher.wait_watching()
    return watcher


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


async def until(
    events: Subscription, done: Callable[[list[Event]], bool], seconds: float = 10
) -> list[Event]:
    seen: list[Event] = []
    with anyio.fail_after(seconds):
        async for event in events:
            seen.append(event)
            if done(seen):
                return seen
    raise AssertionError(f"the subscription ended: {seen}")


def texts(events: list[Event]) -> list[str]:
    return [event.data["text"] for event in events if event.type == "message"]


async def quiet(events: Subscription, seconds: float = 0.5) -> list[Event]:
    """What arrives within `seconds` (expected: nothing more)."""
    seen: list[Event] = []
    with anyio.move_on_after(seconds):
        async for event in events:
            seen.append(event)
    return seen


async def test_appended_lines_reach_a_subscriber_within_a_second(
    db: Database, bus: EventBus, watch: Callable[[], TranscriptWatcher], folder: Path
) -> None:
    transcript = folder / f"{SID}.jsonl"
    transcript.write_bytes(prompt("First prompt") + reply("First answer"))
    watcher = await running(watch())
    session_id = the_session(db).id  # the catch-up scan imported what was there
    assert [m.text for m in stored(db)] == ["First prompt", "First answer"]

    with bus.subscribe(session_id) as events:
        latencies = []
        for turn in range(3):
            written = time.monotonic()
            append(transcript, prompt(f"prompt {turn}") + reply(f"answer {turn}"))
            seen = await until(events, lambda seen: len(texts(seen)) == 2)
            latencies.append(time.monotonic() - written)
            assert texts(seen) == [f"prompt {turn}", f"answer {turn}"]
            seqs = [event.seq for event in seen if event.type == "message"]
            assert seqs == [3 + 2 * turn, 4 + 2 * turn]
            state = await until(events, lambda seen: seen[-1].type == "state")
            assert state[-1].data["messageCount"] == 4 + 2 * turn
    # Within a second (the median: one hiccup of a loaded machine is not the watcher's).
    assert sorted(latencies)[1] < 1.0, latencies
    assert watcher.scans >= 4
    # Each turn's usage and prompt counted once in the session's totals.
    row = the_session(db)
    assert (row.input_tokens, row.output_tokens, row.turn_count) == (40, 20, 4)


async def test_a_new_file_is_a_new_session_in_the_list_of_every_session(
    db: Database, bus: EventBus, watch: Callable[[], TranscriptWatcher], folder: Path
) -> None:
    await running(watch())
    with bus.subscribe() as everything:
        other = folder.parent / "-home-dev-other"
        other.mkdir()  # a new project folder: watched too (recursive)
        (other / f"{SID}.jsonl").write_bytes(prompt("Hello from a terminal") + reply("Hi"))
        seen = await until(everything, lambda seen: seen[-1].type == "state")
    session = the_session(db)
    assert {event.session_id for event in seen} == {session.id}
    assert texts(seen) == ["Hello from a terminal", "Hi"]
    listed, total = SessionService(db, []).list_sessions()
    assert [row.id for row in listed] == [session.id] and total == 1
    assert listed[0].title == "Hello from a terminal"


async def test_a_partial_last_line_waits_for_its_newline(
    db: Database, bus: EventBus, watch: Callable[[], TranscriptWatcher], folder: Path
) -> None:
    transcript = folder / f"{SID}.jsonl"
    transcript.write_bytes(prompt("Start"))
    await running(watch())
    line = reply("Written in two goes")
    with bus.subscribe(the_session(db).id) as events:
        append(transcript, line[:40])
        assert texts(await quiet(events)) == []
        append(transcript, line[40:])
        seen = await until(events, lambda seen: len(texts(seen)) == 1)
    assert texts(seen) == ["Written in two goes"]
    with db.read() as session:
        offset = session.scalar(sa.select(TranscriptFileRow.parsed_offset))
    assert offset == transcript.stat().st_size


async def test_messages_the_runner_stored_are_not_published_again(
    db: Database, bus: EventBus, watch: Callable[[], TranscriptWatcher], folder: Path
) -> None:
    transcript = folder / f"{SID}.jsonl"
    transcript.write_bytes(prompt("Start"))
    await running(watch())
    session_id = the_session(db).id
    live_uuid = str(uuid.uuid4())
    # What the run manager does with a stream-json line: store it (and publish it) itself.
    MessageService(db).append(
        session_id,
        NewMessage(
            MessageType.ASSISTANT, "Stored live", subtype="text", provider_message_uuid=live_uuid
        ),
    )
    with bus.subscribe(session_id) as events:
        append(transcript, reply("Stored live", uid=live_uuid) + reply("Only in the file"))
        seen = await until(events, lambda seen: len(texts(seen)) == 1)
        seen += await quiet(events)
    assert texts(seen) == ["Only in the file"]
    assert [m.text for m in stored(db)] == ["Start", "Stored live", "Only in the file"]


async def test_truncated_rotated_and_deleted_files_lose_nothing_and_repeat_nothing(
    db: Database, bus: EventBus, watch: Callable[[], TranscriptWatcher], folder: Path
) -> None:
    transcript = folder / f"{SID}.jsonl"
    kept = [prompt("one", uid=str(uuid.uuid4())), reply("two", uid=str(uuid.uuid4()))]
    transcript.write_bytes(b"".join(kept))
    await running(watch())
    session_id = the_session(db).id
    with bus.subscribe(session_id) as events:
        # Truncated and rewritten (shorter than before): read again, only the new line is new.
        transcript.write_bytes(kept[0] + prompt("three"))
        assert transcript.stat().st_size < len(b"".join(kept))
        seen = await until(events, lambda seen: len(texts(seen)) == 1)
        assert texts(seen) == ["three"]

        # Rotated: the old file moved away, a new inode at the same path holding old and new.
        transcript.rename(folder / "rotated.bak")
        inode = (folder / "rotated.bak").stat().st_ino
        transcript.write_bytes(b"".join(kept) + reply("four"))
        assert transcript.stat().st_ino != inode
        seen = await until(events, lambda seen: len(texts(seen)) == 1)
        assert texts(seen) == ["four"]

        # Deleted: marked gone, every message stays.
        os.unlink(transcript)
        with anyio.fail_after(10):
            while True:
                with db.read() as session:
                    gone = session.scalar(
                        sa.select(TranscriptFileRow.gone_at).where(
                            TranscriptFileRow.path == str(transcript)
                        )
                    )
                if gone is not None:
                    break
                await anyio.sleep(0.05)
        assert texts(await quiet(events)) == []
    assert [m.text for m in stored(db)] == ["one", "two", "three", "four"]
    assert [m.seq for m in stored(db)] == [1, 2, 3, 4]


async def test_a_projects_folder_created_later_is_watched_once_it_appears(
    db: Database, bus: EventBus, watch: Callable[[], TranscriptWatcher], config_dir: Path
) -> None:
    watcher = watch()
    await watcher.start()
    await anyio.sleep(0.3)  # polling for a folder that does not exist yet
    with bus.subscribe() as everything:
        folder = config_dir / "projects" / "-home-dev-later"
        folder.mkdir(parents=True)
        (folder / f"{SID}.jsonl").write_bytes(prompt("First ever session"))
        seen = await until(everything, lambda seen: seen[-1].type == "state")
    assert texts(seen) == ["First ever session"]
    assert the_session(db).title == "First ever session"
