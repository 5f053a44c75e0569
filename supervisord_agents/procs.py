"""Processes by process group and parentage, never by name.

Used to stop an agent (SIGTERM to its group, a grace period, SIGKILL) and to verify
afterwards that nothing of its group remains. On Linux this reads ``/proc``; elsewhere
it asks ``ps`` for pid, parent and group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable

import trio
from msgspec import Struct


class Proc(Struct, frozen=True):
    pid: int
    ppid: int
    pgid: int
    sid: int = 0


def snapshot() -> list[Proc]:
    """Every live (non-zombie) process this user can see."""
    if sys.platform.startswith("linux"):
        return list(_proc_linux())
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,sess=,stat="], capture_output=True, text=True,
                         check=False)
    procs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and not parts[4].startswith("Z"):
            procs.append(Proc(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])))
    return procs


def _proc_linux() -> Iterable[Proc]:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                # "pid (comm) state ppid pgrp ...": comm may contain spaces and parens.
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if fields[0] != b"Z":
            yield Proc(int(name), int(fields[1]), int(fields[2]), int(fields[3]))


HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")


def ancestor_in(pid: int, candidates: dict[int, str], max_hops: int = 64) -> str | None:
    """The value of the nearest ancestor of ``pid`` (itself included) found in
    ``candidates`` (pid -> name), walking parents through ``/proc``; None if none is."""
    for _ in range(max_hops):
        if pid in candidates:
            return candidates[pid]
        if pid <= 1:
            return None
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None
    return None


def alive(pid: int) -> bool:
    """True while ``pid`` names a live process (zombies count as gone on Linux)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except (OSError, IndexError):
            return False
    return True


def left_behind(runner_pid: int, pgid: int | None) -> list[int]:
    """Live processes of an agent whose runner is gone, as far as process ids can tell:
    its group (when the runner recorded it) and the pane's session, which the runner led
    (a process that left both with ``setsid`` is lost to this; cgroups are exact)."""
    return [p.pid for p in snapshot() if p.pid > 1 and (p.sid == runner_pid or (pgid is not None and p.pgid == pgid))]


def descendants(pid: int, procs: list[Proc] | None = None) -> list[int]:
    """Every live descendant of ``pid`` (whatever its group or session)."""
    children: dict[int, list[int]] = {}
    for p in snapshot() if procs is None else procs:
        children.setdefault(p.ppid, []).append(p.pid)
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class KillReport(Struct, frozen=True, kw_only=True):
    terminated: bool  # everything ended within the grace period (SIGTERM was enough)
    killed: list[int] = []  # pids that needed SIGKILL
    survivors: list[int] = []  # pids still alive after SIGKILL (should never happen)


def _signal(pgid: int, pids: Iterable[int], sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


async def _remaining(pgid: int, pids: set[int]) -> list[int]:
    procs = await trio.to_thread.run_sync(snapshot)
    return sorted(p.pid for p in procs if p.pgid == pgid or p.pid in pids)


async def _wait_gone(pgid: int, pids: set[int], timeout: float) -> list[int]:
    remaining = await _remaining(pgid, pids)
    with trio.move_on_after(timeout):
        while remaining:
            await trio.sleep(0.02)
            remaining = await _remaining(pgid, pids)
    return remaining


async def terminate_group(pgid: int, *, grace: float, extra_pids: Iterable[int] = ()) -> KillReport:
    """SIGTERM the group (and ``extra_pids``), SIGKILL what is left after ``grace``
    seconds, and report anything that still survives."""
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    pids = {p for p in extra_pids if p > 1}
    _signal(pgid, pids, signal.SIGTERM)
    remaining = await _wait_gone(pgid, pids, grace)
    if not remaining:
        return KillReport(terminated=True)
    _signal(pgid, remaining, signal.SIGKILL)
    survivors = await _wait_gone(pgid, set(remaining), 2.0)
    return KillReport(terminated=False, killed=remaining, survivors=survivors)
