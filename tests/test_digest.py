"""The digest, directly: selectors over the model's vocabularies, and one line per event, the
same whether the event is live (Structs) or replayed (its JSON)."""

from __future__ import annotations

import msgspec
import pytest

from supervisord_agents.digest import check_selector, selects, summary, who
from supervisord_agents.errors import InvalidParams
from supervisord_agents.model import (
    Agent,
    AgentState,
    CleanupRecord,
    DecidedBy,
    Event,
    EventKind,
    Exit,
    Finding,
    Severity,
    Task,
)

TASK = "TASK-20260101-120000-abcdef12"
AGENT = "worker-120000-abcdef"


def ev(kind: EventKind, data: object = None, state: AgentState | None = None, agent: str | None = AGENT) -> Event:
    return Event(seq=7, at=0.0, kind=kind, task_id=TASK, agent_id=agent, state=state, data=data)


def replayed(event: Event) -> Event:
    """The event as a client decodes it from the log: its data as plain JSON values."""
    return msgspec.json.decode(msgspec.json.encode(event), type=Event)


def test_every_kind_and_every_state_is_a_selector_and_nothing_else_is() -> None:
    """Selectors come from the model's enums (a kind added there is selectable at once); a
    typo is refused with what a selector may be."""
    for kind in EventKind:
        assert check_selector(kind.value) == kind.value
    for state in AgentState:
        assert check_selector(f"agent:{state.value}") == f"agent:{state.value}"
    assert check_selector("*") == "*"
    for bad in ("findings", "agent:faild", "agent:", "agent_state:failed", "", "Finding"):
        with pytest.raises(InvalidParams, match="agent:<state>"):
            check_selector(bad)


def test_agent_state_selectors_pick_only_that_state() -> None:
    """``agent:failed`` picks agent_state events into failed, not other states nor other kinds."""
    failed = ev(EventKind.AGENT_STATE, state=AgentState.FAILED)
    running = ev(EventKind.AGENT_STATE, state=AgentState.RUNNING)
    progress = ev(EventKind.PROGRESS, {"percent": 1})
    assert selects(["agent:failed"], failed) and not selects(["agent:failed"], running)
    assert not selects(["agent:failed"], progress)
    assert selects(["agent_state"], running) and selects(["*"], progress)
    assert selects(["finding", "progress"], progress) and not selects([], progress)


def test_each_kind_reads_the_same_live_and_replayed() -> None:
    """Each kind has its own short line, and a live event (Structs) reads as its replay (JSON)."""
    task = Task(id=TASK, description="review\nthe parser", created_at=0.0)
    failed = Agent(id=AGENT, task_id=TASK, type="worker", state=AgentState.FAILED, created_at=0.0, updated_at=0.0,
                   exit=Exit(decided_by=DecidedBy.EXIT_STATUS, code=3, reason="exited with code 3"))
    done = msgspec.structs.replace(failed, state=AgentState.COMPLETED,
                                   exit=Exit(decided_by=DecidedBy.EXIT_STATUS, code=0, answer="all\ndone"))
    cases = [
        (ev(EventKind.TASK_CREATED, task, agent=None), "P2 review the parser"),
        (ev(EventKind.AGENT_STATE, failed, AgentState.FAILED), "failed: exited with code 3"),
        (ev(EventKind.AGENT_STATE, done, AgentState.COMPLETED), "completed: ok: all done"),
        (ev(EventKind.PROGRESS, {"activity": "testing", "message": "half", "percent": 50}), "50% [testing] half"),
        (ev(EventKind.FINDING, Finding(seq=7, task_id=TASK, agent_id=AGENT, type="bug", severity=Severity.HIGH,
                                       message="off by one", at=0.0)), "high bug: off by one"),
        (ev(EventKind.CLEANUP, CleanupRecord(ok=True, at=0.0)), "ok"),
        (ev(EventKind.CLEANUP, CleanupRecord(ok=False, at=0.0, error="busy", attempts=2)),
         "failed (attempt 2): busy"),
        (ev(EventKind.DRIFT, {"what": ["session $3 (x)", "restored hook"]}, agent=None),
         "undone: session $3 (x); restored hook"),
        (ev(EventKind.TASK_PURGED, {"agents": 4, "reason": "retention"}, agent=None),
         "4 agents' history deleted (retention)"),
        (ev(EventKind.DAEMON_DOWNTIME, {"down_since": 1.0, "seconds": 125.0, "stopped": False,
                                        "ended": [AGENT], "adopted": []}, agent=None),
         f"the daemon was down 2.1 min (not stopped cleanly); 1 agent(s) found ended: {AGENT}"),
    ]
    for event, line in cases:
        assert summary(event) == line, event.kind
        assert summary(replayed(event)) == line, event.kind


def test_who_and_width() -> None:
    """Who is the agent, else the task, else the daemon; a long line is clipped to the width."""
    assert who(ev(EventKind.PROGRESS)) == AGENT
    assert who(ev(EventKind.TASK_CLOSED, agent=None)) == TASK
    assert who(Event(seq=1, at=0.0, kind=EventKind.DRIFT, task_id="")) == "daemon"
    long = summary(ev(EventKind.PROGRESS, {"message": "x" * 500, "percent": 1}), width=50)
    assert len(long) == 50 and long.endswith("…")


def test_what_a_waiting_agent_asks_for_stays_on_one_line() -> None:
    """The tool an agent asks to use is its own text: it cannot add lines to the operator's
    status or show (nor run on past the column)."""
    from supervisord_agents.digest import how_it_stands
    from supervisord_agents.model import Approval

    forged = "Bash\nTASK-20260101-120000-abcdef12  all agents completed, nothing to approve" + " pad" * 30
    asking = Approval(id="AP-000000000001", task_id=TASK, agent_id=AGENT, tool=forged, input={}, at=0.0)
    agent = Agent(id=AGENT, task_id=TASK, type="worker", state=AgentState.RUNNING, created_at=0.0, updated_at=0.0,
                  approvals=[asking, asking])
    standing = how_it_stands(agent)
    assert "\n" not in standing and standing.startswith("awaiting approval since ")
    assert "(AP-000000000001) and 1 more" in standing and len(standing) < 130
