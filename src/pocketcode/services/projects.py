"""What a client sees of the projects on this machine: the repositories under the projects
folder, a directory browser inside the allowed roots, a session's project files (list and
read, size-limited), and the slash commands and agents Claude Code would offer there.

Every path comes from a request, so each is resolved (symlinks included) and checked against
the allowed roots or the session's project before anything is opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pocketcode.domain.errors import (
    AccessDenied,
    FileTooLarge,
    InvalidInput,
    NotATextFile,
    NotFound,
    PocketcodeError,
    RepositoryListError,
)
from pocketcode.domain.text import is_utf8
from pocketcode.domain.timefmt import iso_z
from pocketcode.services.paths import (
    is_inside,
    require_utf8,
    resolve_inside_dir,
    resolve_inside_roots,
)
from pocketcode.services.sessions import claude_config_dir

MAX_TEXT_FILE_BYTES = 1024 * 1024
MAX_DIRECTORY_ENTRIES = 5000
MAX_DEFINITION_BYTES = 256 * 1024
MAX_DEFINITIONS = 500
MAX_DEFINITION_DEPTH = 3
# Git's own test for binary content: a NUL byte in the first 8000 bytes.
BINARY_SNIFF_BYTES = 8000

SourceType = Literal["user", "project"]
SourceFilter = Literal["user", "project", "all"]


def projects_directory(roots: Sequence[Path]) -> Path:
    """Where repositories are listed from (PokéCode's `githubReposDirectory`): the first
    allowed root."""
    return Path(os.path.realpath(roots[0]))


def is_git_repository(path: Path) -> bool:
    # os.path.exists, not Path.exists: on Python 3.11 that raises when `path` may not be
    # searched (another user's folder), and one such folder must not fail a whole listing.
    return os.path.exists(path / ".git")


def _mtime_z(seconds: float) -> str:
    return iso_z(datetime.fromtimestamp(seconds, UTC))


# -- repositories and the directory browser ---------------------------------------------------


@dataclass(frozen=True)
class DirectoryItem:
    name: str
    path: str
    is_directory: bool
    is_git_repository: bool
    size: int | None = None
    modified_at: str | None = None


def _scan(directory: Path, roots: Sequence[Path], *, what: str) -> Iterator[os.DirEntry[str]]:
    """The entries of `directory` whose real target stays inside `roots` (a symlink leading
    out is left out, not followed). An entry whose name or symlink target is not valid UTF-8
    is left out too: it could not be shown, and a client could not send its path back."""
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    try:
        with os.scandir(directory) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_DIRECTORY_ENTRIES:
                    break
                if not is_utf8(entry.name):
                    continue
                if entry.is_symlink():
                    target = Path(os.path.realpath(entry.path))
                    if not is_utf8(str(target)) or not any(
                        is_inside(target, root) for root in real_roots
                    ):
                        continue
                yield entry
    except FileNotFoundError:
        raise NotFound(f"{what} {str(directory)!r} does not exist") from None
    except NotADirectoryError:
        raise InvalidInput(f"{what} {str(directory)!r} is not a directory") from None
    except PermissionError:
        raise AccessDenied(f"{what} {str(directory)!r} cannot be read") from None
    except OSError as exc:  # a name too long, a symlink loop
        raise InvalidInput(f"{what} {str(directory)!r} cannot be listed ({exc.strerror})") from None


def _item(entry: os.DirEntry[str], *, path: str, with_files: bool) -> DirectoryItem | None:
    try:
        is_dir = entry.is_dir()
        if not is_dir and not (with_files and entry.is_file()):
            return None
        info = entry.stat()
    except OSError:  # vanished, or a dangling symlink
        return None
    if is_dir:
        return DirectoryItem(entry.name, path, True, is_git_repository(Path(entry.path)))
    return DirectoryItem(
        entry.name, path, False, False, size=info.st_size, modified_at=_mtime_z(info.st_mtime)
    )


def _sorted(items: list[DirectoryItem]) -> list[DirectoryItem]:
    return sorted(items, key=lambda item: (not item.is_directory, item.name.lower(), item.name))


@dataclass(frozen=True)
class Repositories:
    directory: Path
    repositories: list[DirectoryItem]


def list_repositories(roots: Sequence[Path]) -> Repositories:
    """The folders of the projects directory (hidden ones left out: this is a picker)."""
    directory = projects_directory(roots)
    try:
        items = [
            item
            for entry in _scan(directory, roots, what="projects directory")
            if not entry.name.startswith(".")
            and (item := _item(entry, path=str(directory / entry.name), with_files=False))
        ]
    except PocketcodeError as exc:
        raise RepositoryListError(f"cannot list repositories: {exc.message}") from None
    return Repositories(directory, _sorted(items))


@dataclass(frozen=True)
class Listing:
    current_path: Path
    parent_path: Path | None
    items: list[DirectoryItem]


def browse_directory(
    raw: str | None, roots: Sequence[Path], *, include_files: bool = False
) -> Listing:
    """One directory inside the roots (the projects directory when `raw` is empty), hidden
    entries included: the client decides what to show."""
    if not raw:
        directory = projects_directory(roots)
    else:
        directory = resolve_inside_roots(raw, roots, what="path")
        require_utf8(directory, raw, what="path")
    items = [
        item
        for entry in _scan(directory, roots, what="path")
        if (item := _item(entry, path=str(directory / entry.name), with_files=include_files))
    ]
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    parent = None if directory in real_roots else directory.parent
    if parent is not None and not any(is_inside(parent, root) for root in real_roots):
        parent = None
    return Listing(directory, parent, _sorted(items))


# -- a session's project files ----------------------------------------------------------------


def _relative(path: Path, project: Path) -> str:
    return "" if path == project else path.relative_to(project).as_posix()


def list_project_files(project: Path, raw: str | None) -> Listing:
    """A folder of the project, files included; paths relative to the project."""
    project = Path(os.path.realpath(project))
    directory = resolve_inside_dir(project, raw, what="path")
    items: list[DirectoryItem] = []
    for entry in _scan(directory, [project], what="path"):
        relative = _relative(directory / entry.name, project)
        if item := _item(entry, path=relative, with_files=True):
            items.append(item)
    parent = None if directory == project else directory.parent
    return Listing(directory, parent, _sorted(items))


def is_binary(data: bytes) -> bool:
    return b"\x00" in data[:BINARY_SNIFF_BYTES]


@dataclass(frozen=True)
class FileBytes:
    path: Path
    data: bytes
    size: int
    modified_at: str


def read_file_bytes(path: Path, *, max_bytes: int = MAX_TEXT_FILE_BYTES) -> FileBytes:
    """The content of the regular file at the real path `path`. It is opened without following
    a symlink (one swapped in since it was resolved is refused) and without blocking (a FIFO
    would hang the reader), and checked to be a regular file before a byte is read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"file {path.name!r} does not exist") from None
    except PermissionError:
        raise AccessDenied(f"file {path.name!r} cannot be read") from None
    except OSError as exc:
        raise InvalidInput(f"file {path.name!r} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInput(f"{path.name!r} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{path.name!r} is not a regular file")
        if info.st_size > max_bytes:
            raise FileTooLarge(f"file {path.name!r} is larger than {max_bytes} bytes")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we read it
        raise FileTooLarge(f"file {path.name!r} is larger than {max_bytes} bytes")
    return FileBytes(path, data, len(data), _mtime_z(info.st_mtime))


@dataclass(frozen=True)
class TextFile:
    path: str
    content: str
    size: int
    modified_at: str


def read_project_text_file(
    project: Path, raw: str, *, max_bytes: int = MAX_TEXT_FILE_BYTES
) -> TextFile:
    """A UTF-8 text file of the project (415 for binary content, 413 above `max_bytes`)."""
    project = Path(os.path.realpath(project))
    if not raw:
        raise InvalidInput("file path is empty")
    path = resolve_inside_dir(project, raw)
    file = read_file_bytes(path, max_bytes=max_bytes)
    if is_binary(file.data):
        raise NotATextFile(f"file {raw!r} is binary")
    try:
        content = file.data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotATextFile(f"file {raw!r} is not UTF-8 text") from None
    return TextFile(_relative(path, project), content, file.size, file.modified_at)


# -- slash commands and agents ----------------------------------------------------------------


def split_front_matter(text: str) -> tuple[dict[str, str], str]:
    """`key: value` lines between leading `---` fences, and the text after them. Only flat
    scalar keys are read (what command and agent files use); anything else is skipped."""
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text.lstrip("\ufeff")
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            break
    else:
        return {}, text.lstrip("\ufeff")
    fields: dict[str, str] = {}
    for line in lines[1:end]:
        if line[:1].isspace() or ":" not in line or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        fields[key.strip()] = value
    return fields, "".join(lines[end + 1 :]).lstrip("\n")


@dataclass(frozen=True)
class Definition:
    """One markdown file of a commands or agents folder."""

    name: str
    type: SourceType
    fields: dict[str, str]
    body: str
    text: str


def _markdown_files(folder: Path) -> Iterator[Path]:
    """`*.md` files under `folder`, at most `MAX_DEFINITION_DEPTH` folders deep, symlinked
    folders not entered; a file whose name is not valid UTF-8 is left out (its name is the
    command a client would type)."""
    for current, dirs, files in os.walk(folder):
        depth = len(Path(current).relative_to(folder).parts)
        if depth >= MAX_DEFINITION_DEPTH:
            dirs.clear()
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".md") and is_utf8(name):
                yield Path(current) / name


