"""bench/api_load.py still runs: each measurement at a tiny size, the two backends between them.

Not a timed test: it checks that the benchmark works end to end (a served pocketcode, the CLI's
user and token commands, real runs streaming to SSE clients, seeding, the page and list
requests) and that its own loss check holds, so the benchmark cannot rot between recordings.
Each part starts its own server (and the events part two CLIs): ~10-20 s each on an idle machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "api_load.py"
TINY = {
    "events": ["--clients", "4", "--sessions", "2", "--blocks", "3", "--block-delay", "0.02"],
    "page": ["--messages", "200", "--requests", "5"],
    "list": ["--session-rows", "40", "--requests", "5"],
}


def run_bench(part: str, backend: str) -> list[list[str]]:
    """The rows of the tables the benchmark printed, as lists of cells."""
    done = subprocess.run(
        [sys.executable, str(BENCH), part, "--db", backend, "--no-write", *TINY[part]],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith(("| db |", "| deliveries of |"))
    ]


def test_the_events_benchmark_gets_every_message_to_every_client() -> None:
    rows = run_bench("events", "sqlite")
    [row] = [row for row in rows if row[0] == "sqlite"]
    clients, sessions, messages, deliveries = (int(cell) for cell in row[1:5])
    assert (clients, sessions) == (4, 2)
    # Per session: the prompt, 3 blocks and the result, at least. The 2 clients of every
    # session get all the messages; the 2 others, one per session, get their session's.
    assert messages >= 2 * 5
    assert deliveries == 3 * messages
    assert row[8] == "0 / 0 / 0"
    # The same deliveries, split: one prompt per session, the rest stored by the runs.
    split = {row[0]: int(row[2]) for row in rows if row[1] == "sqlite"}
    assert split == {"prompts": 3 * 2, "run messages": deliveries - 3 * 2}


@pytest.mark.parametrize(
    ("part", "backend", "cases"),
    [
        ("page", "postgresql", {"first_page", "after_cursor", "after_cursor_deep"}),
        ("list", "sqlite", {"default_page", "offset", "state_active", "state_archived_offset"}),
    ],
)
def test_the_page_and_list_benchmarks_time_every_case(
    part: str, backend: str, cases: set[str]
) -> None:
    rows = [row for row in run_bench(part, backend) if row[0] == backend]
    assert {row[1] for row in rows} == cases
    for row in rows:
        assert int(row[2]) == 5  # requests timed
        assert 0 < float(row[3]) <= float(row[4]) <= float(row[5])  # p50 ≤ p99 ≤ max
