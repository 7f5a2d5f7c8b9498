"""The transcript corpus generator and import benchmark (bench/) run at a tiny size, so they
cannot rot: the corpus is deterministic and has the edge cases it promises, and the benchmark
imports it, re-scans it, serves it and sees an appended line over SSE."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from transcript_corpus import generate  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def digest(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(root.rglob("*.jsonl")):
        sha.update(str(path.relative_to(root)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def test_the_corpus_is_deterministic_and_holds_the_edge_cases(tmp_path: Path) -> None:
    sizes = {"files": 30, "total": 6 << 20, "largest": 1 << 20}
    first = generate(tmp_path / "a", seed=7, **sizes)
    second = generate(tmp_path / "b", seed=7, **sizes)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    files = list((tmp_path / "a" / "projects").rglob("*.jsonl"))
    assert len(files) == first.files == 30
    assert first.bytes == sum(f.stat().st_size for f in files) == second.bytes
    assert max(f.stat().st_size for f in files) == first.largest
    assert 5 << 20 < first.bytes < 8 << 20 and first.largest < 2 << 20
    assert first.subagent_files and first.malformed_lines and first.non_utf8_lines
    kinds = set()
    for path in files:
        for raw in path.read_bytes().splitlines():
            try:
                kinds.add(json.loads(raw)["type"])
            except (ValueError, KeyError):
                continue
    assert {"user", "assistant", "system", "summary", "attachment", "cost-state"} <= kinds


def test_the_benchmark_runs_end_to_end_on_a_tiny_corpus(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "transcript_import.py"),
            "--corpus",
            str(tmp_path / "corpus"),
            "--files",
            "20",
            "--total",
            "3M",
            "--largest",
            "1M",
            "--requests",
            "20",
            "--appends",
            "2",
            "--no-write",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "[sqlite] first import:" in out and "'files_scanned': 20" in out
    assert "'files_unchanged': 20" in out  # the re-scan opened nothing
    assert "[sqlite] watch:" in out and "targets met" in out