def _definitions(folder: Path, source: SourceType) -> list[Definition]:
    """The definitions of `folder` (subfolders organise, they do not rename), each file read
    only when its real path stays inside the folder."""
    real_folder = Path(os.path.realpath(folder))
    found: list[Definition] = []
    for path in _markdown_files(real_folder):
        if len(found) >= MAX_DEFINITIONS:
            break
        if not is_inside(Path(os.path.realpath(path)), real_folder):
            continue
        try:
            text = read_file_bytes(path, max_bytes=MAX_DEFINITION_BYTES).data.decode("utf-8")
        except (PocketcodeError, UnicodeDecodeError):
            continue  # one unreadable file does not hide the others
        fields, body = split_front_matter(text)
        found.append(Definition(path.stem, source, fields, body, text))
    return sorted(found, key=lambda item: (item.name.lower(), item.name))


@dataclass(frozen=True)
class DefinitionSources:
    definitions: list[Definition]
    user_path: Path | None
    project_path: Path | None


def load_definitions(
    kind: Literal["commands", "agents"],
    project: Path,
    *,
    source: SourceFilter = "all",
    search: str | None = None,
) -> DefinitionSources:
    """Commands or agents from `~/.claude/<kind>` (or `CLAUDE_CONFIG_DIR`) and
    `<project>/.claude/<kind>`, user ones first, each sorted by name; `search` matches names
    and descriptions, case-insensitively."""
    user_folder = claude_config_dir() / kind
    project_folder = project / ".claude" / kind
    found: list[Definition] = []
    user_path = project_path = None
    if source in ("user", "all") and user_folder.is_dir():
        user_path = user_folder
        found += _definitions(user_folder, "user")
    # The project's folder must not lead out of the project (a symlink to `/` would have us
    # walk the whole disk).
    real_project = Path(os.path.realpath(project))
    if (
        source in ("project", "all")
        and os.path.isdir(project_folder)  # Path.is_dir raises for a folder we may not search
        and is_inside(Path(os.path.realpath(project_folder)), real_project)
    ):
        project_path = project_folder
        found += _definitions(project_folder, "project")
    if search:
        needle = search.casefold()
        found = [
            item
            for item in found
            if needle in item.name.casefold()
            or needle in item.fields.get("description", "").casefold()
        ]
    return DefinitionSources(found, user_path, project_path)
