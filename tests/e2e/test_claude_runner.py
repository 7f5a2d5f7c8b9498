"""The Claude Code runner drives the real, bundled CLI against the scripted fake model.

Nothing about the CLI or the SDK is mocked: files are really written, commands really run,
processes really started and killed. Each test closes its runners, and the `runner_session`
fixture fails a test that leaves a process with its instance marker behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from pocketcode.agents import processes
from pocketcode.agents.base import EventKind, PermissionDecision, RunStatus
from pocketcode.agents.claude_code import (
    ClaudeCodeRunner,
    agent_environment,
    write_launcher,
)
from pocketcode.devtools.fake_model import error, slow, text, thinking, tool_use
from pocketcode.domain.states import MessageType, PermissionMode
from tests.e2e.conftest import MakeRunnerSession, StartFakeModel

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(45)]


async def test_a_text_answer_streams_init_then_deltas_then_text_then_result(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    words = " ".join(f"word{i}" for i in range(12))
    server = fake_model(thinking("Let me think.") + slow(words, 0.02, chunk_chars=10))
    session = runner_session(server)

    run = await session.run("say something slowly")

    assert run.outcome.status is RunStatus.COMPLETED, run.outcome
    kinds = [event.kind for event in run.events]
    assert kinds[0] is EventKind.PROCESS
    stored = [(m.type, m.subtype) for m in run.messages]
    assert stored == [
        (MessageType.SYSTEM, "init"),
        (MessageType.ASSISTANT, "thinking"),
        (MessageType.ASSISTANT, "text"),
        (MessageType.RESULT, "success"),
    ]
    init, thought, answer, result = run.messages
    # Our chosen id is the provider session: init, result, transcript file and API header.
    assert init.provider_session_id == session.new_provider_session_id
    assert run.outcome.provider_session_id == session.new_provider_session_id
    assert init.model and init.raw["subtype"] == "init" and "Bash" in init.raw["tools"]
    transcript_dir = session.home / ".claude" / "projects"
    assert [p.name for p in transcript_dir.rglob("*.jsonl")] == [
        f"{session.new_provider_session_id}.jsonl"
    ]
    assert server.main_requests[0].headers["x-claude-code-session-id"] == (
        session.new_provider_session_id
    )
    # Deltas arrive before the stored text, and add up to it.
    text_deltas = [d for d in run.deltas if d["blockType"] == "text"]
    assert len(text_deltas) >= 5
    assert "".join(d["text"] for d in text_deltas) == answer.text == words
    assert {d["messageId"] for d in text_deltas} == {answer.provider_message_id}
    answer_index = run.events.index(next(e for e in run.events if e.message is answer))
    assert all(run.events.index(e) < answer_index for e in run.events if e.delta in text_deltas)
    assert thought.text == "Let me think."
    # One API call: its usage is stored once, on its first block; the result has the turn's.
    assert thought.provider_message_id == answer.provider_message_id
    assert thought.output_tokens is not None and answer.output_tokens is None
    assert answer.provider_message_uuid and answer.provider_message_uuid in (
        next(transcript_dir.rglob("*.jsonl")).read_text()
    )
    assert result.text == words
    assert run.outcome.usage.output_tokens == result.output_tokens > 0
    assert run.outcome.usage.cache_creation_tokens > 1000
    assert run.outcome.cli_cost_usd is not None and run.outcome.cli_cost_usd > 0
    assert run.outcome.cli_total_cost_usd == run.outcome.cli_cost_usd
    assert run.outcome.num_turns == 1
    assert all(m.job_id == run.request.job_id for m in run.messages)


async def test_write_read_edit_and_bash_change_the_project_and_results_pair_with_calls(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    session = runner_session(fake_model())
    notes = session.project / "notes.txt"
    session.server.add_turns(
        tool_use("Write", {"file_path": str(notes), "content": "draft one\n"}),
        tool_use("Read", {"file_path": str(notes)}),
        tool_use("Edit", {"file_path": str(notes), "old_string": "draft", "new_string": "final"}),
        tool_use("Bash", {"command": "cat notes.txt > copy.txt && echo copied"}),
        text("Notes written."),
    )

    run = await session.run("write my notes")

    assert run.outcome.status is RunStatus.COMPLETED, run.outcome
    assert notes.read_text() == "final one\n"
    assert (session.project / "copy.txt").read_text() == "final one\n"
    calls = run.of_type(MessageType.ASSISTANT, "tool_use")
    results = run.of_type(MessageType.USER, "tool_result")
    assert [c.text for c in calls] == ["Write", "Read", "Edit", "Bash"]
    call_ids = [c.raw["message"]["content"][0]["id"] for c in calls]  # type: ignore[index]
    assert [r.parent_tool_use_id for r in results] == call_ids
    assert not any(
        r.raw.get("message", {}).get("content", [{}])[0].get("is_error") for r in results
    )  # type: ignore[union-attr]
    assert "copied" in results[3].text
    assert "draft one" in results[1].text
    # Each API call is its own message id, each with its usage stored once.
    assert len({c.provider_message_id for c in calls}) == 4
    assert all(c.input_tokens is not None for c in calls)
    assert run.outcome.usage.input_tokens == sum(
        m.input_tokens or 0 for m in run.of_type(MessageType.ASSISTANT)
    )
    assert run.outcome.num_turns == 5


async def test_a_follow_up_reuses_the_live_process_and_the_model_sees_the_earlier_turns(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    server = fake_model(text("The first answer."), text("The second answer."))
    session = runner_session(server)

    first = await session.run("first question")
    second = await session.run("second question")

    assert second.outcome.status is RunStatus.COMPLETED, second.outcome
    assert first.process.pid == second.process.pid == session.runner.live_pid(session.session_id)
    assert first.process.create_time == second.process.create_time
    assert first.process.create_time == processes.process_create_time(first.process.pid)
    # Warm: no CLI start-up (the cold one costs ~0.4 s here).
    assert second.time_to_first_message() < first.time_to_first_message() / 2
    texts = server.main_requests[1].texts
    assert texts.index("first question") < texts.index("The first answer.")
    assert texts[-1] == "second question"
    assert second.outcome.provider_session_id == first.outcome.provider_session_id
    # The CLI's total is cumulative: the run's own cost is reported beside it.
    assert first.outcome.cli_total_cost_usd is not None
    assert second.outcome.cli_total_cost_usd is not None
    assert second.outcome.cli_cost_usd is not None
    assert second.outcome.cli_total_cost_usd == pytest.approx(
        first.outcome.cli_total_cost_usd + second.outcome.cli_cost_usd
    )


async def test_idle_clients_are_closed_and_the_next_prompt_resumes_the_session(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    server = fake_model(text("Before the pause."), text("After the pause."), text("New model."))
    session = runner_session(server, idle_timeout=0.05)

    first = await session.run("hello")
    await asyncio.sleep(0.1)
    assert await session.runner.close_idle() == 1
    assert session.runner.live_pid(session.session_id) is None
    assert not psutil.pid_exists(first.process.pid) or (
        psutil.Process(first.process.pid).status() == psutil.STATUS_ZOMBIE
    )

    second = await session.run("are you still there?")
    # A changed start-up option restarts the process, resuming the same conversation.
    third = await session.run("switch model", model="claude-sonnet-4-5")

    assert second.outcome.status is RunStatus.COMPLETED, second.outcome
    assert second.process.pid != first.process.pid
    assert third.process.pid != second.process.pid
    assert {second.outcome.provider_session_id, third.outcome.provider_session_id} == {
        session.new_provider_session_id
    }
    resumed = server.main_requests[1].texts
    assert resumed.index("Before the pause.") < resumed.index("are you still there?")
    switched = server.main_requests[2]
    assert switched.body["model"] == "claude-sonnet-4-5"
    assert "After the pause." in switched.texts
    # Resumed processes still report this run's cost beside the cumulative total.
    assert second.outcome.cli_cost_usd is not None
    assert second.outcome.cli_total_cost_usd is not None
    assert first.outcome.cli_total_cost_usd is not None
    assert second.outcome.cli_total_cost_usd > first.outcome.cli_total_cost_usd


async def test_default_mode_asks_and_a_denied_write_is_not_written(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    session = runner_session(fake_model())
    session.permission_mode = PermissionMode.DEFAULT
    denied, allowed = session.project / "denied.txt", session.project / "allowed.txt"
    session.server.add_turns(
        tool_use("Write", {"file_path": str(denied), "content": "no\n"}),
        text("Understood, not written."),
        tool_use("Write", {"file_path": str(allowed), "content": "yes\n"}),
        text("Written."),
    )
    session.decide = lambda tool, tool_input: PermissionDecision(
        allow=False, message="Not in this folder, please."
    )

    refused = await session.run("write denied.txt")
    session.decide = lambda tool, tool_input: PermissionDecision(allow=True)
    accepted = await session.run("write allowed.txt")

    assert refused.outcome.status is RunStatus.COMPLETED, refused.outcome
    assert not denied.exists()
    [result] = refused.of_type(MessageType.USER, "tool_result")
    assert "Not in this folder, please." in result.text
    told = session.server.main_requests[1].tool_results
    assert "Not in this folder, please." in json.dumps(told) and told[0]["is_error"] is True
    assert accepted.outcome.status is RunStatus.COMPLETED, accepted.outcome
    assert allowed.read_text() == "yes\n"
    [(tool, tool_input, tool_use_id), second_question] = session.questions
    assert (tool, tool_input["file_path"]) == ("Write", str(denied))
    [call] = refused.of_type(MessageType.ASSISTANT, "tool_use")
    assert tool_use_id == call.raw["message"]["content"][0]["id"]  # type: ignore[index]
    assert second_question[1]["file_path"] == str(allowed)
    assert refused.process.pid == accepted.process.pid


async def test_cancel_during_a_slow_stream_interrupts_within_two_seconds(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    server = fake_model(slow("x" * 2000, 0.05, chunk_chars=4), text("Still here."))
    session = runner_session(server)
    request = session.request("talk for a long time")

    task = asyncio.create_task(session.run_request(request))
    await _wait_for(lambda: any(e.kind is EventKind.DELTA for e in session.events))
    started = time.monotonic()
    await session.runner.cancel(session.session_id)
    cancelled = await task
    elapsed = time.monotonic() - started

    assert cancelled.outcome.status is RunStatus.CANCELLED, cancelled.outcome
    assert elapsed < 2.0
    [result] = cancelled.of_type(MessageType.RESULT)
    assert result.raw["terminal_reason"] == "aborted_streaming"  # type: ignore[index]
    # The partial reply is kept, and the process stays usable for the next prompt.
    partial = cancelled.of_type(MessageType.ASSISTANT, "text")
    assert partial and 0 < len(partial[0].text) < 2000
    after = await session.run("are you there?")
    assert after.outcome.status is RunStatus.COMPLETED
    assert after.process.pid == cancelled.process.pid


async def test_cancel_kills_a_running_bash_command(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    session = runner_session(fake_model())
    marker = session.project / "started.txt"
    session.server.add_turns(
        tool_use("Bash", {"command": "echo up > started.txt; sleep 60; echo never"}),
        text("never sent"),
    )
    task = asyncio.create_task(session.run("run the long command"))
    await _wait_for(lambda: marker.exists() and bool(_marked(session.runner, "sleep")))
    [sleeper] = _marked(session.runner, "sleep")

    started = time.monotonic()
    await session.runner.cancel(session.session_id)
    run = await task
    elapsed = time.monotonic() - started

    assert run.outcome.status is RunStatus.CANCELLED, run.outcome
    assert elapsed < 2.0
    assert not _is_alive(sleeper)
    cli = run.process.pid
    assert [p.pid for p in _marked(session.runner)] == [cli]  # only the live CLI is left


async def test_a_cli_that_ignores_the_interrupt_is_killed_with_its_tools(
    fake_model: StartFakeModel,
    runner_session: MakeRunnerSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = runner_session(fake_model(), cancel_grace=0.5)
    marker = session.project / "started.txt"
    session.server.add_turns(
        tool_use("Bash", {"command": "echo up > started.txt; sleep 60; echo never"}),
        text("never sent"),
    )
    task = asyncio.create_task(session.run("run the long command"))
    await _wait_for(lambda: marker.exists() and bool(_marked(session.runner, "sleep")))
    [sleeper] = _marked(session.runner, "sleep")
    cli = session.events[0].pid
    assert cli is not None
    # A wedged CLI: the interrupt is never answered.
    live = session.runner._live[session.session_id]

    async def ignore() -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(live.client, "interrupt", ignore)

    started = time.monotonic()
    await session.runner.cancel(session.session_id)
    run = await task
    elapsed = time.monotonic() - started

    assert run.outcome.status is RunStatus.CANCELLED, run.outcome
    assert elapsed < 2.0
    assert not _is_alive(sleeper)
    assert _marked(session.runner) == []
    assert session.runner.live_pid(session.session_id) is None
    assert not _is_alive_pid(cli)


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (401, "api_401", "credentials"),
        (429, "api_429", "Rate limited"),
        (500, "api_500", "internal error"),
        (529, "api_overloaded", "overloaded"),
    ],
)
async def test_api_errors_fail_the_run_with_a_readable_error(
    fake_model: StartFakeModel,
    runner_session: MakeRunnerSession,
    status: int,
    code: str,
    words: str,
) -> None:
    session = runner_session(fake_model(error(status), text("never sent")))

    run = await session.run("hello")

    assert run.outcome.status is RunStatus.FAILED
    assert run.outcome.error_code == code
    assert run.outcome.error is not None
    assert words in run.outcome.error and f"HTTP {status}" in run.outcome.error
    [shown] = run.of_type(MessageType.ERROR)
    assert shown.text
    assert run.of_type(MessageType.RESULT)[0].raw["api_error_status"] == status  # type: ignore[index]
    assert session.runner.live_count == 0  # a failed client is not kept


async def test_retries_are_shown_as_system_messages(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    session = runner_session(fake_model(error(529), text("made it")))
    env = {**session.env(), "CLAUDE_CODE_MAX_RETRIES": "1"}

    run = await session.run("hello", env=env)

    assert run.outcome.status is RunStatus.COMPLETED, run.outcome
    [retry] = run.of_type(MessageType.SYSTEM, "api_retry")
    assert "529" in retry.text and "attempt 1 of 1" in retry.text


async def test_missing_cli_and_missing_project_folder_fail_without_raising(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession, tmp_path: Path
) -> None:
    server = fake_model()
    no_cli = runner_session(server, cli_path=tmp_path / "nowhere" / "claude")
    missing_cli = await no_cli.run("hello")
    session = runner_session(server)
    missing_cwd = await session.run("hello", cwd=tmp_path / "gone")

    assert missing_cli.outcome.status is RunStatus.FAILED
    assert missing_cli.outcome.error_code == "cli_missing"
    assert "nowhere" in (missing_cli.outcome.error or "")
    assert missing_cwd.outcome.status is RunStatus.FAILED
    assert missing_cwd.outcome.error_code == "cwd_missing"
    assert "gone" in (missing_cwd.outcome.error or "")
    assert server.requests == []


async def test_a_project_folder_outside_the_allowed_roots_is_not_run_in(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession, tmp_path: Path
) -> None:
    """A session imported from a transcript may name any folder; the server runs the agent
    only inside its allowed roots (symlinks resolved), as its file and git routes read only
    there."""
    server = fake_model(text("inside"))
    root, outside = tmp_path / "root", tmp_path / "root-sibling"
    (root / "app").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    session = runner_session(server, allowed_roots=[root])

    refused = [await session.run("hello", cwd=cwd) for cwd in (outside, root / "escape")]
    for run in refused:
        assert run.outcome.status is RunStatus.FAILED
        assert run.outcome.error_code == "cwd_outside_roots"
        assert "POCKETCODE_ALLOWED_ROOTS" in (run.outcome.error or "")
    assert server.requests == []
    inside = await session.run("hello", cwd=root / "app")
    assert inside.outcome.status is RunStatus.COMPLETED, inside.outcome


async def test_a_session_that_cannot_be_resumed_fails_with_resume_failed(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    session = runner_session(fake_model(text("never sent")))
    missing = str(uuid.uuid4())

    run = await session.run("hello again", resume_provider_session_id=missing)

    assert run.outcome.status is RunStatus.FAILED
    assert run.outcome.error_code == "resume_failed"
    assert missing in (run.outcome.error or "")
    assert "No conversation found" in (run.outcome.error or "")


async def test_config_dir_holds_the_transcripts(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession, tmp_path: Path
) -> None:
    session = runner_session(fake_model(text("Stored elsewhere.")), config_dir=tmp_path / "cfg")

    run = await session.run("hello")

    assert run.outcome.status is RunStatus.COMPLETED, run.outcome
    [transcript] = (tmp_path / "cfg" / "projects").rglob("*.jsonl")
    assert transcript.name == f"{session.new_provider_session_id}.jsonl"
    assert not (session.home / ".claude" / "projects").exists()


@pytest.mark.parametrize(
    ("output", "code"),
    [
        ("Segmentation fault (core dumped)", "cli_crashed"),
        ("{not json at all", "cli_protocol_error"),
    ],
)
async def test_a_broken_claude_executable_fails_the_run(
    fake_model: StartFakeModel,
    runner_session: MakeRunnerSession,
    tmp_path: Path,
    output: str,
    code: str,
) -> None:
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho '{output}'\necho 'fatal: the fake CLI gave up' >&2\nexit 1\n")
    fake.chmod(0o755)
    session = runner_session(fake_model(), cli_path=fake)

    run = await session.run("hello")

    assert run.outcome.status is RunStatus.FAILED, run.outcome
    assert run.outcome.error_code == code
    if code == "cli_crashed":
        assert "the fake CLI gave up" in (run.outcome.error or "")
    assert session.runner.live_count == 0


async def test_a_cli_that_dies_mid_run_fails_with_cli_crashed(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    session = runner_session(fake_model())
    session.server.add_turns(slow("y" * 400, 0.05, chunk_chars=4))
    task = asyncio.create_task(session.run("talk"))
    await _wait_for(lambda: any(e.kind is EventKind.DELTA for e in session.events))
    cli = session.events[0].pid
    assert cli is not None

    os.kill(cli, signal.SIGKILL)
    run = await task

    assert run.outcome.status is RunStatus.FAILED
    assert run.outcome.error_code == "cli_crashed"
    assert "Claude Code" in (run.outcome.error or "")
    assert session.runner.live_count == 0


async def test_server_secrets_never_reach_tool_commands(
    fake_model: StartFakeModel,
    runner_session: MakeRunnerSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = fake_model(tool_use("Bash", {"command": "env > seen-env.txt"}), text("done"))
    canary = f"canary-{uuid.uuid4().hex}"
    # The server's real environment: the SDK hands all of it to the process it starts.
    monkeypatch.setenv("POCKETCODE_SECRET_KEY", canary)
    monkeypatch.setenv("POCKETCODE_DATABASE_URL", f"postgresql://app:{canary}@db/app")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("HTTPS_PROXY", "")
    session = runner_session(server, server_env=None)
    env = {
        "HOME": str(session.home),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "IS_SANDBOX": "1",
    }

    run = await session.run("show the environment", env=env)

    assert run.outcome.status is RunStatus.COMPLETED, run.outcome
    seen = (session.project / "seen-env.txt").read_text()
    assert canary not in seen
    assert "POCKETCODE_SECRET_KEY" not in seen and "POCKETCODE_DATABASE_URL" not in seen
    lines = set(seen.splitlines())
    assert f"ANTHROPIC_BASE_URL={server.base_url}" in lines
    assert f"POCKETCODE_INSTANCE={session.runner.instance_id}" in lines
    assert f"POCKETCODE_JOB_ID={run.request.job_id}" in lines
    assert f"POCKETCODE_SESSION_ID={session.session_id}" in lines
    assert "POCKETCODE_ENV_KEEP" not in seen
    assert canary not in " ".join(psutil.Process(run.process.pid).environ().values())


def test_agent_environment_keeps_what_the_cli_needs_and_nothing_else() -> None:
    server = {
        "PATH": "/usr/bin",
        "HOME": "/home/dev",
        "LC_ALL": "C.UTF-8",
        "ANTHROPIC_BASE_URL": "https://gateway.example",
        "ANTHROPIC_API_KEY": "sk-ant",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost",
        "POCKETCODE_SECRET_KEY": "secret",
        "DATABASE_PASSWORD": "secret",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "CLAUDECODE": "1",
        "CLAUDE_PID": "42",
    }

    env = agent_environment(server, {"HOME": "/tmp/h"}, {"POCKETCODE_JOB_ID": "j"})

    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/tmp/h",
        "LC_ALL": "C.UTF-8",
        "ANTHROPIC_BASE_URL": "https://gateway.example",
        "ANTHROPIC_API_KEY": "sk-ant",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost",
        "POCKETCODE_JOB_ID": "j",
    }


def test_the_launcher_starts_a_new_session_with_only_the_kept_variables(
    tmp_path: Path,
) -> None:
    probe = tmp_path / "probe.sh"
    probe.write_text("#!/bin/sh\necho \"$(ps -o sid= -p $$ | tr -d ' ') $$\"\nenv\n")
    probe.chmod(0o755)
    launcher = write_launcher(tmp_path / "work", probe)
    env = {"PATH": os.defpath, "KEPT": "yes", "SECRET": "no", "POCKETCODE_ENV_KEEP": "PATH,KEPT"}

    shown = subprocess.run(
        [str(launcher)], env=env, capture_output=True, text=True, check=True, timeout=10
    ).stdout

    first, *variables = shown.splitlines()
    sid, pid = first.split()
    assert sid == pid  # its own session: a process-group kill never reaches the server
    assert "KEPT=yes" in variables
    assert not any(v.startswith(("SECRET=", "POCKETCODE_ENV_KEEP=")) for v in variables)
    assert oct(launcher.stat().st_mode & 0o777) == "0o700"
    assert write_launcher(tmp_path / "work", probe) == launcher  # written once


async def test_the_cli_and_the_tools_it_runs_get_the_lower_cpu_priority(
    fake_model: StartFakeModel, runner_session: MakeRunnerSession
) -> None:
    session = runner_session(fake_model(), nice=7)
    session.server.add_turns(tool_use("Bash", {"command": "ps -o ni= -p $$"}), text("Measured."))

    run = await session.run("how nice are you?")

    assert run.outcome.status is RunStatus.COMPLETED, run.outcome
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
    cli = session.runner.live_pid(session.session_id)
    assert cli is not None and os.getpriority(os.PRIO_PROCESS, cli) == expected
    # Its session's scheduling group too (a nice inside a group of its own does nothing).
    # Unprivileged, the kernel's one change per 0.1 s for the whole machine can still refuse
    # it when other CLIs start at the same moment (another test worker's).
    assert _autogroup_nice(cli) in ((None, 7) if os.geteuid() == 0 else (None, 0, 7))

    (result,) = run.of_type(MessageType.USER, "tool_result")
    assert result.text.strip() == str(expected)


def _autogroup_nice(pid: int) -> int | None:
    """The nice of the process's autogroup; None without autogroup scheduling."""
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if not enabled.exists() or enabled.read_text().strip() != "1":
        return None
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def test_a_cli_group_the_kernel_refused_to_lower_is_lowered_again_from_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unprivileged, the kernel takes one autogroup change per 0.1 s for the whole machine:
    the launcher's try can be refused when CLIs start together, and the runner tries again."""
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        if processes.autogroup_nice(child.pid) is None:
            pytest.skip("no autogroup scheduling on this kernel")
        real = processes._set_autogroup_nice
        answers = iter([False, False])  # "try later" twice, as the kernel says with EAGAIN
        calls: list[int] = []

        def refusing(pid: int, nice: int) -> bool | None:
            calls.append(pid)
            return next(answers, None) if len(calls) <= 2 else real(pid, nice)

        monkeypatch.setattr(processes, "_set_autogroup_nice", refusing)
        asyncio.run(processes.lower_autogroup(child.pid, 6))
        assert calls == [child.pid] * 3
        assert processes.autogroup_nice(child.pid) == 6
    finally:
        child.kill()
        child.wait(10)


