"""Our encoding of a project path into Claude Code's transcript folder name agrees with the
real bundled CLI, for the awkward paths users have."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pocketcode.devtools.fake_model import text
from pocketcode.domain.claude_paths import encode_project_dir_name, js_string_hash
from tests.e2e.claude_runs import ClaudeCli
from tests.e2e.conftest import StartFakeModel

AWKWARD_NAMES = [
    "my.app_v2 (copy)",
    "ünïcödé-プロジェクト",
    "emoji-🚀-rocket",
    "x" * 230,
]


@pytest.mark.parametrize("name", AWKWARD_NAMES, ids=["punctuation", "unicode", "emoji", "long"])
def test_transcript_folder_matches_the_cli(
    claude: ClaudeCli, fake_model: StartFakeModel, tmp_path: Path, name: str
) -> None:
    project = tmp_path / "work" / name
    project.mkdir(parents=True)
    server = fake_model(text("ok"))
    run = dataclasses.replace(claude, project=project).run(server, "hi")
    assert run.returncode == 0, run.stderr
    expected = claude.home / ".claude" / "projects" / encode_project_dir_name(str(project))
    assert (expected / f"{run.session_id}.jsonl").is_file(), sorted(
        path.name for path in (claude.home / ".claude" / "projects").iterdir()
    )


def test_js_string_hash_matches_javascript() -> None:
    # Values computed with JavaScript's `(h << 5) - h + c | 0`, then Math.abs.
    assert js_string_hash("") == 0
    assert js_string_hash("a") == 97
    assert js_string_hash("hello") == 99162322
    assert js_string_hash("🚀") == 0xD83D * 31 + 0xDE80
