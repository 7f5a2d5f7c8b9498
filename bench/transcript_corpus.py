"""A deterministic corpus of Claude Code transcripts for the import benchmark.

    .venv/bin/python bench/transcript_corpus.py /tmp/corpus [--files 2000] [--total 2G]
        [--largest 100M] [--seed 1]

writes `<out>/projects/<encoded cwd>/<session>.jsonl` files (and `<session>/subagents/agent-*.jsonl`
for some sessions) whose lines have the shapes Claude Code 2.1.330 writes: user prompts (some
meta or command wrappers), assistant text / thinking / tool_use lines (several per API message id,
with usage), user tool_result lines with `toolUseResult`, system (compact_boundary, api_error),
summary, attachment, queue-operation and cost-state lines, sidechain lines. Mixed in, as real
corpora have them: malformed JSON, lines with non-UTF-8 bytes, multi-MB tool results (some over
the indexer's 4 MiB line limit) and a partial last line still being written.

Sizes: one file of `--largest` bytes, the others log-normally distributed so that all files add
up to `--total`. The same arguments always give byte-identical files. Never commit a corpus.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

VERSION = "2.1.330"
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001")
TOOLS = ("Read", "Bash", "Edit", "Write", "Grep", "Glob")
_PROSE = (
    "the function returns a value when request handler database session token parse line "
    "file path index offset error test passes fails import module class method argument "
    "config server client stream event message queue worker retry timeout cache build "
    "deploy commit branch merge review refactor rename extract inline variable loop"
)
_WORDS = _PROSE.split()


def parse_size(text: str) -> int:
    """`2G`, `100M`, `512K` or a number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def file_sizes(rng: random.Random, files: int, total: int, largest: int) -> list[int]:
    """One file of `largest` bytes (if it fits), the rest log-normal, adding up to `total`."""
    if files < 1:
        raise ValueError("files must be at least 1")
    first = min(largest, total)
    weights = [rng.lognormvariate(0, 1.6) for _ in range(files - 1)]
    rest = total - first
    sizes = [0.0] * len(weights)
    free = list(range(len(weights)))
    # Scale to the remaining total, capping at `largest` and spreading the excess.
    for _ in range(8):
        budget = rest - sum(sizes[i] for i in range(len(sizes)) if i not in free)
        weight = sum(weights[i] for i in free) or 1.0
        capped = []
        for i in free:
            sizes[i] = budget * weights[i] / weight
            if sizes[i] > largest:
                sizes[i] = largest
                capped.append(i)
        if not capped:
            break
        free = [i for i in free if i not in capped]
    return [first, *(max(600, int(size)) for size in sizes)]


class Text:
    """Pseudo-random prose and code, sliced from one pool (fast, deterministic)."""

    def __init__(self, rng: random.Random, pool_chars: int = 4 << 20) -> None:
        words: list[str] = []
        length = 0
        while length < pool_chars:
            word = rng.choice(_WORDS)
            if rng.random() < 0.08:
                word += rng.choice((".\n", ",", "();\n    ", " = ", ":\n", " # é ü 中"))
            words.append(word)
            length += len(word) + 1
        self.pool = " ".join(words)
        self.rng = rng

    def take(self, chars: int) -> str:
        chars = max(1, min(chars, len(self.pool) - 1))
        start = self.rng.randrange(0, len(self.pool) - chars)
        return self.pool[start : start + chars]


@dataclass
class Session:
    session_id: str
    cwd: str
    rng: random.Random
    text: Text
    clock: datetime
    parent: str | None = None
    sidechain: bool = False
    agent_id: str | None = None
    cost: float = 0.0
    lines: int = 0
    last_uuid: str | None = None
    pending_tools: list[str] = field(default_factory=list)

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def stamp(self) -> str:
        self.clock += timedelta(milliseconds=self.rng.randrange(50, 30_000))
        return self.clock.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.clock.microsecond // 1000:03d}Z"

    def base(self, kind: str) -> dict[str, Any]:
        line_uuid = self.uid()
        line: dict[str, Any] = {
            "parentUuid": self.last_uuid,
            "isSidechain": self.sidechain,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.parent or self.session_id,
            "version": VERSION,
            "gitBranch": "main",
            "type": kind,
            "uuid": line_uuid,
            "timestamp": self.stamp(),
        }
        if self.agent_id:
            line["agentId"] = self.agent_id
        self.last_uuid = line_uuid
        return line


