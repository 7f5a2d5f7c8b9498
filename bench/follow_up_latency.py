"""Time from `RunManager.submit` of a prompt to its first stored assistant message, with the
real bundled Claude Code CLI against the in-process fake model, for:

- cold: the first prompt of a new session (the CLI process starts);
- warm: a follow-up while the session's live client is kept (no start-up);
- resumed: a follow-up after the live client was closed as idle (CLI restarts with --resume).

Per session: cold, then `--warm` warm follow-ups, then the live client is closed and one
resumed prompt runs. The subscriber is a per-session bus subscription, as an SSE client's.
"First stored assistant message" = the first "message" event of type assistant for the job
(persisted before it is published). Also reported: the first live text delta and the "done".

    .venv/bin/python bench/follow_up_latency.py [--db sqlite|postgresql|all] [--sessions 10]
        [--warm 2] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import BACKENDS, Summary, migrated_database, write_result

from pocketcode.agents import processes
from pocketcode.agents.claude_code import ClaudeCodeRunner, default_cli_path
from pocketcode.devtools.fake_model import FakeModelServer, claude_cli_env, text
from pocketcode.services.events import Event, EventBus
from pocketcode.services.runs import RunManager
from pocketcode.services.sessions import SessionService

TIME_LIMIT = 170.0  # seconds for the whole benchmark, every backend included
RUN_LIMIT = 30.0  # seconds for one prompt to be done
KINDS = ("cold", "warm", "resumed")


@dataclass
class Sample:
    kind: str
    first_assistant: float
    first_delta: float | None
    done: float


@dataclass
class Samples:
    items: list[Sample] = field(default_factory=list)

    def of(self, kind: str) -> list[Sample]:
        return [sample for sample in self.items if sample.kind == kind]


async def timed_prompt(
    manager: RunManager, bus: EventBus, session_id: uuid.UUID, kind: str
) -> Sample:
    """Submit one prompt and time its events as a subscriber sees them."""
    arrivals: list[tuple[float, Event]] = []
    finished = asyncio.Event()
    job_id: list[str] = []

    with bus.subscribe(session_id) as subscription:

        async def consume() -> None:
            async for event in subscription:
                arrivals.append((time.perf_counter(), event))
                if event.type == "done" and job_id and event.data.get("jobId") == job_id[0]:
                    finished.set()
                    return

        consumer = asyncio.create_task(consume())
        started = time.perf_counter()
        job = await manager.submit(session_id, f"Question {uuid.uuid4().hex[:6]}: what next?")
        job_id.append(str(job.id))
        try:
            async with asyncio.timeout(RUN_LIMIT):
                await finished.wait()
        finally:
            consumer.cancel()
    ours = str(job.id)

    def first(predicate: Any) -> float | None:
        for at, event in arrivals:
            if predicate(event):
                return at - started
        return None

    first_assistant = first(
        lambda e: (
            e.type == "message"
            and e.data.get("jobId") == ours
            and e.data.get("type") == "assistant"
        )
    )
    done = first(lambda e: e.type == "done" and e.data.get("jobId") == ours)
    if first_assistant is None or done is None:
        raise RuntimeError(f"{kind} prompt produced no stored assistant message")
    delta = first(lambda e: e.type == "delta")
    return Sample(kind, first_assistant, delta, done)


async def run_backend(backend: str, sessions: int, warm: int) -> Samples:
    samples = Samples()
    prompts = sessions * (warm + 2)
    answer = "Next, run the tests and fix the failing one in shop/cart.py. " * 3
    with (
        migrated_database(backend) as db,
        tempfile.TemporaryDirectory(prefix="pocketcode-bench-") as tmp,
        FakeModelServer([text(answer) for _ in range(prompts + 10)]) as server,
    ):
        root = Path(tmp)
        home = root / "home"
        env = claude_cli_env(home, server.base_url)
        env["CLAUDE_CONFIG_DIR"] = str(home / ".claude")
        instance_id = f"bench-{uuid.uuid4().hex[:8]}"
        bus = EventBus(db)
        await bus.start()
        runner = ClaudeCodeRunner(
            cli_path=default_cli_path(),  # the CLI bundled with claude-agent-sdk
            server_env={"PATH": os.environ.get("PATH", os.defpath)},
            work_dir=root / "runner",
            instance_id=instance_id,
            # Closed by close_idle() below, never by the manager's idle loop mid-measure.
            idle_timeout=0.0,
        )
        manager = RunManager(
            db,
            bus,
            runner,
            agent_env=lambda: dict(env),
            worker_id=instance_id,
            idle_check_interval=3600,
        )
        await manager.start()
        service = SessionService(db, [root])
        try:
            for _ in range(sessions):
                project = Path(tempfile.mkdtemp(dir=root))
                row = await asyncio.to_thread(service.create, str(project))
                samples.items.append(await timed_prompt(manager, bus, row.id, "cold"))
                for _ in range(warm):
                    samples.items.append(await timed_prompt(manager, bus, row.id, "warm"))
                await runner.close_idle()
                samples.items.append(await timed_prompt(manager, bus, row.id, "resumed"))
                await runner.close_idle()
        finally:
            await manager.stop()
            await bus.stop()
            survivors = processes.reap_orphans(instance_id=instance_id, grace=1.0)
            if survivors:
                logging.warning("killed %d CLI process(es) left behind", len(survivors))
    return samples


def summarise(samples: Samples) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        items = samples.of(kind)
        deltas = [s.first_delta for s in items if s.first_delta is not None]
        out[kind] = {
            "first_assistant_ms": Summary.of([s.first_assistant for s in items]).as_ms(),
            "first_delta_ms": Summary.of(deltas).as_ms(),
            "done_ms": Summary.of([s.done for s in items]).as_ms(),
            "samples_ms": [round(s.first_assistant * 1000, 1) for s in items],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--sessions", type=int, default=10, help="cold starts to measure")
    parser.add_argument("--warm", type=int, default=2, help="warm follow-ups per session")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 20 or not 1 <= args.warm <= 10:
        parser.error("--sessions between 1 and 20, --warm between 1 and 10")
    logging.basicConfig(level=logging.WARNING)
    backends = list(BACKENDS) if args.db == "all" else [args.db]

    async def everything() -> dict[str, Samples]:
        async with asyncio.timeout(TIME_LIMIT):
            return {b: await run_backend(b, args.sessions, args.warm) for b in backends}

    results = asyncio.run(everything())
    print(
        "| db | prompt | n | first assistant p50 ms | p90 ms | max ms "
        "| first delta p50 ms | done p50 ms |\n|---|---|---|---|---|---|---|---|"
    )
    for backend, samples in results.items():
        summary = summarise(samples)
        for kind in KINDS:
            first = summary[kind]["first_assistant_ms"]
            print(
                f"| {backend} | {kind} | {first['count']} | {first['p50']:.0f} | "
                f"{first['p90']:.0f} | {first['max']:.0f} | "
                f"{summary[kind]['first_delta_ms']['p50']:.0f} | "
                f"{summary[kind]['done_ms']['p50']:.0f} |"
            )
        if not args.no_write:
            payload = {
                "parameters": {"sessions": args.sessions, "warm_per_session": args.warm},
                "driver": "RunManager + ClaudeCodeRunner (bundled CLI) + in-process "
                "FakeModelServer (text turns)",
                "targets": {"warm_first_assistant_ms": 150},
                **summary,
            }
            path = write_result("follow_up_latency", backend, payload)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
