"""The pure reconciliation diff: registry rows and one tmux listing in, a plan out.

No tmux here: listings are built by hand as :class:`PaneInfo` rows, which is exactly
what the reconciler hands to :func:`diff`.
"""

from __future__ import annotations

from msgspec import structs

from supervisord_agents.drift import Plan, diff, ids_of
from supervisord_agents.model import Agent, AgentState, DecidedBy, Exit
from supervisord_agents.tmux import PaneInfo
from tests.test_registry import agent_row, task_row, tmux_ids

S = AgentState
TASK = task_row(1)


def agent(n: int, state: AgentState, *, tmux: int | None = None) -> Agent:
    """An agent row in ``state``; ``tmux`` is the number of its session, if it has one."""
    fields: dict[str, object] = {"state": state}
    if tmux is not None:
        fields["tmux"] = tmux_ids(tmux)
    if state.terminal:
        fields["exit"] = Exit(decided_by=DecidedBy.EXIT_STATUS, code=0)
    return agent_row(TASK, f"t{n}", n, **fields)


def pane(k: int, agent_id: str | None, *, dead: bool = False) -> PaneInfo:
    """A listed session number ``k``; ``agent_id`` is its marker (None: not one of ours)."""
    ids = tmux_ids(k)
    return PaneInfo(
        session_id=ids.session_id, session_name=f"sa-{agent_id or 'foreign'}", window_id=ids.window_id,
        pane_id=ids.pane_id, pane_pid=ids.pane_pid, pane_dead=dead, agent_id=agent_id,
        task_id=None if agent_id is None else TASK.id,
    )


def plan_for(agents: list[Agent], panes: list[PaneInfo], *, starting: set[str] | frozenset[str] = frozenset(),
             live_before: list[Agent] | None = None) -> Plan:
    """diff() with the live agents of ``agents`` as the snapshot taken before the listing, unless given."""
    if live_before is None:
        live_before = [a for a in agents if a.state.live]
    return diff(live_before, {a.id: a for a in agents}, panes, starting)


def test_everything_in_place_is_an_empty_plan() -> None:
    """Live agents whose sessions are listed and alive need nothing done."""
    running = agent(1, S.RUNNING, tmux=1)
    stopping = agent(2, S.STOPPING, tmux=2)
    plan = plan_for([running, stopping], [pane(1, running.id), pane(2, stopping.id)])
    assert plan.empty and plan == Plan()


def test_live_agent_without_a_session_is_gone() -> None:
    """A running or stopping agent whose session is not in the listing has ended."""
    running = agent(1, S.RUNNING, tmux=1)
    stopping = agent(2, S.STOPPING, tmux=2)
    kept = agent(3, S.RUNNING, tmux=3)
    plan = plan_for([running, stopping, kept], [pane(3, kept.id)])
    assert plan.gone == [running, stopping]
    assert (plan.adopt, plan.kill_again, plan.orphans) == ([], [], [])
    assert not plan.empty


def test_dead_pane_counts_as_gone() -> None:
    """A listed session whose pane is dead (the agent exited, the window lingers) is an ended agent."""
    running = agent(1, S.RUNNING, tmux=1)
    plan = plan_for([running], [pane(1, running.id, dead=True)])
    assert plan.gone == [running]
    assert plan.adopt == [] and plan.kill_again == []


def test_gone_reports_the_current_row() -> None:
    """The plan carries the agent as it is now, not the older copy from before the listing."""
    before = agent(1, S.RUNNING, tmux=1)
    now = structs.replace(before, state=S.STOPPING, kill_reason="kill requested")
    plan = plan_for([now], [], live_before=[before])
    assert plan.gone == [now]


def test_starting_agent_with_a_marker_session_is_adopted() -> None:
    """A starting agent with no tmux ids whose marker session exists (the daemon died in between) is adopted
    with the listed session's exact ids."""
    starting = agent(1, S.STARTING)
    listed = pane(7, starting.id)
    plan = plan_for([starting], [listed])
    assert plan.adopt == [(starting, ids_of(listed))]
    assert ids_of(listed) == tmux_ids(7)
    assert plan.gone == []


def test_starting_agent_without_a_session_is_gone() -> None:
    """A starting agent that is not being started and has no session never got one: it has ended."""
    starting = agent(1, S.STARTING)
    assert plan_for([starting], []).gone == [starting]


def test_starting_agent_with_a_dead_pane_is_gone_not_adopted() -> None:
    """A marker session whose pane is already dead is not adopted; the agent has ended."""
    starting = agent(1, S.STARTING)
    plan = plan_for([starting], [pane(1, starting.id, dead=True)])
    assert plan.gone == [starting] and plan.adopt == []


def test_agents_being_started_are_skipped() -> None:
    """Agents whose start is in flight are neither gone (no session yet) nor adopted (the start will report)."""
    without_session = agent(1, S.STARTING)
    with_session = agent(2, S.STARTING)
    plan = plan_for(
        [without_session, with_session], [pane(2, with_session.id)], starting={without_session.id, with_session.id}
    )
    assert plan.empty


def test_agent_started_during_the_listing_is_never_gone() -> None:
    """An agent that was not live before the listing (it started while tmux was being listed) is not reported
    gone even though the listing lacks its session."""
    earlier = agent(1, S.RUNNING, tmux=1)
    newcomer = agent(2, S.RUNNING, tmux=2)
    plan = plan_for([earlier, newcomer], [pane(1, earlier.id)], live_before=[earlier])
    assert plan.empty