def _prompt(s: Session) -> list[dict[str, Any]]:
    lines = []
    roll = s.rng.random()
    if roll < 0.05:
        meta = s.base("user")
        meta.update(
            isMeta=True, message={"role": "user", "content": "<command-name>/clear</command-name>"}
        )
        lines.append(meta)
    line = s.base("user")
    line["message"] = {"role": "user", "content": s.text.take(s.rng.randrange(20, 1500))}
    lines.append(line)
    if s.rng.random() < 0.3:
        attachment = s.base("attachment")
        attachment["attachment"] = {"type": "todo", "content": s.text.take(300)}
        lines.append(attachment)
    return lines


def _assistant(s: Session, big: bool) -> list[dict[str, Any]]:
    """One API message: thinking, text and tool_use blocks, one line each, sharing its id."""
    message_id = f"msg_{s.rng.getrandbits(96):024x}"
    model = s.rng.choice(MODELS)
    usage = {
        "input_tokens": s.rng.randrange(1, 4000),
        "cache_creation_input_tokens": s.rng.randrange(0, 20_000),
        "cache_read_input_tokens": s.rng.randrange(0, 150_000),
        "output_tokens": s.rng.randrange(1, 3000),
        "service_tier": "standard",
    }
    blocks: list[dict[str, Any]] = []
    if s.rng.random() < 0.4:
        blocks.append(
            {
                "type": "thinking",
                "thinking": s.text.take(s.rng.randrange(200, 6000)),
                "signature": s.text.take(300),
            }
        )
    if s.rng.random() < 0.7:
        blocks.append({"type": "text", "text": s.text.take(s.rng.randrange(20, 3000))})
    tools = s.rng.choice((0, 1, 1, 1, 2, 3))
    for _ in range(tools):
        tool_id = f"toolu_{s.rng.getrandbits(96):024x}"
        name = s.rng.choice(TOOLS)
        tool_input: dict[str, Any] = {"file_path": f"{s.cwd}/src/{s.text.take(12).strip()}.py"}
        if name == "Bash":
            tool_input = {"command": s.text.take(80), "description": s.text.take(30)}
        elif name in ("Write", "Edit"):
            key = "content" if name == "Write" else "new_string"
            tool_input[key] = s.text.take(s.rng.randrange(100, 40_000 if big else 8000))
        blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
        s.pending_tools.append(tool_id)
    if not blocks:
        blocks.append({"type": "text", "text": "Done."})
    lines = []
    for block in blocks:
        line = s.base("assistant")
        line["requestId"] = f"req_{s.rng.getrandbits(64):016x}"
        line["message"] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": "tool_use" if block["type"] == "tool_use" else None,
            "stop_sequence": None,
            "usage": usage,
        }
        lines.append(line)
    s.cost += usage["output_tokens"] * 15e-6 + usage["input_tokens"] * 3e-6
    return lines


