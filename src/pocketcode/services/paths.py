"""Every path a user gives is resolved (symlinks and `..` included) and must lie inside an
allowed root before anything opens it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from pocketcode.domain.errors import InvalidInput
from pocketcode.domain.text import is_utf8

MAX_PATH_LENGTH = 4096


def shown_path(path: str | Path) -> str:
    """`path` for a message, each byte that is not UTF-8 written as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def require_utf8(path: Path, raw: str, *, what: str) -> None:
    """Refuse `path`, the real path `raw` resolved to, when it is not valid UTF-8 (a symlink
    with a UTF-8 name can lead to a folder whose name is not): it could be neither stored nor
    shown, and a client could not name anything inside it."""
    if not is_utf8(str(path)):
        raise InvalidInput(
            f"{what} {raw!r} leads to '{shown_path(path)}', which is not valid UTF-8; "
            "rename it to use it here"
        )


def _reject_bad_text(raw: str, what: str) -> None:
    if not raw or not raw.strip():
        raise InvalidInput(f"{what} is empty")
    if "\x00" in raw:
        raise InvalidInput(f"{what} contains a NUL byte")
    if not is_utf8(raw):  # a JSON body may carry a lone surrogate (`"\udcff"`)
        raise InvalidInput(f"{what} is not valid UTF-8 text")
    if len(raw) > MAX_PATH_LENGTH:
        raise InvalidInput(f"{what} is longer than {MAX_PATH_LENGTH} characters")


def resolve_inside_roots(raw: str, roots: Sequence[Path], *, what: str = "path") -> Path:
    """The real absolute path of `raw`, which must be inside one of `roots`.

    `~` is not expanded: a path from a request is taken literally, and a relative path is
    refused, so the server's working directory never decides what a request reaches.
    """
    _reject_bad_text(raw, what)
    candidate = Path(raw)
    if not candidate.is_absolute():
        raise InvalidInput(f"{what} must be absolute: {raw!r}")
    resolved = Path(os.path.realpath(candidate))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return resolved
    raise InvalidInput(f"{what} {raw!r} is outside the allowed project roots")


def resolve_project_dir(raw: str, roots: Sequence[Path]) -> Path:
    path = resolve_inside_roots(raw, roots, what="project path")
    require_utf8(path, raw, what="project path")
    # os.path.isdir, not Path.is_dir: on Python 3.11 that raises for a name too long or a
    # folder the server may not search, which are a request's mistakes, not the server's.
    if not os.path.isdir(path):
        raise InvalidInput(f"project path {str(path)!r} is not an existing directory")
    return path


def normalise_relative_path(raw: str, *, what: str = "file path") -> str:
    """A clean relative POSIX path inside a project: no absolute paths, no `..`, no empty parts."""
    _reject_bad_text(raw, what)
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":"):
        raise InvalidInput(f"{what} must be relative to the project: {raw!r}")
    parts = [part for part in PurePosixPath(raw.replace("\\", "/")).parts if part not in ("", ".")]
    if not parts:
        raise InvalidInput(f"{what} names no file: {raw!r}")
    if ".." in parts:
        raise InvalidInput(f"{what} may not contain '..': {raw!r}")
    return "/".join(parts)


def is_inside(path: Path, base: Path) -> bool:
    """Whether the real `path` is `base` or below it (both already resolved)."""
    return path == base or path.is_relative_to(base)


def resolve_inside_dir(base: Path, raw: str | None, *, what: str = "file path") -> Path:
    """The real path of `raw`, a path relative to the directory `base`, which it must not
    leave, also through a symlink. An empty or missing `raw` (or `.`) is `base` itself."""
    real_base = Path(os.path.realpath(base))
    if raw is None or raw in ("", "."):
        return real_base
    clean = normalise_relative_path(raw, what=what)
    resolved = Path(os.path.realpath(real_base / clean))
    if not is_inside(resolved, real_base):
        raise InvalidInput(f"{what} {raw!r} leads outside the project")
    require_utf8(resolved, raw, what=what)
    return resolved
