"""Projects on this machine (PokéCode's shapes): repositories, the directory browser, a
session's git status, diff and files at a ref, its slash commands and agents; plus the project
file browser of our web client. All private (the security middleware), all confined to the
allowed roots or the session's project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query

from pocketcode.services import git, projects
from pocketcode.services.paths import resolve_project_dir
from pocketcode.services.projects import DirectoryItem, SourceFilter
from pocketcode.services.sessions import SessionService
from pocketcode.web.app import AppState
from pocketcode.web.deps import State
from pocketcode.web.schemas import (
    AgentsOut,
    CommandsOut,
    DirectoryOut,
    FileContentOut,
    GitDiffOut,
    GitFileOut,
    GitStatusOut,
    ProjectFilesOut,
    RepositoriesOut,
    errors,
)

router = APIRouter(tags=["projects"])

Search = Annotated[str | None, Query(max_length=256)]
RequestPath = Annotated[str, Query(min_length=1, max_length=4096)]
Responses = dict[str, Any]


def session_project(state: AppState, session_id: str) -> Path:
    """The session's project folder, checked against the roots again: it may have become a
    symlink to elsewhere since the session was created."""
    row = SessionService(state.db, state.settings.allowed_roots).get(session_id)
    return resolve_project_dir(row.project_path, state.settings.allowed_roots)


def _item(item: DirectoryItem) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": item.name,
        "path": item.path,
        "type": "directory" if item.is_directory else "file",
        "isGitRepository": item.is_git_repository,
    }
    if item.size is not None:
        body["size"] = item.size
    if item.modified_at is not None:
        body["modifiedAt"] = item.modified_at
    return body


# -- repositories and directories -------------------------------------------------------------


@router.get("/api/repositories/", include_in_schema=False, response_model=RepositoriesOut)
@router.get(
    "/api/repositories",
    summary="The folders of the projects directory",
    response_model=RepositoriesOut,
)
def list_repositories(state: State) -> dict[str, Any]:
    found = projects.list_repositories(state.settings.allowed_roots)
    return {
        "repositories": [
            {"folderName": item.name, "path": item.path, "isGitRepository": item.is_git_repository}
            for item in found.repositories
        ],
        "total": len(found.repositories),
        "githubReposDirectory": str(found.directory),
    }


_BROWSE: Responses = {
    "response_model": DirectoryOut,
    "response_model_exclude_unset": True,
    "responses": errors(400, 403, 404),
}


@router.get("/api/directories/browse/", include_in_schema=False, **_BROWSE)
@router.get("/api/directories/browse", summary="One directory inside the allowed roots", **_BROWSE)
def browse_directories(
    state: State,
    path: Annotated[str | None, Query(max_length=4096)] = None,
    include_files: Annotated[bool, Query(alias="includeFiles")] = False,
) -> dict[str, Any]:
    listing = projects.browse_directory(
        path, state.settings.allowed_roots, include_files=include_files
    )
    return {
        "currentPath": str(listing.current_path),
        "parentPath": str(listing.parent_path) if listing.parent_path is not None else None,
        "items": [_item(item) for item in listing.items],
    }


# -- a session's project files ----------------------------------------------------------------


def _relative(path: Path, project: Path) -> str:
    return "" if path == project else path.relative_to(project).as_posix()


@router.get(
    "/api/sessions/{session_id}/files",
    summary="List a folder of the session's project",
    response_model=ProjectFilesOut,
    response_model_exclude_unset=True,
    responses=errors(400, 403, 404),
)
def list_project_files(
    state: State,
    session_id: str,
    path: Annotated[str | None, Query(max_length=4096)] = None,
) -> dict[str, Any]:
    project = session_project(state, session_id)
    listing = projects.list_project_files(project, path)
    parent = listing.parent_path
    return {
        "projectPath": str(project),
        "path": _relative(listing.current_path, project),
        "parentPath": None if parent is None else _relative(parent, project),
        "items": [_item(item) for item in listing.items],
    }


@router.get(
    "/api/sessions/{session_id}/files/content",
    summary="A text file of the session's project (UTF-8, at most 1 MiB)",
    response_model=FileContentOut,
    responses=errors(400, 403, 404, 413, 415),
)
def read_project_file(state: State, session_id: str, path: RequestPath) -> dict[str, Any]:
    project = session_project(state, session_id)
    file = projects.read_project_text_file(project, path)
    return {
        "path": file.path,
        "content": file.content,
        "encoding": "utf8",
        "size": file.size,
        "modifiedAt": file.modified_at,
    }


# -- git --------------------------------------------------------------------------------------


def _stats(additions: int | None, deletions: int | None) -> dict[str, int] | None:
    if additions is None or deletions is None:
        return None
    return {"additions": additions, "deletions": deletions}


def _flag(raw: str | None, default: bool) -> bool:
    """A boolean query value: absent is the default; `false`, `0`, `no`, `off` and the empty
    string are false, anything else is true."""
    if raw is None:
        return default
    return raw.strip().lower() not in {"", "false", "0", "no", "off"}


@router.get(
    "/api/sessions/{session_id}/git/status",
    summary="Git status of the project",
    response_model=GitStatusOut,
    response_model_exclude_unset=True,
    responses=errors(400, 403, 404, 503),
)
def git_status(
    state: State,
    session_id: str,
    scope: git.Scope = "unstaged",
    include_untracked: Annotated[str | None, Query(alias="includeUntracked")] = None,
) -> dict[str, Any]:
    project = session_project(state, session_id)
    status = git.git_status(
        project, scope=scope, include_untracked=_flag(include_untracked, default=True)
    )
    body: dict[str, Any] = {"repoRoot": str(status.repo_root)}
    if status.branch is not None:
        body["branch"] = status.branch
    if status.ahead is not None and status.behind is not None:
        body["ahead"], body["behind"] = status.ahead, status.behind
    entries: list[dict[str, Any]] = []
    for entry in status.entries:
        item: dict[str, Any] = {
            "path": entry.path,
            "index": entry.index,
            "worktree": entry.worktree,
            "staged": entry.staged,
            "untracked": entry.untracked,
            "change": entry.change,
        }
        if entry.orig_path is not None:
            item["origPath"] = entry.orig_path
            item["rename"] = entry.index == "R" or entry.worktree == "R"
        if entry.similarity is not None:
            item["scores"] = {"similarity": entry.similarity}
        if entry.is_submodule:
            item["isSubmodule"] = True
        if (stats := _stats(entry.additions, entry.deletions)) is not None:
            item["stats"] = stats
        entries.append(item)
    body["entries"] = entries
    return body


@router.get(
    "/api/sessions/{session_id}/git/diff",
    summary="Unified diff of one path",
    response_model=GitDiffOut,
    response_model_exclude_unset=True,
    responses=errors(400, 403, 404, 503),
)
def git_diff(
    state: State,
    session_id: str,
    path: RequestPath,
    scope: git.DiffScope = "unstaged",
    context: int = 3,
    base: Annotated[str | None, Query(max_length=256, include_in_schema=False)] = None,
) -> dict[str, Any]:
    del base  # PokéCode accepted it and ignored it
    project = session_project(state, session_id)
    diff = git.git_diff(project, path, scope=scope, context=context)
    body: dict[str, Any] = {"path": diff.path, "isBinary": diff.is_binary, "unified": diff.unified}
    if (stats := _stats(diff.additions, diff.deletions)) is not None:
        body["stats"] = stats
    return body


@router.get(
    "/api/sessions/{session_id}/git/file",
    summary="A file at WORKING, INDEX or a ref",
    response_model=GitFileOut,
    responses=errors(400, 403, 404, 413, 503),
)
def git_file(
    state: State,
    session_id: str,
    path: RequestPath,
    ref: Annotated[str, Query(min_length=1, max_length=256)] = "WORKING",
) -> dict[str, Any]:
    project = session_project(state, session_id)
    file = git.git_file(project, path, ref=ref)
    return {
        "path": file.path,
        "ref": file.ref,
        "encoding": file.encoding,
        "content": file.content,
        "isBinary": file.is_binary,
    }


# -- slash commands and agents ----------------------------------------------------------------


def _sources(found: projects.DefinitionSources, kind: str) -> dict[str, str]:
    """PokéCode's `sources`: `user<Kind>Path` / `project<Kind>Path`, omitted when absent."""
    sources: dict[str, str] = {}
    if found.user_path is not None:
        sources[f"user{kind}Path"] = str(found.user_path)
    if found.project_path is not None:
        sources[f"project{kind}Path"] = str(found.project_path)
    return sources


