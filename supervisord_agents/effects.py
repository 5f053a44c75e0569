"""Side effects of committed decisions: start, stop and clean up agents.

The actor decides and persists (an agent is ``starting`` on disk before its session
exists); this module then acts, outside the actor's critical path, in its own nursery,
and reports every result back as an ordinary command (``Started``, ``StartFailed``,
``Exited``, ``RecordCleanup``). A crash between the decision and the act is repaired
by reconciliation at start.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog
import trio

from . import procs
from .actor import Mailbox
from .agent_sockets import AgentSockets
from .cgroups import Cgroups
from .commands import (
    CleanUpAgent,
    Effect,
    EndAttempt,
    Exited,
    RecordCleanup,
    Started,
    StartFailed,
    StartSession,
    StopAgent,
)
from .config import Settings
from .errors import IllegalTransition, SupervisorError, TmuxError
from .files import AgentFiles, StartRecord, read_exit, read_start
from .launch import Launcher, tools_dir
from .model import Agent, CleanupRecord, DecidedBy, EventFormat, Exit, Sandbox, TmuxIds, launch_argv
from .providers import agent_environment
from .tmux import SessionSpec, TmuxBackend
from .waker import Waker

log = structlog.get_logger()

#: An effect to start: the coroutine function, its agent and its other arguments.
_Task = tuple[Callable[..., Awaitable[None]], Agent, tuple[Any, ...]]

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class Effects:
    """Runs effects in a nursery it owns; every outcome goes back through the mailbox.

    It knows which agents it has in hand (a start or a stop in flight, a cleanup
    running): the reconciler asks, and leaves those alone."""

    def __init__(
        self, mailbox: Mailbox, backend: TmuxBackend, launcher: Launcher, settings: Settings, cgroups: Cgroups | None,
        agent_sockets: AgentSockets, waker: Waker,
    ) -> None:
        self.mailbox = mailbox
        self.waker = waker
        self.cgroups = cgroups
        self.agent_sockets = agent_sockets
        self.backend = backend
        self.launcher = launcher
        self.settings = settings
        self._starting: set[str] = set()
        self._stopping: set[str] = set()  # a stop in flight reports its agent's exit
        self._cleaning: set[str] = set()
        self._ending: dict[str, trio.Event] = {}  # attempts being ended: the next one starts after
        self._nursery: trio.Nursery | None = None
        # A committed batch's effects, handed to the dispatcher (see :meth:`_dispatch`).
        self._to_start, self._dispatching = trio.open_memory_channel[_Task](math.inf)

    def files(self, agent: Agent) -> AgentFiles:
        return self.launcher.files(agent)

    def in_flight(self) -> frozenset[str]:
        """Agents whose start or stop this daemon has in hand; their effect reports what
        happened. A ``starting`` agent outside this set was left by a previous daemon."""
        return frozenset(self._starting | self._stopping)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._dispatch)
            task_status.started()
            await trio.sleep_forever()

    def __call__(self, effects: list[Effect]) -> None:
        """Start the effects of one committed batch (called by the actor): what is in hand is
        noted at once, and the effects are started in order by :meth:`_dispatch`."""
        assert self._nursery is not None, "Effects.run must be started first"
        for effect in effects:
            match effect:
                case StartSession(agent):
                    self._starting.add(agent.id)
                    self._to_start.send_nowait((self.start, agent, ()))
                case StopAgent(agent, tree):
                    self._stopping.add(agent.id)
                    self._to_start.send_nowait((self.stop, agent, (tree,)))
                case CleanUpAgent(agent):
                    if agent.id not in self._cleaning:  # after what is queued for it, never before
                        self._cleaning.add(agent.id)
                        self._to_start.send_nowait((self.cleanup, agent, ()))
                case EndAttempt(agent, tmux):
                    self._ending.setdefault(agent.id, trio.Event())
                    self._to_start.send_nowait((self.end_attempt, agent, (tmux,)))

    async def _dispatch(self) -> None:
        """Start effects in order, one per turn of the event loop (taking one from the channel
        yields to the loop, even when more wait). Each start's first steps are synchronous (the
        launch's files, the cgroup, the exec file: a few ms on a busy machine); started together,
        a batch of 100 would run them all before anything else could, its own events to
        subscribers included."""
        assert self._nursery is not None
        async for effect, agent, args in self._dispatching:
            self._nursery.start_soon(self._guarded, effect, agent, *args)

    def cleaning(self, agent_id: str) -> bool:
        """True while this agent's cleanup runs."""
        return agent_id in self._cleaning

    def clean_up(self, agent: Agent) -> None:
        """Start the cleanup of an ended agent, unless one is running."""
        if agent.id not in self._cleaning and self._nursery is not None:
            self._cleaning.add(agent.id)
            self._nursery.start_soon(self._guarded, self.cleanup, agent)

    async def _guarded(self, effect: Callable[..., Awaitable[None]], agent: Agent, *args: Any) -> None:
        """The boundary of one effect: a bug in it is logged and must not stop the daemon.
        What it left undone (an agent still ``starting``, a cleanup not recorded) is
        found and finished by the reconciler."""
        try:
            await effect(agent, *args)
        except Exception:
            log.exception("effect_crashed", effect=effect.__name__, agent_id=agent.id)

    # -- start ---------------------------------------------------------------------

    async def start(self, agent: Agent) -> None:
        """Create the agent's session, then report ``Started`` or ``StartFailed``."""
        files = self.files(agent)
        if (ending := self._ending.get(agent.id)) is not None:
            await ending.wait()  # woken early, before its last attempt was ended
        try:
            cwd = agent.cwd or str(Path.home())
            if not os.path.isdir(cwd):  # noqa: ASYNC240 - one stat, not worth a thread
                raise TmuxError(f"working directory {cwd} does not exist")
            socket_path, sandbox = self.launcher.socket_path, []
            if agent.sandbox is Sandbox.BWRAP:
                socket_path = self.agent_sockets.path(agent.id)
            launch = self.launcher.hand_over(agent, socket_path)
            if launch is None:
                raise TmuxError("its launch record is gone (the daemon restarted before the session was created)")
            if self.cgroups is not None:
                self.cgroups.create(agent.id, agent.resources)
            if agent.sandbox is Sandbox.BWRAP:
                sandbox = self.sandbox_argv(cwd, self.agent_sockets.open(agent.id), files.dir)
            identity = launch.identity_env(agent, socket_path)
            # The daemon's environment now, not the tmux server's from when it started.
            env = agent_environment(os.environ, self.settings.current.agent_env, launch.env, identity,
                                    tools_dir=tools_dir())
            files.write_exec([*sandbox, *launch_argv(agent)], env)
            spec = SessionSpec(
                name=f"sa-{agent.id}",
                argv=self.runner_argv(files, agent, events=launch.events),
                cwd=cwd,
                env={**identity, "PATH": env["PATH"]},
                agent_id=agent.id,
                task_id=agent.task_id,
            )
            ids = await self.backend.start_session(spec)
        except (SupervisorError, OSError, ValueError) as e:
            reason = getattr(e, "message", None) or str(e)
            log.warning("spawn_failed", agent_id=agent.id, reason=reason)
            files.exec.unlink(missing_ok=True)
            await self._report(StartFailed(agent.id, reason))
        else:
            await self._report(Started(agent.id, ids))
        finally:
            self._starting.discard(agent.id)

    def sandbox_argv(self, cwd: str, reporting: Path, own: Path) -> list[str]:
        """bubblewrap around the agent: the file system read-only but for its working
        directory and a private /tmp; the daemon's state and runtime folders (its database,
        the other agents' files, the control and tmux sockets) hidden, but for the agent's
        own socket folder; its own pid namespace and session (no TIOCSTI into the pane).
        Raises TmuxError when bubblewrap is missing."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise TmuxError("sandbox 'bwrap' asked for, but bubblewrap is not installed (apt-get install bubblewrap)")
        config = self.settings.current
        argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--ro-bind", "/", "/",
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        # The private /tmp must not hide the supervisor's own tools (agentctl, the MCP shim,
        # their Python) from the agent: installed under /tmp, they are bound back, read-only.
        for tool in sorted({sys.prefix, sys.base_prefix, _PACKAGE_ROOT}):
            if tool.startswith("/tmp/"):
                argv += ["--ro-bind", tool, tool]
        argv += ["--bind", cwd, cwd]
        for hidden in (config.state_dir, config.runtime_dir):
            argv += ["--tmpfs", str(hidden)]
        # Its own folder (its prompt, its MCP config) stays readable; its CLI's home, writable.
        argv += ["--ro-bind", str(own), str(own)]
        if (own / "home").is_dir():
            argv += ["--bind", str(own / "home"), str(own / "home")]
        return [*argv, "--bind", str(reporting), str(reporting), "--chdir", cwd, "--"]

    def runner_argv(self, files: AgentFiles, agent: Agent, *, events: EventFormat = EventFormat.NONE) -> list[str]:
        """The pane's command: the runner, which takes the agent's argv and environment
        from its ``exec`` file. It starts lean, as one starts in every pane of a burst:
        ``-I -S`` skip ``site`` (its .pth files and an editable install's finder cost more
        than the runner's own start) and ignore ``PYTHON*`` variables; the package is found
        by its path, after the standard library."""
        daemon = self.settings.current.daemon
        boot = (f"import sys; sys.path.append({_PACKAGE_ROOT!r}); "
                "from supervisord_agents.runner import main; sys.exit(main())")
        argv = [daemon.python or sys.executable, "-I", "-S", "-c", boot, "--status", str(files.status),
                "--record", str(files.record), "--log", str(files.log),
                "--log-max", str(daemon.log_max_bytes), "--prompt", str(files.prompt), "--exec", str(files.exec)]
        if self.cgroups is not None:
            argv += ["--cgroup", str(self.cgroups.agent_dir(agent.id)), "--cgroup-mount", str(self.cgroups.mount)]
        if events is not EventFormat.NONE:
            argv += ["--events", events.value]
        return argv

    # -- between attempts ----------------------------------------------------------

    async def end_attempt(self, agent: Agent, tmux: TmuxIds | None = None) -> None:
        """What ends an attempt of a sleeping agent: its session and every process gone, its
        exit records removed (the next attempt's runner writes new ones; the registry has
        this attempt's), its files kept; then its wake-up timer set. Idempotent: the daemon
        runs it again for every sleeper when it starts."""
        try:
            await self._end_attempt(agent, tmux)
        finally:
            if (ending := self._ending.pop(agent.id, None)) is not None:
                ending.set()

    async def _end_attempt(self, agent: Agent, tmux: TmuxIds | None) -> None:
        if tmux is not None:
            try:
                await self.backend.kill_session(tmux.session_id)
            except TmuxError as e:
                log.warning("kill_session_failed", agent_id=agent.id, error=e.message)
        if agent.sandbox is Sandbox.BWRAP:
            self.agent_sockets.close(agent.id)
        if self.cgroups is not None:
            if await self.end_all(agent):
                self.cgroups.remove(agent.id)
            else:
                log.error("attempt_outlives_kill", agent_id=agent.id, pids=self.cgroups.pids(agent.id))
        files = self.files(agent)
        for path in (files.status, files.record, files.exec):
            path.unlink(missing_ok=True)
        self.waker.schedule(agent)

    # -- stop ----------------------------------------------------------------------

    async def stop(self, agent: Agent, tree: bool) -> None:
        """SIGTERM every process of the agent, SIGKILL what is left after the grace
        period, kill the session, verify that nothing of it remains; then report the exit.
        "Every process" is its cgroup where it has one, else its process group (and with
        ``tree``, whatever is below its runner)."""
        try:
            await self._stop(agent, tree)
        finally:
            self._stopping.discard(agent.id)

    async def _stop(self, agent: Agent, tree: bool) -> None:
        files = self.files(agent)
        start = await self._start_record(files, agent)
        survivors: list[int] = []
        # The runner's start record names the agent's group; without one (the runner
        # never got that far) the runner itself, the pane's process, leads its own group.
        pgid = start.pgid if start is not None else (agent.tmux.pane_pid if agent.tmux is not None else None)
        if self.cgroups is not None and self.cgroups.populated(agent.id):
            if not await self.end_all(agent, grace=self.settings.current.daemon.kill_grace):
                survivors = self.cgroups.pids(agent.id)
        elif pgid is not None:
            # The runner is the agent's subreaper (Linux): every descendant, even one that
            # left the group with setsid, is below it.
            extra = procs.descendants(start.runner_pid) if tree and start is not None else []
            report = await procs.terminate_group(pgid, grace=self.settings.current.daemon.kill_grace, extra_pids=extra)
            survivors = list(report.survivors)
        if agent.tmux is not None:
            try:
                await self.backend.kill_session(agent.tmux.session_id)
            except TmuxError as e:
                log.warning("kill_session_failed", agent_id=agent.id, error=e.message)
        # The runner outlives its child by a moment to write the exit record.
        exit = None
        with trio.move_on_after(2.0):
            while (exit := read_exit(files)) is None and start is not None:
                await trio.sleep(0.02)
        if exit is None:
            exit = Exit(decided_by=DecidedBy.KILL, reason=agent.kill_reason)
        if survivors:
            log.error("kill_left_processes", agent_id=agent.id, pids=survivors)
        await self._report(Exited(agent.id, self.with_usage(agent, exit)))

    async def end_all(self, agent: Agent, *, grace: float = 0.0) -> bool:
        """End every process in the agent's cgroup: SIGTERM and up to ``grace`` seconds to
        go, then ``cgroup.kill``. True once the cgroup is empty (no process of the agent
        escapes it: not by setsid, double fork, closed pipes or a killed runner)."""
        cgroups = self.cgroups
        if cgroups is None:
            return True
        if grace > 0:
            cgroups.signal(agent.id)
            if await self._emptied(agent.id, grace):
                return True
        cgroups.kill(agent.id)
        return await self._emptied(agent.id, 5.0)

    async def _emptied(self, agent_id: str, timeout: float) -> bool:
        assert self.cgroups is not None
        with trio.move_on_after(timeout):
            while self.cgroups.populated(agent_id):
                await trio.sleep(0.01)
            return True
        return False

    def with_usage(self, agent: Agent, exit: Exit) -> Exit:
        """The exit with what the agent's cgroup says it used (all its processes), where known."""
        if self.cgroups is None:
            return exit
        usage = self.cgroups.usage(agent.id)
        return msgspec.structs.replace(
            exit,
            cpu_seconds=usage.cpu_seconds if usage.cpu_seconds is not None else exit.cpu_seconds,
            memory_peak_kb=usage.memory_peak_kb if usage.memory_peak_kb is not None else exit.memory_peak_kb,
        )

    async def _start_record(self, files: AgentFiles, agent: Agent) -> StartRecord | None:
        """The runner's start record, waiting a moment for a runner that has only just
        started (a kill can arrive within milliseconds of the spawn)."""
        start = read_start(files)
        with trio.move_on_after(2.0):
            while start is None and agent.tmux is not None and procs.alive(agent.tmux.pane_pid):
                await trio.sleep(0.01)
                start = read_start(files)
        return start

    # -- cleanup -------------------------------------------------------------------

    async def cleanup(self, agent: Agent) -> None:
        """After any terminal state: session gone, prompt removed, log archived.
        Idempotent; a failure is recorded and retried by the reconciler."""
        files = self.files(agent)
        attempts = (agent.cleanup.attempts + 1) if agent.cleanup else 1
        try:
            if agent.tmux is not None:
                await self.backend.kill_session(agent.tmux.session_id)
            if agent.sandbox is Sandbox.BWRAP:
                self.agent_sockets.close(agent.id)
            if self.cgroups is not None:
                if not await self.end_all(agent):
                    raise OSError(f"processes of agent {agent.id} outlive cgroup.kill: {self.cgroups.pids(agent.id)}")
                self.cgroups.remove(agent.id)
            archive = await trio.to_thread.run_sync(self._clean_files, files)
            record = CleanupRecord(ok=True, at=time.time(), archive=archive, attempts=attempts)
        except (SupervisorError, OSError) as e:
            error = getattr(e, "message", None) or str(e)
            log.warning("cleanup_failed", agent_id=agent.id, error=error)
            record = CleanupRecord(ok=False, at=time.time(), error=error, attempts=attempts)
        try:
            await self._report(RecordCleanup(agent.id, record))
        finally:
            self._cleaning.discard(agent.id)

    @staticmethod
    def _clean_files(files: AgentFiles) -> str | None:
        files.remove_secrets()
        return files.archive_log()

    async def _report(self, command: Exited | Started | StartFailed | RecordCleanup) -> None:
        try:
            await self.mailbox.submit(command)
        except IllegalTransition:
            pass  # someone else (the reconciler, a racing exit) recorded it first
        except SupervisorError as e:
            log.warning("effect_report_failed", command=type(command).__name__, error=e.message)
