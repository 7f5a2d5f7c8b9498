"""Importing a big corpus of Claude Code transcripts, then serving it (issue 6's targets).

    .venv/bin/python bench/transcript_import.py [--db sqlite|postgresql|all]
        [--corpus DIR] [--files 2000] [--total 2G] [--largest 100M] [--seed 1]
        [--requests 500] [--appends 20] [--no-write]

The corpus (`bench/transcript_corpus.py`) is generated once into `--corpus` (default
`/tmp/pocketcode-transcripts-<files>-<total>-<largest>-<seed>`) and reused while it exists. Per
backend, on a throwaway database:

1. **first import**: `TranscriptIndexer.scan()` of the whole corpus in a child process
   (`--child scan`), which reports its own wall time and peak RSS (`getrusage`); the wall time
   of the whole child (interpreter start and imports included) is reported beside it;
2. **re-scan** of the unchanged corpus, the same way (a fresh process, as `pocketcode import`
   run again);
3. **list**: `pocketcode serve` (a child, `CLAUDE_CONFIG_DIR` = the corpus, its live watcher on)
   answers `GET /api/sessions` (the default page) `--requests` times, one at a time, over
   loopback with an API token;
4. **watch**: an SSE client on `GET /api/events`; a turn (a prompt line and an assistant line
   with usage) is appended to a transcript of the corpus (`--appends` times, files of every
   size up to the largest, and once a new file): time from the write to the client receiving
   the assistant's `message` frame.

Targets: first import < 20 s with peak RSS < 300 MB, re-scan < 1 s, list p99 < 20 ms, watch
latency < 1 s. Results go to `bench/results/transcripts_import-<backend>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tests.e2e.server_process import ServerProcess

# What the parent needs is imported where it is used: the measured child (`--child scan`)
# imports only what `pocketcode import` does, so its start-up is not inflated.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.e2e
BACKENDS = ("sqlite", "postgresql")

TARGETS = {"import_s": 20.0, "import_rss_mb": 300.0, "rescan_s": 1.0, "list_p99_ms": 20.0}
WATCH_TARGET_S = 1.0


# -- the measured child --------------------------------------------------------------------------


class _TreeMemory:
    """Samples the summed RSS of this process and its children on a thread of its own."""

    def __init__(self, interval: float = 0.02) -> None:
        import threading

        import psutil

        self.peak = 0
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for process in (self._me, *self._me.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def child_scan(url: str, config_dir: Path) -> None:
    """Run one full scan and print its timings as JSON (the parent reads the last line)."""
    started = time.perf_counter()
    from pocketcode.db.engine import Database, create_db_engine
    from pocketcode.services.transcript_index import TranscriptIndexer, default_workers

    db = Database(create_db_engine(url, pool_size=5))
    imported = time.perf_counter()
    workers = default_workers()
    sampler = _TreeMemory()
    # As `pocketcode import` does it.
    summary = TranscriptIndexer(db, config_dir).scan(pause_gc=True, workers=workers)
    done = time.perf_counter()
    sampler.stop()
    db.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, ended
    result = {
        "scan_s": round(done - imported, 3),
        # CPU seconds of the whole import (every thread of this process and of its workers):
        # unlike the wall time, other work on the machine does not inflate them much.
        "cpu_s": round(usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime, 2),
        "workers": workers,
        "setup_s": round(imported - started, 3),
        # The most memory the import held at once: this process and its workers, summed,
        # sampled every 20 ms. Beside it, what cannot be missed between samples: each
        # process's own peak (the workers': the largest one's).
        "peak_rss_mb": round(sampler.peak / 2**20, 1),
        "peak_rss_self_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_rss_largest_worker_mb": round(children.ru_maxrss / 1024, 1),
        "summary": {
            name: value
            for name, value in vars(summary).items()
            if isinstance(value, int) and not isinstance(value, bool)
        },
    }
    print(json.dumps(result))


def run_scan(url: str, config_dir: Path, profile: Path | None = None) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", "scan", "--url", url, "--corpus", str(config_dir)]
    if profile is not None:
        argv = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-o",
            str(profile),
            "-f",
            "speedscope",
            "-r",
            "50",
            "--",
            *argv,
        ]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"scan failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(elapsed, 3)
    return result


# -- the served corpus ---------------------------------------------------------------------------


def _turn_lines(session_id: str, cwd: str, text: str) -> bytes:
    """A prompt and the assistant's answer (with usage, so the session's totals change)."""
    common = {"sessionId": session_id, "cwd": cwd, "timestamp": "2026-11-22T00:00:00.000Z"}
    prompt = {
        "type": "user",
        "uuid": str(uuid.uuid4()),
        "message": {"role": "user", "content": "What changed since the last turn?"},
        **common,
    }
    answer = {
        "type": "assistant",
        "uuid": str(uuid.uuid4()),
        "message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 12, "output_tokens": 34},
        },
        **common,
    }
    return orjson.dumps(prompt) + b"\n" + orjson.dumps(answer) + b"\n"


def _ends_with_newline(path: Path) -> bool:
    """Not a file whose last line is still partial (appending to it would join the lines)."""
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


async def _watch_latencies(
    server: ServerProcess, token: str, corpus: Path, appends: int
) -> dict[str, Any]:
    import httpx
    from _common import Summary

    files = sorted(
        (p for p in (corpus / "projects").glob("*/*.jsonl") if _ends_with_newline(p)),
        key=lambda p: p.stat().st_size,
    )
    # Files of every size: small to the biggest.
    step = max(1, len(files) // max(1, appends))
    targets = [*files[::step][: max(0, appends - 1)], files[-1]]
    headers = {"authorization": f"Bearer {token}"}
    latencies: list[float] = []
    new_file: float | None = None
    async with (
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client,
        client.stream("GET", "/api/events") as response,
    ):
        assert response.status_code == 200, response.status_code
        lines = response.aiter_lines()

        async def wait_for(text: str) -> float:
            async for line in lines:
                if line.startswith("data:") and text in line:
                    return time.perf_counter()
            raise RuntimeError("the event stream ended")

        async def one(path: Path, text: str, session_id: str) -> float:
            data = _turn_lines(session_id, "/home/dev/bench", text)
            waiter = asyncio.ensure_future(wait_for(text))
            await asyncio.sleep(0)
            written = time.perf_counter()
            with path.open("ab") as handle:
                handle.write(data)
            arrived = await asyncio.wait_for(waiter, 30)
            return arrived - written

        # The first one also waits for the server's catch-up scan to finish.
        await one(targets[0], f"warm-up {uuid.uuid4()}", targets[0].stem)
        for path in targets:
            latencies.append(await one(path, f"bench append {uuid.uuid4()}", path.stem))
            await asyncio.sleep(0.2)
        fresh_id = str(uuid.uuid4())
        fresh = corpus / "projects" / "-home-dev-bench-new" / f"{fresh_id}.jsonl"
        fresh.parent.mkdir(exist_ok=True)
        new_file = await one(fresh, f"a new session {uuid.uuid4()}", fresh_id)
        fresh.unlink()
    return {
        "append": Summary.of(latencies).as_ms(),
        "new_file_ms": round(new_file * 1000, 3),
        "files_sizes_mb": [round(p.stat().st_size / 2**20, 1) for p in targets],
    }


def serve_and_measure(url: str, corpus: Path, requests: int, appends: int) -> dict[str, Any]:
    import httpx
    from _common import Summary, create_owner_token
    from tests.e2e.server_process import ServerProcess, server_env

    with tempfile.TemporaryDirectory(prefix="pocketcode-transcripts-bench-") as tmp:
        root = Path(tmp)
        env = server_env(root, url, "http://127.0.0.1:9")
        env.update({"POCKETCODE_LOG_LEVEL": "warning", "CLAUDE_CONFIG_DIR": str(corpus)})
        token = create_owner_token(env)
        server = ServerProcess.start(env, root / "server.log", timeout=120)
        try:
            timings: list[float] = []
            with httpx.Client(
                base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                first = client.get("/api/sessions")
                assert first.status_code == 200, first.text[:300]
                total = first.json().get("total")
                for _ in range(20):  # warm-up
                    client.get("/api/sessions")
                for _ in range(requests):
                    started = time.perf_counter()
                    response = client.get("/api/sessions")
                    timings.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        raise RuntimeError(f"list: {response.status_code}")
            watch = asyncio.run(_watch_latencies(server, token, corpus, appends))
        finally:
            server.stop()
        return {"list": {**Summary.of(timings).as_ms(), "sessions_total": total}, "watch": watch}


# -- the benchmark -------------------------------------------------------------------------------


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    return "unknown"


def corpus_for(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    # A big throwaway corpus, named after its parameters so that it is reused.
    name = f"pocketcode-transcripts-{args.files}-{args.total}-{args.largest}-{args.seed}"
    corpus = args.corpus or Path(tempfile.gettempdir()) / name
    marker = corpus / "corpus.json"
    if not marker.exists():
        from transcript_corpus import generate, parse_size

        if (corpus / "projects").exists():
            raise SystemExit(f"{corpus}/projects exists without corpus.json: remove it")
        started = time.perf_counter()
        info = generate(
            corpus,
            files=args.files,
            total=parse_size(args.total),
            largest=parse_size(args.largest),
            seed=args.seed,
        )
        details = {k: v for k, v in vars(info).items() if not isinstance(v, Path)}
        details["generated_in_s"] = round(time.perf_counter() - started, 1)
        marker.write_text(json.dumps(details, indent=2))
        print(f"generated {corpus} in {details['generated_in_s']} s")
    return corpus, json.loads(marker.read_text())


def run_backend(
    backend: str, corpus: Path, args: argparse.Namespace, profile_dir: Path | None
) -> dict[str, Any]:
    from _common import migrated_database

    with migrated_database(backend) as db:
        url = db.engine.url.render_as_string(hide_password=False)
        first = run_scan(
            url, corpus, profile_dir / f"import-{backend}.json" if profile_dir else None
        )
        print(f"[{backend}] first import: {first}")
        rescan = run_scan(url, corpus)
        print(f"[{backend}] re-scan: {rescan}")
        served = serve_and_measure(url, corpus, args.requests, args.appends)
        print(f"[{backend}] list: {served['list']}")
        print(f"[{backend}] watch: {served['watch']}")
    return {"first_import": first, "rescan": rescan, **served}


def verdict(result: dict[str, Any]) -> dict[str, bool]:
    return {
        "import_under_20s": result["first_import"]["scan_s"] < TARGETS["import_s"],
        "import_rss_under_300mb": result["first_import"]["peak_rss_mb"] < TARGETS["import_rss_mb"],
        "rescan_under_1s": result["rescan"]["scan_s"] < TARGETS["rescan_s"],
        "list_p99_under_20ms": result["list"]["p99"] < TARGETS["list_p99_ms"],
        "watch_max_under_1s": result["watch"]["append"]["max"] < WATCH_TARGET_S * 1000
        and result["watch"]["new_file_ms"] < WATCH_TARGET_S * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=[*BACKENDS, "all"], default="sqlite")
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--total", default="2G")
    parser.add_argument("--largest", default="100M")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--appends", type=int, default=20)
    parser.add_argument("--profile", type=Path, help="py-spy the first import into this folder")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", choices=["scan"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "scan":
        child_scan(args.url, args.corpus)
        return 0
    corpus, info = corpus_for(args)
    backends = BACKENDS if args.db == "all" else (args.db,)
    for backend in backends:
        result = run_backend(backend, corpus, args, args.profile)
        met = verdict(result)
        print(f"[{backend}] targets met: {met}")
        if not args.no_write:
            from _common import write_result

            path = write_result(
                "transcripts_import",
                backend,
                {"commit": _commit(), "corpus": info, "targets": TARGETS, "met": met, **result},
            )
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