def test_the_launcher_runs_the_cli_below_the_servers_cpu_priority(tmp_path: Path) -> None:
    target = tmp_path / "fake-cli"
    target.write_text("#!/bin/sh\nps -o ni= -p $$\n")
    target.chmod(0o700)
    env = {"PATH": os.defpath, "POCKETCODE_ENV_KEEP": "PATH"}
    ours = os.getpriority(os.PRIO_PROCESS, 0)

    def nice_of_cli(nice: int) -> int:
        launcher = write_launcher(tmp_path / f"work-{nice}", target, nice)
        run = subprocess.run([str(launcher)], env=env, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert nice_of_cli(10) == min(19, ours + 10)
    assert nice_of_cli(0) == ours
    with pytest.raises(ValueError):
        write_launcher(tmp_path / "work", target, 20)


def test_runners_writing_the_launcher_at_once_all_get_a_working_one(tmp_path: Path) -> None:
    """Two servers of one process starting their first CLI together once wrote into the same
    temporary file: ETXTBSY for one, FileNotFoundError for the other."""
    import concurrent.futures
    import threading

    target = tmp_path / "fake-cli"
    target.write_text('#!/bin/sh\necho "ran $*"\n')
    target.chmod(0o700)
    start = threading.Barrier(8)

    def write() -> Path:
        start.wait(10)
        return write_launcher(tmp_path / "work", target, 3)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        launchers = set(pool.map(lambda _: write(), range(8)))

    (launcher,) = launchers
    env = {"PATH": os.defpath, "POCKETCODE_ENV_KEEP": "PATH"}
    ran = subprocess.run([str(launcher), "ok"], env=env, capture_output=True, text=True, timeout=30)
    assert ran.stdout == "ran ok\n", ran.stderr
    assert not [p.name for p in (tmp_path / "work").iterdir() if p.name.endswith(".tmp")]


def test_the_launcher_becomes_the_cli_and_leaves_no_process_behind(tmp_path: Path) -> None:
    """The launcher filters the environment and then execs: the CLI runs as the very process
    the SDK started (its pid, which cancel and recovery record and signal), with no shell or
    Python left waiting in between. (Its start-up cost is measured in bench/, not here.)"""
    target = tmp_path / "fake-cli"
    target.write_text('#!/bin/sh\necho "$$ $*"\n')
    target.chmod(0o700)
    launcher = write_launcher(tmp_path / "work", target)

    process = subprocess.Popen(
        [str(launcher), "--print", "two words"], stdout=subprocess.PIPE, text=True
    )
    out, _ = process.communicate(timeout=30)

    assert process.returncode == 0
    assert out.split(" ", 1) == [str(process.pid), "--print two words\n"]


# --- process helpers -------------------------------------------------------------------------


def _spawn_marked(instance: str, job: str, *, new_session: bool = True) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.defpath,
        processes.MARKER_INSTANCE: instance,
        processes.MARKER_JOB_ID: job,
        processes.MARKER_SESSION_ID: "s",
    }
    # A parent that ignores SIGTERM, with a child in the same group: like a stuck CLI.
    script = "trap '' TERM; sleep 60 & wait"
    return subprocess.Popen(["/bin/sh", "-c", script], env=env, start_new_session=new_session)


