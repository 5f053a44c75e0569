"""The daemon's entry point: config, logging, the instance lock, and one nursery.

``supervisord-agents`` runs in the foreground (a service manager or a terminal owns
it). Start-up order matters and each step is ready before the next begins: load state,
start the actor, the effect runner and the tmux adapter, reconcile once (so a restart
re-adopts running agents before anyone asks), then serve the socket.

SIGTERM / SIGINT: stop accepting, let the actor commit what it has, exit 0.
SIGHUP: reload the config (limits, intervals, log level; paths need a restart).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import gc
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Final, TextIO

import structlog
import trio

from . import __version__, service
from .actor import Actor, Hub, Mailbox
from .agent_sockets import AgentSockets, prepare_runtime_dir
from .api import Api
from .cgroups import setup as setup_cgroups
from .commands import ReportDowntime, SetGlobalLimit
from .config import Settings, dump_config, load_config, locator_path
from .effects import Effects
from .errors import SupervisorError, Unavailable
from .files import private_dirs, tighten
from .handlers import ConnectionStats
from .heartbeat import Beat, Heartbeat
from .hooks import HookRunner
from .launch import Launcher
from .logs import configure_logging
from .model import AgentState, Sandbox
from .protocol import EXIT_ALREADY_RUNNING, ReconcileReport
from .reconciler import Reconciler
from .registry import Registry
from .server import Server, bind_socket
from .store import Store
from .tmux import TmuxBackend
from .tmux_control import ControlModeTmux
from .waker import Waker
from .watermark import Watermark, check_integrity

log = structlog.get_logger()

RETENTION_INTERVAL: Final = 3600.0  # seconds between retention passes

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2


class AlreadyRunning(SupervisorError):
    """Another daemon holds the instance lock of this state directory."""


def acquire_instance_lock(state_dir: Path) -> TextIO:
    """Hold an exclusive lock on the state directory for the life of the process.

    The lock (``flock``) is released by the kernel when the process dies, however it
    dies, so a stale lock file never blocks a restart. Raises AlreadyRunning."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "daemon.lock"
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(
            f"another supervisord-agents daemon (pid {pid}) is already running on {state_dir}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def claim_state_dir(state_dir: Path) -> None:
    """The state directory, ours and private: made 0700, or refused if another uid owns
    it; anything in it that others could read is tightened, with a warning (the
    database holds every agent's prompt-derived state). Raises Unavailable."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = state_dir.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise Unavailable(f"{state_dir} is not a directory owned by uid {os.getuid()}; refusing to use it")
    tightened = tighten(state_dir)
    if tightened:
        log.warning("state_dir_tightened", count=len(tightened), paths=tightened[:20])


class Daemon:
    """One daemon: its parts, each given what it works with when it is made, and their
    lifecycle. Collaborators come first (the mailbox before the actor that reads it),
    so there is nothing to wire afterwards."""

    def __init__(
        self, settings: Settings, *, backend: TmuxBackend | None = None, accept_rollback: bool = False
    ) -> None:
        config = settings.current
        self.settings = settings
        self.accept_rollback = accept_rollback  # start on a database behind its mark (restored from a backup)
        # Before tmux starts: a delegated daemon moves into its leaf, and the server it forks follows.
        self.cgroups, boundary_note = setup_cgroups(config.daemon.cgroup_root, str(config.state_dir))
        self.store = Store(config.db_path)
        self.mark = Watermark(config.db_path)
        self.registry = Registry(global_max_concurrent=config.daemon.global_max_concurrent)
        self.hub = Hub()
        self.mailbox = Mailbox()
        self.backend: TmuxBackend = backend or ControlModeTmux(
            socket_path=config.tmux_socket,
            config_path=config.runtime_dir / "tmux.conf",
            tmux=config.daemon.tmux,
            command_timeout=config.daemon.tmux_command_timeout,
        )
        self.launcher = Launcher(config.state_dir, config.socket_path)
        self.agent_sockets = AgentSockets(config.runtime_dir)
        self.waker = Waker(self.mailbox)
        self.effects = Effects(self.mailbox, self.backend, self.launcher, settings, self.cgroups, self.agent_sockets,
                               self.waker)
        self.actor = Actor(self.registry, self.store, self.hub, self.mailbox, self.effects, mark=self.mark)
        self.reconciler = Reconciler(self.actor, self.backend, self.effects, settings)
        self.heartbeat = Heartbeat(config.state_dir)
        self.hooks = HookRunner(self.hub, settings)
        self.stopping = trio.Event()
        connections = ConnectionStats()
        self.api = Api(
            actor=self.actor, store=self.store, launcher=self.launcher, backend=self.backend,
            reconciler=self.reconciler, settings=settings, connections=connections, stop=self.stopping.set,
            cgroups=self.cgroups, boundary_note=boundary_note, hooks=self.hooks,
        )
        self.server = Server(self.api, settings, connections, self.agent_sockets)

    async def run(self, sockets: list[socket.socket]) -> None:
        try:
            await self._run(sockets)
        finally:
            for sock in sockets:
                sock.close()
            self.mark.close()

    async def _run(self, sockets: list[socket.socket]) -> None:
        await trio.to_thread.run_sync(self.store.open)
        await trio.to_thread.run_sync(check_integrity, self.store.path)  # a damaged database is refused, not served
        loaded = await trio.to_thread.run_sync(self.store.load)
        # A database behind the events this daemon acknowledged is refused too (see watermark.py).
        await trio.to_thread.run_sync(functools.partial(self.mark.open, loaded.last_seq,
                                                        accept_rollback=self.accept_rollback))
        self.registry.load(loaded)
        # The loaded rows live as long as the daemon: keep the collector from rescanning
        # them (tens of thousands of objects) on every full collection.
        gc.freeze()
        log.info("state_loaded", tasks=len(loaded.tasks), agents=len(loaded.agents), last_seq=loaded.last_seq)
        last_beat, up_at = self.heartbeat.last(), time.time()  # before this daemon's first beat replaces it
        for agent in self.registry.agents_in([AgentState.STARTING, AgentState.RUNNING, AgentState.STOPPING]):
            if agent.sandbox is Sandbox.BWRAP:  # its sandbox still sees the folder: serve its socket again
                self.agent_sockets.open(agent.id)
        actor_done = trio.Event()

        async def run_actor(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await self.actor.run(task_status=task_status)
            finally:
                actor_done.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(run_actor)
            await nursery.start(self.effects.run)
            await nursery.start(self.waker.run)
            for agent in list(self.registry.agents_in([AgentState.SLEEPING])):
                # Its attempt's end may not have been carried out before the last daemon ended.
                await self.effects.end_attempt(agent)
            await nursery.start(self.backend.run)
            await nursery.start(self.hooks.run)  # before the first pass: what it finds can run hooks
            first_pass = await self.reconciler.reconcile()
            await self.reconciler.resume_stops()
            if last_beat is not None:
                await self._record_downtime(last_beat, up_at, first_pass)
            await nursery.start(self.heartbeat.run)
            nursery.start_soon(self.reconciler.run)
            server_scope: trio.CancelScope = await nursery.start(self.server.serve, sockets)
            nursery.start_soon(self._signals)
            nursery.start_soon(self._retention)
            service.notify("READY=1")
            boundary = self.api.access.boundary.value
            log.info("serving", socket=str(self.settings.current.socket_path), pid=os.getpid(), version=__version__,
                     boundary=boundary, cgroup_root=str(self.cgroups.base) if self.cgroups else None)
            if self.cgroups is None:
                log.warning("weaker_boundary", boundary=boundary, reason=self.api.boundary_note)
            elif self.cgroups.missing_controllers:
                log.warning("resource_bounds_unavailable", missing=self.cgroups.missing_controllers)
            await self.stopping.wait()
            log.info("stopping")
            service.notify("STOPPING=1")
            await self.server.drain(1.0)
            server_scope.cancel()
            self.mailbox.close()
            await actor_done.wait()
            self.heartbeat.beat(stopped=True)
            nursery.cancel_scope.cancel()
        await trio.to_thread.run_sync(self.store.close)
        log.info("stopped")

    async def _record_downtime(self, last: Beat, up_at: float, first_pass: ReconcileReport) -> None:
        """Record in the event log that the daemon was down from its last heartbeat until it
        started again (``up_at``), with the agents its first pass found ended (or running)
        meanwhile. The heartbeat is replaced only after this, so a daemon that dies first
        leaves the same beat to the next."""
        command = ReportDowntime(down_since=last.at, seconds=round(max(0.0, up_at - last.at), 3),
                                 stopped=last.stopped, ended=first_pass.ended, adopted=first_pass.adopted)
        try:
            await self.mailbox.submit(command)
        except SupervisorError as e:
            log.error("downtime_not_recorded", error=e.message, down_since=last.at, seconds=command.seconds)
        else:
            log.info("downtime", down_since=last.at, seconds=command.seconds, stopped=last.stopped,
                     ended=len(command.ended), adopted=len(command.adopted))

    async def _retention(self) -> None:
        """Purge closed tasks past ``closed_task_retention_days``, at start and then hourly
        (a task whose agents have not all settled is left for a later pass)."""
        while True:
            days = self.settings.current.daemon.closed_task_retention_days
            if days:
                due = await trio.to_thread.run_sync(self.store.closed_before, time.time() - days * 86400)
                for task_id in due:
                    try:
                        await self.api.purge(task_id, reason=f"closed more than {days:g} days ago")
                    except SupervisorError as e:
                        log.info("purge_deferred", task_id=task_id, reason=e.message)
                    else:
                        log.info("purged", task_id=task_id, reason="retention")
            await trio.sleep(RETENTION_INTERVAL)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("signal", signal=signal.Signals(signum).name)
                    self.stopping.set()

    async def reload(self) -> None:
        """Re-read the config and put it in force; the global cap goes through the actor."""
        try:
            paths_kept = self.settings.reload()
        except SupervisorError as e:
            log.error("reload_failed", error=e.message)
            return
        if not paths_kept:
            log.warning("reload_paths_ignored", detail="paths change only on restart")
        daemon = self.settings.current.daemon
        configure_logging(daemon.log_level)
        if daemon.global_max_concurrent != self.registry.global_max_concurrent:
            try:  # a higher cap starts queued agents, durably
                await self.mailbox.submit(SetGlobalLimit(daemon.global_max_concurrent))
            except SupervisorError as e:
                log.error("reload_failed", error=e.message)
        log.info("config_reloaded")


def leave_locator(socket_path: Path) -> None:
    """Say where the socket is, at a path that depends on nothing but the home folder, for
    clients started with less environment than ours (MCP clients start their servers with
    almost none, so ``XDG_RUNTIME_DIR`` may be all that told us where to bind)."""
    path = locator_path()
    try:
        private_dirs(*reversed([*path.parents][:3]))
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(socket_path))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("locator_not_written", path=str(path), error=str(e))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="supervisord-agents",
        description="Supervisor daemon for headless AI coding agents (runs in the foreground).",
    )
    parser.add_argument("--config", type=Path,
                        help="TOML config file (default: $SUPERVISORD_AGENTS_CONFIG or the user config dir)")
    parser.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    parser.add_argument("--accept-rollback", action="store_true",
                        help="start on a database that is behind the events this daemon acknowledged (after "
                             "restoring it from a backup): accept it as it is")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except SupervisorError as e:
        sys.stderr.write(f"supervisord-agents: {e.message}\n")
        return EXIT_USAGE
    if args.print_config:
        sys.stdout.write(dump_config(config))
        return EXIT_OK
    configure_logging(config.daemon.log_level)
    try:
        claim_state_dir(config.state_dir)
        lock = acquire_instance_lock(config.state_dir)
    except AlreadyRunning as e:
        sys.stderr.write(f"supervisord-agents: {e.message}\n")
        return EXIT_ALREADY_RUNNING
    except (Unavailable, OSError) as e:
        sys.stderr.write(f"supervisord-agents: {getattr(e, 'message', None) or e}\n")
        return EXIT_ERROR
    try:
        prepare_runtime_dir(config.runtime_dir)
        sockets = service.activated_sockets() or [bind_socket(config.socket_path)]
        if not config.paths.runtime_dir:
            leave_locator(config.socket_path)
        trio.run(Daemon(Settings(config, args.config), accept_rollback=args.accept_rollback).run, sockets)
    except SupervisorError as e:
        log.error("daemon_failed", error=e.message)
        sys.stderr.write(f"supervisord-agents: {e.message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        lock.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
