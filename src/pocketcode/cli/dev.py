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


@dev_app.command("fake-transcription")
def fake_transcription(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (default: any free port).")] = 0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="POCKETCODE_FAKE_TRANSCRIPTION_KEY",
            help="Bearer key the fake requires (default: none required).",
        ),
    ] = None,
    delay: Annotated[
        float, typer.Option(min=0, max=600, help="Seconds to wait before each answer.")
    ] = 0.0,
) -> None:
    """Serve a fake OpenAI-compatible transcription API on 127.0.0.1 until Ctrl-C.

    It answers POST /v1/audio/transcriptions with the upload itself when that is short text,
    else with "(fake transcription of N bytes)". Set the printed URL as transcription_url
    (and the key as transcription_api_key) in pocketcode's settings to try voice input offline.
    """
    import threading

    from rich.console import Console

    from pocketcode.devtools.fake_transcription import (
        FakeTranscriptionServer,
        TranscriptionRequest,
    )

    console = Console(highlight=False)

    def show(request: TranscriptionRequest) -> None:
        console.print(
            f"POST {request.path}: {request.size} bytes, model {request.model} → {request.status}",
            style="dim",
        )

    server = FakeTranscriptionServer(api_key=api_key, port=port, delay=delay, on_request=show)
    with server:
        console.print(f"fake transcription API at [bold]{server.base_url}[/]")
        console.print("In pocketcode's settings (web app, or the API):")
        console.print(f"  transcription_url = {server.base_url}")
        if api_key:
            console.print("  transcription_api_key = the key given with --api-key")
        console.print("Ctrl-C to stop.", style="dim")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print("stopping")
