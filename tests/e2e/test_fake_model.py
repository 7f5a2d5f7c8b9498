"""The scripted fake model drives the real, bundled Claude Code CLI: nothing here is mocked."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from pocketcode.devtools.fake_model import (
    EXHAUSTED_TEXT,
    FakeModelServer,
    Script,
    error,
    load_script,
    malformed,
    script_to_json,
    slow,
    stall,
    text,
    thinking,
    tool_use,
)
from pocketcode.domain.errors import InvalidInput
from tests.e2e.claude_runs import ClaudeCli
from tests.e2e.conftest import StartFakeModel


def test_text_answer_arrives_and_the_transcript_is_written(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(text("Hello from the fake model."))

    run = claude.run(server, "say hello")

    assert run.returncode == 0, run.stderr
    assert run.of_type("system")[0]["subtype"] == "init"
    assert run.assistant_texts == ["Hello from the fake model."]
    assert run.result["result"] == "Hello from the fake model."
    assert run.result["is_error"] is False
    usage = run.result["usage"]
    assert usage["output_tokens"] > 0
    assert usage["input_tokens"] + usage["cache_creation_input_tokens"] > 1000
    [request] = server.main_requests
    assert request.texts[-1] == "say hello"
    assert request.headers["x-api-key"] == "test-key"
    assert request.headers["x-claude-code-session-id"] == run.session_id
    transcript = claude.transcript_dir() / f"{run.session_id}.jsonl"
    types = [json.loads(line)["type"] for line in transcript.read_text().splitlines()]
    assert {"user", "assistant"} <= set(types)
    assert "Hello from the fake model." in transcript.read_text()


def test_thinking_then_text_and_the_exhausted_script_default(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(thinking("Six times seven.") + text("42"))

    first = claude.run(server, "what is 6*7?")
    second = claude.run(server, "and now?", "--resume", first.session_id)

    kinds = [block["type"] for block in first.assistant_blocks]
    assert kinds == ["thinking", "text"]
    assert first.assistant_blocks[0]["thinking"] == "Six times seven."
    assert first.result["result"] == "42"
    assert second.result["result"] == EXHAUSTED_TEXT
    assert second.result["is_error"] is False


def test_tools_write_edit_and_bash_change_the_project(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    notes = claude.project / "notes.txt"
    server = fake_model(
        tool_use("Write", {"file_path": str(notes), "content": "draft one\n"}),
        tool_use("Edit", {"file_path": str(notes), "old_string": "draft", "new_string": "final"}),
        tool_use("Bash", {"command": "cat notes.txt > copy.txt && echo copied"}),
        text("Notes written."),
    )

    run = claude.run(server, "write my notes", "--permission-mode", "bypassPermissions")

    assert run.result["result"] == "Notes written.", run.stderr
    assert notes.read_text() == "final one\n"
    assert (claude.project / "copy.txt").read_text() == "final one\n"
    tool_uses = [b for b in run.assistant_blocks if b["type"] == "tool_use"]
    assert [b["name"] for b in tool_uses] == ["Write", "Edit", "Bash"]
    assert all(b["id"].startswith("toolu_") for b in tool_uses)
    assert len(run.of_type("user")) == 3
    # Each follow-up request carries the results of every tool call so far.
    requests = server.main_requests
    assert len(requests) == 4
    last_results = requests[3].tool_results
    assert [r["tool_use_id"] for r in last_results] == [b["id"] for b in tool_uses]
    assert not any(r.get("is_error") for r in last_results)
    assert "copied" in json.dumps(last_results[2]["content"])
    assert len({line["message"]["id"] for line in run.of_type("assistant")}) == 4


def test_several_tool_calls_in_one_message(claude: ClaudeCli, fake_model: StartFakeModel) -> None:
    server = fake_model(
        tool_use("Bash", {"command": "echo a > a.txt"}) + tool_use("Bash", {"command": "echo b"}),
        text("both ran"),
    )

    run = claude.run(server, "run both", "--allowedTools", "Bash")

    assert run.result["result"] == "both ran"
    assert (claude.project / "a.txt").read_text() == "a\n"
    assert len(server.main_requests[1].tool_results) == 2


def test_resume_in_a_new_process_sends_the_earlier_conversation(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(text("The first answer."), text("The second answer."))

    first = claude.run(server, "first question")
    second = claude.run(server, "second question", "--resume", first.session_id)

    assert second.result["result"] == "The second answer."
    assert second.session_id == first.session_id
    resumed = server.main_requests[1]
    texts = resumed.texts
    assert texts.index("first question") < texts.index("The first answer.")
    assert texts[-1] == "second question"
    assert [m["role"] for m in resumed.messages if m["role"] != "system"][-3:] == [
        "user",
        "assistant",
        "user",
    ]


@pytest.mark.parametrize(
    ("status", "cli_error"),
    [
        (401, "authentication_failed"),
        (429, "rate_limit"),
        (500, "server_error"),
        (529, "server_error"),
    ],
)
def test_api_errors_end_the_run_with_is_error(
    claude: ClaudeCli, fake_model: StartFakeModel, status: int, cli_error: str
) -> None:
    server = fake_model(error(status), text("never sent"))

    run = claude.run(server, "hello")

    assert run.result["is_error"] is True
    assert run.result["api_error_status"] == status
    assert run.result["terminal_reason"] == "api_error"
    assert len(server.main_requests) == 1  # CLAUDE_CODE_MAX_RETRIES=0: no retry
    assert server.remaining_turns == 1
    # The CLI reports the failure as an assistant message flagged with its own error kind.
    [assistant] = run.of_type("assistant")
    assert assistant["error"] == cli_error
    assert str(status) in run.result["result"] or status == 401


def test_retries_are_reported_as_api_retry_lines(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(error(529), text("made it"))

    run = claude.run(server, "hello", max_retries=1)

    [retry] = [line for line in run.of_type("system") if line["subtype"] == "api_retry"]
    assert (retry["attempt"], retry["error_status"], retry["error"]) == (1, 529, "overloaded")
    assert run.result["is_error"] is False
    assert run.result["result"] == "made it"
    assert len(server.main_requests) == 2


def test_a_stall_on_the_stream_and_on_the_fallback_fails_the_run(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(stall(0.5), stall(0.5), text("never sent"))

    run = claude.run(server, "hello")

    assert run.result["is_error"] is True
    assert [r.body["stream"] for r in server.main_requests] == [True, False]


def test_error_json_and_headers_match_the_real_api(fake_model: StartFakeModel) -> None:
    server = fake_model(error(429, "slow down", retry_after=7), error(529))
    body = {"model": "m", "max_tokens": 32000, "tools": [], "messages": []}

    limited = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=5)
    overloaded = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=5)

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.headers["request-id"].startswith("req_")
    assert limited.json()["type"] == "error"
    assert limited.json()["error"] == {"type": "rate_limit_error", "message": "slow down"}
    assert overloaded.status_code == 529
    assert overloaded.json()["error"]["type"] == "overloaded_error"
    assert overloaded.headers["x-should-retry"] == "true"


def test_a_slow_stream_is_seen_while_it_streams(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    words = " ".join(f"word{i}" for i in range(20))
    server = fake_model(slow(words, delay_per_chunk=0.1, chunk_chars=7))
    process = claude.start(server, "talk slowly", "--include-partial-messages")
    watchdog = threading.Timer(20, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        first_delta_at = None
        for line in process.stdout:
            event = json.loads(line)
            if event["type"] == "stream_event" and event["event"]["type"] == "content_block_delta":
                first_delta_at = time.monotonic()
                [request] = server.main_requests
                assert request.finished_at is None  # the reply is still being streamed
                break
        assert first_delta_at is not None
        rest = [json.loads(line) for line in process.stdout]
        process.wait()
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    [request] = server.main_requests
    assert request.finished_at is not None
    assert request.finished_at - first_delta_at > 1.0
    assert rest[-1]["type"] == "result"
    assert rest[-1]["result"] == words


def test_a_broken_stream_is_retried_once_without_streaming(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(malformed(), text("recovered"))

    run = claude.run(server, "hello")

    assert run.result["result"] == "recovered"
    broken, fallback = server.main_requests
    assert broken.body["stream"] is True
    assert fallback.body["stream"] is False  # the CLI's non-streaming fallback


def test_replies_by_prompt_go_to_their_prompt_whatever_the_order(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    """`by_prompt`: a request is answered by the text of its last user message, every time
    (nothing is consumed), so CLIs whose requests arrive in any order each get their own
    reply; a prompt no key matches takes the ordered turns."""
    server = fake_model(
        text("in line"),
        by_prompt={"[alpha]": text("the alpha reply"), "[beta]": text("the beta reply")},
    )

    beta = claude.run(server, "Work [beta], please.")
    alpha = claude.run(server, "Work [alpha], please.")
    again = claude.run(server, "Once more [beta].", "--resume", beta.session_id)
    other = claude.run(server, "Something else.")

    assert beta.result["result"] == "the beta reply"
    assert alpha.result["result"] == "the alpha reply"
    # Asked again (the resumed request carries the first prompt too): the same reply.
    assert again.result["result"] == "the beta reply"
    assert "Once more [beta]." in server.main_requests[2].last_user_text
    assert other.result["result"] == "in line"
    assert server.remaining_turns == 0


def test_compaction_does_not_consume_scripted_turns(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    server = fake_model(text("before compaction"), text("after compaction"))

    first = claude.run(server, "hello")
    compacted = claude.run(server, "/compact", "--resume", first.session_id)
    after = claude.run(server, "go on", "--resume", first.session_id)

    assert compacted.result["is_error"] is False
    assert [r.kind for r in server.requests] == ["main", "side", "main"]
    assert after.result["result"] == "after compaction"


def test_subagent_requests_take_their_own_turns(
    claude: ClaudeCli, fake_model: StartFakeModel
) -> None:
    agent_call = {
        "description": "count files",
        "prompt": "Count the files",
        "subagent_type": "general-purpose",
        "run_in_background": False,
    }
    server = fake_model(
        tool_use("Agent", agent_call),
        text("The agent counted them."),
        subagent_turns=[text("There are no files.")],
    )

    run = claude.run(server, "count files", "--permission-mode", "bypassPermissions")

    assert run.result["result"] == "The agent counted them.", run.stderr
    [subagent] = [r for r in server.requests if r.kind == "subagent"]
    assert subagent.texts[-1] == "Count the files"
    assert "There are no files." in json.dumps(server.main_requests[1].tool_results)


def test_stop_is_prompt_even_with_a_stalled_stream_open() -> None:
    server = FakeModelServer([stall(60)]).start()
    body = {"model": "m", "max_tokens": 32000, "tools": [], "stream": True, "messages": []}
    statuses: list[int] = []

    def call() -> None:
        with httpx.stream("POST", f"{server.base_url}/v1/messages", json=body, timeout=30) as r:
            statuses.append(r.status_code)
            r.read()

    client = threading.Thread(target=call)
    client.start()
    deadline = time.monotonic() + 5
    while not statuses and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    server.stop()
    stopped_in = time.monotonic() - started
    client.join(timeout=5)

    assert statuses == [200]  # headers came before the stall
    assert stopped_in < 2
    assert not client.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "fake-model"]


def test_count_tokens_and_unknown_paths(fake_model: StartFakeModel) -> None:
    server = fake_model()
    counted = httpx.post(
        f"{server.base_url}/v1/messages/count_tokens",
        json={"model": "m", "messages": [{"role": "user", "content": "x" * 400}]},
        timeout=5,
    )
    unknown = httpx.get(f"{server.base_url}/v1/whatever", timeout=5)

    assert counted.json()["input_tokens"] >= 100
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found_error"
    assert [(r.kind, r.path) for r in server.requests] == [
        ("count_tokens", "/v1/messages/count_tokens"),
        ("other", "/v1/whatever"),
    ]


def test_scripts_load_from_json(tmp_path: Path) -> None:
    script = Script(
        turns=[
            thinking("hmm") + text("hi"),
            tool_use("Write", {"file_path": "/tmp/x", "content": "y"}) + tool_use("Read", {}),
            error(529),
            slow("s l o w", 0.2),
            stall(3),
            malformed(),
        ],
        subagent_turns=[text("sub")],
    )
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script_to_json(script)))

    assert load_script(path) == script
    keyed = Script(by_prompt={"[one]": text("first"), "[two]": slow("second", 0.1)})
    path.write_text(json.dumps(script_to_json(keyed)))
    assert load_script(path) == keyed
    for bad in ({"by_prompt": []}, {"by_prompt": {"": {"type": "text", "text": "x"}}}, {"x": 1}):
        path.write_text(json.dumps(bad))
        with pytest.raises(InvalidInput, match="by_prompt"):
            load_script(path)
    path.write_text(json.dumps([{"type": "text", "text": "a"}, {"type": "error", "status": 401}]))
    assert load_script(path).turns == [text("a"), error(401)]
