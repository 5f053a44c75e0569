"""Hypothesis drives random command sequences through the registry and checks its invariants.

Limits are tiny so that refusals (limits, duplicates, session conflicts, illegal
transitions) are as common as successes. Every refused command must leave the registry
exactly as it was; after every step the counts are recounted from the rows and every
limit and uniqueness rule is checked against them.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
from collections import Counter
from collections.abc import Callable, Collection

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from msgspec import Struct, structs

from supervisord_agents.errors import Conflict, SupervisorError
from supervisord_agents.model import (
    ACTIVE_STATES,
    AGENT_ID_PATTERN,
    LIVE_STATES,
    TERMINAL_STATES,
    Agent,
    AgentState,
    Approval,
    CleanupRecord,
    DecidedBy,
    ErrorClass,
    Exit,
    Limits,
    OnRateLimit,
    OnStall,
    Policy,
    Restart,
    Severity,
    Task,
    TaskState,
    TmuxIds,
    Usage,
    spent,
    turns,
)
from supervisord_agents.registry import (
    Adopt,
    AnswerApproval,
    Applied,
    ClearStall,
    CloseTask,
    CreateTask,
    Exited,
    MarkStalled,
    PurgeTask,
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
    Wake,
)
from supervisord_agents.tables import finding_size, settled
from tests.test_registry import T0, Rows, recount, snapshot

S = AgentState
TYPES = ("alpha", "beta", "gamma")
SESSIONS = ("$1", "$2", "$3", "$4", "$5")
GLOBAL_CAP = 6
EXITS = (
    Exit(decided_by=DecidedBy.EXIT_STATUS, code=0),
    Exit(decided_by=DecidedBy.EXIT_STATUS, code=3),
    Exit(decided_by=DecidedBy.EXIT_STATUS, signal=9),
    Exit(decided_by=DecidedBy.SESSION_VANISHED),
    Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=True),
    Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=False),
    Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=False, cost_usd=0.1),
    Exit(decided_by=DecidedBy.EXIT_STATUS, code=1, cost_usd=0.7),
    # Early ends a policy may answer with another attempt: a rate limit (with and without its
    # reset), the provider failing; each reports the conversation it had.
    Exit(decided_by=DecidedBy.EXIT_STATUS, code=1, error_class=ErrorClass.RATE_LIMIT, retry_at=T0 + 30,
         session_id="conv-1", cost_usd=0.25),
    Exit(decided_by=DecidedBy.EXIT_STATUS, code=1, error_class=ErrorClass.RATE_LIMIT, session_id="conv-2"),
    Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=True, error_class=ErrorClass.API_ERROR, session_id="conv-1",
         cost_usd=0.5, turns=2),
)
PROVIDERS = ("claude", "codex")
CONVERSATIONS = ("conv-1", "conv-2")
policies = st.builds(
    Policy, on_rate_limit=st.sampled_from([OnRateLimit.SLEEP] * 3 + [OnRateLimit.FAIL]),
    max_rate_limit_waits=st.integers(0, 2), rate_limit_backoff=st.sampled_from([0.0, 5.0]),
    restart=st.sampled_from([Restart.ON_FAILURE] * 3 + [Restart.NEVER]), max_attempts=st.integers(1, 3),
    backoff=st.sampled_from([0.0, 2.0]), backoff_max=st.just(10.0), on_stall=st.sampled_from(OnStall),
)
#: Fields a terminal agent may still change: only its cleanup record (and when that happened).
_MUTABLE_WHEN_TERMINAL = ("cleanup", "updated_at")

pick = st.integers(min_value=0, max_value=63)
#: How a rule chooses its target: mostly one for which the command is legal (so the machine gets somewhere),
#: sometimes any agent (illegal transitions), now and then an id that does not exist.
aim = st.sampled_from(["fit"] * 6 + ["any"] * 3 + ["unknown"])
small_limits = st.builds(
    Limits, max_concurrent=st.integers(1, 3), max_total=st.integers(1, 6), max_depth=st.integers(1, 3),
    max_findings=st.integers(1, 4), max_findings_bytes=st.integers(1, 12),
    agent_max_turns=st.none() | st.integers(1, 6), agent_max_cost_usd=st.none() | st.sampled_from([0.3, 1.0]),
    max_cost_usd=st.none() | st.sampled_from([0.5, 2.0]), warn_at=st.sampled_from([0.5, 1.0]),
)
has_agents = precondition(lambda self: bool(self.reg.agents))
UNKNOWN_TASK = "TASK-20990101-000000-ffffffff"
UNKNOWN_AGENT = "ghost-000000-000000"


class RegistryMachine(RuleBasedStateMachine):
    """Random commands against one registry, with an independent tally of what was emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry(global_max_concurrent=GLOBAL_CAP)
        self.now = T0
        self.emitted = 0
        self.ended: dict[str, Agent] = {}  # terminal agents as first seen
        self.serial = itertools.count(1)
        self.db = Rows()  # what the store holds: every row, settled ones too
        self.stopped: set[str] = set()  # agents seen stopping for good

    # -- plumbing ------------------------------------------------------------------

    def apply(self, command: Struct) -> Applied | None:
        """Apply a command; a refusal must change nothing, a success must number its events from last_seq + 1."""
        before = snapshot(self.reg)
        self.now += 1.0
        try:
            outcome = self.reg.apply(command, self.now)  # type: ignore[arg-type]
        except SupervisorError:
            assert snapshot(self.reg) == before, f"refused {command!r} changed the registry"
            return None
        first = before["last_seq"] + 1
        assert [e.seq for e in outcome.events] == list(range(first, first + len(outcome.events)))
        self.emitted += len(outcome.events)
        self.db.commit(self.reg, outcome)
        for e in outcome.events:  # what the machine reached (--hypothesis-show-statistics)
            event(f"{type(command).__name__} -> {e.state or e.kind}")
        return outcome

    def task_id(self, aim: str, i: int) -> str:
        """A task: an open one when aiming to fit, any when not, or one that does not exist."""
        open_ = [t.id for t in self.reg.tasks.values() if t.state is TaskState.OPEN]
        pool = open_ if aim == "fit" and open_ else list(self.reg.tasks)
        return UNKNOWN_TASK if aim == "unknown" or not pool else pool[i % len(pool)]

    def agent_id(self, aim: str, i: int, fit: Collection[AgentState] = (), task_id: str | None = None) -> str:
        """An agent: one in a state in ``fit`` when aiming to fit (and one exists), any when not, or a ghost."""
        agents = [a for a in self.reg.agents.values() if task_id is None or a.task_id == task_id]
        fitting = [a for a in agents if a.state in fit]
        pool = fitting if aim == "fit" and fitting else agents
        return UNKNOWN_AGENT if aim == "unknown" or not pool else pool[i % len(pool)].id

    # -- rules ---------------------------------------------------------------------

    @initialize(limits=st.lists(small_limits, min_size=1, max_size=3))
    def first_tasks(self, limits: list[Limits]) -> None:
        for task_limits in limits:
            self.create_task(task_limits, reuse=1, i=0)

    @rule(limits=small_limits, reuse=st.integers(0, 9), i=pick)
    def create_task(self, limits: Limits, reuse: int, i: int) -> None:
        if reuse == 0 and self.reg.tasks:
            task_id = self.task_id("any", i)  # an id in use: Conflict
        else:
            task_id = f"TASK-20240101-000000-{next(self.serial):08x}"
        self.apply(CreateTask(Task(id=task_id, description="t", limits=limits, created_at=0.0)))

    @rule(i=pick, held=st.booleans())
    def purge_task(self, i: int, held: bool) -> None:
        """Purge a closed task the registry no longer holds (or, to be refused, one it holds)."""
        pool = [t for t in self.db.tasks if (t in self.reg.tasks) == held]
        if pool:
            task_id = pool[i % len(pool)]
            settled = Counter(a.state for a in self.db.agents.values() if a.task_id == task_id)
            self.apply(PurgeTask(task_id=task_id, settled=dict(settled)))

    @rule(aim=aim, i=pick, chance=st.integers(0, 3))
    def close_task(self, aim: str, i: int, chance: int) -> None:
        if chance == 0 or aim != "fit":  # closing is rarer than the rest, or few spawns would ever succeed
            self.apply(CloseTask(self.task_id(aim, i)))

    @rule(
        aim=aim, i=pick, type=st.sampled_from(TYPES), parent=st.none() | st.tuples(aim, pick),
        reuse_id=st.integers(0, 19), queue=st.booleans(), policy=policies, provider=st.sampled_from(PROVIDERS),
        resume=st.none() | st.sampled_from(CONVERSATIONS), resumable=st.booleans(),
    )
    def spawn(self, aim: str, i: int, type: str, parent: tuple[str, int] | None, reuse_id: int, queue: bool,
              policy: Policy, provider: str, resume: str | None, resumable: bool) -> None:
        task_id = self.task_id(aim, i)
        if reuse_id == 0 and self.reg.agents:
            agent_id = self.agent_id("any", i)  # an id in use: Conflict
        else:
            agent_id = f"{type}-000000-{next(self.serial):06x}"
        parent_id = None
        if parent is not None:
            parent_aim, j = parent
            parent_id = self.agent_id(parent_aim, j, LIVE_STATES, task_id if parent_aim == "fit" else None)
        agent = Agent(
            id=agent_id, task_id=task_id, type=type, parent=parent_id, depth=99, created_at=0.0, updated_at=0.0,
            provider=provider, policy=policy, resume_argv=["--resume", "{session_id}"] if resumable else [],
            conversation=resume if resumable else None,
        )
        self.apply(SpawnAgent(agent, queue=queue))

    @has_agents
    @rule(aim=aim, i=pick, stale=st.booleans(), early=st.booleans())
    def wake(self, aim: str, i: int, stale: bool, early: bool) -> None:
        """A timer fires (or a stale one, for an attempt that is not next), or the operator wakes it early."""
        agent_id = self.agent_id(aim, i, [S.SLEEPING])
        agent = self.reg.agents.get(agent_id)
        attempt = (agent.attempt if agent is not None else 1) - (1 if stale else 0)
        self.apply(Wake(agent_id=agent_id, attempt=attempt, early=early))

    @rule(seconds=st.sampled_from([10.0, 100.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @has_agents
    @rule(aim=aim, i=pick, turns=st.integers(0, 8), cost=st.none() | st.sampled_from([0.1, 0.4, 1.2]))
    def usage(self, aim: str, i: int, turns: int, cost: float | None) -> None:
        agent_id = self.agent_id(aim, i, [S.RUNNING])
        self.apply(ReportUsage(agent_id=agent_id, usage=Usage(turns=turns, cost_usd=cost)))

    @has_agents
    @rule(aim=aim, i=pick, tool=st.sampled_from(["Bash", "Write"]))
    def ask(self, aim: str, i: int, tool: str) -> None:
        agent_id = self.agent_id(aim, i, [S.RUNNING])
        approval = Approval(id=f"AP-{next(self.serial):012x}", task_id=UNKNOWN_TASK, agent_id=UNKNOWN_AGENT, tool=tool,
                            at=0.0)
        self.apply(RequestApproval(agent_id=agent_id, approval=approval))

    @has_agents
    @rule(aim=aim, i=pick, allow=st.booleans(), always=st.booleans())
    def answer(self, aim: str, i: int, allow: bool, always: bool) -> None:
        pending = [a for agent in self.reg.awaiting_approval() for a in agent.approvals]
        if aim != "fit" or not pending:
            self.apply(AnswerApproval(agent_id=self.agent_id(aim, i), approval_id="AP-ffffffffffff", allow=allow,
                                      by="operator"))
            return
        approval = pending[i % len(pending)]
        self.apply(AnswerApproval(agent_id=approval.agent_id, approval_id=approval.id, allow=allow, by="operator",
                                  always=always))

    @invariant()
    def pending_approvals_belong_to_live_agents(self) -> None:
        for agent in self.db.agents.values():
            assert agent.state.live or not agent.approvals, agent.id
            for approval in agent.approvals:
                assert approval.agent_id == agent.id and approval.tool not in agent.always_allowed
                found = self.reg.pending_approval(approval.id)
                assert found is not None and found[0].id == agent.id

    @has_agents
    @rule(aim=aim, i=pick, clear=st.booleans())
    def stall(self, aim: str, i: int, clear: bool) -> None:
        agent_id = self.agent_id(aim, i, [S.RUNNING])
        self.apply(ClearStall(agent_id=agent_id) if clear else MarkStalled(agent_id=agent_id, since=self.now - 60))

    @rule(more=st.integers(0, 2))
    def raise_global_cap(self, more: int) -> None:
        self.apply(SetGlobalLimit(min(self.reg.global_max_concurrent + more, GLOBAL_CAP + 3)))

    @has_agents
    @rule(aim=aim, i=pick, session=st.sampled_from(SESSIONS), adopt=st.booleans())
    def started(self, aim: str, i: int, session: str, adopt: bool) -> None:
        k = session[1:]
        ids = TmuxIds(session_id=session, window_id=f"@{k}", pane_id=f"%{k}", pane_pid=100 + int(k))
        agent_id = self.agent_id(aim, i, [S.STARTING] if adopt else [S.STARTING, S.STOPPING])
        self.apply(Adopt(agent_id, ids) if adopt else Started(agent_id, ids))

    @has_agents
    @rule(aim=aim, i=pick)
    def spawn_failed(self, aim: str, i: int) -> None:
        self.apply(StartFailed(self.agent_id(aim, i, [S.STARTING, S.STOPPING]), "no"))

    @has_agents
    @rule(aim=aim, i=pick, percent=st.none() | st.integers(0, 100), activity=st.none() | st.sampled_from(["a", "b"]))
    def progress(self, aim: str, i: int, percent: int | None, activity: str | None) -> None:
        agent_id = self.agent_id(aim, i, LIVE_STATES)
        self.apply(ReportProgress(agent_id=agent_id, percent=percent, activity=activity))

    @has_agents
    @rule(aim=aim, i=pick, tree=st.booleans())
    def kill(self, aim: str, i: int, tree: bool) -> None:
        self.apply(RequestKill(agent_id=self.agent_id(aim, i, LIVE_STATES), tree=tree))

    @has_agents
    @rule(aim=aim, i=pick, exit=st.sampled_from(EXITS + EXITS[-3:] * 2))
    def exited(self, aim: str, i: int, exit: Exit) -> None:
        self.apply(Exited(self.agent_id(aim, i, LIVE_STATES), exit))

    @has_agents
    @rule(aim=aim, i=pick, ok=st.booleans())
    def cleanup(self, aim: str, i: int, ok: bool) -> None:
        agent_id = self.agent_id(aim, i, TERMINAL_STATES)
        self.apply(RecordCleanup(agent_id, CleanupRecord(ok=ok, at=self.now)))

    @rule(aim=aim, i=pick, by=st.none() | st.tuples(aim, pick), severity=st.sampled_from(Severity))
    def finding(self, aim: str, i: int, by: tuple[str, int] | None, severity: Severity) -> None:
        task_id = self.task_id(aim, i)
        agent_id = None if by is None else self.agent_id(by[0], by[1], AgentState, task_id if by[0] == "fit" else None)
        self.apply(ReportFinding(task_id=task_id, agent_id=agent_id, type="x", severity=severity, message="m"))

    @has_agents
    @rule()
    def reload(self) -> None:
        """Restart: a registry rebuilt from its rows must be indistinguishable from the original."""
        fresh = Registry(global_max_concurrent=self.reg.global_max_concurrent)
        fresh.load(self.db.image(self.reg.last_seq, reverse=True))
        assert snapshot(fresh) == snapshot(self.reg)
        self.reg = fresh

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def counts_are_recounts_of_the_rows(self) -> None:
        agents = list(self.db.agents.values())
        assert self.reg.counts() == recount(agents)
        for task_id in self.reg.tasks:
            mine = [a for a in agents if a.task_id == task_id]
            assert self.reg.counts(task_id) == recount(mine)
            costs = [c for a in mine if (c := spent(a)) is not None]
            assert self.reg.cost(task_id) == pytest.approx(math.fsum(costs), rel=1e-12, abs=1e-12)
            findings = [f for f in self.db.findings if f.task_id == task_id]
            assert self.reg.findings_use(task_id) == (len(findings), sum(finding_size(f.message, f.data)
                                                                         for f in findings))

    @invariant()
    def memory_holds_live_work_only(self) -> None:
        """Held: live or uncleaned agents and their ancestors; tasks open or with held agents. The rest is
        only in the store."""
        held = set(self.reg.agents)
        for agent in self.db.agents.values():
            children = [a for a in self.reg.agents.values() if a.parent == agent.id]
            assert (agent.id in held) == (not settled(agent) or bool(children)), agent.id
            if agent.id in held:
                assert self.reg.agents[agent.id] == agent
        tasks_of_held = {a.task_id for a in self.reg.agents.values()}
        for task in self.db.tasks.values():
            assert (task.id in self.reg.tasks) == (task.state is TaskState.OPEN or task.id in tasks_of_held)

    @invariant()
    def limits_hold(self) -> None:
        active = [a for a in self.reg.agents.values() if a.state in ACTIVE_STATES]
        assert len(active) <= self.reg.global_max_concurrent
        for task in self.reg.tasks.values():
            mine = [a for a in self.db.agents.values() if a.task_id == task.id]
            assert len(mine) <= task.limits.max_total
            assert sum(a.state in ACTIVE_STATES for a in mine) <= task.limits.max_concurrent
            assert all(1 <= a.depth <= task.limits.max_depth for a in mine)
        for agent in self.reg.agents.values():
            if agent.parent is None:
                assert agent.depth == 1
            else:
                parent = self.reg.agents[agent.parent]
                assert parent.task_id == agent.task_id and agent.depth == parent.depth + 1

    @invariant()
    def no_agent_waits_in_the_queue_for_a_free_slot(self) -> None:
        agents = list(self.reg.agents.values())
        full = sum(a.state in ACTIVE_STATES for a in agents) >= self.reg.global_max_concurrent
        for agent in agents:
            if agent.state is S.QUEUED:
                limit = self.reg.tasks[agent.task_id].limits.max_concurrent
                mine = sum(a.state in ACTIVE_STATES and a.task_id == agent.task_id for a in agents)
                # A first attempt on a provider that rate-limits its agents waits for the reset.
                gated = agent.attempt == 1 and self.reg.rate_limited_until(agent.provider) is not None
                assert full or mine >= limit or gated, f"{agent.id} is queued while a slot is free for it"
                assert agent.tmux is None and agent.started_at is None

    @invariant()
    def live_sessions_and_types_are_unique(self) -> None:
        sessions: dict[str, str] = {}
        types: dict[tuple[str, str], str] = {}
        for agent in self.reg.agents.values():
            if agent.state not in LIVE_STATES:
                continue
            if agent.tmux is not None:
                assert agent.tmux.session_id not in sessions, "two live agents share a tmux session"
                sessions[agent.tmux.session_id] = agent.id
            key = (agent.task_id, agent.type)
            assert key not in types, "two live agents of one type in a task"
            types[key] = agent.id
        for session in SESSIONS:
            holder = self.reg.agent_for_session(session)
            assert (holder.id if holder else None) == sessions.get(session)
        for task_id in self.reg.tasks:
            for type in TYPES:
                live = self.reg.live_of_type(task_id, type)
                assert (live.id if live else None) == types.get((task_id, type))

    @invariant()
    def attempts_follow_the_policy(self) -> None:
        """A sleeping agent has no session, a wake-up time and an earlier attempt; every live agent's attempt
        number counts its earlier ones; no policy is exceeded; one live agent per conversation."""
        holders: dict[str, str] = {}
        for agent in self.reg.agents.values():
            if agent.state is S.SLEEPING:
                assert agent.tmux is None and agent.wake_at is not None and agent.attempts
            if agent.state.live:
                assert agent.attempt == len(agent.attempts) + 1
                if (held := agent.conversation) is not None:
                    assert held not in holders, f"{agent.id} and {holders[held]} hold one conversation"
                    holders[held] = agent.id
            limits = [a.exit.error_class is ErrorClass.RATE_LIMIT for a in agent.attempts]
            assert sum(limits) <= (agent.policy.max_rate_limit_waits or 0)
            assert len(limits) - sum(limits) < max(1, agent.policy.max_attempts or 1)
        for session in CONVERSATIONS:
            holder = self.reg.conversation_holder(session)
            assert (holder.id if holder else None) == holders.get(session)

    @invariant()
    def no_agent_runs_past_a_limit(self) -> None:
        """A running agent is under its turn and cost limits and its task's budget (the usage that
        reached one stopped it)."""
        for agent in self.reg.agents_in([S.RUNNING]):
            limits = self.reg.tasks[agent.task_id].limits
            assert limits.agent_max_turns is None or turns(agent) < limits.agent_max_turns
            assert limits.agent_max_cost_usd is None or (spent(agent) or 0.0) < limits.agent_max_cost_usd
            assert limits.max_cost_usd is None or agent.usage == Usage(warned=agent.usage.warned) \
                or self.reg.cost(agent.task_id) < limits.max_cost_usd

    @invariant()
    def a_stop_is_sticky(self) -> None:
        """An agent that was being stopped (not for a stall's restart) never sleeps or runs again."""
        for agent in self.db.agents.values():
            if agent.state is S.STOPPING and not agent.then_restart:
                self.stopped.add(agent.id)
            elif agent.id in self.stopped:
                assert agent.state.terminal, f"{agent.id} was stopped, and is {agent.state} again"

    @invariant()
    def last_seq_counts_the_events(self) -> None:
        assert self.reg.last_seq == self.emitted
        seqs = [f.seq for f in self.db.findings]
        assert seqs == sorted(set(seqs))

    @invariant()
    def terminal_agents_never_change_again(self) -> None:
        for agent in self.db.agents.values():
            if agent.state in LIVE_STATES:
                assert agent.id not in self.ended, f"{agent.id} came back to life"
                continue
            first = self.ended.setdefault(agent.id, agent)
            frozen = {k: v for k, v in structs.asdict(agent).items() if k not in _MUTABLE_WHEN_TERMINAL}
            assert frozen == {k: v for k, v in structs.asdict(first).items() if k not in _MUTABLE_WHEN_TERMINAL}

    @invariant()
    def uncleaned_is_terminal_without_a_good_cleanup(self) -> None:
        expected = {
            a.id for a in self.reg.agents.values()
            if a.state not in LIVE_STATES and (a.cleanup is None or not a.cleanup.ok)
        }
        assert {a.id for a in self.reg.uncleaned()} == expected


RegistryMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.__doc__ = "Random command sequences keep every registry invariant, and refusals change nothing."


class LifecycleMachine(RegistryMachine):
    """The same machine and invariants, its steps spent on lives of agents: spawns with random policies, starts,
    early ends, sleeps, timers (stale ones too), early wakes, kills, stalls, time passing and restarts. The
    rules not redefined here as plain methods are left out (a method without ``@rule`` is no rule)."""

    def create_task(self, limits: Limits, reuse: int, i: int) -> None:  # type: ignore[override]
        RegistryMachine.create_task(self, limits, reuse, i)  # only at the start (``first_tasks``)

    def purge_task(self) -> None:  # type: ignore[override]
        pass

    def close_task(self) -> None:  # type: ignore[override]
        pass

    def finding(self) -> None:  # type: ignore[override]
        pass

    def spawn_failed(self) -> None:  # type: ignore[override]
        pass

    @has_agents
    @rule(i=pick, session=st.sampled_from(SESSIONS), exit=st.sampled_from(EXITS[-3:]))
    def run_and_end_early(self, i: int, session: str, exit: Exit) -> None:
        """Start an agent that is starting, and end one that runs early (a rate limit, an API error)."""
        self.started("fit", i, session, adopt=False)
        self.apply(Exited(self.agent_id("fit", i, [S.RUNNING]), exit))


LifecycleMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.__doc__ = "Attempts, sleeps, wakes, stalls and sticky stops keep every invariant."


# --- agent ids minted the way the api mints them ----------------------------------------


class _Minter:
    """``Api._mint`` on a stand-in that holds only what it uses: the set of ids on their way to the actor."""

    def __init__(self) -> None:
        self._minting: set[str] = set()

    def mint(self, make: Callable[[], str], exists: Callable[[str], bool]) -> str:
        from supervisord_agents.api import Api

        return Api._mint(self, make, exists)  # type: ignore[arg-type]

    def done(self, agent_id: str) -> None:
        self._minting.discard(agent_id)  # as api.agent_spawn does once the actor has answered


def _spawn_many(make: Callable[[], str], n: int, now: float) -> list[str]:
    """Mint, admit and end ``n`` agents of one type in one task within one second, as the api does."""
    minter = _Minter()
    reg = Registry(global_max_concurrent=1000)
    task = Task(id="TASK-20240101-000000-00000001", description="t", created_at=now,
                limits=Limits(max_concurrent=1000, max_total=n, max_depth=5))
    reg.apply(CreateTask(task), now)
    ids = []
    for _ in range(n):
        agent_id = minter.mint(make, reg.agents.__contains__)
        try:
            agent = Agent(id=agent_id, task_id=task.id, type="worker", created_at=now, updated_at=now)
            reg.apply(SpawnAgent(agent), now)
        finally:
            minter.done(agent_id)
        reg.apply(Exited(agent_id, Exit(decided_by=DecidedBy.EXIT_STATUS, code=0)), now)
        ids.append(agent_id)
    assert reg.counts(task.id).spawned == n
    return ids


def test_5000_agent_ids_minted_in_one_second_are_distinct_and_stored() -> None:
    """5000 ids of one type minted within one second with the api's generator (6 random hex digits, where a
    collision is about a coin flip) are all distinct, well-formed, and admitted by the registry."""
    from supervisord_agents.api import _stamp

    now = T0 + 0.25
    ids = _spawn_many(lambda: f"worker-{_stamp(now, '%H%M%S')}-{secrets.token_hex(3)}", 5000, now)
    assert len(set(ids)) == 5000
    assert all(re.match(AGENT_ID_PATTERN, i) for i in ids)
    assert {i.split("-")[1] for i in ids} == {"221320"}


def test_minting_skips_stored_ids_when_the_generator_repeats() -> None:
    """With a generator that keeps repeating itself, minting still yields only unused ids and the registry
    never sees a Conflict."""
    values = itertools.cycle(range(6000))
    shuffled = (f"worker-000000-{(v * 7919) % 6000:06x}" for v in values)
    repeats = (x for v in shuffled for x in (v, v, v))  # every candidate comes three times in a row
    ids = _spawn_many(lambda: next(repeats), 5000, T0)
    assert len(set(ids)) == 5000


def test_minting_skips_ids_still_on_their_way_to_the_actor() -> None:
    """Two mints before either agent is admitted never return the same id."""
    minter = _Minter()
    values = iter(["a-000000-000001", "a-000000-000001", "a-000000-000002"])
    first = minter.mint(lambda: next(values), lambda _: False)
    second = minter.mint(lambda: next(values), lambda _: False)
    assert (first, second) == ("a-000000-000001", "a-000000-000002")


def test_registry_refuses_an_id_already_stored() -> None:
    """The registry's own check: an id that is already stored is a Conflict, even for an ended agent."""
    reg = Registry()
    task = Task(id="TASK-20240101-000000-00000001", description="t", created_at=T0)
    reg.apply(CreateTask(task), T0)
    agent = Agent(id="worker-000000-000001", task_id=task.id, type="worker", created_at=T0, updated_at=T0)
    reg.apply(SpawnAgent(agent), T0)
    reg.apply(Exited(agent.id, Exit(decided_by=DecidedBy.EXIT_STATUS, code=0)), T0)
    with pytest.raises(Conflict):
        reg.apply(SpawnAgent(agent), T0)
