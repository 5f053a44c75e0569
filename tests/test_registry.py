"""The pure registry, driven directly: the transition table, admission, counts, findings, load.

Every test builds a :class:`Registry` in memory and calls ``apply``; nothing here does I/O.
Refusals are checked against a deep snapshot, because "raises and changes nothing" is
half of the contract.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from msgspec import Struct, structs

from supervisord_agents.errors import (
    Conflict,
    DuplicateAgent,
    ErrorCode,
    IllegalTransition,
    InvalidParams,
    LimitExceeded,
    SupervisorError,
    UnknownAgent,
    UnknownTask,
)
from supervisord_agents.model import (
    ACTIVE_STATES,
    Agent,
    AgentState,
    Approval,
    ApprovalState,
    Attempt,
    CleanupRecord,
    Counts,
    DecidedBy,
    ErrorClass,
    Exit,
    Finding,
    Limits,
    Severity,
    Task,
    TaskState,
    TmuxIds,
    Usage,
)
from supervisord_agents.registry import (
    AGENT_COMMANDS,
    TRANSITIONS,
    Adopt,
    AnswerApproval,
    Applied,
    CleanUpAgent,
    ClearStall,
    CloseTask,
    CreateTask,
    EventKind,
    Exited,
    Image,
    MarkStalled,
    RecordCleanup,
    Registry,
    ReportFinding,
    ReportProgress,
    ReportUsage,
    RequestApproval,
    RequestKill,
    SetGlobalLimit,
    SpawnAgent,
    Started,
    StartFailed,
    StartSession,
    StopAgent,
    Wake,
    image_of,
    terminal_state,
)

S = AgentState
T0 = 1_700_000_000.0

# --- helpers (also used by test_registry_stateful) ------------------------------------


def task_row(n: int = 1, **limits: int) -> Task:
    """A task with id number ``n`` and the given limits (defaults otherwise)."""
    return Task(id=f"TASK-20240101-000000-{n:08x}", description=f"task {n}", limits=Limits(**limits), created_at=0.0)


def agent_row(task: Task | str, type: str = "worker", n: int = 1, **fields: Any) -> Agent:
    """An agent row as ``api`` builds it before admission (depth and state are decided by the registry)."""
    task_id = task if isinstance(task, str) else task.id
    fields = {"created_at": 0.0, "updated_at": 0.0} | fields
    return Agent(id=f"{type}-000000-{n:06x}", task_id=task_id, type=type, **fields)


def tmux_ids(k: int) -> TmuxIds:
    return TmuxIds(session_id=f"${k}", window_id=f"@{k}", pane_id=f"%{k}", pane_pid=10_000 + k)


def snapshot(reg: Registry) -> dict[str, Any]:
    """Everything observable about a registry, public views and private indexes, deep-copied."""
    return {
        "tasks": dict(reg.tasks),
        "agents": dict(reg.agents),
        "last_seq": reg.last_seq,
        "counts": {"*": reg.counts(), **{t: reg.counts(t) for t in reg.tasks}},
        "uncleaned": sorted(a.id for a in reg.uncleaned()),
        "internals": copy.deepcopy(vars(reg)),
    }


def recount(agents: list[Agent]) -> Counts:
    """Counts recomputed from rows, independently of the registry's indexes."""
    return Counts(
        active=sum(a.state in ACTIVE_STATES for a in agents),
        queued=sum(a.state is S.QUEUED for a in agents),
        sleeping=sum(a.state is S.SLEEPING for a in agents),
        awaiting_approval=sum(a.state.live and bool(a.approvals) for a in agents),
        completed=sum(a.state is S.COMPLETED for a in agents),
        failed=sum(a.state is S.FAILED for a in agents),
        killed=sum(a.state is S.KILLED for a in agents),
        lost=sum(a.state is S.LOST for a in agents),
        spawned=len(agents),
    )


def assert_refused(
    reg: Registry, command: Struct, error: type[SupervisorError], now: float = T0 + 99
) -> SupervisorError:
    """Apply a command that must be refused; check the error type and that nothing changed."""
    before = snapshot(reg)
    with pytest.raises(error) as info:
        reg.apply(command, now)  # type: ignore[arg-type]
    assert snapshot(reg) == before
    return info.value


