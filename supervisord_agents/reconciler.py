"""The reconciler: keeps the registry truthful about tmux, on a timer and on notifications.

Each pass takes one listing of the private tmux server, computes a plan with the pure
:func:`~supervisord_agents.drift.diff`, and carries it out through ordinary actor
commands (``Exited``, ``Adopt``) and tmux calls. tmux notifications (a window closed,
sessions changed) wake it at once; the timer is the safety net, since notifications
are only hints. It also retries cleanups that failed.
"""

from __future__ import annotations

import signal
import time

import msgspec
import structlog
import trio

from . import procs
from .actor import Actor
from .commands import Adopt, ClearStall, Command, Exited, MarkStalled, ReportDrift, ReportUsage, RequestKill
from .config import Settings
from .drift import Plan, diff
from .effects import Effects
from .errors import IllegalTransition, SupervisorError, TmuxError
from .files import read_exit, read_start
from .meter import Meter
from .model import LIVE_STATES, Agent, AgentState, DecidedBy, EventFormat, Exit, Usage, timed_out
from .protocol import ReconcileReport as Report
from .tmux import KEEPER_SESSION, TmuxBackend

log = structlog.get_logger()

READ_PER_PASS = 4 << 20  # bytes of one agent's log the meter reads in one pass, at most


class Reconciler:
    """Reconciliation passes: on a timer, on tmux notifications, and on request."""

    def __init__(self, actor: Actor, backend: TmuxBackend, effects: Effects, settings: Settings) -> None:
        self.actor = actor
        self.mailbox = actor.mailbox
        self.registry = actor.registry
        self.backend = backend
        self.effects = effects
        self.settings = settings
        self.passes = 0
        self.last: Report | None = None
        self._lock = trio.Lock()
        #: Running agents' meters: agent -> (the attempt, its meter, how far into its log it has read)
        self._meters: dict[str, tuple[int, Meter, int]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self.settings.current.daemon.reconcile_interval):
                await self.backend.wait_changed()
            try:
                await self.reconcile()
            except Exception:
                # The boundary of one pass: a bug must not stop the safety net itself.
                log.exception("reconcile_crashed")

    async def reconcile(self, *, dry_run: bool = False, kill_orphans: bool = False) -> Report:
        """One pass. Never raises for tmux trouble: the report says what went wrong."""
        async with self._lock:
            live_before = list(self.registry.agents_in(LIVE_STATES))
            # In hand: a start or stop in flight, or a change not yet committed (whose
            # effects have not started): their own effects report what happens to them.
            starting = self.effects.in_flight() | self.actor.settling
            try:
                panes = await self.backend.list_panes()
            except TmuxError as e:
                report = Report(dry_run=dry_run, tmux_healthy=False, error=e.message)
                self.last = report
                return report
            plan = diff(live_before, self.registry.agents, panes, starting, at=time.time())
            sessions = {p.session_id for p in panes if p.session_name != KEEPER_SESSION}
            report = Report(dry_run=dry_run, tmux_healthy=True, sessions=len(sessions))
            if not dry_run:
                try:
                    report.restored = await self.backend.enforce_config()
                except TmuxError as e:
                    log.warning("tmux_enforce_failed", error=e.message)
            await self._carry_out(plan, report, dry_run=dry_run, kill_orphans=kill_orphans)
            self.passes += 1
            self.last = report
            if not plan.empty:
                log.info("reconciled", ended=report.ended, adopted=report.adopted, killed_again=report.killed_again,
                         orphans=report.orphans, timed_out=report.timed_out, dry_run=dry_run)
            return report

    async def _carry_out(self, plan: Plan, report: Report, *, dry_run: bool, kill_orphans: bool) -> None:
        for agent in plan.gone:
            if dry_run:
                report.ended.append(agent.id)
                continue
            exit = await self._exit_of_gone(agent)
            if exit is not None:
                report.ended.append(agent.id)
                await self._submit(Exited(agent.id, exit))
        for agent, ids in plan.adopt:
            report.adopted.append(agent.id)
            if not dry_run:
                await self._submit(Adopt(agent.id, ids))
        for pane in plan.kill_again:
            report.killed_again.append(pane.session_id)
            if not dry_run:
                await self._kill(pane.session_id)
        for pane in plan.orphans:
            report.orphans.append(pane.session_id)
            if kill_orphans and not dry_run:
                await self._kill(pane.session_id)
                report.orphans_killed.append(pane.session_id)
        for pane in plan.foreign_sessions:
            report.foreign.append(f"session {pane.session_id} ({pane.session_name})")
            if not dry_run:
                await self._kill(pane.session_id)
        for pane in plan.foreign_panes:
            report.foreign.append(f"pane {pane.pane_id} in session {pane.session_id} ({pane.session_name})")
            if not dry_run:
                await self._kill_pane(pane.pane_id)
        if not dry_run and (report.foreign or report.restored):
            log.warning("tmux_drift", foreign=report.foreign, restored=report.restored)
            await self._submit(ReportDrift([*report.foreign, *(f"restored {r}" for r in report.restored)]))
        for agent in plan.overdue:
            report.timed_out.append(agent.id)
            if not dry_run:
                await self._submit(RequestKill(agent_id=agent.id, reason=timed_out(agent.timeout or 0)))
        if not dry_run:
            await self._watch_stalls(time.time())
            await self._watch_usage()
            await self._watch_task_time(time.time())
        for agent in self.registry.uncleaned():
            if self.effects.cleaning(agent.id):
                continue
            report.cleanups_retried.append(agent.id)
            if not dry_run:
                self.effects.clean_up(agent)

    async def _watch_stalls(self, now: float) -> None:
        """Flag running agents that have shown no output (their log untouched) and no progress
        (their row unchanged) for their policy's ``stall_after``; clear the flag of a flagged
        one whose log moved since. A progress report clears it in the registry itself. An agent
        waiting for the operator's answer is not stalled (its clock starts again at the answer)."""
        for agent in list(self.registry.agents_in([AgentState.RUNNING])):
            limit = agent.policy.stall_after
            if limit is None or agent.approvals:
                continue
            try:
                wrote = self.effects.files(agent).log.stat().st_mtime
            except OSError:
                wrote = 0.0
            if agent.stalled_since is not None:
                if wrote > agent.stalled_since:
                    await self._submit(ClearStall(agent_id=agent.id))
                continue
            last = max(agent.updated_at, wrote)
            if now - last >= limit:
                await self._submit(MarkStalled(agent_id=agent.id, since=last))

    async def _watch_usage(self) -> None:
        """Read what running agents' event streams added to their logs since the last pass, and
        report their running figures where they changed (the registry warns and stops at limits)."""
        providers = self.settings.current.providers
        running = [a for a in self.registry.agents_in([AgentState.RUNNING])
                   if (p := providers.get(a.provider)) is not None and p.events is not EventFormat.NONE]
        for agent_id in set(self._meters) - {a.id for a in self.registry.agents_in(LIVE_STATES)}:
            del self._meters[agent_id]
        if not running:
            return
        events = {a.id: providers[a.provider].events for a in running}
        figures = await trio.to_thread.run_sync(self._read_usage, running, events)
        for agent, usage in zip(running, figures, strict=True):
            if usage != msgspec.structs.replace(agent.usage, warned=[]):
                await self._submit(ReportUsage(agent_id=agent.id, usage=usage))

    def _read_usage(self, agents: list[Agent], events: dict[str, EventFormat]) -> list[Usage]:
        """(In a worker thread.) Each agent's usage after feeding its meter what its log gained,
        at most READ_PER_PASS bytes a pass. A later attempt's meter starts where the last one
        stopped; one first met after a daemon restart starts at the end (its earlier output may
        be another attempt's)."""
        figures = []
        for agent in agents:
            log_path = self.effects.files(agent).log
            try:
                size = log_path.stat().st_size
            except OSError:
                size = 0
            known = self._meters.get(agent.id)
            if known is None:
                meter, offset = Meter(events[agent.id]), (0 if agent.attempt == 1 else size)
            elif known[0] != agent.attempt:
                meter, offset = Meter(events[agent.id]), known[2]
            else:
                _, meter, offset = known
            if size < offset:  # rotated: a new file
                offset = 0
            if size > offset:
                try:
                    with log_path.open("rb") as f:
                        f.seek(offset)
                        data = f.read(READ_PER_PASS)
                except OSError:
                    data = b""
                meter.feed(data)
                offset += len(data)
            self._meters[agent.id] = (agent.attempt, meter, offset)
            figures.append(meter.usage)
        return figures

    async def _watch_task_time(self, now: float) -> None:
        """Stop the live agents of a task whose wall-time limit has passed."""
        for agent in list(self.registry.agents_in(LIVE_STATES - {AgentState.STOPPING})):
            task = self.registry.tasks.get(agent.task_id)
            limit = None if task is None else task.limits.max_wall_seconds
            if task is not None and limit is not None and now >= task.created_at + limit:
                reason = f"limit reached: its task's wall time, {limit:g} s"
                await self._submit(RequestKill(agent_id=agent.id, reason=reason))

    async def _exit_of_gone(self, agent: Agent) -> Exit | None:
        """How an agent whose session vanished ended; None while processes of it still run.

        Its slot is freed only once nothing of it runs: a runner killed by its own agent
        (``kill -9 $PPID``) takes the session with it and leaves the agent running, which
        the agent's cgroup still holds. Without cgroups, its process group is ended."""
        files = self.effects.files(agent)
        exit = read_exit(files)
        orphaned = False
        if self.effects.cgroups is not None:
            orphaned = self.effects.cgroups.populated(agent.id)
            if orphaned and not await self.effects.end_all(agent):
                log.error("agent_outlives_kill", agent_id=agent.id, pids=self.effects.cgroups.pids(agent.id))
                return None  # still live, still holding its slot: the next pass tries again
        elif exit is None and agent.tmux is not None:
            start = read_start(files)
            pids = procs.left_behind(agent.tmux.pane_pid, None if start is None else start.pgid)
            if pids:
                orphaned = True
                procs.signal_all(pids, signal.SIGKILL)
        if exit is None:
            reason = ("runner killed: its agent's processes were still running and were ended" if orphaned
                      else "session gone without an exit record")
            exit = Exit(decided_by=DecidedBy.SESSION_VANISHED, reason=reason)
        return self.effects.with_usage(agent, exit)

    async def resume_stops(self) -> None:
        """At start: re-issue the stop of every agent that was being stopped when the
        previous daemon ended (its kill was committed, its effect was lost)."""
        for agent in list(self.registry.agents_in([AgentState.STOPPING])):
            await self._submit(RequestKill(agent_id=agent.id, reason=agent.kill_reason or "kill requested"))

    async def _submit(self, command: Command) -> None:
        try:
            await self.mailbox.submit(command)
        except IllegalTransition:
            pass  # changed meanwhile (an effect reported first)
        except SupervisorError as e:
            log.warning("reconcile_command_failed", command=type(command).__name__, error=e.message)

    async def _kill_pane(self, pane_id: str) -> None:
        try:
            await self.backend.kill_pane(pane_id)
        except TmuxError as e:
            log.warning("reconcile_kill_failed", pane_id=pane_id, error=e.message)

    async def _kill(self, session_id: str) -> None:
        try:
            await self.backend.kill_session(session_id)
        except TmuxError as e:
            log.warning("reconcile_kill_failed", session_id=session_id, error=e.message)