_COMMANDS: Responses = {
    "response_model": CommandsOut,
    "response_model_exclude_unset": True,
    "responses": errors(400, 403, 404),
}


@router.get("/api/sessions/{session_id}/commands/", include_in_schema=False, **_COMMANDS)
@router.get(
    "/api/sessions/{session_id}/commands", summary="Slash commands for the session", **_COMMANDS
)
def list_commands(
    state: State, session_id: str, type: SourceFilter = "all", search: Search = None
) -> dict[str, Any]:
    project = session_project(state, session_id)
    found = projects.load_definitions("commands", project, source=type, search=search)
    sources = _sources(found, "Commands")
    return {
        "commands": [
            {"name": item.name, "body": item.body, "type": item.type} for item in found.definitions
        ],
        "sources": sources,
    }


_AGENTS: Responses = {
    "response_model": AgentsOut,
    "response_model_exclude_unset": True,
    "responses": errors(400, 403, 404),
}


@router.get("/api/sessions/{session_id}/agents/", include_in_schema=False, **_AGENTS)
@router.get("/api/sessions/{session_id}/agents", summary="Subagents for the session", **_AGENTS)
def list_agents(
    state: State, session_id: str, type: SourceFilter = "all", search: Search = None
) -> dict[str, Any]:
    project = session_project(state, session_id)
    found = projects.load_definitions("agents", project, source=type, search=search)
    sources = _sources(found, "Agents")
    agents: list[dict[str, Any]] = []
    for item in found.definitions:
        agent: dict[str, Any] = {
            "name": item.fields.get("name") or item.name,
            "description": item.fields.get("description", ""),
            "content": item.body,
            "type": item.type,
        }
        if item.fields.get("color"):
            agent["color"] = item.fields["color"]
        agents.append(agent)
    return {"agents": agents, "sources": sources}