class Rows:
    """What the store would hold: every row the registry hands over, findings from events."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.agents: dict[str, Agent] = {}
        self.findings: list[Finding] = []

    def commit(self, reg: Registry, applied: Applied) -> None:
        tasks, agents, purged = reg.take_changes()
        self.tasks.update((t.id, t) for t in tasks)
        self.agents.update((a.id, a) for a in agents)
        self.findings.extend(e.data for e in applied.events if e.kind is EventKind.FINDING)
        for task_id in purged:
            self.tasks.pop(task_id, None)
            self.agents = {k: a for k, a in self.agents.items() if a.task_id != task_id}
            self.findings = [f for f in self.findings if f.task_id != task_id]

    def image(self, last_seq: int, *, reverse: bool = False) -> Image:
        def order(rows: list[Any]) -> list[Any]:
            return rows[::-1] if reverse else rows

        return image_of(order(list(self.tasks.values())), order(list(self.agents.values())), order(self.findings),
                        last_seq)


class World:
    """A registry plus a clock, with shorthands for the common command sequences."""

    def __init__(self, *, global_max_concurrent: int = 100) -> None:
        self.reg = Registry(global_max_concurrent=global_max_concurrent)
        self.now = T0
        self._n = itertools.count(1)
        self.db = Rows()

    def apply(self, command: Struct) -> Applied:
        self.now += 1.0
        applied = self.reg.apply(command, self.now)  # type: ignore[arg-type]
        self.db.commit(self.reg, applied)
        return applied

    def task(self, n: int = 1, **limits: int) -> Task:
        return self.apply(CreateTask(task_row(n, **limits))).result  # type: ignore[no-any-return]

    def spawn(self, task: Task, type: str = "worker", parent: Agent | None = None, **fields: Any) -> Agent:
        row = agent_row(task, type, next(self._n), parent=None if parent is None else parent.id, **fields)
        return self.apply(SpawnAgent(row)).result  # type: ignore[no-any-return]

    def run(self, task: Task, type: str = "worker", parent: Agent | None = None, session: int | None = None,
            **fields: Any) -> Agent:
        agent = self.spawn(task, type, parent, **fields)
        k = session if session is not None else next(self._n) + 1000
        return self.apply(Started(agent.id, tmux_ids(k))).result  # type: ignore[no-any-return]

    def exit(self, agent: Agent, exit: Exit | None = None) -> Agent:
        exit = exit or Exit(decided_by=DecidedBy.EXIT_STATUS, code=0)
        return self.apply(Exited(agent.id, exit)).result  # type: ignore[no-any-return]


# --- the transition table ---------------------------------------------------------------

#: The design's table, written out independently of ``registry.TRANSITIONS``: for each
#: legal (state, command) pair, the state the agent is in afterwards (the exit used by
#: the walk is a clean exit with code 0).
EXPECTED: dict[tuple[AgentState, type[Struct]], AgentState] = {
    (S.STARTING, Started): S.RUNNING,
    (S.STARTING, Adopt): S.RUNNING,
    (S.STARTING, StartFailed): S.FAILED,
    (S.STARTING, ReportProgress): S.STARTING,
    (S.STARTING, RequestKill): S.STOPPING,
    (S.STARTING, Exited): S.COMPLETED,
    (S.RUNNING, ReportProgress): S.RUNNING,
    (S.RUNNING, RequestKill): S.STOPPING,
    (S.RUNNING, Exited): S.COMPLETED,
    (S.STOPPING, Started): S.STOPPING,
    (S.STOPPING, Adopt): S.STOPPING,
    (S.STOPPING, StartFailed): S.FAILED,
    (S.STOPPING, ReportProgress): S.STOPPING,
    (S.STOPPING, RequestKill): S.STOPPING,
    (S.STOPPING, Exited): S.KILLED,
    (S.QUEUED, RequestKill): S.KILLED,
    (S.SLEEPING, RequestKill): S.KILLED,
    (S.SLEEPING, Wake): S.STARTING,
    (S.RUNNING, MarkStalled): S.RUNNING,
    (S.RUNNING, ClearStall): S.RUNNING,
    (S.RUNNING, ReportUsage): S.RUNNING,
    (S.RUNNING, RequestApproval): S.RUNNING,
    (S.RUNNING, AnswerApproval): S.RUNNING,
    (S.STOPPING, AnswerApproval): S.STOPPING,
    **{(s, RecordCleanup): s for s in (S.COMPLETED, S.FAILED, S.KILLED, S.LOST)},
}

_TASK = task_row(1)
_EXITS: dict[AgentState, Exit] = {
    S.COMPLETED: Exit(decided_by=DecidedBy.EXIT_STATUS, code=0),
    S.FAILED: Exit(decided_by=DecidedBy.EXIT_STATUS, code=3),
    S.KILLED: Exit(decided_by=DecidedBy.EXIT_STATUS, signal=15),
    S.LOST: Exit(decided_by=DecidedBy.SESSION_VANISHED),
}


def registry_with(state: AgentState) -> tuple[Registry, Agent]:
    """A loaded registry holding one agent in ``state`` (realistic fields for it), a
    running neighbour of another type and one finding, so a snapshot has things to lose."""
    fields: dict[str, Any] = {"state": state, "created_at": T0, "updated_at": T0}
    if state in (S.RUNNING, S.STOPPING) or state.terminal:
        fields |= {"tmux": tmux_ids(1), "started_at": T0}
    if state is S.STOPPING:
        fields["kill_reason"] = "kill requested"
    if state in (S.RUNNING, S.STOPPING):
        fields["approvals"] = [approval("AP-00000000000a", "worker-000000-000001")]
    if state is S.SLEEPING:
        first = Attempt(n=1, started_at=T0, ended_at=T0, exit=Exit(decided_by=DecidedBy.EXIT_STATUS, code=1,
                                                                   error_class=ErrorClass.RATE_LIMIT), then="slept")
        fields |= {"attempt": 2, "attempts": [first], "wake_at": T0 + 100}
    if state.terminal:
        fields |= {"exit": _EXITS[state], "ended_at": T0}
    agent = agent_row(_TASK, "worker", 1, **fields)
    neighbour = agent_row(_TASK, "helper", 2, state=S.RUNNING, tmux=tmux_ids(2), created_at=T0 + 1, updated_at=T0 + 1)
    finding = ReportFinding(task_id=_TASK.id, agent_id=neighbour.id, type="note", severity=Severity.LOW, message="m")
    reg = Registry()
    reg.load(image_of([_TASK], [agent, neighbour], [], last_seq=10))
    reg.apply(finding, T0 + 2)
    return reg, agent


def approval(approval_id: str, agent_id: str, tool: str = "Bash") -> Approval:
    return Approval(id=approval_id, task_id=_TASK.id, agent_id=agent_id, tool=tool, input={"command": "ls"}, at=T0)


def command_for(cls: type[Struct], agent_id: str) -> Struct:
    """One valid-looking instance of each agent command."""
    commands: dict[type[Struct], Struct] = {
        Started: Started(agent_id, tmux_ids(9)),
        Adopt: Adopt(agent_id, tmux_ids(9)),
        StartFailed: StartFailed(agent_id, "tmux said no"),
        ReportProgress: ReportProgress(agent_id=agent_id, activity="working", message="half way", percent=50),
        RequestKill: RequestKill(agent_id=agent_id, reason="enough"),
        Exited: Exited(agent_id, Exit(decided_by=DecidedBy.EXIT_STATUS, code=0)),
        RecordCleanup: RecordCleanup(agent_id, CleanupRecord(ok=True, at=T0)),
        Wake: Wake(agent_id=agent_id, attempt=2),
        MarkStalled: MarkStalled(agent_id=agent_id, since=T0),
        ClearStall: ClearStall(agent_id=agent_id),
        ReportUsage: ReportUsage(agent_id=agent_id, usage=Usage(turns=3, output_tokens=120)),
        RequestApproval: RequestApproval(agent_id=agent_id, approval=approval("AP-00000000000b", agent_id)),
        AnswerApproval: AnswerApproval(agent_id=agent_id, approval_id="AP-00000000000a", allow=True, by="operator"),
    }
    return commands[cls]


def test_transition_table_is_the_designed_one() -> None:
    """registry.TRANSITIONS allows exactly the (state, command) pairs the design lists, no more and no fewer."""
    assert set(TRANSITIONS) == set(EXPECTED)
    assert set(AGENT_COMMANDS) == {cls for _, cls in EXPECTED}


@pytest.mark.parametrize(
    ("state", "cls"),
    list(itertools.product(AgentState, AGENT_COMMANDS)),
    ids=[f"{s.value}-{c.__name__}" for s, c in itertools.product(AgentState, AGENT_COMMANDS)],
)
def test_every_state_command_pair(state: AgentState, cls: type[Struct]) -> None:
    """A legal pair moves the agent to the expected state with fresh sequence numbers; any other pair raises
    IllegalTransition and leaves the whole registry untouched."""
    reg, agent = registry_with(state)
    command = command_for(cls, agent.id)
    expected = EXPECTED.get((state, cls))
    if expected is None:
        error = assert_refused(reg, command, IllegalTransition)
        assert error.code is ErrorCode.ILLEGAL_TRANSITION
        assert error.data == {"agent_id": agent.id, "state": state.value}
        return
    last_seq = reg.last_seq
    outcome = reg.apply(command, T0 + 50)  # type: ignore[arg-type]
    # Most transitions answer with the agent; an approval's, with the approval.
    after = outcome.result if isinstance(outcome.result, Agent) else reg.agents[agent.id]
    assert after.state is expected
    # A cleaned-up agent has settled: it leaves memory, its row stays in the store.
    assert reg.agents.get(agent.id) == (None if cls is RecordCleanup else after)
    assert [e.seq for e in outcome.events] == list(range(last_seq + 1, reg.last_seq + 1))
    assert all(e.agent_id == agent.id for e in outcome.events)
    if expected is not state:
        assert [e.state for e in outcome.events] == [expected]
    rows = {a.id: a for a in reg.agents_of(_TASK.id)} | {after.id: after}
    assert reg.counts(_TASK.id) == recount(list(rows.values()))


def test_unknown_agent_is_refused_and_changes_nothing() -> None:
    """An agent command naming no agent raises UnknownAgent (a LookupError) and changes nothing."""
    reg, _ = registry_with(S.RUNNING)
    error = assert_refused(reg, RequestKill(agent_id="ghost-000000-000000"), UnknownAgent)
    assert isinstance(error, LookupError)
    assert error.code is ErrorCode.NOT_FOUND


# --- admission --------------------------------------------------------------------------


def test_default_limits_are_the_designed_ones() -> None:
    """A task without explicit limits gets 20 concurrent, 45 total and depth 5."""
    assert Limits() == Limits(max_concurrent=20, max_total=45, max_depth=5)


def test_max_concurrent_refuses_the_21st_live_agent() -> None:
    """With the default limits 20 agents may be live at once; the 21st is refused until one ends."""
    w = World()
    task = w.task()
    agents = [w.run(task, f"t{i}") for i in range(20)]
    error = assert_refused(w.reg, SpawnAgent(agent_row(task, "late", 900)), LimitExceeded)
    assert error.data == {"limit": "max_concurrent", "value": 20}
    w.exit(agents[0])
    assert w.spawn(task, "late").state is S.STARTING


def test_max_total_counts_ended_agents_too() -> None:
    """The 46th agent of a task is refused even when no agent is live any more."""
    w = World()
    task = w.task()
    for _ in range(45):
        w.exit(w.run(task))
    assert w.reg.counts(task.id).active == 0
    error = assert_refused(w.reg, SpawnAgent(agent_row(task, "worker", 900)), LimitExceeded)
    assert error.data == {"limit": "max_total", "value": 45}


def test_depth_is_derived_and_capped_at_five() -> None:
    """Depth is the parent's depth plus one whatever the caller claims; a sixth level is refused."""
    w = World()
    task = w.task()
    parent = None
    for depth in range(1, 6):
        row = agent_row(task, f"level{depth}", depth, parent=None if parent is None else parent.id, depth=42)
        parent = w.apply(SpawnAgent(row)).result
        assert parent.depth == depth
    assert parent is not None
    error = assert_refused(w.reg, SpawnAgent(agent_row(task, "level6", 6, parent=parent.id)), LimitExceeded)
    assert error.data == {"limit": "max_depth", "value": 5}


