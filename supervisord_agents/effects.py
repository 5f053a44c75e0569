"""Side effects of committed decisions: start, stop and clean up agents.

The actor decides and persists (an agent is ``starting`` on disk before its session
exists); this module then acts, outside the actor's critical path, in its own nursery,
and reports every result back as an ordinary command (``Started``, ``SpawnFailed``,
``Exited``, ``RecordCleanup``). A crash between the decision and the act is repaired
by reconciliation at start.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
import trio
from msgspec import Struct

from . import procs
from .actor import Actor
from .commands import CleanUp, Effect, Exited, RecordCleanup, SpawnFailed, Started, StartSession, StopAgent
from .config import Config
from .errors import IllegalTransition, SupervisorError, TmuxError
from .files import AgentFiles, StartRecord, read_exit, read_start
from .model import Agent, Cleanup, DecidedBy, Exit
from .tmux import SessionSpec, TmuxBackend

log = structlog.get_logger()

ENV_AGENT_ID: Final = "SUPERVISORD_AGENTS_AGENT_ID"
ENV_TASK_ID: Final = "SUPERVISORD_AGENTS_TASK_ID"
ENV_SOCKET: Final = "SUPERVISORD_AGENTS_SOCKET"
ENV_TOKEN: Final = "SUPERVISORD_AGENTS_TOKEN"


class Launch(Struct, frozen=True):
    """What a start needs that the registry does not keep: the secret and the prompt."""

    token: str
    prompt: str
    stream_json: bool
    mcp_shim: str | None = None  # write an MCP config naming this shim (providers that take one)


_launch_json: Final = msgspec.json.Encoder()
_launch_dec: Final = msgspec.json.Decoder(Launch)


def _read_launch(files: AgentFiles) -> Launch | None:
    try:
        return _launch_dec.decode(files.launch.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None


def mcp_config(shim: str, env: dict[str, str]) -> bytes:
    """An MCP client config that starts the shim with the agent's identity, so that an
    agent's report tools work without a supervisor of its own."""
    server = {"type": "stdio", "command": shim, "args": [], "env": {k: v for k, v in env.items() if k != "PATH"}}
    return msgspec.json.encode({"mcpServers": {"supervisord-agents": server}})