def test_agent_that_ended_meanwhile_is_not_gone() -> None:
    """An agent live before the listing but terminal now has already been dealt with."""
    before = agent(1, S.RUNNING, tmux=1)
    now = structs.replace(before, state=S.COMPLETED, exit=Exit(decided_by=DecidedBy.EXIT_STATUS, code=0))
    assert plan_for([now], [], live_before=[before]).empty


def test_agent_that_settled_meanwhile_is_not_gone() -> None:
    """An agent live before the listing that ended, was cleaned up and left memory during it is skipped."""
    before = agent(1, S.RUNNING, tmux=1)
    assert plan_for([], [], live_before=[before]).empty


def test_sessions_of_terminal_agents_are_killed_again() -> None:
    """A marker session whose agent is terminal (alive or with a dead pane) is listed for killing again."""
    done = agent(1, S.COMPLETED, tmux=1)
    lost = agent(2, S.LOST, tmux=2)
    killed = agent(3, S.KILLED, tmux=3)
    panes = [pane(1, done.id), pane(2, lost.id, dead=True), pane(3, killed.id)]
    plan = plan_for([done, lost, killed], panes)
    assert plan.kill_again == panes
    assert plan.gone == [] and plan.orphans == []


def test_marker_session_without_a_record_is_an_orphan() -> None:
    """A session carrying our marker for an agent we have no record of is an orphan, dead pane or not."""
    orphans = [pane(1, "ghost-000000-000001"), pane(2, "ghost-000000-000002", dead=True)]
    plan = plan_for([], orphans)
    assert plan.orphans == orphans
    assert plan.kill_again == [] and plan.gone == []


def test_sessions_without_our_marker_are_foreign() -> None:
    """Our server holds only agents' sessions: an unmarked session is foreign (ended), and does not
    stand in for an agent whose own session is listed."""
    running = agent(1, S.RUNNING, tmux=1)
    foreign = [pane(2, None), pane(3, None, dead=True)]
    plan = plan_for([running], [pane(1, running.id), *foreign])
    assert plan == Plan(foreign_sessions=foreign)


def test_extra_panes_and_forged_markers_are_foreign() -> None:
    """A second pane in an agent's session or in the keeper's, and a session whose marker names a live
    agent running elsewhere, are foreign; the agent's own pane is kept, whatever its number."""
    running = agent(1, S.RUNNING, tmux=2)
    own = pane(2, running.id)
    earlier = structs.replace(pane(1, running.id), session_id=own.session_id, window_id="@9")
    keeper, keeper_extra = (structs.replace(pane(k, None), session_id="$0", session_name="__ctl") for k in (0, 4))
    forged = pane(3, running.id)
    plan = plan_for([running], [keeper, keeper_extra, earlier, own, forged])
    assert plan == Plan(foreign_sessions=[forged], foreign_panes=[keeper_extra, earlier])


def test_a_mixed_listing() -> None:
    """One listing with every kind of row gives each its place in the plan."""
    running = agent(1, S.RUNNING, tmux=1)
    vanished = agent(2, S.RUNNING, tmux=2)
    crashed = agent(3, S.STARTING)
    in_flight = agent(4, S.STARTING)
    done = agent(5, S.FAILED, tmux=5)
    panes = [pane(1, running.id), pane(3, crashed.id), pane(5, done.id), pane(6, "ghost-000000-000006"), pane(7, None)]
    plan = plan_for([running, vanished, crashed, in_flight, done], panes, starting={in_flight.id})
    assert plan == Plan(
        gone=[vanished], adopt=[(crashed, tmux_ids(3))], kill_again=[panes[2]], orphans=[panes[3]],
        foreign_sessions=[panes[4]],
    )


def test_stopping_agent_killed_before_its_session_was_recorded_is_acted_on() -> None:
    """A stopping agent with no tmux ids (killed while starting, then the daemon died before Started was
    recorded) whose marker session is alive must be acted on: adopted so it can be stopped, or its session
    killed. Doing nothing leaves a live session and an agent stuck in stopping for ever."""
    stuck = agent(1, S.STOPPING)
    listed = pane(1, stuck.id)
    plan = plan_for([stuck], [listed])
    assert [a.id for a, _ in plan.adopt] == [stuck.id] or plan.kill_again == [listed]



def test_a_running_agent_past_its_timeout_is_overdue() -> None:
    """Only a running agent whose created_at + timeout has passed is overdue; no clock, no timeouts."""
    late = structs.replace(agent(1, S.RUNNING, tmux=1), timeout=10.0, created_at=100.0)
    early = structs.replace(agent(2, S.RUNNING, tmux=2), timeout=10.0, created_at=105.0)
    panes = [pane(1, late.id), pane(2, early.id)]
    registry = {a.id: a for a in (late, early)}
    assert diff([late, early], registry, panes, set(), at=110.0).overdue == [late]
    assert diff([late, early], registry, panes, set()).overdue == []


def test_an_agent_promoted_from_the_queue_during_the_listing_is_not_gone() -> None:
    """An agent queued when the listing began and starting now (a slot freed meanwhile) has no session in
    that listing yet: it is not judged by it."""
    queued = agent(1, S.QUEUED)
    promoted = structs.replace(queued, state=S.STARTING)
    assert plan_for([promoted], [], live_before=[queued]) == Plan()