def test_duplicate_type_is_refused_naming_the_existing_agent() -> None:
    """A second live agent of a type in the same task raises DuplicateAgent whose data names the first."""
    w = World()
    task = w.task()
    first = w.run(task, "reviewer")
    w.apply(RequestKill(agent_id=first.id))  # stopping is still live
    error = assert_refused(w.reg, SpawnAgent(agent_row(task, "reviewer", 900)), DuplicateAgent)
    assert error.code is ErrorCode.DUPLICATE_AGENT
    assert isinstance(error, LimitExceeded)
    assert error.data is not None and error.data["existing_agent"] == first.id


def test_type_is_free_again_after_its_agent_ends() -> None:
    """Once the agent of a type has ended, another agent of that type is admitted."""
    w = World()
    task = w.task()
    first = w.run(task, "reviewer")
    w.exit(first, Exit(decided_by=DecidedBy.EXIT_STATUS, code=1))
    second = w.spawn(task, "reviewer")
    assert w.reg.live_of_type(task.id, "reviewer") == second


def test_same_type_in_two_tasks_is_allowed() -> None:
    """Deduplication is per task: two tasks may each have a live agent of one type."""
    w = World()
    a, b = w.task(1), w.task(2)
    w.spawn(a, "reviewer")
    assert w.spawn(b, "reviewer").state is S.STARTING


def test_global_cap_counts_live_agents_of_all_tasks() -> None:
    """The global concurrent cap refuses a spawn (that does not ask to queue) once that many agents
    are live across tasks."""
    w = World(global_max_concurrent=3)
    a, b = w.task(1), w.task(2)
    w.spawn(a, "x")
    w.spawn(a, "y")
    ended = w.spawn(b, "x")
    error = assert_refused(w.reg, SpawnAgent(agent_row(b, "y", 900)), LimitExceeded)
    assert error.data == {"limit": "global_max_concurrent", "value": 3}
    w.apply(StartFailed(ended.id, "no tmux"))
    assert w.spawn(b, "y").state is S.STARTING


