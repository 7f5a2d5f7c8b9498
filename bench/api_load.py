"""The HTTP API under load, against a real `pocketcode serve` (a child process on 127.0.0.1).

Three measurements, each on SQLite and on PostgreSQL (a throwaway database each time):

- **events**: SSE clients (default 200) on streaming sessions (default 10), half on
  `GET /api/events`, half on `GET /api/sessions/{id}/events`, authenticated with an API token
  made by `pocketcode user create` + `pocketcode token create`. The streams come from real runs:
  one prompt per session, sent over HTTP, run by the bundled Claude Code CLI against the
  scripted fake model (`pocketcode dev fake-model`), whose reply is made of many text blocks
  streamed one after the other (the CLI prints one stored line per block). Latency of a message
  = the client's receive time − its stored `createdAt` (set in the transaction that stores it,
  before the commit and the publish); zero loss = every client gets every seq of its sessions
  exactly once, in order. The latencies are also given apart for the prompts (all sent at once,
  each starting its CLI's turn) and for the messages the runs stored, and measured a second way:
  from the kernel's receive time of the bytes (SO_TIMESTAMPNS), which the 200 clients sharing
  one process, and that process waiting for a CPU, do not delay.
- **page**: `GET /api/sessions/{id}/messages?limit=50` of a session of 20,000 messages, first
  page and `after=` cursors at random depths.
- **list**: `GET /api/sessions` with 10,000 sessions: the default page, deep offsets, `state=`.

Data for page and list is seeded through the services (messages) and one bulk insert
(sessions) before the server starts, never over HTTP.

    .venv/bin/python bench/api_load.py [events|page|list|all] [--db sqlite|postgresql|all]
        [--clients 200] [--sessions 10] [--blocks 20] [--block-delay 0.5]
        [--messages 20000] [--session-rows 10000] [--requests 500] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import itertools
import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from _common import (
    BACKENDS,
    POCKETCODE,
    Summary,
    create_owner_token,
    migrated_database,
    write_result,
)
from event_pipeline import make_lines

import pocketcode
from pocketcode.agents.claude_code import LineContext, events_for_line
from pocketcode.db.engine import Database
from pocketcode.db.tables import MessageRow, SessionRow
from pocketcode.domain.states import LifecycleStatus, Provider
from pocketcode.services.messages import MessageService, NewMessage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.e2e
from tests.e2e.server_process import ServerProcess, free_port, server_env

TIME_LIMIT = 170.0  # seconds per measurement and backend
TARGETS_MS = {"events_p99": 50.0, "page_p99": 20.0, "list_p99": 20.0}
FILLER = (
    "I read the module and the tests; the failing case comes from the date parser, which "
    "treats a missing zone as local time. I will change it to assume UTC and add a test. "
)


# -- a served pocketcode ------------------------------------------------------------------------


@dataclass
class Stack:
    server: ServerProcess
    token: str
    db: Database  # the benchmark's own connection: seeding and checks, never the timed path
    root: Path  # the allowed project root

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=self.headers, timeout=30)

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server.url, headers=self.headers, timeout=30)


def settle(db: Database) -> None:
    """After a bulk load, what a database left alone would have done before the reads timed
    here: statistics (PostgreSQL's autovacuum), the load's WAL written back into the database
    (a checkpoint) and the dirty pages on disk, so no write-back of the seeding lands inside
    a timed request."""
    with db.autocommit_connection() as connection:
        if db.is_sqlite:  # its planner needs no statistics
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            connection.exec_driver_sql("VACUUM ANALYZE")
            with contextlib.suppress(sa.exc.DBAPIError):  # CHECKPOINT needs a superuser
                connection.exec_driver_sql("CHECKPOINT")
    os.sync()


@contextlib.contextmanager
def served(
    backend: str,
    *,
    model_url: str = "http://127.0.0.1:9",
    seed: Callable[[Database, Path], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """A throwaway database, an owner and an API token made with the CLI, `seed` run on the
    database, then `pocketcode serve` on a free loopback port; everything removed afterwards."""
    with (
        migrated_database(backend) as db,
        tempfile.TemporaryDirectory(prefix="pocketcode-api-bench-") as tmp,
    ):
        root = Path(tmp)
        url = db.engine.url.render_as_string(hide_password=False)
        env = server_env(root, url, model_url)
        env.update({"POCKETCODE_LOG_LEVEL": "warning", **(extra_env or {})})
        if "PYTHONPATH" in os.environ:  # the server runs the code the benchmark imports
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        token = create_owner_token(env)
        if seed is not None:
            seed(db, root)
            settle(db)
        server = ServerProcess.start(env, root / "server.log", timeout=60)
        try:
            yield Stack(server, token, db, root)
        finally:
            server.stop()


PROFILE_DIR: Path | None = None  # --profile: py-spy samples of the server while timed


@contextlib.contextmanager
def profiled(stack: Stack, name: str) -> Iterator[None]:
    """With --profile, py-spy samples the server process (collapsed stacks, one file per
    measurement in PROFILE_DIR); py-spy is not a dependency: `pip install py-spy`."""
    if PROFILE_DIR is None:
        yield
        return
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    output = PROFILE_DIR / f"{name}.txt"
    argv = ["record", "--pid", str(stack.server.process.pid), "--format", "raw"]
    # --gil: only the thread holding the GIL, i.e. where the CPU time goes.
    argv += ["--rate", "200", "--gil", "--nonblocking", "--output", str(output)]
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches (blocking the loop of the events round: before timing)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        print(f"profile: {output}")


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The benchmark's own heap (the seeded rows, the imported server code) moved out of the
    cyclic GC's reach while it times: a full collection of it took 60–140 ms, and it landed in
    the middle of a timed request or between a chunk's arrival and its timestamp, so the
    client's pauses showed up as the server's max latency."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# -- 1. events: SSE clients on streaming sessions ---------------------------------------------


def _created_at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# Linux: a receive timestamp (struct timespec) with every recvmsg() of a socket.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")


@dataclass
class SseClient:
    """A lean EventSource: HTTP/1.1 on a raw socket, chunked decoding, frames split on a blank
    line. Two arrival times per frame: when this client read it (the time is taken before
    parsing, so its own parsing is not counted, but a frame waits in the socket while this one
    process serves the other clients or is not scheduled), and when the kernel received it
    (SO_TIMESTAMPNS), which no work of this process delays: the server's latency alone."""

    port: int
    path: str
    token: str
    sessions: set[str]  # the sessions whose messages it must get
    received: dict[str, list[int]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    socket_latencies: list[float] = field(default_factory=list)
    # The same split: the prompts (stored by the POSTs that queued them, all at once) and the
    # messages the runs stored.
    prompt_latencies: list[float] = field(default_factory=list)
    run_latencies: list[float] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)  # "done" events per session
    others: int = 0  # delta, state, queue, heartbeat… frames
    resyncs: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    done_seen: asyncio.Event = field(default_factory=asyncio.Event)
    targets: dict[str, int] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        # (bytes, kernel receive time) per recvmsg(), b"" at the end of the connection.
        arrived: collections.deque[tuple[bytes, float]] = collections.deque()
        readable = asyncio.Event()

        def receive() -> None:
            while True:
                try:
                    data, ancillary, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
                except BlockingIOError:
                    break
                stamp = next(
                    (_TIMESPEC.unpack(d) for lvl, kind, d in ancillary if kind == SO_TIMESTAMPNS),
                    None,
                )
                arrived.append((data, stamp[0] + stamp[1] / 1e9 if stamp else time.time()))
                if not data:
                    loop.remove_reader(sock.fileno())
                    break
            readable.set()

        try:
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            request = (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            loop.add_reader(sock.fileno(), receive)
            await self._read(arrived, readable)
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()

    async def _read(
        self, arrived: collections.deque[tuple[bytes, float]], readable: asyncio.Event
    ) -> None:
        """Decode the response: its head, then chunks, then frames; a frame keeps the kernel
        time of the read that completed it."""
        raw = b""  # bytes not decoded yet
        body = b""  # decoded body bytes not split into frames yet
        chunked: bool | None = None  # None until the head is read
        while True:
            await readable.wait()
            readable.clear()
            read_at = time.time()  # before parsing: this process's own work is not counted
            while arrived:
                data, in_socket = arrived.popleft()
                if not data:
                    return
                raw += data
                if chunked is None:
                    end = raw.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head, raw = raw[:end], raw[end + 4 :]
                    if b" 200 " not in head.split(b"\r\n", 1)[0]:
                        raise RuntimeError(f"{self.path}: {head[:200]!r}")
                    chunked = b"transfer-encoding: chunked" in head.lower()
                while chunked and (line_end := raw.find(b"\r\n")) >= 0:
                    size = int(raw[:line_end].split(b";")[0], 16)
                    if size == 0:
                        return
                    start = line_end + 2
                    if len(raw) < start + size + 2:
                        break
                    body += raw[start : start + size]
                    raw = raw[start + size + 2 :]
                if not chunked:
                    body, raw = body + raw, b""
                while (end := body.find(b"\n\n")) >= 0:
                    self._frame(body[:end], read_at, in_socket)
                    body = body[end + 2 :]

    def _frame(self, raw: bytes, arrived: float, in_socket: float) -> None:
        event = b"message"
        data = b""
        for line in raw.split(b"\n"):
            if line.startswith(b"event: "):
                event = line[7:]
            elif line.startswith(b"data: "):
                data = line[6:]
        if event == b"message" and data:
            message = orjson.loads(data)
            self.received.setdefault(message["sessionId"], []).append(message["seq"])
            created = _created_at(message["createdAt"])
            latency = arrived - created
            self.latencies.append(latency)
            self.socket_latencies.append(in_socket - created)
            is_prompt = message["type"] == "user" and message["subtype"] == "prompt"
            (self.prompt_latencies if is_prompt else self.run_latencies).append(latency)
            self.check()
            return
        if event == b"heartbeat":
            self.connected.set()
        elif event == b"done":
            session_id = orjson.loads(data)["sessionId"]
            self.done[session_id] = self.done.get(session_id, 0) + 1
            self.done_seen.set()
        elif event == b"resync":
            self.resyncs += 1
        self.others += 1

    def check(self) -> None:
        """Finished once every session reached the seq it must reach."""
        if self.targets is None or self.finished.is_set():
            return
        if all((self.received.get(s) or [0])[-1] >= self.targets[s] for s in self.sessions):
            self.finished.set()


WARM_UP_PROMPT = "Get ready."


def work_prompt(index: int) -> str:
    """The measured prompt of the `index`-th session: the fake model answers it by its tag."""
    return f"Work through the steps [session {index}]."


def fake_model_script(sessions: int, blocks: int, block_delay: float) -> dict[str, Any]:
    """A short reply to the warm-up prompt (it starts each CLI), then one long reply per
    session: `blocks` text blocks, each sent as one delta after a pause. The pauses differ per
    session (±20 % around `block_delay`), so the sessions drift apart like independent runs
    instead of storing their messages in the same instant, tick after tick. Replies go by the
    prompt's text (`by_prompt`), not by the order requests arrive in: a CLI that retries a
    request gets its own reply again instead of taking another session's."""
    replies = {
        f"[session {index}]": {
            "type": "reply",
            "blocks": [{"type": "text", "text": f"Step {i}. {FILLER}"} for i in range(blocks)],
            "chunk_delay": block_delay * (0.8 + 0.4 * index / max(1, sessions - 1)),
            "chunk_chars": 100_000,
        }
        for index in range(sessions)
    }
    return {"by_prompt": {WARM_UP_PROMPT: {"type": "text", "text": "Ready."}, **replies}}


@contextlib.contextmanager
def fake_model(script: dict[str, Any], directory: Path) -> Iterator[str]:
    """`pocketcode dev fake-model` in its own process (its pacing does not share our GIL)."""
    path = directory / "script.json"
    path.write_text(json.dumps(script))
    port = free_port()
    log = (directory / "fake-model.log").open("wb")
    process = subprocess.Popen(
        [*POCKETCODE, "dev", "fake-model", "--port", str(port), "--script", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            if process.poll() is not None:
                raise RuntimeError("the fake model exited")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _last_seqs(messages: MessageService, session_ids: list[str]) -> dict[str, int]:
    return {s: messages.last_seq(uuid.UUID(s)) or 0 for s in session_ids}


async def _wait_done(monitor: SseClient, session_ids: list[str], count: int) -> None:
    while not all(monitor.done.get(s, 0) >= count for s in session_ids):
        monitor.done_seen.clear()
        await monitor.done_seen.wait()


async def _prompt_all(stack: Stack, prompts: dict[str, str]) -> None:
    """POST each session its prompt, all at once."""
    async with stack.async_client() as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/api/sessions/{s}/messages", json={"content": prompt})
                for s, prompt in prompts.items()
            )
        )
    for response in responses:
        if response.status_code != 202:
            raise RuntimeError(f"prompt refused: {response.status_code} {response.text}")


async def events_round(stack: Stack, clients: int, sessions: int) -> dict[str, Any]:
    port = stack.server.port
    session_ids: list[str] = []
    async with stack.async_client() as client:
        for index in range(sessions):
            project = stack.root / f"project-{index}"
            project.mkdir()
            response = await client.post("/api/sessions", json={"projectPath": str(project)})
            response.raise_for_status()
            session_ids.append(response.json()["id"])
    # A monitor (not measured) sees the runs end.
    monitor = SseClient(port, "/api/events", stack.token, set(session_ids))
    monitor_task = asyncio.create_task(monitor.run())
    await monitor.connected.wait()
    # Starts every session's CLI.
    await _prompt_all(stack, dict.fromkeys(session_ids, WARM_UP_PROMPT))
    await _wait_done(monitor, session_ids, 1)

    messages = MessageService(stack.db)
    start = await asyncio.to_thread(_last_seqs, messages, session_ids)
    readers = []
    for index in range(clients):
        if index % 2 == 0:
            path, wanted = "/api/events", set(session_ids)
        else:
            session_id = session_ids[(index // 2) % sessions]
            path, wanted = (
                f"/api/sessions/{session_id}/events?after={start[session_id]}",
                {session_id},
            )
        readers.append(SseClient(port, path, stack.token, wanted))
    tasks = [asyncio.create_task(reader.run()) for reader in readers]
    connect_started = time.perf_counter()
    await asyncio.gather(*(reader.connected.wait() for reader in readers))
    connect_seconds = time.perf_counter() - connect_started

    with frozen_heap():
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = cpu_seconds(stack.server.process.pid)
        started = time.perf_counter()
        with profiled(stack, f"events-{'sqlite' if stack.db.is_sqlite else 'postgresql'}"):
            await _prompt_all(stack, {s: work_prompt(index) for index, s in enumerate(session_ids)})
            await _wait_done(monitor, session_ids, 2)
        runs_seconds = time.perf_counter() - started
        server_cpu = cpu_seconds(stack.server.process.pid) - server_cpu
        final = await asyncio.to_thread(_last_seqs, messages, session_ids)
        for reader in readers:
            reader.targets = final
            reader.check()
        await asyncio.wait_for(asyncio.gather(*(r.finished.wait() for r in readers)), 30)
        delivered_seconds = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for task in [*tasks, monitor_task]:
        task.cancel()
    await asyncio.gather(*tasks, monitor_task, return_exceptions=True)

    lost = duplicated = out_of_order = 0
    for reader in readers:
        for session_id in reader.sessions:
            got = reader.received.get(session_id, [])
            expected = list(range(start[session_id] + 1, final[session_id] + 1))
            if got != expected:
                lost += len(set(expected) - set(got))
                duplicated += len(got) - len(set(got))
                out_of_order += sum(1 for a, b in itertools.pairwise(got) if b < a)
    latencies = [value for reader in readers for value in reader.latencies]
    stored = sum(final[s] - start[s] for s in session_ids)
    return {
        "clients": clients,
        "sessions": sessions,
        "clients_all_sessions": sum(1 for r in readers if r.path == "/api/events"),
        "clients_one_session": sum(1 for r in readers if r.path != "/api/events"),
        "messages_stored": stored,
        "deliveries": len(latencies),
        "other_frames": sum(r.others for r in readers),
        "resyncs": sum(r.resyncs for r in readers),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "connect_s": round(connect_seconds, 3),
        "runs_s": round(runs_seconds, 3),
        "messages_per_s": round(stored / runs_seconds, 1),
        "deliveries_per_s": round(len(latencies) / delivered_seconds, 1),
        "server_cpu_s": round(server_cpu, 2),
        "client_cpu_s": round(
            cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime,
            2,
        ),
        "latency_ms": Summary.of(latencies).as_ms(),
        "latency_at_socket_ms": Summary.of(
            [value for reader in readers for value in reader.socket_latencies]
        ).as_ms(),
        # The prompts all land in the same instant (one POST per session, sent together, each
        # starting its CLI's turn); the run's messages come at the runs' pace after that.
        "latency_prompts_ms": Summary.of(
            [value for reader in readers for value in reader.prompt_latencies]
        ).as_ms(),
        "latency_run_messages_ms": Summary.of(
            [value for reader in readers for value in reader.run_latencies]
        ).as_ms(),
    }


def run_events(
    backend: str, clients: int, sessions: int, blocks: int, block_delay: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pocketcode-fake-model-") as tmp:
        script = fake_model_script(sessions, blocks, block_delay)
        with (
            fake_model(script, Path(tmp)) as model_url,
            served(
                backend,
                model_url=model_url,
                extra_env={
                    "POCKETCODE_MAX_CONCURRENT_RUNS": str(sessions),
                },
            ) as stack,
        ):

            async def measure() -> dict[str, Any]:
                async with asyncio.timeout(TIME_LIMIT):
                    return await events_round(stack, clients, sessions)

            result = asyncio.run(measure())
    result["parameters"] = {"blocks": blocks, "block_delay_s": block_delay}
    return result


# -- 2. a page of messages from a long session ------------------------------------------------


def seed_messages(db: Database, root: Path, count: int) -> uuid.UUID:
    """One session with `count` messages cycling tool_use → tool_result (6.9 KB) → text, the
    lines bench/event_pipeline.py replays, stored through MessageService in batches."""
    project = root / "long"
    project.mkdir()
    session_id = uuid.uuid4()
    with db.write_connection() as connection:
        connection.execute(
            sa.insert(SessionRow).values(
                id=session_id,
                provider=Provider.CLAUDE_CODE,
                project_path=str(project),
                title="A long session",
            )
        )
    messages = MessageService(db)
    context = LineContext(job_id=None)
    batch: list[NewMessage] = []
    for _, line in make_lines(count, str(uuid.uuid4())):
        for event in events_for_line(json.loads(line), context):
            if event.message is not None:
                batch.append(event.message)
        if len(batch) >= 1000:
            messages.append_many(session_id, batch)
            batch = []
    if batch:
        messages.append_many(session_id, batch)
    return session_id


def _timed_gets(client: httpx.Client, urls: list[str]) -> list[float]:
    timings = []
    for url in urls:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:300]}")
        timings.append(elapsed)
    return timings


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(stack: Stack, cases: dict[str, list[str]]) -> dict[str, Any]:
    """Each case: 20 requests to warm up, then every URL in turn, one request at a time on a
    kept-alive connection. Besides the latencies, the server's CPU time per request, which
    other work on the machine does not inflate."""
    pid = stack.server.process.pid
    idle = cpu_seconds(pid)
    time.sleep(2.0)
    results: dict[str, Any] = {
        "server_idle_cpu_ms_per_s": round((cpu_seconds(pid) - idle) * 500, 2)
    }
    with stack.client() as client, frozen_heap():
        for name, urls in cases.items():
            _timed_gets(client, urls[:20])
            cpu = cpu_seconds(pid)
            timings = _timed_gets(client, urls)
            cpu = cpu_seconds(pid) - cpu
            results[name] = {
                **Summary.of(timings).as_ms(),
                "server_cpu_ms_per_request": round(cpu / len(urls) * 1000, 3),
            }
    return results


def run_page(backend: str, count: int, requests: int) -> dict[str, Any]:
    seeded: list[uuid.UUID] = []
    seconds: list[float] = []

    def seed(db: Database, root: Path) -> None:
        started = time.perf_counter()
        seeded.append(seed_messages(db, root, count))
        seconds.append(time.perf_counter() - started)

    with served(backend, seed=seed) as stack:
        session_id = seeded[0]
        with stack.db.read() as session:
            ids = [
                str(row)
                for row in session.scalars(
                    sa.select(MessageRow.id)
                    .where(MessageRow.session_id == session_id)
                    .order_by(MessageRow.seq)
                )
            ]
        rng = random.Random(7)  # noqa: S311 - reproducible data, not secrets
        base = f"/api/sessions/{session_id}/messages?limit=50"
        cases = {
            "first_page": [base] * requests,
            "after_cursor": [f"{base}&after={rng.choice(ids[:-60])}" for _ in range(requests)],
            "after_cursor_deep": [
                f"{base}&after={rng.choice(ids[-2000:-60])}" for _ in range(requests)
            ],
        }
        with stack.client() as client:
            page = client.get(cases["after_cursor"][0]).json()
        assert len(page["messages"]) > 0 and page["pagination"]["hasNextPage"]
        with profiled(stack, f"page-{backend}"):
            results = _measure(stack, cases)
    return {
        "messages_in_session": len(ids),
        "requests_per_case": requests,
        "seed_s": round(seconds[0], 2),
        "latency_ms": results,
    }


# -- 3. the session list ----------------------------------------------------------------------


_STATES = [LifecycleStatus.ACTIVE] * 6 + [LifecycleStatus.INACTIVE] * 3 + [LifecycleStatus.ARCHIVED]


def seed_sessions(db: Database, root: Path, count: int) -> None:
    """`count` sessions in one bulk insert: 60 % active, 30 % inactive, 10 % archived, spread
    over projects and the last 90 days."""
    rng = random.Random(11)  # noqa: S311 - reproducible data, not secrets
    now = datetime.now(UTC)
    projects = [root / f"project-{index}" for index in range(50)]
    rows = []
    for index in range(count):
        project = rng.choice(projects)
        accessed = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
        rows.append(
            {
                "id": uuid.uuid4(),
                "provider": Provider.CLAUDE_CODE,
                "project_path": str(project),
                "title": f"Session {index}: fix the date parser",
                "status": _STATES[index % len(_STATES)],
                "created_at": accessed - timedelta(hours=1),
                "updated_at": accessed,
                "last_accessed_at": accessed,
                "last_activity_at": accessed,
                "message_count": rng.randint(0, 400),
                "metadata_": {},
            }
        )
    with db.write_connection() as connection:
        for start in range(0, len(rows), 1000):
            connection.execute(sa.insert(SessionRow), rows[start : start + 1000])


def run_list(backend: str, count: int, requests: int) -> dict[str, Any]:
    seconds: list[float] = []

    def seed(db: Database, root: Path) -> None:
        started = time.perf_counter()
        seed_sessions(db, root, count)
        seconds.append(time.perf_counter() - started)

    with served(backend, seed=seed) as stack:
        rng = random.Random(5)  # noqa: S311 - reproducible data, not secrets
        deep = max(0, count // 2)
        cases = {
            "default_page": ["/api/sessions"] * requests,
            "offset": [f"/api/sessions?offset={rng.randint(0, deep)}" for _ in range(requests)],
            "state_active": ["/api/sessions?state=active"] * requests,
            "state_archived_offset": [
                f"/api/sessions?state=archived&offset={rng.randint(0, count // 20)}"
                for _ in range(requests)
            ],
        }
        with stack.client() as client:
            listed = client.get("/api/sessions").json()
        assert listed["total"] == count, listed["total"]
        with profiled(stack, f"list-{backend}"):
            results = _measure(stack, cases)
    return {
        "sessions_in_database": count,
        "requests_per_case": requests,
        "seed_s": round(seconds[0], 2),
        "latency_ms": results,
    }


# -- output -----------------------------------------------------------------------------------


def _print_events(backend: str, result: dict[str, Any]) -> None:
    lat, sock = result["latency_ms"], result["latency_at_socket_ms"]
    print(
        f"| {backend} | {result['clients']} | {result['sessions']} | {result['messages_stored']} "
        f"| {result['deliveries']} | {lat['p50']:.1f} | {lat['p99']:.1f} | {lat['max']:.1f} "
        f"| {result['lost']} / {result['duplicated']} / {result['out_of_order']} "
        f"| {result['messages_per_s']} | {result['server_cpu_s']} | {result['client_cpu_s']} "
        f"| {sock['p50']:.1f} / {sock['p99']:.1f} / {sock['max']:.1f} |"
    )


def _print_event_split(results: dict[str, dict[str, Any]]) -> None:
    print("\n| deliveries of | db | n | p50 ms | p99 ms | max ms |\n" + "|---" * 6 + "|")
    for name, key in (
        ("prompts", "latency_prompts_ms"),
        ("run messages", "latency_run_messages_ms"),
    ):
        for backend, result in results.items():
            lat = result[key]
            print(
                f"| {name} | {backend} | {lat['count']} | {lat['p50']:.1f} | {lat['p99']:.1f} "
                f"| {lat['max']:.1f} |"
            )


def _print_requests(backend: str, result: dict[str, Any]) -> None:
    for name, lat in result["latency_ms"].items():
        if not isinstance(lat, dict):
            continue
        print(
            f"| {backend} | {name} | {lat['count']} | {lat['p50']:.2f} | {lat['p99']:.2f} "
            f"| {lat['max']:.2f} | {lat['server_cpu_ms_per_request']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["events", "page", "list", "all"], nargs="?", default="all")
    parser.add_argument("--db", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=20, help="text blocks per streamed reply")
    parser.add_argument("--block-delay", type=float, default=0.5, help="seconds between blocks")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--session-rows", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the server while timed (into DIR)"
    )
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile
    if not (1 <= args.sessions <= 64 and args.clients >= 2 and args.blocks >= 1):
        parser.error("--sessions 1..64, --clients ≥ 2, --blocks ≥ 1")
    if args.messages < 200 or args.session_rows < 40 or args.requests < 1:
        parser.error("--messages ≥ 200, --session-rows ≥ 40, --requests ≥ 1")
    backends = list(BACKENDS) if args.db == "all" else [args.db]
    parts = ["events", "page", "list"] if args.what == "all" else [args.what]
    for part in parts:
        results: dict[str, dict[str, Any]] = {}
        for backend in backends:
            if part == "events":
                results[backend] = run_events(
                    backend, args.clients, args.sessions, args.blocks, args.block_delay
                )
            elif part == "page":
                results[backend] = run_page(backend, args.messages, args.requests)
            else:
                results[backend] = run_list(backend, args.session_rows, args.requests)
        if part == "events":
            print(
                "| db | clients | sessions | messages | deliveries | p50 ms | p99 ms | max ms "
                "| lost / dup / out of order | messages/s | server CPU s | client CPU s "
                "| at the socket: p50 / p99 / max ms |\n" + "|---" * 13 + "|"
            )
        else:
            print(
                f"\n{part}:\n| db | case | n | p50 ms | p99 ms | max ms | server CPU ms/request |\n"
                + "|---" * 7
                + "|"
            )
        for backend, result in results.items():
            (_print_events if part == "events" else _print_requests)(backend, result)
        if part == "events":
            _print_event_split(results)
        if args.no_write:
            continue
        for backend, result in results.items():
            path = write_result(
                f"api_{part}", backend, {"targets_ms": TARGETS_MS, "commit": _commit(), **result}
            )
            print(f"wrote {path}")


def _commit() -> str:
    """The commit of the pocketcode that was measured (the tree its package is imported from,
    which PYTHONPATH may point to), "+dirty" when its src/ has uncommitted changes."""
    tree = Path(pocketcode.__file__).resolve().parents[2]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head, status = (
            subprocess.run(
                ["git", *argv],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
                cwd=tree,
            ).stdout.strip()
            for argv in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "src"])
        )
        return (head or "unknown") + ("+dirty" if status else "")
    return "unknown"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
