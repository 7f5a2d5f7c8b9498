"""Git status, the diff of one path and a file at a ref, for a session's project.

Git runs with an argv list, `cwd=` the project, a timeout, a cap on its output, no prompt,
literal pathspecs after `--`, and neither external diff drivers, textconv filters nor an
fsmonitor hook (each would run a program the repository's config names). Paths are relative
to the repository root, as git status gives them, and must lie inside the project.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pocketcode.domain.errors import (
    GitDiffError,
    GitError,
    GitFileError,
    GitStatusError,
    PocketcodeError,
)
from pocketcode.domain.text import is_utf8
from pocketcode.services.paths import is_inside, normalise_relative_path, shown_path
from pocketcode.services.projects import (
    MAX_TEXT_FILE_BYTES,
    is_binary,
    read_file_bytes,
)

GIT_TIMEOUT = 15.0
MAX_GIT_OUTPUT = 16 * 1024 * 1024
MAX_CONTEXT_LINES = 1000
MAX_REF_LENGTH = 255
# Names, hashes and `HEAD~2`-style revisions; nothing that starts with `-` or `.`, no `..`
# ranges, no `:` (that would name a path), no whitespace or control characters.
REF_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@^~{}+-]*")
SPECIAL_REFS = ("WORKING", "INDEX", "HEAD")

Scope = Literal["staged", "unstaged", "all"]
DiffScope = Literal["staged", "unstaged"]
Change = Literal[
    "added", "deleted", "modified", "renamed", "copied", "typechange", "conflicted", "untracked"
]


# -- running git ------------------------------------------------------------------------------


def git_environment() -> dict[str, str]:
    """The server's environment without any `GIT_*` variable that could point git at another
    repository, plus what keeps git quiet, literal and lock-free."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_LITERAL_PATHSPECS="1",
        GIT_OPTIONAL_LOCKS="0",  # status must not take the index lock a running agent needs
        GIT_PAGER="cat",
        LC_ALL="C",
    )
    return env


@dataclass(frozen=True)
class GitOutput:
    returncode: int
    stdout: bytes
    stderr: str


class GitFailed(Exception):
    """Git could not run, timed out or said too much; the caller names the operation."""


def run_git(
    cwd: Path,
    args: list[str],
    *,
    timeout: float = GIT_TIMEOUT,
    max_output: int = MAX_GIT_OUTPUT,
) -> GitOutput:
    argv = ["git", "-c", "core.quotepath=off", "-c", "core.fsmonitor=false", *args]
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as stderr:  # a file never fills up and blocks git
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=git_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        except OSError as exc:
            raise GitFailed(f"cannot run git: {exc.strerror}") from None

        def kill() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert process.stdout is not None
            stdout = process.stdout.read(max_output + 1)
            if len(stdout) > max_output:
                process.kill()
            returncode = process.wait()
        finally:
            timer.cancel()
            if process.stdout is not None:
                process.stdout.close()
        stderr.seek(0)
        message = stderr.read(4096).decode("utf-8", "replace").strip()
    if timed_out.is_set():
        raise GitFailed(f"git took longer than {timeout:g} seconds")
    if len(stdout) > max_output:
        raise GitFailed(f"git's output is larger than {max_output} bytes")
    return GitOutput(returncode, stdout, message)


@dataclass(frozen=True)
class Repository:
    """A project inside a git work tree: its real root and the project's place in it."""

    project: Path
    root: Path
    prefix: str  # the project relative to the root, `""` or ending in `/`


def open_repository(project: Path, error: type[GitError]) -> Repository:
    try:
        result = run_git(project, ["rev-parse", "--show-toplevel", "--show-prefix"])
    except GitFailed as exc:
        raise error(str(exc), 503) from None
    if result.returncode != 0:
        raise error("the project is not inside a git repository", 404)
    lines = result.stdout.decode("utf-8", "surrogateescape").split("\n")
    if len(lines) < 2:
        raise error("git did not name the repository root", 500)
    root = Path(os.path.realpath(lines[0]))
    if not is_utf8(str(root)):  # `core.worktree` may name any folder
        raise error(f"the repository's work tree '{shown_path(root)}' is not valid UTF-8")
    return Repository(Path(os.path.realpath(project)), root, lines[1])


