"""`pocketcode run`: one prompt through the real runner, its events shown in the terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pocketcode.services.events import Event
    from pocketcode.services.runtime import Runtime

console = Console(highlight=False, soft_wrap=True)

_TOOL_TARGET_KEYS = ("file_path", "path", "command", "pattern", "url", "description", "prompt")


def _tool_summary(raw: dict[str, Any] | None, text: str) -> str:
    block: dict[str, Any] = {}
    message = (raw or {}).get("message")
    if isinstance(message, dict):
        for candidate in message.get("content") or []:
            if isinstance(candidate, dict) and candidate.get("type") == "tool_use":
                block = candidate
    name = str(block.get("name") or "tool")
    tool_input = block.get("input") if isinstance(block.get("input"), dict) else {}
    assert isinstance(tool_input, dict)
    for key in _TOOL_TARGET_KEYS:
        if tool_input.get(key):
            return f"{name} {str(tool_input[key]).splitlines()[0][:120]}"
    return f"{name} {text[:120]}"


class EventPrinter:
    """Renders the live event stream of one session for a terminal."""

    def __init__(self) -> None:
        self.streamed: set[str] = set()
        self.streaming_line = False

    def _end_stream(self) -> None:
        if self.streaming_line:
            console.print()
            self.streaming_line = False

    def show(self, event: Event) -> None:
        data = event.data
        if event.type == "delta":
            if data.get("blockType", "text") == "text" and data.get("text"):
                console.print(data["text"], end="", markup=False)
                self.streaming_line = True
                if data.get("messageId"):
                    self.streamed.add(str(data["messageId"]))
            return
        if event.type != "message":
            return
        self._end_stream()
        kind, subtype, text = data.get("type"), data.get("subtype"), data.get("text") or ""
        if kind == "assistant" and subtype == "text":
            if data.get("providerMessageId") not in self.streamed:
                console.print(text, markup=False)
        elif kind == "assistant" and subtype == "thinking":
            first = text.strip().splitlines()[0][:100] if text.strip() else ""
            console.print(f"[dim italic]thinking: {first}…[/]")
        elif kind == "assistant" and subtype == "tool_use":
            console.print(f"[cyan]▶ {_tool_summary(data.get('raw'), text)}[/]")
        elif kind == "user" and subtype == "tool_result":
            lines = text.count("\n") + 1 if text else 0
            console.print(f"[dim]◀ result, {lines} line(s)[/]")
        elif kind == "system" and subtype == "init":
            claude_id = (data.get("raw") or {}).get("session_id", "")
            console.print(
                f"[dim]claude session {claude_id} (terminal: claude --resume {claude_id})[/]"
            )
        elif kind in ("system", "error"):
            style = "red" if kind == "error" else "yellow"
            console.print(f"[{style}]{text}[/]", markup=True)
        elif kind == "result":
            raw = data.get("raw") or {}
            cost = raw.get("total_cost_usd")
            console.print(
                f"[dim]done: {raw.get('num_turns', '?')} turn(s), "
                f"{raw.get('duration_ms', '?')} ms"
                + (f", CLI cost ${cost:.4f}" if isinstance(cost, (int, float)) else "")
                + "[/]"
            )


async def _ask_in_terminal(runtime: Runtime, event: Event) -> None:
    import anyio

    from pocketcode.services.permissions import Answer

    data = event.data
    if data.get("status") != "pending":
        return
    summary = json.dumps(data.get("toolInput") or {}, ensure_ascii=False)[:300]
    if not sys.stdin.isatty():
        console.print(f"[red]{data['toolName']} needs approval and there is no terminal: denied[/]")
        answer = Answer.DENY
    else:
        console.print(f"[bold yellow]Allow {data['toolName']}?[/] {summary}")
        reply = await anyio.to_thread.run_sync(
            lambda: input("[y]es / [n]o / [a]lways for this session: ").strip().lower()
        )
        choices = {"y": Answer.ALLOW, "yes": Answer.ALLOW, "a": Answer.ALWAYS}
        answer = choices.get(reply, Answer.DENY)
    await anyio.to_thread.run_sync(
        lambda: runtime.permissions.answer(data["id"], answer, reason="denied in the terminal")
    )


def run(
    prompt: str = typer.Argument(..., help="The prompt to send."),
    project: Path | None = typer.Option(
        None, "--project", "-p", help="Project folder (default: the current folder)."
    ),
    session: str | None = typer.Option(None, help="Continue this pocketcode session id."),
    model: str | None = typer.Option(None, help="Model name or alias."),
    permission_mode: str | None = typer.Option(
        None, help="default, acceptEdits, plan or bypassPermissions."
    ),
) -> None:
    """Run one prompt with Claude Code and show its events (no web app needed)."""
    import anyio

    from pocketcode.cli.db import open_app_database
    from pocketcode.services.sessions import SessionService

    with open_app_database() as (settings, db, keyring):
        sessions = SessionService(db, settings.allowed_roots)
        if session is not None:
            session_row = sessions.get(session)
        else:
            folder = (project or Path.cwd()).absolute()
            session_row = sessions.create(str(folder), title=prompt[:80])
        options: dict[str, Any] = {}
        if model:
            options["model"] = model
        if permission_mode:
            options["permissionMode"] = permission_mode
        status = anyio.run(_run_one, settings, db, keyring, session_row.id, prompt, options)
    console.print(f"[dim]pocketcode session {session_row.id}[/]")
    if status != "completed":
        raise typer.Exit(1)


async def _run_one(
    settings: Any, db: Any, keyring: Any, session_id: Any, prompt: str, options: dict[str, Any]
) -> str:
    import asyncio

    from pocketcode.services.runtime import Runtime

    runtime = await Runtime.start(settings, db, keyring, only_sessions={session_id})
    printer = EventPrinter()
    try:
        with runtime.bus.subscribe(session_id) as events:
            job = await runtime.runs.submit(session_id, prompt, options)
            try:
                async for event in events:
                    if event.type == "permission":
                        await _ask_in_terminal(runtime, event)
                    elif event.type == "done" and event.data.get("jobId") == str(job.id):
                        return str(event.data.get("status"))
                    else:
                        printer.show(event)
            except (KeyboardInterrupt, asyncio.CancelledError):
                console.print("[yellow]cancelling…[/]")
                await runtime.runs.cancel_job(job.id)
                return "cancelled"
    finally:
        await runtime.stop()
    return "failed"