def test_a_spawn_that_asks_to_queue_waits_for_a_slot_and_starts_when_one_frees() -> None:
    """Over max concurrent, a queueing spawn is admitted as ``queued`` (no session asked for), counted
    apart from the active ones; when an agent ends, the oldest queued agent is started in the same step."""
    w = World()
    task = w.task(max_concurrent=2)
    running = [w.run(task, "a"), w.run(task, "b")]
    outcome = w.apply(SpawnAgent(agent_row(task, "c", 901), queue=True))
    first = outcome.result
    assert first.state is S.QUEUED and outcome.effects == []
    second = w.apply(SpawnAgent(agent_row(task, "d", 902), queue=True)).result
    assert w.reg.counts(task.id) == Counts(active=2, queued=2, spawned=4)
    ended = w.apply(Exited(running[0].id, Exit(decided_by=DecidedBy.EXIT_STATUS, code=0)))
    promoted = w.reg.agent(first.id)
    assert promoted.state is S.STARTING and w.reg.agent(second.id).state is S.QUEUED  # oldest first
    assert [e.agent_id for e in ended.events] == [running[0].id, first.id]
    assert ended.effects == [CleanUpAgent(w.reg.agent(running[0].id)), StartSession(promoted)]
    assert w.reg.counts(task.id) == Counts(active=2, queued=1, completed=1, spawned=4)


def test_queueing_does_not_lift_the_limits_waiting_would_not_change() -> None:
    """Depth, max total and one live agent per type refuse a spawn even when it asks to queue; a
    queued agent holds its type and counts toward the total."""
    w = World()
    task = w.task(max_concurrent=1, max_total=3)
    w.run(task, "a")
    queued = w.apply(SpawnAgent(agent_row(task, "b", 901), queue=True)).result
    assert queued.state is S.QUEUED
    error = assert_refused(w.reg, SpawnAgent(agent_row(task, "b", 902), queue=True), DuplicateAgent)
    assert error.data is not None and error.data["existing_agent"] == queued.id
    w.apply(SpawnAgent(agent_row(task, "c", 903), queue=True))
    error = assert_refused(w.reg, SpawnAgent(agent_row(task, "d", 904), queue=True), LimitExceeded)
    assert error.data == {"limit": "max_total", "value": 3}


def test_a_queued_agent_killed_before_it_starts_ends_at_once() -> None:
    """Killing a queued agent ends it ``killed`` without a stop (nothing runs): only cleanup follows."""
    w = World()
    task = w.task(max_concurrent=1)
    w.run(task, "a")
    queued = w.apply(SpawnAgent(agent_row(task, "b", 901), queue=True)).result
    outcome = w.apply(RequestKill(agent_id=queued.id, reason="changed my mind"))
    killed = w.reg.agent(queued.id)
    assert killed.state is S.KILLED
    assert killed.exit == Exit(decided_by=DecidedBy.KILL, reason="changed my mind", error_class=ErrorClass.KILLED)
    assert outcome.effects == [CleanUpAgent(killed)]
    assert w.reg.counts(task.id) == Counts(active=1, killed=1, spawned=2)


def test_the_global_cap_queues_across_tasks_and_a_higher_cap_starts_the_queue() -> None:
    """Agents queued on the global cap start in arrival order across tasks, as slots free or when
    the cap is raised; an agent held back by its own task's limit does not hold back another task."""
    w = World(global_max_concurrent=2)
    a, b = w.task(1, max_concurrent=1), w.task(2)
    first = w.run(a, "x")
    w.run(b, "x")
    held = w.apply(SpawnAgent(agent_row(a, "y", 901), queue=True)).result  # global cap, then a's own limit
    waiting = w.apply(SpawnAgent(agent_row(b, "y", 902), queue=True)).result
    outcome = w.apply(SetGlobalLimit(4))
    assert [e.agent_id for e in outcome.events] == [waiting.id]  # `held` still waits for a's only slot
    assert w.reg.agent(held.id).state is S.QUEUED and w.reg.agent(waiting.id).state is S.STARTING
    w.exit(first)
    assert w.reg.agent(held.id).state is S.STARTING
    assert w.reg.counts() == Counts(active=3, completed=1, spawned=4)


def test_a_budget_refuses_spawns_once_the_ended_agents_cost_it() -> None:
    """With max_cost_usd, spawns are admitted until the costs in the task's exit records reach the
    budget; then every spawn is refused, queueing or not. The cost is summed from the rows."""
    w = World()
    task = w.task(max_cost_usd=1)  # type: ignore[arg-type]
    costly = Exit(decided_by=DecidedBy.EXIT_STATUS, code=0, cost_usd=0.6)
    w.exit(w.run(task, "a"), costly)
    running = w.run(task, "b")
    assert w.reg.cost(task.id) == 0.6  # a live agent's cost is not known until it ends
    w.exit(running, costly)
    assert w.reg.cost(task.id) == 1.2
    for queue in (False, True):
        error = assert_refused(w.reg, SpawnAgent(agent_row(task, "c", 900), queue=queue), LimitExceeded)
        assert error.data == {"limit": "max_cost_usd", "value": 1}


def test_closed_task_refuses_spawns() -> None:
    """A closed task admits no more agents, and cannot be closed twice; it stays in memory while it has
    agents that have not settled, then only in the store (the api reports it closed from there)."""
    w = World()
    task = w.task()
    last = w.run(task)
    closed = w.apply(CloseTask(task.id)).result
    assert closed.state is TaskState.CLOSED and closed.closed_at == w.now
    assert_refused(w.reg, SpawnAgent(agent_row(task, "worker", 900)), IllegalTransition)
    assert_refused(w.reg, CloseTask(task.id), IllegalTransition)
    w.exit(last)
    assert task.id in w.reg.tasks
    w.apply(RecordCleanup(last.id, CleanupRecord(ok=True, at=w.now)))
    assert task.id not in w.reg.tasks and w.db.tasks[task.id] == closed
    assert w.reg.counts() == recount(list(w.db.agents.values()))


def test_unknown_task_is_refused() -> None:
    """Spawning into, closing, or reporting into a task that does not exist raises UnknownTask."""
    w = World()
    w.task(1)
    missing = task_row(2)
    assert_refused(w.reg, SpawnAgent(agent_row(missing)), UnknownTask)
    assert_refused(w.reg, CloseTask(missing.id), UnknownTask)
    finding = ReportFinding(task_id=missing.id, agent_id=None, type="x", severity=Severity.INFO, message="m")
    assert_refused(w.reg, finding, UnknownTask)


