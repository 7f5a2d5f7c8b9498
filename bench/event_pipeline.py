"""Per-event overhead of the run manager's path for one CLI stream-json line.

    line text → json.loads → events_for_line (parse) → RunManager._on_event:
    MessageService.append in a worker thread (anyio.to_thread.run_sync) → EventBus.publish
    → received by a per-session subscriber

Driven through the real `RunManager` (submit → claim → _execute → runner.run → _on_event) by
`ReplayRunner`, a fake `AgentRunner` that hands recorded stream-json lines (bench/samples/,
captured from the bundled CLI against the fake model) to the manager's emit callback as fast
as the manager accepts them, like ClaudeCodeRunner does (it awaits each emit). Each line gets
fresh uuids so every event is a new row.

Latency of an event = the subscriber's receive time − the time the line text was handed over.
Throughput = streamed lines / (gate opened → last event received). Runs with one session and
with --sessions sessions streaming at once (one run each, started together).

    .venv/bin/python bench/event_pipeline.py [--db sqlite|postgresql|all] [--events N]
        [--sessions 10] [--profile] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import logging
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import BACKENDS, Summary, migrated_database, write_result

from pocketcode.agents.base import (
    AgentEvent,
    AskPermission,
    EmitEvent,
    EventKind,
    RunOutcome,
    RunRequest,
    RunStatus,
)
from pocketcode.agents.claude_code import LineContext, events_for_line
from pocketcode.db.engine import Database
from pocketcode.domain.states import Provider
from pocketcode.services.events import EventBus, Subscription, message_event
from pocketcode.services.messages import MessageService
from pocketcode.services.runs import RunManager
from pocketcode.services.sessions import SessionService

SAMPLES = Path(__file__).resolve().parent / "samples" / "stream_json.jsonl"
TIME_LIMIT = 170.0  # seconds for the whole benchmark, every backend included
WARMUP_EVENTS = 300


# -- realistic lines --------------------------------------------------------------------------


def sample_templates() -> list[dict[str, Any]]:
    """The streamed line kinds, in the order a tool turn produces them: assistant tool_use
    (~0.7 KB), user tool_result (a Read of a 120-line file, ~6.9 KB), assistant text (~1 KB)."""
    lines = [json.loads(text) for text in SAMPLES.read_text().splitlines() if text.strip()]
    by_kind: dict[str, dict[str, Any]] = {}
    for line in lines:
        content = line.get("message", {}).get("content") if line["type"] != "result" else None
        if isinstance(content, list) and content:
            by_kind.setdefault(f"{line['type']}/{content[0]['type']}", line)
    return [by_kind["assistant/tool_use"], by_kind["user/tool_result"], by_kind["assistant/text"]]


def _dump(line: dict[str, Any]) -> str:
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def make_lines(count: int, provider_session_id: str) -> list[tuple[str, str]]:
    """`count` (uuid, line text) pairs cycling tool_use → tool_result → text, each with its
    own uuid, API message id and tool_use id, as a long agent turn would print them."""
    templates = sample_templates()
    out: list[tuple[str, str]] = []
    tool_id = ""
    for index in range(count):
        line = json.loads(_dump(templates[index % len(templates)]))
        line["uuid"] = key = str(uuid.uuid4())
        line["session_id"] = provider_session_id
        message = line["message"]
        if line["type"] == "assistant":
            message["id"] = f"msg_{uuid.uuid4().hex[:24]}"
            block = message["content"][0]
            if block["type"] == "tool_use":
                tool_id = block["id"] = f"toolu_{uuid.uuid4().hex[:24]}"
        else:
            message["content"][0]["tool_use_id"] = tool_id
        out.append((key, _dump(line)))
    return out


# -- the fake runner --------------------------------------------------------------------------


@dataclass
class Timings:
    handed: dict[str, float] = field(default_factory=dict)  # line given to the pipeline
    parsed: dict[str, float] = field(default_factory=dict)  # events_for_line returned
    emitted: dict[str, float] = field(default_factory=dict)  # emit (store + publish) returned
    received: dict[str, float] = field(default_factory=dict)  # the subscriber got the event


class ReplayRunner:
    """An `AgentRunner` that replays prepared stream-json lines through the manager's emit."""

    provider = Provider.CLAUDE_CODE

    def __init__(self, timings: Timings) -> None:
        self.timings = timings
        # paced: hand over the next line only once the previous one reached its subscriber
        # (the pure per-event overhead, no queueing); burst: as fast as emit returns
        # (saturation: the sustained events/s).
        self.paced = False
        self.arrived: dict[str, asyncio.Future[None]] = {}
        self.scripts: dict[uuid.UUID, list[tuple[str, str]]] = {}
        self.gate = asyncio.Event()
        self.waiting = 0
        self.at_gate = asyncio.Event()
        self.expected_at_gate = 0

    async def run(
        self, request: RunRequest, emit: EmitEvent, ask_permission: AskPermission
    ) -> RunOutcome:
        lines = self.scripts.pop(request.session_id)
        provider_session_id = request.resume_provider_session_id or request.new_provider_session_id
        await emit(
            AgentEvent(EventKind.PROCESS, provider_session_id=provider_session_id)
        )  # as the real runner does once its CLI is up (not timed)
        self.waiting += 1
        if self.waiting >= self.expected_at_gate:
            self.at_gate.set()
        await self.gate.wait()
        context = LineContext(job_id=request.job_id)
        timings = self.timings
        loop = asyncio.get_running_loop()
        for key, text in lines:
            if self.paced:
                self.arrived[key] = loop.create_future()
            timings.handed[key] = time.perf_counter()
            events = events_for_line(json.loads(text), context)
            timings.parsed[key] = time.perf_counter()
            for event in events:
                await emit(event)
            timings.emitted[key] = time.perf_counter()
            waiter = self.arrived.get(key)
            if waiter is not None and any(e.kind is EventKind.MESSAGE for e in events):
                await waiter
            self.arrived.pop(key, None)
        return RunOutcome(RunStatus.COMPLETED, provider_session_id, num_turns=1)

    async def cancel(self, session_id: uuid.UUID) -> None:
        return None

    async def close_idle(self) -> int:
        return 0

    async def aclose(self) -> None:
        return None


