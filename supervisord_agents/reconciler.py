"""The reconciler: keeps the registry truthful about tmux, on a timer and on notifications.

Each pass takes one listing of the private tmux server, computes a plan with the pure
:func:`~supervisord_agents.drift.diff`, and carries it out through ordinary actor
commands (``Exited``, ``Adopt``) and tmux calls. tmux notifications (a window closed,
sessions changed) wake it at once; the timer is the safety net, since notifications
are only hints. It also retries cleanups that failed.
"""

from __future__ import annotations

import time

import structlog
import trio

from .actor import Actor
from .commands import Adopt, Exited, RequestKill
from .config import Settings
from .drift import Plan, diff
from .effects import Effects
from .errors import IllegalTransition, SupervisorError, TmuxError
from .files import read_exit
from .model import LIVE_STATES, AgentState, DecidedBy, Exit
from .protocol import ReconcileReport as Report
from .tmux import TmuxBackend

log = structlog.get_logger()


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
            report = Report(dry_run=dry_run, tmux_healthy=True, sessions=len(panes))
            await self._carry_out(plan, report, dry_run=dry_run, kill_orphans=kill_orphans)
            self.passes += 1
            self.last = report
            if not plan.empty:
                log.info("reconciled", ended=report.ended, adopted=report.adopted, killed_again=report.killed_again,
                         orphans=report.orphans, timed_out=report.timed_out, dry_run=dry_run)
            return report

    async def _carry_out(self, plan: Plan, report: Report, *, dry_run: bool, kill_orphans: bool) -> None:
        for agent in plan.gone:
            report.ended.append(agent.id)
            if dry_run:
                continue
            exit = read_exit(self.effects.files(agent)) or Exit(
                decided_by=DecidedBy.SESSION_VANISHED, reason="session gone without an exit record"
            )
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
        for agent in plan.overdue:
            report.timed_out.append(agent.id)
            if not dry_run:
                await self._submit(RequestKill(agent_id=agent.id, reason=f"timed out after {agent.timeout:g} s"))
        for agent in self.registry.uncleaned():
            if self.effects.cleaning(agent.id):
                continue
            report.cleanups_retried.append(agent.id)
            if not dry_run:
                self.effects.clean_up(agent)

    async def resume_stops(self) -> None:
        """At start: re-issue the stop of every agent that was being stopped when the
        previous daemon ended (its kill was committed, its effect was lost)."""
        for agent in list(self.registry.agents_in([AgentState.STOPPING])):
            await self._submit(RequestKill(agent_id=agent.id, reason=agent.kill_reason or "kill requested"))

    async def _submit(self, command: Exited | Adopt | RequestKill) -> None:
        try:
            await self.mailbox.submit(command)
        except IllegalTransition:
            pass  # changed meanwhile (an effect reported first)
        except SupervisorError as e:
            log.warning("reconcile_command_failed", command=type(command).__name__, error=e.message)

    async def _kill(self, session_id: str) -> None:
        try:
            await self.backend.kill_session(session_id)
        except TmuxError as e:
            log.warning("reconcile_kill_failed", session_id=session_id, error=e.message)