def test_duplicate_ids_conflict() -> None:
    """Re-using a task id or an agent id raises Conflict."""
    w = World()
    task = w.task()
    agent = w.spawn(task, "worker")
    assert_refused(w.reg, CreateTask(task_row(1)), Conflict)
    w.exit(agent)
    reused = structs.replace(agent_row(task, "worker"), id=agent.id)
    assert_refused(w.reg, SpawnAgent(reused), Conflict)


def test_parent_in_another_task_is_refused() -> None:
    """An agent may not be spawned under a parent that belongs to another task."""
    w = World()
    a, b = w.task(1), w.task(2)
    parent = w.run(a, "lead")
    error = assert_refused(w.reg, SpawnAgent(agent_row(b, "child", 900, parent=parent.id)), InvalidParams)
    assert error.data == {"parent": parent.id}


@pytest.mark.parametrize("end", ["exit", "spawn_failed", "vanished"])
def test_ended_parent_is_refused(end: str) -> None:
    """An agent that has ended (in any way) cannot have new children."""
    w = World()
    task = w.task()
    parent = w.spawn(task, "lead")
    if end == "spawn_failed":
        w.apply(StartFailed(parent.id, "boom"))
    elif end == "vanished":
        w.exit(parent, Exit(decided_by=DecidedBy.SESSION_VANISHED))
    else:
        w.exit(parent)
    assert_refused(w.reg, SpawnAgent(agent_row(task, "child", 900, parent=parent.id)), IllegalTransition)


def test_unknown_parent_is_refused() -> None:
    """A parent id that names no agent raises UnknownAgent."""
    w = World()
    task = w.task()
    assert_refused(w.reg, SpawnAgent(agent_row(task, "child", 900, parent="ghost-000000-000000")), UnknownAgent)


def test_spawn_records_starting_and_asks_for_a_session() -> None:
    """An admitted agent is stored as starting with registry-decided fields, and its effect is StartSession."""
    w = World()
    task = w.task()
    row = agent_row(task, "worker", 7, state=S.RUNNING, tmux=tmux_ids(3), exit=Exit(decided_by=DecidedBy.KILL))
    outcome = w.apply(SpawnAgent(row))
    agent = outcome.result
    assert (agent.state, agent.tmux, agent.exit, agent.created_at, agent.depth) == (S.STARTING, None, None, w.now, 1)
    assert outcome.effects == [StartSession(agent)]
    assert [(e.kind, e.state) for e in outcome.events] == [(EventKind.AGENT_STATE, S.STARTING)]
    assert w.reg.agent_for_session("$3") is None


def test_children_and_tokens_are_indexed() -> None:
    """A parent lists its children in spawn order, and an agent is found by its token hash."""
    w = World()
    task = w.task()
    lead = w.run(task, "lead")
    kids = [w.spawn(task, f"kid{i}", lead, token_hash=f"hash{i}") for i in range(3)]
    assert w.reg.children(lead.id) == [k.id for k in kids]
    assert w.reg.agent_for_token("hash1") == w.reg.agent(kids[1].id)
    assert w.reg.agent_for_token("nope") is None


# --- counts -----------------------------------------------------------------------------


def test_counts_are_derived_per_task_and_globally() -> None:
    """Counts per task and overall follow every state change, equal to a recount of the rows."""
    w = World()
    a, b = w.task(1), w.task(2)
    w.exit(w.run(a, "ok"))
    w.exit(w.run(a, "bad"), Exit(decided_by=DecidedBy.EXIT_STATUS, code=3))
    killed = w.run(a, "killed")
    w.apply(RequestKill(agent_id=killed.id))
    w.exit(killed)
    w.exit(w.run(a, "ghost"), Exit(decided_by=DecidedBy.SESSION_VANISHED))
    w.apply(StartFailed(w.spawn(a, "nostart").id, "boom"))
    w.run(a, "live")
    w.spawn(b, "x")
    stopping = w.run(b, "y")
    w.apply(RequestKill(agent_id=stopping.id))

    assert w.reg.counts(a.id) == Counts(active=1, completed=1, failed=2, killed=1, lost=1, spawned=6)
    assert w.reg.counts(b.id) == Counts(active=2, spawned=2)
    assert w.reg.counts() == Counts(active=3, completed=1, failed=2, killed=1, lost=1, spawned=8)
    for task_id in (a.id, b.id):
        assert w.reg.counts(task_id) == recount(list(w.reg.agents_of(task_id)))
    assert w.reg.counts() == recount(list(w.reg.agents.values()))
    assert w.reg.counts("TASK-20990101-000000-ffffffff") == Counts()


# --- kill, exit and terminal states ----------------------------------------------------


def test_kill_while_starting_stops_once_started() -> None:
    """A kill before the session exists issues no stop; the later Started records the session and then stops it."""
    w = World()
    task = w.task()
    agent = w.spawn(task)
    kill = w.apply(RequestKill(agent_id=agent.id, reason="changed my mind"))
    assert kill.result.state is S.STOPPING and kill.result.kill_reason == "changed my mind"
    assert kill.effects == []
    started = w.apply(Started(agent.id, tmux_ids(5)))
    now = w.reg.agent(agent.id)
    assert now.state is S.STOPPING and now.tmux == tmux_ids(5) and now.started_at == w.now
    assert started.effects == [StopAgent(now, tree=False)]
    assert w.reg.agent_for_session("$5") == now
    assert w.exit(now).state is S.KILLED


def test_kill_while_starting_then_spawn_failed_ends_failed() -> None:
    """A kill before the session exists, followed by a failed start, ends the agent as failed with a cleanup."""
    w = World()
    task = w.task()
    agent = w.spawn(task)
    w.apply(RequestKill(agent_id=agent.id))
    outcome = w.apply(StartFailed(agent.id, "no such cwd"))
    assert outcome.result.state is S.FAILED
    assert outcome.result.exit == Exit(decided_by=DecidedBy.SPAWN_ERROR, reason="no such cwd",
                                       error_class=ErrorClass.START_FAILED)
    assert outcome.effects == [CleanUpAgent(outcome.result)]


def test_kill_running_agent_stops_it_and_a_second_kill_reissues() -> None:
    """Killing a running agent stops it; a second kill (with tree) re-issues the stop and records nothing."""
    w = World()
    task = w.task()
    agent = w.run(task)
    first = w.apply(RequestKill(agent_id=agent.id))
    stopping = first.result
    assert stopping.state is S.STOPPING and stopping.kill_reason == "kill requested"
    assert first.effects == [StopAgent(stopping, tree=False)]
    seq = w.reg.last_seq
    second = w.apply(RequestKill(agent_id=agent.id, tree=True))
    assert second.events == [] and w.reg.last_seq == seq
    assert second.effects == [StopAgent(stopping, tree=True)]