# -- one measured round -----------------------------------------------------------------------


@dataclass
class Round:
    mode: str
    sessions: int
    events: int
    elapsed: float
    latency: Summary
    parse: Summary
    store_publish: Summary
    deliver: Summary
    resyncs: int
    missing: int

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "sessions": self.sessions,
            "events": self.events,
            "elapsed_s": round(self.elapsed, 4),
            "events_per_s": round(self.events_per_second, 1),
            "latency_ms": self.latency.as_ms(),
            "stages_ms": {
                "parse": self.parse.as_ms(),
                "store_and_publish": self.store_publish.as_ms(),
                "to_subscriber": self.deliver.as_ms(),
            },
            "resyncs": self.resyncs,
            "missing": self.missing,
        }


async def _consume(
    subscription: Subscription,
    timings: Timings,
    counters: dict[str, int],
    arrived: dict[str, asyncio.Future[None]],
) -> None:
    async for event in subscription:
        now = time.perf_counter()
        if event.type == "message":
            raw = event.data.get("raw")
            key = raw.get("uuid") if isinstance(raw, dict) else None
            if isinstance(key, str):
                timings.received[key] = now
                waiter = arrived.get(key)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif event.type == "resync":
            counters["resyncs"] += 1
        elif event.type == "done":
            return


async def measure_round(
    db: Database,
    bus: EventBus,
    manager: RunManager,
    runner: ReplayRunner,
    root: Path,
    *,
    sessions: int,
    events: int,
    paced: bool,
) -> Round:
    timings = runner.timings = Timings()
    runner.paced = paced
    runner.arrived = {}
    runner.gate.clear()
    runner.at_gate.clear()
    runner.waiting = 0
    runner.expected_at_gate = sessions
    service = SessionService(db, [root])
    per_session = events // sessions
    ids: list[uuid.UUID] = []
    for _ in range(sessions):
        project = Path(tempfile.mkdtemp(dir=root))
        row = await asyncio.to_thread(service.create, str(project))
        runner.scripts[row.id] = make_lines(per_session, str(uuid.uuid4()))
        ids.append(row.id)
    counters = {"resyncs": 0}
    subscriptions = [bus.subscribe(session_id) for session_id in ids]
    consumers = [
        asyncio.create_task(_consume(subscription, timings, counters, runner.arrived))
        for subscription in subscriptions
    ]
    try:
        for session_id in ids:
            await manager.submit(session_id, "Refactor the shop module and run the tests")
        await runner.at_gate.wait()
        gc.collect()  # start every round from the same heap state
        started = time.perf_counter()
        runner.gate.set()
        await asyncio.gather(*consumers)
    finally:
        for subscription in subscriptions:
            subscription.close()
    keys = [key for key in timings.handed if key in timings.received]
    finished = max(timings.received[key] for key in keys)
    for session_id in ids:  # every line stored once, seq contiguous (prompt + lines)
        count = await asyncio.to_thread(MessageService(db).count, session_id)
        if count != per_session + 1:
            raise RuntimeError(f"session {session_id} stored {count} rows, not {per_session + 1}")
    return Round(
        mode="paced" if paced else "burst",
        sessions=sessions,
        events=len(keys),
        elapsed=finished - started,
        latency=Summary.of([timings.received[k] - timings.handed[k] for k in keys]),
        parse=Summary.of([timings.parsed[k] - timings.handed[k] for k in keys]),
        store_publish=Summary.of([timings.emitted[k] - timings.parsed[k] for k in keys]),
        deliver=Summary.of([max(0.0, timings.received[k] - timings.emitted[k]) for k in keys]),
        resyncs=counters["resyncs"],
        missing=len(timings.handed) - len(keys),
    )


