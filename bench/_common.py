"""What the benchmarks share: throwaway databases, percentiles, machine facts, result files.

Not a test helper: nothing here is imported by the product or by tests/.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from pocketcode.db import migrate
from pocketcode.db.engine import Database, create_db_engine

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
# The same server the test suite uses (tests/databases.py); POCKETCODE_BENCH_DATABASE_URL
# points elsewhere. Only loopback is expected.
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
_LOAD_AT_START = os.getloadavg()[0]  # taken when a benchmark starts (it imports this module)


def _cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs since boot (/proc/stat), or (0, 0)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [
            int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ]
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        return fields[7], sum(fields[:8])
    return 0, 0


_CPU_AT_START = _cpu_times()


def cpu_steal_percent() -> float | None:
    """The share of the machine's CPU time the hypervisor gave to other guests since the
    benchmark started: a VM whose host is busy runs everything slower, whatever the code."""
    steal, total = _cpu_times()
    elapsed = total - _CPU_AT_START[1]
    return round(100 * (steal - _CPU_AT_START[0]) / elapsed, 1) if elapsed > 0 else None


def calibration_seconds() -> float:
    """Best of three timings of a fixed pure-Python loop (5 million additions): how fast this
    machine runs Python right now, to compare result files taken on different VMs."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(5_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def migrated_database(backend: str, *, pool_size: int = 20) -> Iterator[Database]:
    """A freshly migrated database, dropped (or deleted) afterwards: a WAL SQLite file in a
    temp dir, or a throwaway PostgreSQL database. The server's default pool size (20)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pocketcode-bench-") as tmp:
            db = Database(create_db_engine(f"sqlite:///{tmp}/pocketcode.db", pool_size=pool_size))
            try:
                migrate.upgrade(db)
                yield db
            finally:
                db.dispose()
        return
    admin = os.environ.get("POCKETCODE_BENCH_DATABASE_URL", DEFAULT_PG_ADMIN_URL)
    name = f"pocketcode_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    db = Database(create_db_engine(url, pool_size=pool_size))
    try:
        migrate.upgrade(db)
        yield db
    finally:
        db.dispose()
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 5,000 samples is the 4,950th)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return ordered[int(rank) - 1]


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            max=max(values) if values else float("nan"),
            mean=statistics.fmean(values) if values else float("nan"),
        )

    def as_ms(self) -> dict[str, float | int]:
        """Seconds → milliseconds, rounded for the result files."""
        return {
            "count": self.count,
            **{
                name: round(getattr(self, name) * 1000, 3)
                for name in ("p50", "p90", "p95", "p99", "max", "mean")
            },
        }


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def postgres_version() -> str:
    admin = os.environ.get("POCKETCODE_BENCH_DATABASE_URL", DEFAULT_PG_ADMIN_URL)
    try:
        with psycopg.connect(_libpq(admin), connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return "unavailable"
    return str(row[0]) if row else "unknown"


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib: float | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(),
        # Other work on the machine skews the numbers: recorded, not controlled.
        "loadavg_1m_at_start": round(_LOAD_AT_START, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "cpu_steal_percent": cpu_steal_percent(),
        "calibration_s": calibration_seconds(),
    }


def command_line() -> str:
    return " ".join([".venv/bin/python", *(sys.argv if sys.argv else [])])


def write_result(benchmark: str, backend: str, payload: dict[str, Any]) -> Path:
    """bench/results/<benchmark>-<backend>.json: the latest run of that benchmark (older runs
    stay in git history)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}-{backend}.json"
    document = {
        "benchmark": benchmark,
        "backend": backend,
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line(),
        "machine": machine_info(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# -- the pocketcode CLI, for the benchmarks that serve ------------------------------------------

POCKETCODE = [sys.executable, "-m", "pocketcode"]
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway account


def create_owner_token(env: dict[str, str]) -> str:
    """The owner account and an API token for it, made with the CLI as a user would."""
    from tests.e2e.server_process import pocketcode_cli

    pocketcode_cli(env, "user", "create", "--username", BENCH_USER, stdin=BENCH_PASSWORD + "\n")
    return pocketcode_cli(env, "token", "create", BENCH_USER).strip().splitlines()[-1]
