"""The daemon's tmux adapter: a private tmux server driven through one control-mode client.

See :class:`ControlModeTmux`. The seam it implements is in :mod:`.tmux`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog
import trio

from .errors import TmuxError
from .model import TmuxIds
from .tmux import AGENT_MARKER, KEEPER_SESSION, TASK_MARKER, PaneInfo, SessionSpec
from .tmux_protocol import PANE_FORMAT, ControlParser, Notification, Reply, command_line, parse_pane

log = structlog.get_logger()

CONTROL_SESSION: Final = KEEPER_SESSION

# The server's own configuration, so that a user's ~/.tmux.conf cannot change how agent
# panes behave. remain-on-exit off: an agent's exit closes its window at once, and the
# window-close notification is our trigger to read its status record.
# The daemon sets these and no hook; agents can reach the server, so each reconcile pass
# checks that it is still so (enforce_config) and restores what was changed.
SERVER_OPTIONS: Final = {
    "remain-on-exit": "off",
    "exit-empty": "off",
    "exit-unattached": "off",
    "destroy-unattached": "off",
    "history-limit": "10000",
    "status": "off",
    "default-terminal": "screen-256color",
}
SERVER_CONFIG: Final = "".join(f"set -g {name} {value}\n" for name, value in SERVER_OPTIONS.items())

_NOTIFICATIONS_THAT_CHANGE: Final = frozenset(
    {"%sessions-changed", "%unlinked-window-close", "%window-close", "%session-changed", "%exit"}
)
#: Of those, the one that does not say something ended: a session made (most often by our
#: own spawn, whose effect knows it) or closed (a window-close comes with it). It wakes
#: :meth:`ControlModeTmux.wait_changed` after a short settle, so that a burst of spawns
#: costs one reconciliation pass, and none competes with a spawn still committing.
_NOTIFICATION_THAT_SETTLES: Final = "%sessions-changed"
SETTLE: Final = 0.03
_SESSION_GONE: Final = ("can't find session", "no such session", "can't find pane", "can't find window")


class _Pending:
    """A command waiting for its ``%begin``..``%end`` block."""

    __slots__ = ("done", "lines", "ok")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False
        self.lines: list[str] = []


class ControlModeTmux:
    """:class:`TmuxBackend` over one ``tmux -C`` control client of a private server.

    ``run`` starts the server if it is not running (with our own config file), attaches
    the control client to a keeper session ``__ctl``, and restarts both whenever either
    dies. Commands go one per line; replies come back in order as ``%begin N`` ..
    ``%end N`` blocks, the n-th block answering the n-th command (the framing, and its
    parser, are in :mod:`.tmux_protocol`). Every other ``%`` line is a notification: the
    ones that mean "something changed" wake :meth:`wait_changed`.

    A command that does not answer within ``command_timeout`` raises ``TmuxError`` and
    the client is restarted (its replies could no longer be matched).
    """

    def __init__(self, *, socket_path: Path, config_path: Path, tmux: str = "tmux",
                 command_timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.config_path = config_path
        self.tmux = tmux
        self.command_timeout = command_timeout
        self._proc: trio.Process | None = None
        self._pending: deque[_Pending] = deque()
        self._send_lock = trio.Lock()
        self._connected = trio.Event()
        self._broken: trio.Event | None = None
        self._changed = trio.Event()
        self._urgent = trio.Event()

    @property
    def base_argv(self) -> list[str]:
        return [self.tmux, "-S", str(self.socket_path)]

    @property
    def healthy(self) -> bool:
        return self._connected.is_set()

    # -- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a server and a control client running until cancelled. Cancelling
        detaches the client and leaves the server (and the agents) running.

        Started once the first attempt to connect has succeeded or failed: the daemon
        serves either way, and reports tmux as unhealthy until it comes back."""
        started = False

        def ready() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        backoff = 0.05
        while True:
            try:
                await self._session(ready)
                backoff = 0.05
            except (TmuxError, OSError) as e:
                log.warning("tmux_unavailable", error=str(e))
            ready()
            self._disconnect()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _session(self, attached: Callable[[], None]) -> None:
        """One control client's life: attach, call ``attached``, serve commands until the
        client or the server dies. Raises TmuxError if it cannot attach."""
        await self._ensure_server()
        proc = await trio.lowlevel.open_process(
            [*self.base_argv, "-C", "attach-session", "-t", "=" + CONTROL_SESSION],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_tmux_env(),
        )
        self._proc = proc
        self._broken = broken = trio.Event()
        attach = _Pending()  # the first block answers the attach itself
        self._pending.append(attach)
        failure: TmuxError | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader, proc, broken)
                try:
                    await self._handshake(attach, proc)
                except TmuxError as e:
                    failure = e  # raised below: from inside the nursery it would arrive wrapped in a group
                else:
                    attached()
                    await broken.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _stop_process(proc)
        if failure is not None:
            raise failure

    async def _handshake(self, attach: _Pending, proc: trio.Process) -> None:
        with trio.move_on_after(self.command_timeout):
            await attach.done.wait()
        if not attach.done.is_set():
            raise TmuxError("tmux control client did not attach in time")
        if not attach.ok:
            raise TmuxError("control client could not attach: " + "\n".join(attach.lines))
        self._connected.set()
        try:
            await self._command(["refresh-client", "-f", "no-output"])
        except TmuxError:
            pass  # older tmux: %output lines are ignored anyway
        await self._detach_stale_clients(proc.pid)
        log.info("tmux_connected", socket=str(self.socket_path), pid=proc.pid)
        self._wake()  # whatever happened while we were away

    async def _detach_stale_clients(self, ours: int) -> None:
        """End the control clients a previous daemon left behind (it was killed before it
        could stop them). On tmux 3.3a some never notice that their daemon is gone, and
        neither detach-client nor SIGTERM ends them (each waits on the server), while a
        server with them attached ignores kill-server; so they are detached, then
        signalled by the pid tmux reports for them, SIGKILL last. Only control clients of
        our own keeper session on our private server: a person attached to an agent (with
        ``agentctl attach``, or iTerm2's control mode) stays."""
        stale = await self._control_clients(ours)
        if not stale:
            return
        await self._pipeline([["detach-client", "-t", name] for name in stale.values()])
        ended = sorted(stale)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for client in stale:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(client, sig)
            await trio.sleep(0.2)
            # Signal again only pids tmux still reports as its clients: one that has exited
            # may have been reused by a process that is not ours.
            stale = await self._control_clients(ours)
            if not stale:
                break
        log.info("tmux_stale_clients_ended", pids=ended, survivors=sorted(stale) or None)

    async def _control_clients(self, ours: int) -> dict[int, str]:
        """Control clients of the keeper session other than ours: pid -> client name."""
        try:
            lines = await self._command(["list-clients", "-t", "=" + CONTROL_SESSION, "-F",
                                         "#{client_pid} #{client_control_mode} #{client_name}"])
        except TmuxError as e:
            log.warning("tmux_list_clients_failed", error=e.message)
            return {}
        clients: dict[int, str] = {}
        for line in lines:
            pid, control, name = (line.split(" ", 2) + ["", ""])[:3]
            if control == "1" and pid.isdigit() and int(pid) not in (ours, 0, 1) and name:
                clients[int(pid)] = name
        return clients

    async def _ensure_server(self) -> None:
        """Start our private server with its keeper session, unless it is running."""
        self.config_path.write_text(SERVER_CONFIG)
        # Not `new-session -A`: on an existing session that means attach, which needs a terminal.
        result = await self._cli(["-f", str(self.config_path), "new-session", "-d", "-s", CONTROL_SESSION,
                                  "-x", "200", "-y", "50", "sleep", "2147483647"])
        if result.returncode != 0 and b"duplicate session" not in result.stderr:
            raise TmuxError(f"could not start tmux: {result.stderr.decode(errors='replace').strip()}")
        # An already running server did not read the file: apply it (idempotent).
        await self._cli(["source-file", str(self.config_path)])

    async def _cli(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        """One tmux command through the CLI, bounded by the command timeout."""
        try:
            with trio.fail_after(self.command_timeout):
                return await trio.run_process([*self.base_argv, *args], capture_stdout=True, capture_stderr=True,
                                              check=False, env=_tmux_env())
        except trio.TooSlowError:
            raise TmuxError(f"tmux did not answer {args[0]} within {self.command_timeout:g}s") from None

    def _disconnect(self) -> None:
        self._connected = trio.Event() if self._connected.is_set() else self._connected
        self._proc = None
        while self._pending:
            pending = self._pending.popleft()
            pending.lines = ["tmux control client went away"]
            pending.done.set()
        self._wake()

    async def _reader(self, proc: trio.Process, broken: trio.Event) -> None:
        """Feed the client's stdout to a :class:`ControlParser`: each reply resolves the
        oldest pending command (tmux answers in order); a notification that something
        changed wakes :meth:`wait_changed`. Sets ``broken`` when the stream ends."""
        assert proc.stdout is not None
        parser = ControlParser()
        try:
            async for chunk in proc.stdout:
                for item in parser.feed(chunk):
                    match item:
                        case Reply(ok=ok, lines=lines):
                            # A block no command waits for (tmux answered more than we asked) is dropped.
                            pending = self._pending.popleft() if self._pending else _Pending()
                            pending.ok, pending.lines = ok, lines
                            pending.done.set()
                        case Notification(name=name, args=args) if name in _NOTIFICATIONS_THAT_CHANGE:
                            self._wake(urgent=name != _NOTIFICATION_THAT_SETTLES)
                            if name == "%exit":
                                log.warning("tmux_exit", detail=f"{name} {args}".rstrip())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        broken.set()

    # -- commands ------------------------------------------------------------------

    async def _command(self, args: list[str]) -> list[str]:
        """Send one command; return its output lines, or raise TmuxError with tmux's message."""
        (result,) = await self._pipeline([args])
        if isinstance(result, TmuxError):
            raise result
        return result

    async def _pipeline(self, commands: list[list[str]]) -> list[list[str] | TmuxError]:
        """Send several commands in one write (one per line) and wait for every reply:
        one round trip instead of one each. Each result is the command's output lines or
        the TmuxError it failed with; a timeout or a lost client raises TmuxError."""
        data = b"".join(command_line(args) for args in commands)
        if not self._connected.is_set():
            with trio.move_on_after(min(self.command_timeout, 1.0)):
                await self._connected.wait()
        proc, broken = self._proc, self._broken
        if not self._connected.is_set() or proc is None or proc.stdin is None or broken is None:
            raise TmuxError("tmux is not available")
        pendings = [_Pending() for _ in commands]
        name = commands[0][0]
        try:
            with trio.fail_after(self.command_timeout):
                async with self._send_lock:
                    self._pending.extend(pendings)
                    await proc.stdin.send_all(data)
                for pending in pendings:
                    await pending.done.wait()
        except trio.TooSlowError:
            log.error("tmux_command_timeout", command=name, timeout=self.command_timeout)
            broken.set()  # replies can no longer be matched: restart the client
            raise TmuxError(f"tmux did not answer {name} within {self.command_timeout:g}s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            broken.set()
            raise TmuxError("tmux control client went away") from e
        return [p.lines if p.ok else TmuxError("\n".join(p.lines) or f"tmux {args[0]} failed")
                for p, args in zip(pendings, commands, strict=True)]

    async def start_session(self, spec: SessionSpec) -> TmuxIds:
        """Create the session and set its markers in one round trip: the markers target
        the session by its exact name, which tmux resolves once new-session has run."""
        if len(spec.argv) < 2:
            raise TmuxError("an agent's argv needs at least two words (tmux runs one word through a shell)")
        args = ["new-session", "-d", "-P", "-F", "#{session_id} #{window_id} #{pane_id} #{pane_pid}",
                "-s", spec.name, "-c", spec.cwd.replace("#", "##"), "-x", "200", "-y", "50"]
        for key, value in spec.env.items():
            args += ["-e", f"{key}={value}"]
        target = f"={spec.name}:"  # exact session name; the colon makes it a target tmux resolves for options
        created, *markers = await self._pipeline([
            [*args, "--", *spec.argv],
            ["set-option", "-t", target, AGENT_MARKER, spec.agent_id],
            ["set-option", "-t", target, TASK_MARKER, spec.task_id],
        ])
        if isinstance(created, TmuxError):
            raise created
        try:
            session_id, window_id, pane_id, pid = created[0].split(" ")
            ids = TmuxIds(session_id=session_id, window_id=window_id, pane_id=pane_id, pane_pid=int(pid))
        except (IndexError, ValueError):
            raise TmuxError(f"unexpected reply to new-session: {created!r}") from None
        for marker in markers:
            # A session already gone means the agent exited at once: its name still says whose it was.
            if isinstance(marker, TmuxError) and not marker.message.startswith(_SESSION_GONE):
                raise marker
        return ids

    async def kill_session(self, session_id: str) -> bool:
        return await self._kill("kill-session", session_id)

    async def _kill(self, command: str, target: str) -> bool:
        """``kill-session`` or ``kill-pane`` by exact id; False if it was already gone."""
        try:
            await self._command([command, "-t", target])
        except TmuxError as e:
            if e.message.startswith(_SESSION_GONE):
                return False
            raise
        return True

    async def list_panes(self) -> list[PaneInfo]:
        lines = await self._command(["list-panes", "-a", "-F", PANE_FORMAT])
        return [pane for pane in map(parse_pane, lines) if pane is not None]

    async def kill_pane(self, pane_id: str) -> bool:
        return await self._kill("kill-pane", pane_id)

    async def enforce_config(self) -> list[str]:
        """Put back what was changed in the server's global hooks and options (anything
        that can reach the socket can change them: a hook would run its command outside
        any agent, at the next event). Returns what was restored. Raises TmuxError."""
        names = list(SERVER_OPTIONS)
        hooks, *values = await self._pipeline([["show-hooks", "-g"],
                                               *(["show-options", "-g", "-v", name] for name in names)])
        fixes: list[list[str]] = []
        changed: list[str] = []
        if not isinstance(hooks, TmuxError):
            for hook in sorted({line.split("[", 1)[0] for line in hooks if "[" in line.split(" ", 1)[0]}):
                fixes.append(["set-hook", "-gu", hook])
                changed.append(f"hook {hook}")
        for name, value in zip(names, values, strict=True):
            if isinstance(value, TmuxError) or value != [SERVER_OPTIONS[name]]:
                fixes.append(["set-option", "-g", name, SERVER_OPTIONS[name]])
                changed.append(f"option {name}")
        if fixes:
            for result in await self._pipeline(fixes):
                if isinstance(result, TmuxError):
                    log.error("tmux_restore_failed", error=result.message)
        return changed

    async def capture_pane(self, pane_id: str, lines: int) -> str:
        # Through the CLI rather than the control client: a pane's text is the agent's to
        # choose and must never be parsed as control-mode framing.
        result = await self._cli(["capture-pane", "-p", "-J", "-t", pane_id, "-S", str(-max(0, lines))])
        if result.returncode != 0:
            raise TmuxError(result.stderr.decode(errors="replace").strip() or "capture-pane failed")
        return result.stdout.decode(errors="replace")

    def _wake(self, *, urgent: bool = True) -> None:
        self._changed.set()
        if urgent:
            self._urgent.set()

    async def wait_changed(self) -> None:
        """At once when something ended (or the client reconnected); else :data:`SETTLE`
        after the first change, taking in whatever else changed meanwhile."""
        await self._changed.wait()
        with trio.move_on_after(SETTLE):
            await self._urgent.wait()
        self._changed, self._urgent = trio.Event(), trio.Event()


def _tmux_env() -> dict[str, str]:
    """The daemon's environment minus what would confuse tmux or leak into agents."""
    drop = {"TMUX", "TMUX_PANE", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"}
    return {k: v for k, v in os.environ.items() if k not in drop}


async def _stop_process(proc: trio.Process) -> None:
    """Detach the control client (closing its stdin makes it exit); kill it if it lingers."""
    if proc.stdin is not None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await proc.stdin.aclose()
    with trio.move_on_after(1.0):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
