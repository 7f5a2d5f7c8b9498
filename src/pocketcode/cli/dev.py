"""`pocketcode dev …`: tools for development and demos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

dev_app = typer.Typer(help="Development and demo tools.", no_args_is_help=True)


@dev_app.command("fake-model")
def fake_model(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (default: any free port).")] = 0,
    script: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help='JSON script: a list of turns, or {"turns": [...], "subagent_turns": [...]}.',
        ),
    ] = None,
) -> None:
    """Serve the scripted fake Anthropic API on 127.0.0.1 until Ctrl-C, for offline demos.

    Without a script every prompt gets the reply "(fake model: script exhausted)".
    """
    import threading

    from rich.console import Console

    from pocketcode.devtools.fake_model import (
        FakeModelServer,
        RecordedRequest,
        Script,
        load_script,
        offline_api_env,
    )

    console = Console(highlight=False)
    loaded = load_script(script) if script is not None else Script()

    def show(request: RecordedRequest) -> None:
        console.print(f"{request.method} {request.path} ({request.kind})", style="dim")

    server = FakeModelServer(loaded, port=port, on_request=show)
    with server:
        console.print(f"fake model API at [bold]{server.base_url}[/]")
        console.print(
            f"{len(loaded.turns)} scripted turns, {len(loaded.subagent_turns)} for sub-agents"
        )
        console.print("Point the claude CLI at it (use a throwaway HOME, not your own):")
        for name, value in offline_api_env(server.base_url).items():
            console.print(f"  export {name}={value}")
        console.print(
            '  HOME="$(mktemp -d)" claude -p "hello" --output-format stream-json --verbose'
        )
        console.print("Ctrl-C to stop.", style="dim")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print("stopping")