@pytest.mark.parametrize(
    "exit",
    [
        Exit(decided_by=DecidedBy.EXIT_STATUS, code=0),
        Exit(decided_by=DecidedBy.EXIT_STATUS, signal=15),
        Exit(decided_by=DecidedBy.SESSION_VANISHED),
    ],
    ids=["code0", "signal", "vanished"],
)
def test_exit_while_stopping_is_killed(exit: Exit) -> None:
    """However an agent being stopped ends, it ends killed, keeping the exit that decided it
    with the kill's reason."""
    w = World()
    task = w.task()
    agent = w.run(task)
    w.apply(RequestKill(agent_id=agent.id, reason="enough"))
    outcome = w.apply(Exited(agent.id, exit))
    assert outcome.result.state is S.KILLED
    assert outcome.result.exit == structs.replace(exit, reason="enough", error_class=ErrorClass.KILLED)
    assert outcome.result.ended_at == w.now
    assert outcome.effects == [CleanUpAgent(outcome.result)]


@pytest.mark.parametrize(
    ("exit", "kill_requested", "expected"),
    [
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=0), False, S.COMPLETED),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=3), False, S.FAILED),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=-1), False, S.FAILED),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, signal=9), False, S.FAILED),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=0, signal=9), False, S.FAILED),
        (Exit(decided_by=DecidedBy.EXIT_STATUS), False, S.FAILED),
        (Exit(decided_by=DecidedBy.SESSION_VANISHED), False, S.LOST),
        (Exit(decided_by=DecidedBy.SESSION_VANISHED, code=0), False, S.LOST),
        (Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=False), False, S.COMPLETED),
        (Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=True), False, S.FAILED),
        (Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=True, code=0), False, S.FAILED),
        (Exit(decided_by=DecidedBy.RESULT_EVENT), False, S.COMPLETED),
        (Exit(decided_by=DecidedBy.SPAWN_ERROR), False, S.FAILED),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=0), True, S.KILLED),
        (Exit(decided_by=DecidedBy.SESSION_VANISHED), True, S.KILLED),
        (Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=False), True, S.KILLED),
    ],
)
def test_terminal_state_mapping(exit: Exit, kill_requested: bool, expected: AgentState) -> None:
    """terminal_state maps what decided an exit (and whether a kill was asked for) to the terminal state."""
    assert terminal_state(exit, kill_requested=kill_requested) is expected


@pytest.mark.parametrize(
    ("exit", "expected", "reason", "error_class"),
    [
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=0), S.COMPLETED, "", None),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=3), S.FAILED, "exited with code 3", ErrorClass.CRASHED),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, signal=11), S.FAILED, "killed by SIGSEGV", ErrorClass.CRASHED),
        (Exit(decided_by=DecidedBy.SESSION_VANISHED), S.LOST, "session gone without an exit record", ErrorClass.LOST),
        (Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=True, cost_usd=0.5, turns=3), S.FAILED,
         "the agent reported an error", ErrorClass.AGENT_ERROR),
        (Exit(decided_by=DecidedBy.EXIT_STATUS, code=0, is_error=True, reason="auth: 401",
              error_class=ErrorClass.AUTH), S.FAILED, "auth: 401", ErrorClass.AUTH),
    ],
    ids=["code0", "code3", "signal", "vanished", "result-error", "error-with-code0"],
)
def test_exited_running_agent_ends_in_mapped_state(exit: Exit, expected: AgentState, reason: str,
                                                   error_class: ErrorClass | None) -> None:
    """Exited on a running agent ends it in terminal_state's answer, recording the exit with
    a reason and a class for every failure, ending the session claim."""
    w = World()
    task = w.task()
    agent = w.run(task, session=4)
    outcome = w.apply(Exited(agent.id, exit))
    assert outcome.result.state is expected
    assert outcome.result.exit == structs.replace(exit, reason=reason, error_class=error_class)
    assert outcome.effects == [CleanUpAgent(outcome.result)]
    assert w.reg.agent_for_session("$4") is None
    assert w.reg.live_of_type(task.id, "worker") is None


def test_progress_updates_only_given_fields() -> None:
    """A progress report changes the fields it carries, keeps the others, and emits a progress event."""
    w = World()
    task = w.task()
    agent = w.run(task)
    w.apply(ReportProgress(agent_id=agent.id, activity="working", message="first", percent=10))
    outcome = w.apply(ReportProgress(agent_id=agent.id, percent=60))
    after = outcome.result
    assert (after.state, after.activity, after.message, after.progress) == (S.RUNNING, "working", "first", 60)
    assert [(e.kind, e.data) for e in outcome.events] == [
        (EventKind.PROGRESS, {"activity": "working", "message": None, "percent": 60})
    ]


# --- sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Started, Adopt])
def test_two_live_agents_cannot_claim_one_session(cls: type[Started] | type[Adopt]) -> None:
    """A session id held by a live agent cannot be claimed by another: Conflict names the holder."""
    w = World()
    task = w.task()
    holder = w.run(task, "a", session=1)
    other = w.spawn(task, "b")
    error = assert_refused(w.reg, cls(other.id, tmux_ids(1)), Conflict)
    assert error.data == {"session_id": "$1", "agent_id": holder.id}


def test_session_held_by_a_stopping_agent_is_still_taken() -> None:
    """An agent that is stopping still owns its session."""
    w = World()
    task = w.task()
    holder = w.run(task, "a", session=1)
    w.apply(RequestKill(agent_id=holder.id))
    assert_refused(w.reg, Started(w.spawn(task, "b").id, tmux_ids(1)), Conflict)


def test_session_id_can_be_reused_after_its_agent_ended() -> None:
    """tmux recycles session ids; once the first holder has ended, another agent may claim the id."""
    w = World()
    task = w.task()
    first = w.run(task, "a", session=1)
    w.exit(first)
    second = w.apply(Started(w.spawn(task, "b").id, tmux_ids(1))).result
    assert w.reg.agent_for_session("$1") == second
    assert w.reg.agent(first.id).tmux == tmux_ids(1)