def repository_path(repo: Repository, raw: str, error: type[GitError]) -> str:
    """A path relative to the repository root, checked to lie inside the project (symlinks
    resolved); the file itself may be gone (a deleted file still has a diff)."""
    try:
        clean = normalise_relative_path(raw)
    except PocketcodeError as exc:
        raise error(exc.message) from None
    if not clean.startswith(repo.prefix):
        raise error(f"path {raw!r} is outside the project")
    if not is_inside(Path(os.path.realpath(repo.root / clean)), repo.project):
        raise error(f"path {raw!r} leads outside the project")
    return clean


def project_relative(repo: Repository, path: str) -> str:
    """A repository path as a pathspec for git running in the project."""
    return path[len(repo.prefix) :]


# -- status -----------------------------------------------------------------------------------


@dataclass
class StatusEntry:
    path: str
    index: str
    worktree: str
    change: Change
    orig_path: str | None = None
    similarity: int | None = None
    is_submodule: bool = False
    additions: int | None = None
    deletions: int | None = None

    @property
    def staged(self) -> bool:
        return self.index not in ".?!"

    @property
    def untracked(self) -> bool:
        return self.index == "?"


@dataclass
class Status:
    repo_root: Path
    branch: str | None = None
    ahead: int | None = None
    behind: int | None = None
    entries: list[StatusEntry] = field(default_factory=list)


_CHANGES: dict[str, Change] = {
    "A": "added",
    "D": "deleted",
    "M": "modified",
    "R": "renamed",
    "C": "copied",
    "T": "typechange",
    "U": "conflicted",
    "?": "untracked",
}


def change_of(index: str, worktree: str, scope: Scope) -> Change:
    """One word for an entry's XY codes, from the side of it the scope looks at."""
    if index == "?":
        return "untracked"
    if "U" in (index, worktree) or (index, worktree) in {("A", "A"), ("D", "D")}:
        return "conflicted"
    if scope == "staged":
        code = index
    elif scope == "unstaged":
        code = worktree if worktree != "." else index
    else:
        code = index if index != "." else worktree
    return _CHANGES.get(code, "modified")


def parse_porcelain_v2(output: bytes, scope: Scope = "all") -> Status:
    """`git status --porcelain=v2 --branch -z` as a Status (entries unfiltered, their paths
    not UTF-8 kept as lone surrogates)."""
    records = output.decode("utf-8", "surrogateescape").split("\0")
    status = Status(repo_root=Path())
    index = 0
    while index < len(records):
        record = records[index]
        index += 1
        if not record:
            continue
        if record.startswith("# "):
            key, _, value = record[2:].partition(" ")
            if key == "branch.head" and value != "(detached)":
                # Only shown, never sent back (a ref a client sends is ASCII): its bytes that
                # are not UTF-8 become U+FFFD, as in git's messages and diffs.
                status.branch = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            elif key == "branch.ab":
                ahead, _, behind = value.partition(" ")
                status.ahead, status.behind = abs(int(ahead)), abs(int(behind))
            continue
        kind = record[0]
        if kind in "?!":
            code = record[0]
            status.entries.append(StatusEntry(record[2:], code, code, change_of(code, code, scope)))
            continue
        if kind == "1":
            _, xy, sub, _mh, _mi, _mw, _hh, _hi, path = record.split(" ", 8)
            entry = StatusEntry(path, xy[0], xy[1], change_of(xy[0], xy[1], scope))
        elif kind == "2":
            _, xy, sub, _mh, _mi, _mw, _hh, _hi, score, path = record.split(" ", 9)
            entry = StatusEntry(path, xy[0], xy[1], change_of(xy[0], xy[1], scope))
            entry.orig_path = records[index]
            index += 1
            if score[1:].isdigit():
                entry.similarity = min(100, int(score[1:]))
        elif kind == "u":
            _, xy, sub, *_stages, path = record.split(" ", 10)
            entry = StatusEntry(path, xy[0], xy[1], "conflicted")
        else:
            continue  # a record kind newer than this parser
        entry.is_submodule = sub.startswith("S")
        status.entries.append(entry)
    return status


def parse_numstat(output: bytes) -> dict[str, tuple[int, int] | None]:
    """`git diff --numstat -z`: path → (additions, deletions), None for a binary file."""
    records = output.decode("utf-8", "surrogateescape").split("\0")
    stats: dict[str, tuple[int, int] | None] = {}
    index = 0
    while index < len(records):
        record = records[index]
        index += 1
        if not record:
            continue
        added, deleted, path = record.split("\t", 2)
        if not path:  # a rename: the old and new paths follow as records of their own
            path = records[index + 1]
            index += 2
        counts = None if added == "-" else (int(added), int(deleted))
        stats[path] = counts
    return stats