async def run_backend(backend: str, events: int, sessions: int) -> dict[str, Any]:
    with migrated_database(backend) as db, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bus = EventBus(db)
        await bus.start()
        runner = ReplayRunner(Timings())
        manager = RunManager(
            db,
            bus,
            runner,
            # Enough for every session to run at once (the server default is 4).
            max_concurrent_runs=max(4, sessions),
            idle_check_interval=3600,
            worker_id=f"bench-{uuid.uuid4().hex[:8]}",
        )
        await manager.start()
        try:
            await measure_round(
                db, bus, manager, runner, root, sessions=1, events=WARMUP_EVENTS, paced=False
            )
            rounds = {
                f"{mode}_{name}": await measure_round(
                    db, bus, manager, runner, root, sessions=count, events=events, paced=paced
                )
                for mode, paced in (("paced", True), ("burst", False))
                for name, count in (("single_session", 1), ("concurrent", sessions))
            }
        finally:
            await manager.stop()
            await bus.stop()
    return {name: measured.as_json() for name, measured in rounds.items()}


# -- where the time goes ----------------------------------------------------------------------


def profile_store(backend: str, events: int) -> None:
    """cProfile of the synchronous part (parse → append → message_event) on this thread: the
    worker-thread half of the pipeline, which the event loop's profile cannot see."""
    with migrated_database(backend) as db, tempfile.TemporaryDirectory() as tmp:
        row = SessionService(db, [Path(tmp)]).create(tmp)
        messages = MessageService(db)
        lines = make_lines(events, str(uuid.uuid4()))
        context = LineContext(job_id=None)
        for _, text in lines[:100]:  # warm the pool and the statement cache
            for event in events_for_line(json.loads(text), context):
                assert event.message is not None
                message_event(messages.append(row.id, event.message))
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for _, text in lines[100:]:
            for event in events_for_line(json.loads(text), context):
                assert event.message is not None
                message_event(messages.append(row.id, event.message))
        profiler.disable()
        elapsed = time.perf_counter() - started
    per_event = elapsed / max(1, len(lines) - 100) * 1000
    print(f"\n== {backend}: synchronous parse+append+event, {per_event:.3f} ms/event (profiled)")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)


# -- output -----------------------------------------------------------------------------------


def _rows(backend: str, result: dict[str, Any]) -> Iterator[str]:
    for part in result.values():
        lat = part["latency_ms"]
        stages = part["stages_ms"]
        yield (
            f"| {backend} | {part['mode']} | {part['sessions']} | {part['events']} | "
            f"{lat['p50']:.2f} | "
            f"{lat['p95']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} | "
            f"{part['events_per_s']:,.0f} | {stages['parse']['p50']:.3f} / "
            f"{stages['store_and_publish']['p50']:.3f} / {stages['to_subscriber']['p50']:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--events", type=int, default=5000, help="events per round")
    parser.add_argument("--sessions", type=int, default=10, help="sessions in the concurrent round")
    parser.add_argument("--profile", action="store_true", help="also cProfile the store path")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    args = parser.parse_args()
    if args.events < args.sessions or not 1 <= args.sessions <= 64:
        parser.error("--events must be ≥ --sessions, --sessions between 1 and 64")
    logging.basicConfig(level=logging.WARNING)
    backends = list(BACKENDS) if args.db == "all" else [args.db]

    async def everything() -> dict[str, dict[str, Any]]:
        async with asyncio.timeout(TIME_LIMIT):
            return {b: await run_backend(b, args.events, args.sessions) for b in backends}

    results = asyncio.run(everything())
    print(
        "| db | mode | sessions | events | p50 ms | p95 ms | p99 ms | max ms | events/s "
        "| p50 parse / emit / to subscriber ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    for backend, result in results.items():
        for row in _rows(backend, result):
            print(row)
        if not args.no_write:
            payload = {
                "parameters": {"events": args.events, "sessions": args.sessions},
                "driver": "RunManager + ReplayRunner (fake AgentRunner) replaying "
                "bench/samples/stream_json.jsonl lines",
                "targets": {"p99_ms": 5, "events_per_s": 2000},
                **result,
            }
            path = write_result("event_pipeline", backend, payload)
            print(f"wrote {path}")
    if args.profile:
        for backend in backends:
            profile_store(backend, min(args.events, 2000) + 100)


if __name__ == "__main__":
    main()