def test_process_identity_survives_only_with_the_same_start_time() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        created = processes.process_create_time(process.pid)
        assert created is not None
        assert processes.is_same_process(process.pid, created)
        assert not processes.is_same_process(process.pid, created - 5)
    finally:
        process.kill()
        process.wait()
    assert not processes.is_same_process(process.pid, created)
    assert processes.process_create_time(process.pid) is None


def test_kill_process_group_escalates_to_sigkill() -> None:
    leader = _spawn_marked(f"i-{uuid.uuid4().hex}", "job")
    try:
        created = processes.process_create_time(leader.pid)
        assert created is not None
        _wait_for_sync(lambda: len(psutil.Process(leader.pid).children()) == 1)
        [child] = psutil.Process(leader.pid).children()
        started = time.monotonic()
        assert processes.kill_process_group(leader.pid, 0.3, create_time=created)
        assert time.monotonic() - started < 2
        leader.wait(timeout=5)
        assert leader.returncode == -signal.SIGKILL
        assert not _is_alive(child)
    finally:
        leader.kill()
        leader.wait()


def test_reap_orphans_kills_our_marked_processes_and_keeps_the_rest() -> None:
    instance = f"i-{uuid.uuid4().hex}"
    orphan = _spawn_marked(instance, "dead-job")
    kept = _spawn_marked(instance, "live-job")
    other = _spawn_marked(f"other-{uuid.uuid4().hex}", "dead-job")
    try:
        _wait_for_sync(
            lambda: len(processes.find_marked_processes(processes.MARKER_INSTANCE, instance)) == 4
        )
        reaped = processes.reap_orphans(instance, keep_job_ids={"live-job"}, grace=0.2)
        orphan.wait(timeout=5)
        assert orphan.pid in reaped and kept.pid not in reaped and other.pid not in reaped
        assert kept.poll() is None and other.poll() is None
        [survivor, _child] = sorted(
            processes.find_marked_processes(processes.MARKER_INSTANCE, instance),
            key=lambda p: p.pid,
        )
        assert survivor.pid == kept.pid
    finally:
        for process in (orphan, kept, other):
            processes.kill_process_group(process.pid, 0.1)
            process.wait()


# --- helpers ----------------------------------------------------------------------------------


def _marked(runner: ClaudeCodeRunner, name: str | None = None) -> list[psutil.Process]:
    found = processes.find_marked_processes(processes.MARKER_INSTANCE, runner.instance_id)
    return [p for p in found if name is None or p.name() == name]


def _is_alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _is_alive_pid(pid: int) -> bool:
    try:
        return _is_alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


async def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def _wait_for_sync(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