def _in_scope(entry: StatusEntry, scope: Scope, include_untracked: bool) -> bool:
    if entry.untracked:
        return include_untracked and scope != "staged"
    if entry.index == "!":
        return False
    if scope == "staged":
        return entry.staged or entry.change == "conflicted"
    if scope == "unstaged":
        return entry.worktree != "." or entry.change == "conflicted"
    return True


def _count_lines(path: Path) -> tuple[int, int] | None:
    """Additions of an untracked text file (every line is new), None when binary or big."""
    try:
        data = read_file_bytes(path, max_bytes=MAX_TEXT_FILE_BYTES).data
    except PocketcodeError:
        return None
    if is_binary(data):
        return None
    return (data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1), 0)


def git_status(
    project: Path, *, scope: Scope = "unstaged", include_untracked: bool = True
) -> Status:
    repo = open_repository(project, GitStatusError)
    untracked = "all" if include_untracked else "no"
    try:
        result = run_git(
            repo.project,
            ["status", "--porcelain=v2", "--branch", "-z", f"-u{untracked}", "--", "."],
        )
        if result.returncode != 0:
            raise GitStatusError(f"git status failed: {result.stderr}")
        numstats: dict[str, tuple[int, int] | None] = {}
        diff = ["diff", "--numstat", "-z", "--no-ext-diff", "--no-textconv", "--no-color"]
        for staged in (True, False):
            if (staged and scope == "unstaged") or (not staged and scope == "staged"):
                continue
            numstat = run_git(repo.project, [*diff, *(["--cached"] if staged else []), "--", "."])
            for path, counts in parse_numstat(numstat.stdout).items():
                if path not in numstats:
                    numstats[path] = counts
                elif (before := numstats[path]) is not None and counts is not None:
                    numstats[path] = (before[0] + counts[0], before[1] + counts[1])
                else:
                    numstats[path] = None  # binary on either side
    except GitFailed as exc:
        raise GitStatusError(str(exc), 503) from None
    status = parse_porcelain_v2(result.stdout, scope)
    status.repo_root = repo.root
    # A path that is not UTF-8 could not be shown, nor sent back to /git/diff or /git/file:
    # its entry is left out, and a rename from such a path keeps only its new path.
    status.entries = [
        e for e in status.entries if _in_scope(e, scope, include_untracked) and is_utf8(e.path)
    ]
    for entry in status.entries:
        if entry.orig_path is not None and not is_utf8(entry.orig_path):
            entry.orig_path = None
        counts = (
            _count_lines(repo.root / entry.path) if entry.untracked else numstats.get(entry.path)
        )
        if counts is not None:
            entry.additions, entry.deletions = counts
    return status


# -- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    path: str
    is_binary: bool
    unified: str
    additions: int | None = None
    deletions: int | None = None


def _is_untracked(repo: Repository, pathspec: str) -> bool:
    result = run_git(repo.project, ["ls-files", "--error-unmatch", "--", pathspec])
    # os.path.exists, not Path.exists: on Python 3.11 that raises for a name too long or a
    # folder the server may not search.
    return result.returncode != 0 and os.path.exists(repo.project / pathspec)


def git_diff(
    project: Path, raw_path: str, *, scope: DiffScope = "unstaged", context: int = 3
) -> Diff:
    """The unified diff of one path: the index against HEAD (`staged`) or the work tree
    against the index (`unstaged`; an untracked file shows as wholly added)."""
    if not 0 <= context <= MAX_CONTEXT_LINES:
        raise GitDiffError(f"context must be between 0 and {MAX_CONTEXT_LINES}")
    repo = open_repository(project, GitDiffError)
    path = repository_path(repo, raw_path, GitDiffError)
    pathspec = project_relative(repo, path)
    options = ["--no-ext-diff", "--no-textconv", "--no-color", f"-U{context}"]
    try:
        if scope == "unstaged" and _is_untracked(repo, pathspec):
            # --no-index compares two files: exit 1 means they differ.
            args = ["diff", "--no-index", *options, "--", os.devnull, pathspec]
            numstat_args = ["diff", "--no-index", "--numstat", "--", os.devnull, pathspec]
            accepted: tuple[int, ...] = (0, 1)
        else:
            cached = ["--cached"] if scope == "staged" else []
            args = ["diff", *cached, *options, "--", pathspec]
            numstat_args = ["diff", *cached, "--numstat", "-z", "--no-ext-diff", "--", pathspec]
            accepted = (0,)
        result = run_git(repo.project, args)
        numstat = run_git(repo.project, numstat_args)
    except GitFailed as exc:
        raise GitDiffError(str(exc), 503) from None
    if result.returncode not in accepted:
        raise GitDiffError(f"git diff failed: {result.stderr}")
    if not result.stdout and not _is_known(repo, path):
        raise GitDiffError(f"path {raw_path!r} is not in the project", 404)
    counts = _first_numstat(numstat.stdout)
    binary = counts is None and bool(numstat.stdout.strip())
    unified = result.stdout.decode("utf-8", "replace")
    if counts is None:
        return Diff(path, binary, unified)
    return Diff(path, False, unified, counts[0], counts[1])