class Effects:
    """Runs effects in a nursery it owns; every outcome goes back to the actor."""

    def __init__(self, actor: Actor, backend: TmuxBackend, config: Config) -> None:
        self.actor = actor
        self.backend = backend
        self.config = config
        self._launches: dict[str, Launch] = {}
        self.starting: set[str] = set()  # agents whose start is in flight (the reconciler skips them)
        self.cleaning: set[str] = set()
        self.stopping: set[str] = set()  # agents whose stop is in flight (it reports their exit)
        self._nursery: trio.Nursery | None = None

    def files(self, agent: Agent) -> AgentFiles:
        return AgentFiles(self.config.state_dir, agent.task_id, agent.id)

    def stash(self, agent_id: str, launch: Launch) -> None:
        """Keep what the start of an agent about to be admitted will need."""
        self._launches[agent_id] = launch

    def discard(self, agent_id: str) -> None:
        self._launches.pop(agent_id, None)

    def in_flight(self) -> set[str]:
        """Agents whose start or stop this daemon has in hand: stashed (being admitted),
        being started, or being stopped; their effect reports what happened, so the
        reconciler leaves them alone. A ``starting`` agent outside this set was left by a
        previous daemon."""
        return set(self._launches) | self.starting | self.stopping

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def __call__(self, effects: list[Effect]) -> None:
        """Start the effects of one committed batch (called by the actor)."""
        assert self._nursery is not None, "Effects.run must be started first"
        for effect in effects:
            match effect:
                case StartSession(agent):
                    self.starting.add(agent.id)
                    self._nursery.start_soon(self._guarded, self.start, agent)
                case StopAgent(agent, tree):
                    self.stopping.add(agent.id)
                    self._nursery.start_soon(self._guarded, self.stop, agent, tree)
                case CleanUp(agent):
                    self.schedule_cleanup(agent)

    def schedule_cleanup(self, agent: Agent) -> None:
        if agent.id not in self.cleaning and self._nursery is not None:
            self.cleaning.add(agent.id)
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

    def keep_launch(self, agent_id: str, files: AgentFiles) -> None:
        """Write the stashed launch of an agent that may be queued to its folder, so that
        its start survives a daemon restart. Blocking: run it in a worker thread."""
        files.save_launch(_launch_json.encode(self._launches[agent_id]))

    async def start(self, agent: Agent) -> None:
        """Create the agent's session, then report ``Started`` or ``SpawnFailed``."""
        files = self.files(agent)
        launch = self._launches.pop(agent.id, None) or await trio.to_thread.run_sync(_read_launch, files)
        try:
            if launch is None:
                raise TmuxError("the daemon restarted before the session was created")
            env = self.agent_env(agent, launch.token)
            mcp = None if launch.mcp_shim is None else mcp_config(launch.mcp_shim, env)
            await trio.to_thread.run_sync(files.create, launch.prompt, mcp)
            files.launch.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink, not worth a thread
            cwd = agent.cwd or str(Path.home())
            if not os.path.isdir(cwd):  # noqa: ASYNC240 - one stat, not worth a thread
                raise TmuxError(f"working directory {cwd} does not exist")
            spec = SessionSpec(
                name=f"sa-{agent.id}",
                argv=self.runner_argv(files, agent, stream_json=launch.stream_json),
                cwd=cwd,
                env=env,
                agent_id=agent.id,
                task_id=agent.task_id,
            )
            ids = await self.backend.start_session(spec)
        except (SupervisorError, OSError) as e:
            reason = getattr(e, "message", None) or str(e)
            log.warning("spawn_failed", agent_id=agent.id, reason=reason)
            await self._report(SpawnFailed(agent.id, reason))
        else:
            await self._report(Started(agent.id, ids))
        finally:
            self.starting.discard(agent.id)

    def runner_argv(self, files: AgentFiles, agent: Agent, *, stream_json: bool) -> list[str]:
        python = self.config.daemon.python or sys.executable
        argv = [python, "-m", "supervisord_agents.runner", "--status", str(files.status),
                "--record", str(files.record), "--log", str(files.log),
                "--log-max", str(self.config.daemon.log_max_bytes), "--prompt", str(files.prompt)]
        if stream_json:
            argv.append("--stream-json")
        return [*argv, "--", *agent.argv]

    def agent_env(self, agent: Agent, token: str) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        path = os.environ.get("PATH", "/usr/bin:/bin")
        return {
            ENV_AGENT_ID: agent.id,
            ENV_TASK_ID: agent.task_id,
            ENV_SOCKET: str(self.config.socket_path),
            ENV_TOKEN: token,
            "PATH": f"{bin_dir}:{path}",
        }

    # -- stop ----------------------------------------------------------------------

    async def stop(self, agent: Agent, tree: bool) -> None:
        """SIGTERM the agent's process group, SIGKILL after the grace period, kill the
        session, verify nothing of the group remains; then report the exit."""
        try:
            await self._stop(agent, tree)
        finally:
            self.stopping.discard(agent.id)

    async def _stop(self, agent: Agent, tree: bool) -> None:
        files = self.files(agent)
        start = await self._start_record(files, agent)
        survivors: list[int] = []
        # The runner's start record names the agent's group; without one (the runner
        # never got that far) the runner itself, the pane's process, leads its own group.
        pgid = start.pgid if start is not None else (agent.tmux.pane_pid if agent.tmux is not None else None)
        if pgid is not None:
            # The runner is the agent's subreaper (Linux): every descendant, even one that
            # left the group with setsid, is below it.
            extra = procs.descendants(start.runner_pid) if tree and start is not None else []
            report = await procs.terminate_group(pgid, grace=self.config.daemon.kill_grace, extra_pids=extra)
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
        await self._report(Exited(agent.id, exit))

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
        self._launches.pop(agent.id, None)  # a queued agent killed before it started
        attempts = (agent.cleanup.attempts + 1) if agent.cleanup else 1
        try:
            if agent.tmux is not None:
                await self.backend.kill_session(agent.tmux.session_id)
            archive = await trio.to_thread.run_sync(self._clean_files, files)
            record = Cleanup(ok=True, at=time.time(), archive=archive, attempts=attempts)
        except (SupervisorError, OSError) as e:
            error = getattr(e, "message", None) or str(e)
            log.warning("cleanup_failed", agent_id=agent.id, error=error)
            record = Cleanup(ok=False, at=time.time(), error=error, attempts=attempts)
        try:
            await self._report(RecordCleanup(agent.id, record))
        finally:
            self.cleaning.discard(agent.id)

    @staticmethod
    def _clean_files(files: AgentFiles) -> str | None:
        files.remove_secrets()
        return files.archive_log()

    async def _report(self, command: Exited | Started | SpawnFailed | RecordCleanup) -> None:
        try:
            await self.actor.submit(command)
        except IllegalTransition:
            pass  # someone else (the reconciler, a racing exit) recorded it first
        except SupervisorError as e:
            log.warning("effect_report_failed", command=type(command).__name__, error=e.message)
