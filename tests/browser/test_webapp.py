"""The web app in a real browser against a real server, the real CLI and the fake model."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pyotp
from playwright.sync_api import Page, expect

from pocketcode.devtools.fake_model import slow, text, thinking, tool_use
from pocketcode.devtools.fake_transcription import FakeTranscriptionServer
from tests.browser.conftest import Api, Screenshot
from tests.browser.stack import PASSWORD, USERNAME, BrowserStack

RUN_SECONDS = 60_000  # ms: a whole CLI run, start-up included, on a loaded machine


def send(page: Page, prompt: str) -> None:
    page.get_by_role("textbox", name="Prompt", exact=True).fill(prompt)
    page.get_by_role("button", name="Send prompt").click()


def open_chat(page: Page, session_id: str) -> None:
    page.goto(f"/#/sessions/{session_id}")
    expect(page.get_by_role("textbox", name="Prompt", exact=True)).to_be_visible()


def wait_idle(page: Page) -> None:
    expect(page.locator(".chat-head [data-status]")).to_have_attribute(
        "data-status", "idle", timeout=RUN_SECONDS
    )


def test_log_in_with_a_password_and_log_out(
    anonymous_page: Page, stack: BrowserStack, screenshot: Screenshot
) -> None:
    page = anonymous_page
    page.goto("/")
    expect(page.get_by_role("heading", name="Log in to pocketcode")).to_be_visible()
    screenshot(page, "login")

    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert").first).to_contain_text(re.compile("invalid|incorrect", re.I))

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Sessions")).to_be_visible()

    page.get_by_role("link", name="Account").click()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to pocketcode")).to_be_visible()
    # The session cookie no longer works.
    assert page.context.request.get(f"{stack.url}/api/auth/me").status == 401
    # `/` still answers JSON to clients that do not ask for a page (PokéCode's app).
    probe = page.context.request.get(f"{stack.url}/", headers={"Accept": "application/json"})
    assert probe.json()["name"] == "pocketcode"


def test_two_factor_enrollment_then_login_asks_for_a_code(
    page: Page, stack: BrowserStack, api: Api
) -> None:
    page.goto("/#/account")
    page.get_by_role("button", name="Set up two-factor authentication").click()
    secret = page.get_by_label("TOTP secret").inner_text()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm").click()
    codes = page.get_by_label("Recovery codes").locator("li")
    expect(codes.first).to_be_visible()
    recovery = codes.first.inner_text().strip()
    try:
        page.get_by_role("button", name="Done").click()
        page.get_by_role("button", name="Log out").click()
        # The login screen is drawn once logout has answered: fill it only then.
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        expect(page.get_by_label("Authentication code")).to_be_hidden()

        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        code_field = page.get_by_label("Authentication code")
        expect(code_field).to_be_visible()
        # The code step, answered with a recovery code (a TOTP code used at enrollment
        # cannot be used again in the same period).
        page.get_by_text("Use a recovery code instead").click()
        page.get_by_label("Recovery code").fill(recovery)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
    finally:
        # The module's other tests log in with the password alone: turned off headless, as an
        # owner who lost the phone would, so that it happens even if this test failed midway.
        subprocess.run(
            [sys.executable, "-m", "pocketcode", "totp", "disable", "--username", USERNAME],
            env=stack.env,
            capture_output=True,
            timeout=60,
            check=False,
        )


def test_create_a_session_from_the_folder_picker(
    page: Page, stack: BrowserStack, screenshot: Screenshot
) -> None:
    page.goto("/#/sessions/new")
    projects = page.get_by_role("list", name="Projects", exact=True)
    # Git repositories come first, marked as such.
    first = projects.get_by_role("button").first
    expect(first).to_contain_text("demo-app")
    expect(first).to_contain_text("git")
    screenshot(page, "new-session")
    first.click()
    expect(page.get_by_label("Project folder")).to_have_value(str(stack.project))
    page.get_by_label("Title").fill("Greeting work")
    page.get_by_role("button", name="Start session").click()

    expect(page.get_by_role("heading", name="Greeting work")).to_be_visible()
    assert re.search(r"#/sessions/[0-9a-f-]{36}$", page.url)

    page.get_by_role("link", name="Back to sessions").click()
    item = page.locator(".session-item", has_text="Greeting work")
    expect(item).to_contain_text(str(stack.project))
    expect(item.locator("[data-status]")).to_have_text("idle")
    screenshot(page, "sessions")
    # The theme follows the system until toggled; the choice is kept.
    page.get_by_role("button", name="Switch theme").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    screenshot(page, "sessions-light")
    page.get_by_role("button", name="Switch theme").click()

    # Rename, search, archive.
    item.get_by_role("button", name="Rename Greeting work").click()
    page.get_by_label("New name").fill("Nicer greeting")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".session-item", has_text="Nicer greeting")).to_be_visible()
    page.get_by_label("Search sessions").fill("no such session")
    expect(page.get_by_text("No session matches.")).to_be_visible()
    page.get_by_label("Search sessions").fill("nicer")
    renamed = page.locator(".session-item", has_text="Nicer greeting")
    renamed.get_by_role("button", name="Archive Nicer greeting").click()
    expect(renamed).to_have_count(0)
    page.get_by_role("tab", name="Archived").click()
    expect(page.locator(".session-item", has_text="Nicer greeting")).to_be_visible()


def test_a_prompt_streams_its_answer_then_shows_turn_usage(
    page: Page, stack: BrowserStack, api: Api
) -> None:
    project = stack.root / "with-commands"
    (project / ".claude" / "commands").mkdir(parents=True, exist_ok=True)
    (project / ".claude" / "commands" / "review.md").write_text("Review the last change.\n")
    session_id = api.new_session(projectPath=str(project))
    answer = "Streaming " + " ".join(f"word{i}" for i in range(60)) + " THE END."
    stack.model.add_turns(thinking("Let me think about words.") + slow(answer, 0.05, chunk_chars=8))
    open_chat(page, session_id)
    send(page, "Count some words")

    expect(page.locator(".msg.user")).to_have_text("Count some words")
    # While the model writes, a live bubble grows, before the stored message exists.
    draft = page.locator(".msg.assistant.draft")
    expect(draft).to_contain_text("Streaming", timeout=RUN_SECONDS)
    partial = draft.inner_text()
    assert "THE END." not in partial
    final = page.locator(".msg.assistant:not(.draft)")
    expect(final).to_have_text(answer, timeout=RUN_SECONDS)
    expect(draft).to_have_count(0)
    # Thinking is shown folded.
    thought = page.locator("details.thinking:not(.draft)")
    expect(thought).to_have_count(1)
    assert thought.get_attribute("open") is None
    expect(page.get_by_label("Turn usage")).to_contain_text(
        re.compile(r"Turn done · \d+ in · \d+ out · .*\$\d")
    )
    wait_idle(page)
    expect(page.get_by_label("Session tokens and cost")).to_contain_text(
        re.compile(r"[1-9]\d* out · .*\$0\.\d+")
    )

    # The model and permission mode chosen here stick to the session.
    page.get_by_label("Model").select_option("opus")
    page.get_by_label("Permission mode").select_option("plan")
    expect(page.get_by_role("alert")).to_contain_text("Saved")
    page.reload()
    expect(page.get_by_label("Model")).to_have_value("opus")
    expect(page.get_by_label("Permission mode")).to_have_value("plan")
    session = api.call("GET", f"/api/sessions/{session_id}")
    assert (session["model"], session["permissionMode"]) == ("opus", "plan")

    # Slash commands of the project are offered while typing one.
    page.get_by_role("textbox", name="Prompt", exact=True).fill("/rev")
    suggestion = page.get_by_role("listbox", name="Suggestions").get_by_role("option")
    expect(suggestion).to_have_text(re.compile("/review"))
    suggestion.get_by_role("button").click()
    expect(page.get_by_role("textbox", name="Prompt", exact=True)).to_have_value("/review ")


def test_an_edit_asks_permission_shows_a_diff_and_changes_the_file(
    page: Page, stack: BrowserStack, api: Api, screenshot: Screenshot
) -> None:
    session_id = api.new_session(
        permission_mode="default", projectPath=str(stack.project), title="Make it friendlier"
    )
    app = stack.project / "src" / "app.py"
    stack.model.add_turns(
        tool_use(
            "Edit",
            {
                "file_path": str(app),
                "old_string": 'return "Hello, " + name',
                "new_string": 'return f"Hello, {name}! Nice to see you."',
            },
        ),
        tool_use("Read", {"file_path": str(stack.project / "README.md")}),
        text("The greeting is **friendlier** now. Next: a test."),
    )
    open_chat(page, session_id)
    send(page, "Make the greeting friendlier")

    prompt = page.get_by_role("alertdialog", name="Permission request: Edit")
    expect(prompt).to_be_visible(timeout=RUN_SECONDS)
    expect(prompt.locator(".diff-line.del")).to_contain_text('return "Hello, " + name')
    expect(prompt.locator(".diff-line.add")).to_contain_text("Nice to see you.")
    expect(page.locator(".chat-head [data-status]")).to_have_text("waiting for approval")
    screenshot(page, "permission")
    assert "Nice to see you" not in app.read_text()

    prompt.get_by_role("button", name="Allow", exact=True).click()
    expect(prompt).to_have_count(0)
    expect(page.get_by_text("The greeting is friendlier now.")).to_be_visible(timeout=RUN_SECONDS)
    assert 'return f"Hello, {name}! Nice to see you."' in app.read_text()

    card = page.locator('section.tool[data-tool="Edit"]')
    expect(card.locator(".diff-line.del .diff-text")).to_have_text('    return "Hello, " + name')
    expect(card.locator(".diff-line.add .diff-text")).to_have_text(
        '    return f"Hello, {name}! Nice to see you."'
    )
    expect(card.locator(".tool-status")).to_have_attribute("aria-label", "done")
    read = page.locator('section.tool[data-tool="Read"]')
    expect(read.locator(".tool-target")).to_have_text(str(stack.project / "README.md"))
    expect(read.locator(".output")).to_contain_text("A project for the browser tests.")
    wait_idle(page)
    expect(page.get_by_label("Session tokens and cost")).to_contain_text(
        re.compile(r"[1-9]\d* out")
    )
    screenshot(page, "chat")
    page.set_viewport_size({"width": 1280, "height": 900})
    screenshot(page, "chat-desktop")
    page.set_viewport_size({"width": 390, "height": 844})

    page.get_by_role("link", name="Changes").click()
    page.locator("a.change", has_text="src/app.py").click()
    diff = page.get_by_role("table", name="Diff of src/app.py")
    expect(diff.locator(".diff-line.add")).to_contain_text("Nice to see you.")
    screenshot(page, "git-diff")

    page.goto(f"/#/sessions/{session_id}/files")
    page.locator("a.file", has_text="README.md").click()
    expect(page.get_by_label(re.compile("Content of README.md"))).to_contain_text("# Demo app")
    page.goto(f"/#/sessions/{session_id}/files")
    expect(page.locator("a.file", has_text="src")).to_be_visible()
    screenshot(page, "files")


def test_stop_ends_a_slow_run(page: Page, stack: BrowserStack, api: Api) -> None:
    session_id = api.new_session()
    ending = "THIS ENDING IS NEVER REACHED"
    stack.model.add_turns(slow("Thinking out loud " * 120 + ending, 0.1, chunk_chars=8))
    open_chat(page, session_id)
    send(page, "Take your time")
    expect(page.locator(".msg.assistant.draft")).to_contain_text("out loud", timeout=RUN_SECONDS)
    # A prompt sent meanwhile waits in the queue, and can be cancelled there.
    send(page, "A second thought")
    queued = page.get_by_label("Queued prompts").locator("li")
    expect(queued).to_have_text(re.compile("A second thought"))
    queued.get_by_role("button", name="Cancel queued prompt").click()
    expect(queued).to_have_count(0)
    stop = page.get_by_role("button", name="Stop the run")
    expect(stop).to_be_visible()
    stop.click()

    wait_idle(page)
    expect(stop).to_be_hidden()
    expect(page.locator(".msg.assistant.draft")).to_have_count(0)
    assert ending not in page.locator(".messages").inner_text()
    session = api.call("GET", f"/api/sessions/{session_id}")
    assert session["isWorking"] is False
    assert session["lastJobStatus"] == "cancelled"


def test_reload_mid_run_shows_every_message_exactly_once(
    page: Page, stack: BrowserStack, api: Api
) -> None:
    session_id = api.new_session()
    stack.model.add_turns(
        tool_use("Bash", {"command": "echo first-output", "description": "First"}),
        tool_use("Bash", {"command": "echo second-output", "description": "Second"}),
        slow("All done, " + "and then some " * 40 + "FINISHED.", 0.05, chunk_chars=8),
    )
    open_chat(page, session_id)
    send(page, "Run two commands")
    expect(page.locator(".output", has_text="first-output")).to_be_visible(timeout=RUN_SECONDS)

    page.reload()  # mid-run: the last reply is still streaming or yet to come
    expect(page.get_by_text("FINISHED.")).to_be_visible(timeout=RUN_SECONDS)
    wait_idle(page)

    seqs = page.locator("[data-seq]").evaluate_all("els => els.map(e => e.dataset.seq)")
    assert seqs, "no stored message shown"
    duplicated = {seq: n for seq, n in Counter(seqs).items() if n > 1}
    assert not duplicated, duplicated
    assert [int(s) for s in seqs] == sorted(int(s) for s in seqs)
    expect(page.locator(".msg.user")).to_have_count(1)
    bash = page.locator('section.tool[data-tool="Bash"]')
    expect(bash).to_have_count(2)
    expect(bash.nth(0).locator(".output")).to_have_text("first-output")
    expect(bash.nth(1).locator(".output")).to_have_text("second-output")
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(page.get_by_label("Turn usage")).to_have_count(1)


def test_a_dropped_connection_shows_the_indicator_and_resumes_without_loss(
    page: Page, stack: BrowserStack, api: Api
) -> None:
    session_id = api.new_session()
    stack.model.add_turns(
        slow("Part one, " + "streaming along " * 30 + "END-ONE.", 0.05, chunk_chars=8)
        + tool_use("Bash", {"command": "echo while-offline", "description": "Offline"}),
        text("After the outage: END-TWO."),
    )
    open_chat(page, session_id)
    send(page, "Keep going while I drop off")
    expect(page.locator(".msg.assistant.draft")).to_contain_text("Part one", timeout=RUN_SECONDS)

    page.context.set_offline(True)
    indicator = page.get_by_role("status").filter(has_text="Reconnecting")
    expect(indicator).to_be_visible(timeout=20_000)
    page.wait_for_timeout(4000)  # the run goes on meanwhile
    page.context.set_offline(False)
    expect(indicator).to_be_hidden(timeout=20_000)

    expect(page.get_by_text("After the outage: END-TWO.")).to_be_visible(timeout=RUN_SECONDS)
    wait_idle(page)
    seqs = page.locator("[data-seq]").evaluate_all("els => els.map(e => e.dataset.seq)")
    assert len(seqs) == len(set(seqs)), Counter(seqs)
    expect(page.locator(".msg.assistant", has_text="END-ONE.")).to_have_count(1)
    expect(page.locator('section.tool[data-tool="Bash"] .output')).to_have_text("while-offline")
    expect(page.locator(".msg.user")).to_have_count(1)


def test_model_output_with_html_and_javascript_links_never_runs(
    page: Page, stack: BrowserStack, api: Api
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    session_id = api.new_session()
    hostile = (
        "Look: <img src=x onerror=\"window.__pwned='img';alert('img')\"> "
        "<script>window.__pwned='script'</script> "
        "[click me](javascript:window.__pwned='link';alert('link')) "
        '<a href="javascript:alert(1)">raw link</a> '
        "<svg><animate onbegin=\"window.__pwned='svg'\" attributeName=x dur=1s /></svg> "
        '<svg><a href="//evil.example/login"><text y="20">SVG-LINK</text></a></svg> '
        '<p id="toast">SHADOW-TOAST</p> <span class="toast">OVERLAY</span> '
        "END-OF-HOSTILE"
    )
    stack.model.add_turns(
        tool_use("WeirdTool", {"html": "<img src=y onerror=\"window.__pwned='tool'\">"}),
        text(hostile),
    )
    open_chat(page, session_id)
    send(page, "Say something nasty")
    message = page.locator(".msg.assistant", has_text="END-OF-HOSTILE")
    expect(message).to_be_visible(timeout=RUN_SECONDS)
    wait_idle(page)

    # The markdown link is shown without a javascript: target; clicking it does nothing.
    for name in ("click me", "raw link"):
        link = message.get_by_text(name)
        expect(link).to_be_visible()
        href = link.get_attribute("href")
        assert href is None or not href.strip().lower().startswith("javascript:")
        link.click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert page.locator("[onerror], [onbegin], .messages script").count() == 0
    # No SVG (its <a> escaped the link rules), and no id or class from the model: an id
    # shadowed the app's toast, a class borrowed its fixed overlay.
    assert message.locator("svg, area").count() == 0
    assert message.locator(".md [id], .md [class]").count() == 0
    expect(message).to_contain_text("SHADOW-TOAST")
    assert page.locator("#toast").count() == 1
    # The unknown tool's input is shown as text in a generic card.
    generic = page.locator('section.tool.generic[data-tool="WeirdTool"]')
    expect(generic).to_contain_text("<img src=y onerror=")


def test_settings_pricing_and_masked_keys(
    page: Page, stack: BrowserStack, api: Api, screenshot: Screenshot
) -> None:
    page.goto("/#/settings")
    key_form = page.get_by_role("form", name="Anthropic API key")
    key_form.get_by_role("textbox", name="Anthropic API key").fill("sk-ant-test-0123456789abcdef")
    key_form.get_by_role("button", name="Save").click()
    status = page.get_by_label("Anthropic API key status")
    expect(status).to_contain_text("Set:")
    expect(status).not_to_contain_text("0123456789abcdef")
    assert page.get_by_role("textbox", name="Anthropic API key").input_value() == ""

    pricing = page.get_by_role("form", name="Model prices")
    pricing.get_by_role("button", name="Add model").click()
    row = pricing.locator("tbody tr").last
    row.get_by_label("Model").fill("my-local-model")
    row.get_by_label("Input $/M").fill("1.5")
    row.get_by_label("Output $/M").fill("7")
    pricing.get_by_role("button", name="Save prices").click()
    expect(page.get_by_role("rowheader", name="my-local-model")).to_be_visible()
    prices = {p["modelName"]: p for p in api.call("GET", "/api/pricing")["prices"]}
    assert prices["my-local-model"]["inputPricePerMillion"] == 1.5
    assert prices["my-local-model"]["outputPricePerMillion"] == 7
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "settings")


def test_a_sub_agent_run_is_grouped_under_its_call(
    page: Page, stack: BrowserStack, api: Api
) -> None:
    session_id = api.new_session()
    call = {
        "description": "count files",
        "prompt": "Count the files",
        "subagent_type": "general-purpose",
        "run_in_background": False,
    }
    stack.model.add_turns(tool_use("Agent", call), text("The agent counted them."))
    stack.model.add_turns(text("SUB-AGENT: there are no files."), subagent=True)
    open_chat(page, session_id)
    send(page, "Count files with an agent")
    expect(page.get_by_text("The agent counted them.")).to_be_visible(timeout=RUN_SECONDS)
    wait_idle(page)

    card = page.locator('section.tool[data-tool="Agent"]')
    expect(card.locator(".tool-target")).to_have_text("general-purpose: count files")
    # The sub-agent's own messages (the CLI streams its prompt) sit inside its card, and its
    # report is the card's result, not a message of the main conversation.
    expect(card.get_by_label("Sub-agent messages")).to_contain_text("Count the files")
    expect(card.locator(".tool-result")).to_contain_text("SUB-AGENT: there are no files.")
    expect(page.locator(".messages > .msg.user")).to_have_text(["Count files with an agent"])
    expect(card.locator(".tool-status")).to_have_attribute("aria-label", "done")


def test_voice_input_transcribes_a_recording(page: Page, stack: BrowserStack, api: Api) -> None:
    session_id = api.new_session()
    open_chat(page, session_id)
    expect(page.get_by_text("Voice input is off")).to_be_visible()
    expect(page.get_by_role("button", name="Record voice input")).to_have_count(0)

    with FakeTranscriptionServer(api_key="sk-voice-test-key") as fake:
        try:
            page.goto("/#/settings")
            url_form = page.get_by_role("form", name="Transcription endpoint")
            url_form.get_by_role("textbox").fill(fake.base_url)
            url_form.get_by_role("button", name="Save").click()
            expect(page.get_by_role("alert")).to_contain_text("saved")
            key_form = page.get_by_role("form", name="Transcription API key")
            key_form.get_by_role("textbox").fill("sk-voice-test-key")
            key_form.get_by_role("button", name="Save").click()
            expect(page.get_by_label("Transcription API key status")).to_contain_text("Set:")

            open_chat(page, session_id)
            page.get_by_role("button", name="Record voice input").click()
            stop = page.get_by_role("button", name="Stop recording")
            expect(stop).to_be_visible()
            page.wait_for_timeout(1500)  # Chromium's fake microphone plays a tone
            stop.click()
            expect(page.get_by_role("textbox", name="Prompt", exact=True)).to_have_value(
                re.compile(r"^\(fake transcription of \d+ bytes\)$"), timeout=20_000
            )
            [request] = fake.requests
            assert request.authorized
            assert request.size > 1000  # a real recording, not an empty upload
        finally:
            for key in ("transcription_url", "transcription_api_key"):
                api.request.fetch(
                    f"{stack.url}/api/settings/{key}", method="DELETE", headers=api.headers
                )


def test_the_service_worker_caches_the_shell_and_never_the_api(page: Page) -> None:
    """Opening an /api/ URL in a tab (a link in a message can) must not leave its private
    answer in Cache Storage, where it would be served without a login while offline."""
    page.goto("/")
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.reload()  # now controlled by the worker
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    page.goto("/api/sessions")
    page.goto("/assets/app.css")
    page.goto("/")
    cached = page.evaluate(
        """async () => {
            const urls = [];
            for (const name of await caches.keys()) {
                const cache = await caches.open(name);
                for (const request of await cache.keys()) urls.push(new URL(request.url).pathname);
            }
            return urls;
        }"""
    )
    assert "/assets/app.css" in cached and "/" in cached
    assert [url for url in cached if url.startswith("/api/")] == []