def _is_known(repo: Repository, path: str) -> bool:
    """Whether `path` is in the work tree, the index or HEAD (a diff of it may be empty)."""
    if os.path.lexists(repo.root / path):
        return True
    try:
        if (
            run_git(
                repo.project, ["ls-files", "--error-unmatch", "--", project_relative(repo, path)]
            ).returncode
            == 0
        ):
            return True
        return run_git(repo.project, ["cat-file", "-e", f"HEAD:{path}"]).returncode == 0
    except GitFailed as exc:
        raise GitDiffError(str(exc), 503) from None


def _first_numstat(output: bytes) -> tuple[int, int] | None:
    line = output.replace(b"\0", b"\n").split(b"\n", 1)[0].decode("utf-8", "replace")
    added, _, rest = line.partition("\t")
    deleted = rest.partition("\t")[0]
    if added.isdigit() and deleted.isdigit():
        return int(added), int(deleted)
    return None


# -- a file at a ref --------------------------------------------------------------------------


@dataclass(frozen=True)
class FileAtRef:
    path: str
    ref: str
    data: bytes

    @property
    def is_binary(self) -> bool:
        if is_binary(self.data):
            return True
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    @property
    def encoding(self) -> Literal["utf8", "base64"]:
        return "base64" if self.is_binary else "utf8"

    @property
    def content(self) -> str:
        if self.is_binary:
            return base64.b64encode(self.data).decode("ascii")
        return self.data.decode("utf-8")


def check_ref(ref: str) -> str:
    """A revision name safe to hand to git: WORKING, INDEX, HEAD, a branch, tag or hash."""
    if ref in SPECIAL_REFS:
        return ref
    if (
        len(ref) > MAX_REF_LENGTH
        or not REF_PATTERN.fullmatch(ref)
        or ".." in ref
        or "@{" in ref
        or ref.endswith((".", "/", ".lock"))
    ):
        raise GitFileError(f"{ref!r} is not a valid git ref")
    return ref


def git_file(
    project: Path, raw_path: str, *, ref: str = "WORKING", max_bytes: int = MAX_TEXT_FILE_BYTES
) -> FileAtRef:
    """A file as it is in the work tree, the index, HEAD or any commit."""
    ref = check_ref(ref)
    repo = open_repository(project, GitFileError)
    path = repository_path(repo, raw_path, GitFileError)
    if ref == "WORKING":
        real = Path(os.path.realpath(repo.root / path))
        try:
            return FileAtRef(path, ref, read_file_bytes(real, max_bytes=max_bytes).data)
        except PocketcodeError as exc:
            raise GitFileError(exc.message, exc.status_code) from None
    try:
        if ref != "INDEX":
            verify = ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"]
            if run_git(repo.project, verify).returncode != 0:
                raise GitFileError(f"ref {ref!r} does not exist", 404)
        # `<ref>:<path>` names the path from the repository root; `:0:` is the index.
        blob = f":0:{path}" if ref == "INDEX" else f"{ref}:{path}"
        size = run_git(repo.project, ["cat-file", "-s", blob])
        if size.returncode != 0:
            raise GitFileError(f"{path!r} does not exist at {ref}", 404)
        if int(size.stdout.strip() or 0) > max_bytes:
            raise GitFileError(f"{path!r} is larger than {max_bytes} bytes", 413)
        result = run_git(repo.project, ["cat-file", "blob", blob], max_output=max_bytes)
    except GitFailed as exc:
        raise GitFileError(str(exc), 503) from None
    if result.returncode != 0:
        raise GitFileError(f"{path!r} does not exist at {ref}", 404)
    return FileAtRef(path, ref, result.stdout)
