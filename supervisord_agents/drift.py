"""Drift, the pure half of reconciliation: compare the registry with one listing of tmux.

:func:`diff` takes the live agents as they were *before* the listing was taken, the
listing, and the agents whose start is in flight, and returns a :class:`Plan`. It does
no I/O: the reconciler (``reconciler.py``, the loop) lists tmux, calls this, and turns the plan
into commands for the actor and calls to tmux.

The rules:

- a live agent whose session is not in the listing (or whose pane is dead) has ended:
  its exit is read from its status record, and without one it is ``lost``;
- a session with our marker whose agent is ``starting`` and not being started right
  now (the daemon died between persisting ``starting`` and recording ``running``) is
  adopted as ``running``; if a kill arrived meanwhile (``stopping``), adopting it
  records the session and issues the stop;
- a session with our marker whose agent is terminal is killed again;
- a session with our marker and no agent record is an orphan: reported, and killed
  only on request;
- a running agent past its wall-clock timeout (counted from its start, not from its
  time in the queue) is overdue: the reconciler kills it;
- a queued agent has no session yet, and none is looked for;
- our private server holds nothing but the keeper session and one pane per agent
  session: a session without our marker, a second pane or window in an agent's session
  or in the keeper's, and a session whose marker names a live agent that runs in
  another session (a forged marker) are foreign, and are ended. Whatever runs there
  was started through tmux, outside any agent's cgroup.

Taking the live agents before the listing matters: an agent that starts while the
listing is in flight is not in the snapshot, so it can never be mistaken for gone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Final

from msgspec import Struct

from .model import Agent, AgentState, TmuxIds
from .tmux import KEEPER_SESSION, PaneInfo


class Plan(Struct, frozen=True, kw_only=True):
    gone: list[Agent] = []  # live agents whose session has gone
    adopt: list[tuple[Agent, TmuxIds]] = []
    kill_again: list[PaneInfo] = []  # sessions of terminal agents
    orphans: list[PaneInfo] = []  # marker sessions with no agent record
    overdue: list[Agent] = []  # running agents past their timeout
    foreign_sessions: list[PaneInfo] = []  # sessions that are no agent's (first pane of each)
    foreign_panes: list[PaneInfo] = []  # panes beside an agent's own (or the keeper's)

    @property
    def empty(self) -> bool:
        return not (self.gone or self.adopt or self.kill_again or self.orphans or self.overdue
                    or self.foreign_sessions or self.foreign_panes)


#: Live states without a session: waiting for a slot, or between attempts.
_SESSIONLESS: Final = frozenset({AgentState.QUEUED, AgentState.SLEEPING})


def ids_of(pane: PaneInfo) -> TmuxIds:
    return TmuxIds(session_id=pane.session_id, window_id=pane.window_id, pane_id=pane.pane_id, pane_pid=pane.pane_pid)


def diff(
    live_before: Iterable[Agent],
    agents_now: Mapping[str, Agent],
    panes: Iterable[PaneInfo],
    starting: Collection[str],
    at: float | None = None,
) -> Plan:
    """The plan that makes the registry agree with the listing ``panes`` (taken at time ``at``)."""
    by_agent: dict[str, PaneInfo] = {}
    kill_again: list[PaneInfo] = []
    orphans: list[PaneInfo] = []
    foreign_sessions: list[PaneInfo] = []
    foreign_panes: list[PaneInfo] = []
    sessions: dict[str, list[PaneInfo]] = {}
    for pane in panes:
        sessions.setdefault(pane.session_id, []).append(pane)
    for session in sessions.values():
        session.sort(key=_pane_number)
        pane, others = session[0], session[1:]
        if pane.session_name == KEEPER_SESSION:
            foreign_panes += others
            continue
        if pane.agent_id is None:
            foreign_sessions.append(pane)
            continue
        agent = agents_now.get(pane.agent_id)
        if agent is not None and agent.tmux is not None:
            if agent.state.live and agent.tmux.session_id != pane.session_id:
                foreign_sessions.append(pane)  # a forged marker: the agent runs elsewhere
                continue
            own = [p for p in session if p.pane_id == agent.tmux.pane_id]
            pane, others = (own[0], [p for p in session if p is not own[0]]) if own else (pane, others)
        foreign_panes += others
        if agent is None:
            orphans.append(pane)
        elif agent.state.terminal:
            kill_again.append(pane)
        elif not pane.pane_dead:
            by_agent[agent.id] = pane
    gone: list[Agent] = []
    adopt: list[tuple[Agent, TmuxIds]] = []
    overdue: list[Agent] = []
    for before in live_before:
        if before.id in starting:
            continue
        now = agents_now.get(before.id)
        if now is None or now.state.terminal:
            continue  # it ended during the listing (and may have settled: left memory)
        if {before.state, now.state} & _SESSIONLESS:
            continue  # a queued or sleeping agent has no session (nor one that woke during the listing)
        live_pane = by_agent.get(before.id)
        if live_pane is None:
            gone.append(now)
        elif now.tmux is None and now.state in (AgentState.STARTING, AgentState.STOPPING):
            adopt.append((now, ids_of(live_pane)))
        elif (at is not None and now.timeout is not None and now.state is AgentState.RUNNING
              and at >= (now.started_at or now.created_at) + now.timeout):
            overdue.append(now)
    return Plan(gone=gone, adopt=adopt, kill_again=kill_again, orphans=orphans, overdue=overdue,
                foreign_sessions=foreign_sessions, foreign_panes=foreign_panes)


def _pane_number(pane: PaneInfo) -> int:
    """tmux numbers panes in creation order: ``%12``."""
    digits = pane.pane_id.lstrip("%")
    return int(digits) if digits.isdigit() else 1 << 62
