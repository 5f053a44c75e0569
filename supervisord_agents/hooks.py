"""Hooks: programs the daemon runs when committed events match (``[[hooks]]`` in the config).

Rules
-----

- A hook hears of committed events only, and never slows the actor: the runner subscribes
  to the hub as ``events.subscribe`` does, matches each event against the hooks in force
  (a few comparisons, see :meth:`.config.Hook.selects`) in a task of its own, and starts
  each run as a subprocess in its own nursery.
- Once per event: events arrive in sequence order, and one whose number is not past the
  last one looked at is skipped, so no hook runs twice for the same event.
- Bounded: at most ``hooks_max_running`` runs at once; up to :data:`QUEUE` more wait
  their turn, in order; past that a run is dropped. At most
  ``hooks_per_agent_per_minute`` runs of one hook for one agent (for events of no agent:
  its task, or the daemon) in any minute; the rest are dropped, which the log says once
  each time the limit starts to bite. Dropped runs are counted (``daemon.health``).
- A run gets the event as one JSON line on stdin (as ``agentctl events --json`` prints
  it), runs in a session of its own (its own process group), and is killed with all of
  its group at its ``timeout``. Its stdout and stderr go together to the daemon's log, the
  first :data:`OUTPUT_MAX` bytes of them. A run that cannot start, exits non-zero or times
  out is logged and counted as failed, and never retried: a hook is a notification, and a
  retry loop would turn one broken hook into a load.
- ``kind = "notify"`` is a desktop notification: ``notify-send`` on Linux, ``osascript``
  on macOS, with the event's one-line summary (:func:`.digest.summary`) passed as an
  argument (never through a shell or into a script's text). Where the tool is missing,
  the log says so once and those runs are dropped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections import deque
from typing import Final

import msgspec
import structlog
import trio

from . import digest
from .actor import Hub
from .config import Hook, HookKind, Settings
from .model import Event
from .protocol import HookStats

log = structlog.get_logger()

QUEUE: Final = 256  # runs waiting for a slot; past this, runs are dropped
OUTPUT_MAX: Final = 4096  # bytes of a run's output kept for the log
WINDOW: Final = 60.0  # seconds: the rate limit counts runs in this window
SUBSCRIPTION: Final = 16384  # events the runner may fall behind by (it never awaits while matching)
KILL_WAIT: Final = 5.0  # after SIGKILL, how long to wait for the run to be reaped

_json: Final = msgspec.json.Encoder()
#: What would drive a terminal or a notification's renderer: C0 and C1 controls, DEL.
_CONTROLS: Final = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


class HookRunner:
    """Matches committed events against the configured hooks and runs them, bounded."""

    def __init__(self, hub: Hub, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self.ran = 0  # runs started (or tried: a program that could not start counts as failed too)
        self.failed = 0  # could not start, exited non-zero, or killed at its timeout
        self.dropped = 0  # not run: over the rate limit, the queue full, no notification tool
        self.running = 0
        self._waiting = 0
        self._slots = trio.CapacityLimiter(settings.current.daemon.hooks_max_running)
        self._last_seq = 0
        self._recent: dict[tuple[str, str], deque[float]] = {}  # (hook, who) -> start times in the window
        self._limited: set[tuple[str, str]] = set()  # over the limit now (said once in the log)
        self._swept = 0.0
        self._notify_missing = False
        self._queue_full = False

    def stats(self) -> HookStats:
        return HookStats(ran=self.ran, failed=self.failed, dropped=self.dropped, running=self.running)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the hub until cancelled; ready once subscribed."""
        async with trio.open_nursery() as runs:
            sub = self.hub.subscribe(size=SUBSCRIPTION)
            task_status.started()
            while True:
                with sub:
                    async for event in sub.receive:
                        self._dispatch(event, runs)
                # The subscription overflowed (it only ends so): the events after the last one
                # looked at, up to the next one heard, are missed. Say so, and follow on.
                log.error("hooks_fell_behind", last_seq=self._last_seq)
                sub = self.hub.subscribe(size=SUBSCRIPTION)

    def _dispatch(self, event: Event, runs: trio.Nursery) -> None:
        if event.seq <= self._last_seq:
            return
        self._last_seq = event.seq
        config = self.settings.current
        if not config.hooks:
            return
        now = trio.current_time()
        for index, hook in enumerate(config.hooks):
            if not hook.selects(event):
                continue
            name = hook.name or f"hooks[{index}]"
            if not self._admit(name, digest.who(event), now, config.daemon.hooks_per_agent_per_minute):
                self.dropped += 1
            elif self._waiting >= QUEUE:
                self.dropped += 1
                if not self._queue_full:  # said once per spell, not once per run
                    self._queue_full = True
                    log.warning("hook_dropped", hook=name, seq=event.seq, reason=f"{QUEUE} runs already waiting")
            else:
                self._queue_full = False
                self._waiting += 1
                runs.start_soon(self._run, name, hook, event)

    def _admit(self, name: str, who: str, now: float, per_minute: int) -> bool:
        """Count a run of hook ``name`` for ``who`` now, if its window has room."""
        if now - self._swept >= WINDOW:  # forget whoever has had no run for a window
            self._swept = now
            for stale in [k for k, times in self._recent.items() if not times or times[-1] <= now - WINDOW]:
                del self._recent[stale]
                self._limited.discard(stale)
        key = (name, who)
        times = self._recent.setdefault(key, deque())
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if len(times) >= per_minute:
            if key not in self._limited:
                self._limited.add(key)
                log.warning("hook_rate_limited", hook=name, who=who, per_minute=per_minute)
            return False
        self._limited.discard(key)
        times.append(now)
        return True

    async def _run(self, name: str, hook: Hook, event: Event) -> None:
        self._slots.total_tokens = self.settings.current.daemon.hooks_max_running  # follows a reload
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self.running += 1
        try:
            await self._execute(name, hook, event)
        finally:
            self.running -= 1
            self._slots.release()

    async def _execute(self, name: str, hook: Hook, event: Event) -> None:
        argv = hook.argv if hook.kind is HookKind.COMMAND else self._notify_argv(event)
        if argv is None:
            self.dropped += 1
            return
        self.ran += 1
        started = trio.current_time()
        try:
            proc = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            self.failed += 1
            log.warning("hook_failed", hook=name, seq=event.seq, argv=shlex.join(argv), error=str(e))
            return
        assert proc.stdin is not None and proc.stdout is not None
        output = _Output()
        exited = False
        deadline = trio.move_on_after(hook.timeout)
        try:
            with deadline:
                async with trio.open_nursery() as pipes:
                    pipes.start_soon(_feed, proc.stdin, _json.encode(event) + b"\n")
                    await output.collect(proc.stdout)
                    await proc.wait()
                    exited = True
        finally:
            # Whatever ended it (its timeout, the daemon stopping), nothing of it stays running.
            if not exited:
                _kill_group(proc)
            with trio.CancelScope(shield=True), trio.move_on_after(KILL_WAIT):
                await proc.stdin.aclose()
                await proc.stdout.aclose()
                await proc.wait()
        seconds = round(trio.current_time() - started, 3)
        context = {"hook": name, "seq": event.seq, "kind": str(event.kind), "seconds": seconds, **output.fields()}
        if deadline.cancelled_caught:
            self.failed += 1
            log.warning("hook_timed_out", timeout=hook.timeout, **context)
        elif proc.returncode != 0:
            self.failed += 1
            log.warning("hook_failed", code=proc.returncode, argv=shlex.join(argv), **context)
        else:
            log.info("hook_ran", **context)

    def _notify_argv(self, event: Event) -> list[str] | None:
        """The desktop notification of ``event``, or None (said once) where there is no tool."""
        title = printable(f"supervisord-agents: {event.kind} {digest.who(event)}")
        body = printable(digest.summary(event)) or str(event.kind)
        if sys.platform == "darwin":
            tool = shutil.which("osascript")
            argv = None if tool is None else [
                tool, "-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
                "-e", "end run", title, body]
        else:
            tool = shutil.which("notify-send")
            argv = None if tool is None else [tool, "--app-name=supervisord-agents", "--", title, body]
        if argv is None and not self._notify_missing:
            self._notify_missing = True
            log.warning("hook_notify_unavailable", platform=sys.platform,
                        detail="no notify-send (Linux) or osascript (macOS) on the daemon's PATH; notify hooks skipped")
        return argv


class _Output:
    """The first OUTPUT_MAX bytes of a run's output, and how many there were in all."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.total = 0

    async def collect(self, stream: trio.abc.ReceiveStream) -> None:
        while chunk := await stream.receive_some(65536):
            self.total += len(chunk)
            room = OUTPUT_MAX - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def fields(self) -> dict[str, object]:
        if not self.total:
            return {}
        text = self.kept.decode(errors="replace").strip()
        return {"output": text, "output_bytes": self.total} if self.total > OUTPUT_MAX else {"output": text}


async def _feed(stream: trio.abc.SendStream, payload: bytes) -> None:
    try:
        await stream.send_all(payload)
        await stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # it exited without reading its input: its choice


def _kill_group(proc: trio.Process) -> None:
    """SIGKILL the run's process group (it leads a session of its own), whatever it left behind."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def printable(text: str) -> str:
    """``text`` with control characters shown escaped (``\\x1b``)."""
    return text.translate(_CONTROLS)