def _tool_results(s: Session, huge: int) -> list[dict[str, Any]]:
    lines = []
    while s.pending_tools:
        tool_id = s.pending_tools.pop(0)
        size = huge or int(min(200_000, s.rng.lognormvariate(7.5, 1.3)))
        content = (
            s.text.take(size)
            if size <= len(s.text.pool) - 1
            else s.text.pool * (size // len(s.text.pool) + 1)
        )
        content = content[:size]
        huge = 0
        line = s.base("user")
        line["message"] = {
            "role": "user",
            "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": content}],
        }
        # The CLI keeps the tool's own result beside the API one: the bytes twice.
        line["toolUseResult"] = {"stdout": content[: size // 2], "stderr": "", "interrupted": False}
        lines.append(line)
    return lines


def _extras(s: Session) -> list[dict[str, Any]]:
    roll = s.rng.random()
    if roll < 0.03:
        line = s.base("system")
        line.update(subtype="compact_boundary", content="Conversation compacted", level="info")
        line["compactMetadata"] = {"trigger": "auto", "preTokens": s.rng.randrange(1, 200_000)}
        summary = s.base("user")
        summary.update(isCompactSummary=True)
        summary["message"] = {"role": "user", "content": s.text.take(4000)}
        return [line, summary]
    if roll < 0.05:
        line = s.base("system")
        line.update(subtype="api_error", level="error", content="API Error: 529 Overloaded")
        return [line]
    if roll < 0.15:
        return [
            {
                "type": "queue-operation",
                "operation": "enqueue",
                "timestamp": s.stamp(),
                "sessionId": s.session_id,
                "content": s.text.take(100),
            }
        ]
    if roll < 0.25:
        return [{"type": "cost-state", "sessionId": s.session_id, "totalCostUSD": round(s.cost, 6)}]
    return []


@dataclass
class CorpusInfo:
    root: Path
    files: int
    bytes: int
    largest: int
    lines: int
    sessions: int
    subagent_files: int
    malformed_lines: int
    non_utf8_lines: int
    oversized_lines: int
    partial_last_lines: int


def _write_file(
    path: Path,
    session: Session,
    size: int,
    info: CorpusInfo,
    *,
    first: bool,
    force_edges: bool = False,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    rng = session.rng
    # A few multi-MB tool results per big file; those over 4 MiB are skipped by the indexer.
    huge_every = 40 if size > 20 << 20 else 0
    with path.open("wb", buffering=1 << 20) as handle:

        def put(data: bytes) -> None:
            nonlocal written
            handle.write(data)
            written += len(data)
            info.lines += 1

        if first and rng.random() < 0.3 and not session.sidechain:
            put(
                orjson.dumps(
                    {"type": "summary", "summary": session.text.take(60), "leafUuid": session.uid()}
                )
                + b"\n"
            )
        turn = 0
        while written < size:
            turn += 1
            huge = 0
            if huge_every and turn % huge_every == 0:
                huge = rng.choice((2 << 20, 3 << 20, 5 << 20, 7 << 20))
                if written + 2 * huge > size:
                    huge = 0  # the file would overshoot its size
                elif huge > 4 << 20:
                    info.oversized_lines += 1
            lines = _prompt(session) + _assistant(session, big=size > 1 << 20)
            lines += _tool_results(session, huge)
            if rng.random() < 0.5:
                lines += _assistant(session, big=False) + _tool_results(session, 0)
            lines += _extras(session)
            for line in lines:
                data = orjson.dumps(line) + b"\n"
                roll = rng.random()
                if force_edges and info.lines in (3, 6):
                    # One of each for certain, however small the corpus.
                    roll = 0.0 if info.lines == 3 else 0.0005
                if roll < 0.0004:
                    data = data[: len(data) // 2] + b"\n"  # malformed (cut short)
                    info.malformed_lines += 1
                elif roll < 0.0006:
                    data = data.replace(b'"timestamp"', b'"timestamp\xff\xfe"', 1)
                    info.non_utf8_lines += 1
                put(data)
        if rng.random() < 0.05:
            put(b'{"type":"assistant","uuid":"' + session.uid().encode() + b'","message":{"con')
            info.partial_last_lines += 1
    info.files += 1
    info.bytes += written
    info.largest = max(info.largest, written)


def generate(
    out: Path, *, files: int = 2000, total: int = 2 << 30, largest: int = 100 << 20, seed: int = 1
) -> CorpusInfo:
    """Write the corpus under `out/projects/`; returns what it holds."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    text = Text(random.Random(seed + 1))  # noqa: S311
    sizes = file_sizes(rng, files, total, largest)
    projects = [
        f"/home/dev/work/project_{i:02d}.{rng.choice(('app', 'lib', 'v2'))}" for i in range(40)
    ]
    info = CorpusInfo(out, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    clock = datetime(2026, 9, 1, tzinfo=UTC)
    index = 0
    parents: list[Session] = []
    while index < len(sizes):
        cwd = rng.choice(projects)
        folder = out / "projects" / "".join(c if c.isascii() and c.isalnum() else "-" for c in cwd)
        session_rng = random.Random(rng.getrandbits(64))  # noqa: S311
        session = Session(
            str(uuid.UUID(int=rng.getrandbits(128), version=4)), cwd, session_rng, text, clock
        )
        clock += timedelta(minutes=rng.randrange(1, 600))
        # About one session in ten has a sub-agent file (counted in `files`).
        if parents and rng.random() < 0.1:
            parent = rng.choice(parents)
            agent = f"{rng.getrandbits(32):08x}"
            sub = Session(
                parent.session_id,
                parent.cwd,
                session_rng,
                text,
                clock,
                parent=parent.session_id,
                sidechain=True,
                agent_id=agent,
            )
            path = (
                out
                / "projects"
                / "".join(c if c.isascii() and c.isalnum() else "-" for c in parent.cwd)
                / parent.session_id
                / "subagents"
                / f"agent-{agent}.jsonl"
            )
            _write_file(path, sub, sizes[index], info, first=False)
            info.subagent_files += 1
        else:
            _write_file(
                folder / f"{session.session_id}.jsonl",
                session,
                sizes[index],
                info,
                first=True,
                force_edges=index == 0,
            )
            parents.append(session)
            info.sessions += 1
        index += 1
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (its projects/ is the corpus)")
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--total", default="2G", help="total bytes (e.g. 2G, 50M)")
    parser.add_argument("--largest", default="100M", help="size of the largest file")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if (args.out / "projects").exists():
        print(f"{args.out}/projects exists already; remove it first", file=sys.stderr)
        return 2
    info = generate(
        args.out,
        files=args.files,
        total=parse_size(args.total),
        largest=parse_size(args.largest),
        seed=args.seed,
    )
    print(
        json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in vars(info).items()}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
