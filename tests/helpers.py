"""Small helpers shared by the test modules."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import pytest

from pocketcode.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `pocketcode ARGS…` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err


def run_in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run `work(i)` on `count` threads released together; re-raise what any of them raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def runner(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


async def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `check` (run in a thread: it may touch the database or /proc) until it holds."""
    deadline = anyio.current_time() + seconds
    while not await anyio.to_thread.run_sync(check):
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await anyio.sleep(0.05)