# --- cleanup ----------------------------------------------------------------------------


def test_uncleaned_lists_terminal_agents_until_cleanup_succeeds() -> None:
    """Every ended agent is listed by uncleaned() until a successful RecordCleanup; a failed one keeps it listed."""
    w = World()
    task = w.task()
    live = w.run(task, "live")
    done = w.exit(w.run(task, "done"))
    failed = w.apply(StartFailed(w.spawn(task, "nostart").id, "boom")).result
    assert {a.id for a in w.reg.uncleaned()} == {done.id, failed.id}
    assert live.id not in {a.id for a in w.reg.uncleaned()}

    outcome = w.apply(RecordCleanup(done.id, CleanupRecord(ok=False, at=w.now, error="rm failed")))
    assert [e.kind for e in outcome.events] == [EventKind.CLEANUP]
    assert {a.id for a in w.reg.uncleaned()} == {done.id, failed.id}
    assert w.reg.agent(done.id).state is S.COMPLETED

    record = CleanupRecord(ok=True, at=w.now, archive="/x.tar.gz", attempts=2)
    w.apply(RecordCleanup(done.id, record))
    assert {a.id for a in w.reg.uncleaned()} == {failed.id}
    assert done.id not in w.reg.agents and w.db.agents[done.id].cleanup == record


# --- findings ---------------------------------------------------------------------------


def _finding(task: Task, agent: Agent | None, type: str = "bug", severity: Severity = Severity.INFO) -> ReportFinding:
    return ReportFinding(
        task_id=task.id, agent_id=None if agent is None else agent.id, type=type, severity=severity, message=f"{type}!"
    )


def test_findings_get_the_event_sequence_number() -> None:
    """A finding's seq is the sequence number of its event, so findings are ordered with every other event."""
    w = World()
    task = w.task()
    agent = w.run(task)
    seqs = []
    for i in range(4):
        outcome = w.apply(_finding(task, agent if i % 2 else None))
        (event,) = outcome.events
        assert event.kind is EventKind.FINDING and event.data == outcome.result
        assert outcome.result.seq == event.seq == w.reg.last_seq
        seqs.append(outcome.result.seq)
        w.apply(ReportProgress(agent_id=agent.id, percent=i))
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert [f.seq for f in w.db.findings] == seqs
    assert w.reg.findings_use(task.id)[0] == 4


def test_finding_from_agent_of_another_task_is_refused() -> None:
    """An agent may report findings only into its own task; an unknown agent is refused too."""
    w = World()
    a, b = w.task(1), w.task(2)
    agent = w.run(a)
    assert_refused(w.reg, _finding(b, agent), InvalidParams)
    ghost = ReportFinding(
        task_id=a.id, agent_id="ghost-000000-000000", type="bug", severity=Severity.LOW, message="m"
    )
    assert_refused(w.reg, ghost, UnknownAgent)


# --- events -----------------------------------------------------------------------------


def test_events_carry_strictly_increasing_sequence_numbers() -> None:
    """Across a mixed run of commands, event seqs count up by one from the loaded last_seq, and last_seq follows."""
    w = World()
    w.reg.load(image_of([], [], [], last_seq=41))
    seqs: list[int] = []
    task = w.task()
    seqs.append(w.reg.last_seq)
    for outcome in [
        w.apply(SpawnAgent(agent_row(task, "a", 1))),
        w.apply(Started("a-000000-000001", tmux_ids(1))),
        w.apply(ReportProgress(agent_id="a-000000-000001", percent=5)),
        w.apply(_finding(task, None)),
        w.apply(RequestKill(agent_id="a-000000-000001")),
        w.apply(RequestKill(agent_id="a-000000-000001")),
        w.apply(Exited("a-000000-000001", Exit(decided_by=DecidedBy.EXIT_STATUS, code=0))),
        w.apply(RecordCleanup("a-000000-000001", CleanupRecord(ok=True, at=0.0))),
        w.apply(CloseTask(task.id)),
    ]:
        seqs.extend(e.seq for e in outcome.events)
    assert seqs == list(range(42, 42 + len(seqs)))
    assert w.reg.last_seq == seqs[-1] == 50  # nine events: the second kill emits none


def test_create_task_stamps_time_and_opens() -> None:
    """A created task is open and stamped with ``now``, whatever state the caller put in the row."""
    w = World()
    row = structs.replace(task_row(1), state=TaskState.CLOSED, created_at=5.0, closed_at=6.0)
    outcome = w.apply(CreateTask(row))
    assert (outcome.result.state, outcome.result.created_at, outcome.result.closed_at) == (TaskState.OPEN, w.now, None)
    assert [(e.kind, e.task_id) for e in outcome.events] == [(EventKind.TASK_CREATED, row.id)]


# --- load -------------------------------------------------------------------------------


def test_load_rebuilds_identical_counts_and_indexes() -> None:
    """Loading the rows of a registry (in any order) gives the same counts, indexes and query answers."""
    w = World(global_max_concurrent=50)
    a, b = w.task(1, max_concurrent=5), w.task(2)
    lead = w.run(a, "lead")
    kid = w.spawn(a, "kid", lead, token_hash="tok")
    w.exit(w.run(a, "done", lead))
    gone = w.run(b, "gone", session=7)
    w.exit(gone, Exit(decided_by=DecidedBy.SESSION_VANISHED))
    w.run(b, "reuse", session=7)
    cleaned = w.exit(w.run(b, "cleaned"))
    w.apply(RecordCleanup(cleaned.id, CleanupRecord(ok=True, at=w.now)))
    w.apply(_finding(a, kid, "bug", Severity.HIGH))
    w.apply(_finding(b, None, "note"))
    w.apply(CloseTask(b.id))
    orig = w.reg

    loaded = Registry(global_max_concurrent=50)
    loaded.load(w.db.image(orig.last_seq, reverse=True))
    assert snapshot(loaded) == snapshot(orig)
    assert cleaned.id not in loaded.agents and loaded.counts(b.id).spawned == 3
    for task_id in orig.tasks:
        assert [x.id for x in loaded.agents_of(task_id)] == [x.id for x in orig.agents_of(task_id)]
        rows = [x for x in w.db.agents.values() if x.task_id == task_id]
        assert loaded.counts(task_id) == orig.counts(task_id) == recount(rows)
    assert loaded.children(lead.id) == orig.children(lead.id)
    assert loaded.agent_for_token("tok") == orig.agent(kid.id)
    assert loaded.agent_for_session("$7") == orig.agent_for_session("$7") is not None
    assert loaded.live_of_type(a.id, "kid") == orig.agent(kid.id)
    assert loaded.findings_use(a.id) == orig.findings_use(a.id) != (0, 0)


