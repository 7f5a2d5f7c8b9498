"""Finding and killing the processes pocketcode started, by pid + start time + an env marker.

Every agent process is started with marker variables in its environment (`MARKER_INSTANCE`,
`MARKER_JOB_ID`, `MARKER_SESSION_ID`), which its children (Bash tool commands, which the CLI
runs in sessions of their own, out of reach of a process-group kill) inherit. A pid alone is
not an identity: a pid is reused, so a stored pid is only trusted together with the process's
create time (`is_same_process`).

Everything here is blocking (psutil reads /proc); call it from a thread in async code — but
`lower_autogroup`, a coroutine that waits between its retries (its writes to /proc take no time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable

import psutil  # type: ignore[import-untyped]  # no stubs in the dependencies

logger = logging.getLogger(__name__)

MARKER_INSTANCE = "POCKETCODE_INSTANCE"
MARKER_JOB_ID = "POCKETCODE_JOB_ID"
MARKER_SESSION_ID = "POCKETCODE_SESSION_ID"

_POLL = 0.02
# create_time comes from /proc in clock ticks (1/100 s) plus the boot time: compare loosely.
_CREATE_TIME_TOLERANCE = 0.05


def process_create_time(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), or None if there is no such pid."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def is_same_process(pid: int, create_time: float) -> bool:
    """Whether `pid` is still the process that started at `create_time` (and not a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(abs(process.create_time() - create_time) < _CREATE_TIME_TOLERANCE)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


def _is_running(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def _group_members(pgid: int) -> list[psutil.Process]:
    members: list[psutil.Process] = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and _is_running(process):
                members.append(process)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def _wait_until(condition_met: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition_met():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)


def kill_process_group(pid: int, grace: float, *, create_time: float | None = None) -> bool:
    """SIGTERM the process group led by `pid`, then SIGKILL what is left after `grace` seconds.

    With `create_time`, nothing is sent unless `pid` is still that process (a reused pid is
    left alone). Returns True when no live member of the group remains.
    """
    if create_time is not None and not is_same_process(pid, create_time):
        return True
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return True
    if pgid != pid:
        # Not a group leader: signalling its group would hit whatever else is in it (the
        # server itself, when the process was started without a session of its own).
        logger.warning("process %s does not lead its process group; killing it alone", pid)
        return kill_processes([pid], grace) == []
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        if _wait_until(lambda: not _group_members(pgid), wait):
            return True
    return not _group_members(pgid)


def kill_processes(pids: Iterable[int], grace: float) -> list[int]:
    """SIGTERM each process, SIGKILL the ones still running after `grace` seconds. Returns the
    pids still running at the end (normally none)."""
    processes: list[psutil.Process] = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        alive = [p for p in processes if _is_running(p)]
        if not alive:
            return []
        for process in alive:
            try:
                process.send_signal(sig)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                logger.warning("not allowed to signal process %s", process.pid)
        _wait_until(lambda: not any(_is_running(p) for p in processes), wait)
    return [p.pid for p in processes if _is_running(p)]


def find_marked_processes(
    marker_name: str, value: str | None = None, *, also: dict[str, str] | None = None
) -> list[psutil.Process]:
    """Live processes whose environment has `marker_name` (equal to `value` when given, and
    every `also` variable equal to its value). Processes that cannot be read are skipped;
    this process is never listed."""
    found: list[psutil.Process] = []
    own_pid = os.getpid()
    for process in psutil.process_iter():
        if process.pid == own_pid:
            continue
        try:
            environ = process.environ()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
            continue
        if marker_name not in environ:
            continue
        if value is not None and environ[marker_name] != value:
            continue
        if also and any(environ.get(name) != wanted for name, wanted in also.items()):
            continue
        if _is_running(process):
            found.append(process)
    return found


def reap_orphans(
    instance_id: str | None = None,
    keep_job_ids: Collection[str] = (),
    *,
    grace: float = 2.0,
) -> list[int]:
    """Kill the processes marked by pocketcode (by `instance_id` only, when given), except those
    whose job marker is in `keep_job_ids`. Process groups first (an agent process leads its
    own group), then what lives outside them (tool commands in sessions of their own).
    Returns the pids that were signalled."""
    marked = find_marked_processes(MARKER_INSTANCE, instance_id)
    targets: list[psutil.Process] = []
    for process in marked:
        try:
            job_id = process.environ().get(MARKER_JOB_ID)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
            continue
        if job_id is not None and job_id in keep_job_ids:
            continue
        targets.append(process)
    if not targets:
        return []
    pids = [process.pid for process in targets]
    for process in targets:
        try:
            leads_group = os.getpgid(process.pid) == process.pid
        except ProcessLookupError:
            continue
        if leads_group:
            kill_process_group(process.pid, grace, create_time=process.create_time())
    survivors = kill_processes(pids, grace)
    if survivors:
        logger.warning("orphaned processes survived SIGKILL: %s", survivors)
    logger.info("reaped %d orphaned agent processes", len(pids))
    return pids


def autogroup_nice(pid: int) -> int | None:
    """The nice of a process's autogroup (the group a session's processes share the CPU as,
    under autogroup scheduling); None without it, or when the process is gone."""
    try:
        with open(f"/proc/{pid}/autogroup", encoding="ascii") as group:
            return int(group.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


async def lower_autogroup(pid: int, nice: int, attempts: int = 30) -> None:
    """Set the autogroup nice of a process of ours: unprivileged, the kernel takes one such
    change per 0.1 s for the whole machine (EAGAIN), so CLIs started together get theirs
    one after the other. Gives up when the process is gone or after `attempts`."""
    for _ in range(attempts):
        if _set_autogroup_nice(pid, nice) is not False:
            return
        await asyncio.sleep(0.12)


def _set_autogroup_nice(pid: int, nice: int) -> bool | None:
    """True once set, False when the kernel asks to try later, None when it cannot be set.
    (A write to /proc: no disk, no wait.)"""
    try:
        with open(f"/proc/{pid}/autogroup", "w", encoding="ascii") as group:
            group.write(str(nice))
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None