def test_load_replaces_previous_contents() -> None:
    """load() starts from empty: nothing applied before it survives."""
    w = World()
    w.run(w.task(1))
    w.reg.load(image_of([task_row(2)], [], [], last_seq=3))
    assert list(w.reg.tasks) == [task_row(2).id]
    assert w.reg.agents == {} and w.reg.counts() == Counts() and w.reg.last_seq == 3
    assert w.reg.uncleaned() == []


# --- limits the supervisor enforces from the event stream ----------------------------------------


def test_usage_warns_once_near_a_limit_and_stops_the_agent_at_it() -> None:
    """Turns over all attempts count against the agent's limit: a warning event at warn_at of it, once;
    at the limit the agent is stopped with the reason; the task's budget counts live cost too."""
    w = World()
    task = w.task()
    w.apply(CloseTask(task.id)) if False else None
    limits = structs.replace(task.limits, agent_max_turns=10, max_cost_usd=1.0, warn_at=0.5)
    task = structs.replace(task, id="TASK-20240101-000000-0000beef", limits=limits)
    w.apply(CreateTask(task))
    agent = w.run(task)
    quiet = w.apply(ReportUsage(agent_id=agent.id, usage=Usage(turns=2)))
    assert quiet.events == [] and quiet.result.usage.turns == 2
    warned = w.apply(ReportUsage(agent_id=agent.id, usage=Usage(turns=5)))
    assert [(e.kind, e.data["limit"], e.data["stopped"]) for e in warned.events] == [
        (EventKind.LIMIT, "agent_max_turns", False)]
    assert w.apply(ReportUsage(agent_id=agent.id, usage=Usage(turns=6))).events == []  # warned once
    costly = w.apply(ReportUsage(agent_id=agent.id, usage=Usage(turns=6, cost_usd=0.6)))
    assert [e.data["limit"] for e in costly.events] == ["max_cost_usd"] and w.reg.cost(task.id) == 0.6
    stopped = w.apply(ReportUsage(agent_id=agent.id, usage=Usage(turns=10, cost_usd=0.6)))
    assert stopped.result.state is S.STOPPING and stopped.result.kill_reason == "limit reached: turns, 10 of 10"
    assert stopped.effects == [StopAgent(stopped.result, tree=False)]
    assert [e.kind for e in stopped.events] == [EventKind.LIMIT, EventKind.AGENT_STATE]
    ended = w.apply(Exited(agent.id, Exit(decided_by=DecidedBy.EXIT_STATUS, signal=15)))
    assert ended.result.state is S.KILLED and ended.result.exit.reason == "limit reached: turns, 10 of 10"


# --- approvals ---------------------------------------------------------------------------------


def test_a_permission_request_waits_until_answered_and_always_allows_its_tool_after() -> None:
    """A request is pending (the agent counts as awaiting approval) until answered; allowed "always for
    this tool", the next request for that tool is allowed at once; another tool still asks; the requests
    of an agent that ends lapse with it."""
    w = World()
    task = w.task()
    agent = w.run(task)
    asked = w.apply(RequestApproval(agent_id=agent.id, approval=approval("AP-000000000001", agent.id)))
    assert asked.result.state is ApprovalState.PENDING and asked.events[0].kind is EventKind.APPROVAL
    assert w.reg.counts(task.id).awaiting_approval == 1 and w.reg.pending_approval("AP-000000000001")
    answered = w.apply(AnswerApproval(agent_id=agent.id, approval_id="AP-000000000001", allow=True, by="operator",
                                      always=True))
    assert answered.result.state is ApprovalState.ALLOWED and answered.result.answered_by == "operator"
    assert w.reg.counts(task.id).awaiting_approval == 0 and w.reg.pending_approval("AP-000000000001") is None
    again = w.apply(RequestApproval(agent_id=agent.id, approval=approval("AP-000000000002", agent.id)))
    assert again.result.state is ApprovalState.ALLOWED and again.result.answered_by == "always allowed for this tool"
    assert_refused(w.reg, AnswerApproval(agent_id=agent.id, approval_id="AP-000000000001", allow=False, by="x"),
                   IllegalTransition)
    other = w.apply(RequestApproval(agent_id=agent.id, approval=approval("AP-000000000003", agent.id, "Write")))
    assert other.result.state is ApprovalState.PENDING
    ended = w.exit(agent)
    assert ended.approvals == [] and w.reg.counts(task.id).awaiting_approval == 0


def test_a_stall_the_agent_has_since_disproved_is_not_marked() -> None:
    """The stall watch looks at a snapshot: a report since (the row is newer than the silence the
    watch saw), or a request waiting for the operator, makes its MarkStalled a no-op."""
    w = World()
    agent = w.run(w.task())
    seen = w.reg.agent(agent.id).updated_at
    stale = w.apply(MarkStalled(agent_id=agent.id, since=seen - 5))
    assert stale.events == [] and w.reg.agent(agent.id).stalled_since is None
    w.apply(RequestApproval(agent_id=agent.id, approval=approval("AP-000000000001", agent.id)))
    asking = w.apply(MarkStalled(agent_id=agent.id, since=w.reg.agent(agent.id).updated_at))
    assert asking.events == [] and w.reg.agent(agent.id).stalled_since is None
    w.apply(AnswerApproval(agent_id=agent.id, approval_id="AP-000000000001", allow=True, by="operator"))
    since = w.reg.agent(agent.id).updated_at
    silent = w.apply(MarkStalled(agent_id=agent.id, since=since))
    assert [e.kind for e in silent.events] == [EventKind.STALLED] and w.reg.agent(agent.id).stalled_since == since


def test_an_agent_may_have_only_so_many_requests_waiting() -> None:
    w = World()
    agent = w.run(w.task())
    for n in range(8):
        w.apply(RequestApproval(agent_id=agent.id, approval=approval(f"AP-{n:012x}", agent.id)))
    assert_refused(w.reg, RequestApproval(agent_id=agent.id, approval=approval("AP-0000000000ff", agent.id)),
                   LimitExceeded)
