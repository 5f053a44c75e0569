"""The registry's tables: the tasks and agents it holds in memory, their indexes, the
tallies that stand in for everything it no longer holds, and the image it resumes from.

Memory follows live work (DESIGN section 11). An agent is *settled* once it has ended
and been cleaned up: nothing about it can change again. A settled agent leaves memory
unless a held agent descends from it (so that ``kill --tree`` and the descendant rule walk
a complete tree); only its state and cost stay, in its task's :class:`Settled` tally. A
task is held while it is open or has held agents. Findings live only in the store; the
tables keep each held task's finding count and bytes for its quota. Rows changed since the
store last asked are handed over by :meth:`Tables.take_changes`. The store computes an
:class:`Image` with queries; :func:`image_of` computes the same from every row, for tests
and as the definition the store's queries must agree with.

This module is pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import Any, Final

import msgspec
from msgspec import Struct, structs

from .errors import UnknownAgent, UnknownTask
from .model import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Agent,
    AgentState,
    Approval,
    Counts,
    Event,
    EventKind,
    Finding,
    Task,
    TaskState,
    spent,
)

S = AgentState


def settled(agent: Agent) -> bool:
    """True once an agent has ended and been cleaned up: nothing about it can change again."""
    return agent.state.terminal and agent.cleanup is not None and agent.cleanup.ok


def finding_size(message: str, data: dict[str, Any] | None) -> int:
    """What a finding counts against its task's byte quota: its message and data as stored."""
    return len(message.encode()) + (0 if data is None else len(_json.encode(data)))


_json: Final = msgspec.json.Encoder()


class Settled:
    """What a task's settled agents (no longer in memory) add to its counts and cost."""

    __slots__ = ("cost", "states")

    def __init__(self) -> None:
        self.states: dict[AgentState, int] = dict.fromkeys(TERMINAL_STATES, 0)
        self.cost = Fraction(0)  # exact, so a sum never depends on the order agents settled in

    def add(self, state: AgentState, cost: float | None, n: int = 1) -> None:
        self.states[state] += n
        if cost is not None:
            self.cost += Fraction(cost)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settled) and (self.states, self.cost) == (other.states, other.cost)

    def __repr__(self) -> str:
        return f"Settled({self.states}, cost={float(self.cost)})"


class Image(Struct):
    """What the registry resumes from: the held rows, and the tallies of everything else.
    :meth:`Store.load <supervisord_agents.store.Store.load>` builds it with queries;
    :func:`image_of` builds the same from every row."""

    tasks: list[Task]  # open tasks, and closed ones with held agents
    agents: list[Agent]  # held agents
    settled: list[tuple[str, AgentState, float | None]]  # (task, state, cost) of the held tasks' settled agents
    totals: dict[AgentState, int]  # settled agents of every task, by state
    findings: dict[str, tuple[int, int]]  # held task -> (findings, bytes)
    last_seq: int


def image_of(tasks: Iterable[Task], agents: Iterable[Agent], findings: Iterable[Finding], last_seq: int) -> Image:
    """The image of a complete set of rows (what the store's queries compute, in plain Python)."""
    agents = list(agents)
    by_id = {a.id: a for a in agents}
    held: set[str] = set()
    for agent in agents:
        current: Agent | None = agent
        while current is not None and current.id not in held and (not settled(current) or current is not agent):
            held.add(current.id)
            current = by_id.get(current.parent) if current.parent else None
    held_tasks = {a.task_id for a in agents if a.id in held}
    kept = [t for t in tasks if t.state is TaskState.OPEN or t.id in held_tasks]
    kept_ids = {t.id for t in kept}
    totals = dict.fromkeys(TERMINAL_STATES, 0)
    rest = []
    for agent in agents:
        if agent.id not in held:
            totals[agent.state] += 1
            if agent.task_id in kept_ids:
                rest.append((agent.task_id, agent.state, agent.exit.cost_usd if agent.exit else None))
    use: dict[str, tuple[int, int]] = {}
    for f in findings:
        if f.task_id in kept_ids:
            n, size = use.get(f.task_id, (0, 0))
            use[f.task_id] = (n + 1, size + finding_size(f.message, f.data))
    return Image(tasks=kept, agents=[a for a in agents if a.id in held], settled=rest, totals=totals,
                 findings=use, last_seq=last_seq)


class Tables:
    """Held tasks and agents in memory, with indexes that make every count O(1). Rows,
    indexes and tallies change only through the methods below, which keep them in step;
    :class:`~supervisord_agents.registry.Registry` adds the rules."""

    def __init__(self, *, global_max_concurrent: int = 100) -> None:
        self.global_max_concurrent = global_max_concurrent
        self.tasks: dict[str, Task] = {}
        self.agents: dict[str, Agent] = {}
        self.last_seq = 0
        # Indexes and tallies. Every one is derived from the rows and rebuilt by ``load``.
        self._by_state: dict[AgentState, set[str]] = {s: set() for s in AgentState}
        self._task_by_state: dict[str, dict[AgentState, set[str]]] = {}
        self._task_agents: dict[str, dict[str, None]] = {}  # held agents of a task, oldest first
        self._live_type: dict[tuple[str, str], str] = {}
        self._live_session: dict[str, str] = {}
        self._conversations: dict[str, str] = {}  # provider conversation -> the live agent that holds it
        self._approvals: dict[str, str] = {}  # pending approval -> its agent
        self._awaiting: set[str] = set()  # live agents with a pending approval
        self._children: dict[str, dict[str, None]] = {}  # held children
        self._by_token: dict[str, str] = {}
        self._uncleaned: set[str] = set()  # terminal agents whose cleanup has not succeeded
        self._queued: dict[str, None] = {}  # queued agents, oldest first (FIFO)
        self._settled: dict[str, Settled] = {}  # held task -> its settled agents
        self._totals: dict[AgentState, int] = dict.fromkeys(TERMINAL_STATES, 0)  # settled agents of all tasks
        self._findings: dict[str, list[int]] = {}  # held task -> [findings, bytes]
        # Rows changed since the last take_changes(), for the store.
        self._changed_tasks: dict[str, Task] = {}
        self._changed_agents: dict[str, Agent] = {}
        self._purged: list[str] = []

    # -- loading ---------------------------------------------------------------------

    def load(self, image: Image) -> None:
        """Replace the contents with an image read from storage, and rebuild the indexes."""
        self.__init__(global_max_concurrent=self.global_max_concurrent)  # type: ignore[misc]
        for task in image.tasks:
            self._put_task(task)
        for task_id, state, cost in image.settled:
            self._settled[task_id].add(state, cost)
        for agent in sorted(image.agents, key=lambda a: (a.created_at, a.depth)):
            self._put_agent(agent)
        self._totals.update(image.totals)
        for task_id, (n, size) in image.findings.items():
            self._findings[task_id] = [n, size]
        self.last_seq = image.last_seq
        for agent in list(self.agents.values()):
            if agent.id in self.agents:
                self._settle(agent)
        for task_id in list(self.tasks):
            self._drop_task_if_done(task_id)
        self.take_changes()

    def take_changes(self) -> tuple[list[Task], list[Agent], list[str]]:
        """The task and agent rows changed, and the tasks purged, since the last call."""
        changes = list(self._changed_tasks.values()), list(self._changed_agents.values()), self._purged
        self._changed_tasks, self._changed_agents, self._purged = {}, {}, []
        return changes

    # -- reads -----------------------------------------------------------------------

    def task(self, task_id: str) -> Task:
        """A held task. Raises UnknownTask (the store may still have it, closed)."""
        try:
            return self.tasks[task_id]
        except KeyError:
            raise UnknownTask(f"no task {task_id!r}", data={"task_id": task_id}) from None

    def agent(self, agent_id: str) -> Agent:
        """A held agent. Raises UnknownAgent (the store may still have it, settled)."""
        try:
            return self.agents[agent_id]
        except KeyError:
            raise UnknownAgent(f"no agent {agent_id!r}", data={"agent_id": agent_id}) from None

    def agents_of(self, task_id: str) -> Iterator[Agent]:
        """The held agents of a task, oldest first."""
        return (self.agents[a] for a in self._task_agents.get(task_id, ()))

    def agents_in(self, states: Iterable[AgentState]) -> Iterator[Agent]:
        for state in states:
            yield from (self.agents[a] for a in self._by_state[state])

    def children(self, agent_id: str) -> list[str]:
        return list(self._children.get(agent_id, ()))

    def uncleaned(self) -> list[Agent]:
        """Terminal agents whose cleanup has not (yet) succeeded."""
        return [self.agents[a] for a in self._uncleaned]

    def agent_for_token(self, token_hash: str) -> Agent | None:
        agent_id = self._by_token.get(token_hash)
        return None if agent_id is None else self.agents[agent_id]

    def agent_for_session(self, session_id: str) -> Agent | None:
        agent_id = self._live_session.get(session_id)
        return None if agent_id is None else self.agents[agent_id]

    def conversation_holder(self, session_id: str) -> Agent | None:
        """The live agent that holds a provider's conversation (runs it, or sleeps to resume it)."""
        agent_id = self._conversations.get(session_id)
        return None if agent_id is None else self.agents[agent_id]

    def pending_approval(self, approval_id: str) -> tuple[Agent, Approval] | None:
        """A pending permission request and the agent that asked, or None."""
        agent_id = self._approvals.get(approval_id)
        if agent_id is None:
            return None
        agent = self.agents[agent_id]
        return agent, next(a for a in agent.approvals if a.id == approval_id)

    def awaiting_approval(self) -> list[Agent]:
        """Live agents with a permission request waiting for an answer."""
        return [self.agents[a] for a in self._awaiting]

    def live_of_type(self, task_id: str, type: str) -> Agent | None:
        agent_id = self._live_type.get((task_id, type))
        return None if agent_id is None else self.agents[agent_id]

    def counts(self, task_id: str | None = None) -> Counts:
        """Counts for one held task, or for all tasks: sizes of index sets plus the settled
        tallies, never stored."""
        if task_id is None:
            by_state, done = self._by_state, self._totals
            held = len(self.agents)
        else:
            by_state = self._task_by_state.get(task_id, {})
            done = self._settled[task_id].states if task_id in self._settled else {}
            held = len(self._task_agents.get(task_id, ()))

        def n(state: AgentState) -> int:
            return len(by_state.get(state, ())) + done.get(state, 0)

        return Counts(
            active=sum(n(s) for s in ACTIVE_STATES),
            queued=n(S.QUEUED),
            sleeping=n(S.SLEEPING),
            awaiting_approval=sum(task_id is None or self.agents[a].task_id == task_id for a in self._awaiting),
            completed=n(S.COMPLETED),
            failed=n(S.FAILED),
            killed=n(S.KILLED),
            lost=n(S.LOST),
            spawned=held + sum(done.values()),
        )

    def cost(self, task_id: str) -> float:
        """What a held task's agents have cost (USD, from the results of their ended attempts):
        summed exactly when asked, like every count, so it cannot drift."""
        total = self._settled[task_id].cost if task_id in self._settled else Fraction(0)
        for agent in self.agents_of(task_id):
            if (cost := spent(agent)) is not None:
                total += Fraction(cost)
        return float(total)

    def findings_use(self, task_id: str) -> tuple[int, int]:
        """How many findings a held task has, and their bytes."""
        n, size = self._findings.get(task_id, (0, 0))
        return n, size


    # -- events: numbered as they are made ---------------------------------------------

    def _event(
        self, now: float, kind: EventKind, task_id: str, agent_id: str | None = None,
        state: AgentState | None = None, data: Any = None,
    ) -> Event:
        self.last_seq += 1
        return Event(seq=self.last_seq, at=now, kind=kind, task_id=task_id, agent_id=agent_id, state=state, data=data)

    def _agent_event(self, now: float, agent: Agent) -> Event:
        return self._event(now, EventKind.AGENT_STATE, agent.task_id, agent.id, agent.state, agent)

    # -- bookkeeping: rows, indexes and tallies change only here ------------------------

    def _put_task(self, task: Task) -> None:
        self.tasks[task.id] = self._changed_tasks[task.id] = task
        self._task_by_state.setdefault(task.id, {s: set() for s in AgentState})
        self._task_agents.setdefault(task.id, {})
        self._settled.setdefault(task.id, Settled())
        self._findings.setdefault(task.id, [0, 0])

    def _put_agent(self, agent: Agent) -> None:
        """Insert a new agent row and index it."""
        self.agents[agent.id] = self._changed_agents[agent.id] = agent
        self._task_agents[agent.task_id][agent.id] = None
        if agent.parent is not None:
            self._children.setdefault(agent.parent, {})[agent.id] = None
        if agent.token_hash:
            self._by_token[agent.token_hash] = agent.id
        self._index(agent)

    def _replace(self, old: Agent, **changes: Any) -> Agent:
        """Replace an agent row with a changed copy, keeping every index in step."""
        new = structs.replace(old, **changes)
        self._unindex(old)
        self.agents[new.id] = self._changed_agents[new.id] = new
        self._index(new)
        return new

    def _settle(self, agent: Agent) -> None:
        """Let a settled agent with no held children leave memory (its row is in the store),
        then its parent if that was what held it, and its task if closed and now empty."""
        current: Agent | None = agent
        while current is not None and settled(current) and not self._children.get(current.id):
            self._unindex(current)
            del self.agents[current.id]
            del self._task_agents[current.task_id][current.id]
            self._by_token.pop(current.token_hash, None)
            self._children.pop(current.id, None)
            cost = current.exit.cost_usd if current.exit is not None else None
            self._settled[current.task_id].add(current.state, cost)
            self._totals[current.state] += 1
            self._drop_task_if_done(current.task_id)
            parent = None if current.parent is None else self.agents.get(current.parent)
            if parent is not None:
                siblings = self._children[parent.id]
                del siblings[current.id]
                if not siblings:
                    del self._children[parent.id]
            current = parent

    def _drop_task_if_done(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None and task.state is TaskState.CLOSED and not self._task_agents[task_id]:
            for index in (self.tasks, self._task_by_state, self._task_agents, self._settled, self._findings):
                del index[task_id]

    def _index(self, agent: Agent) -> None:
        self._by_state[agent.state].add(agent.id)
        if agent.state is S.QUEUED:
            self._queued[agent.id] = None
        self._task_by_state[agent.task_id][agent.state].add(agent.id)
        if agent.state.live:
            self._live_type[(agent.task_id, agent.type)] = agent.id
            if agent.tmux is not None:
                self._live_session[agent.tmux.session_id] = agent.id
            if agent.conversation is not None:
                self._conversations[agent.conversation] = agent.id
            for approval in agent.approvals:
                self._approvals[approval.id] = agent.id
            if agent.approvals:
                self._awaiting.add(agent.id)
        elif agent.cleanup is None or not agent.cleanup.ok:
            self._uncleaned.add(agent.id)

    def _unindex(self, agent: Agent) -> None:
        self._by_state[agent.state].discard(agent.id)
        self._queued.pop(agent.id, None)
        self._task_by_state[agent.task_id][agent.state].discard(agent.id)
        if agent.state.live:
            if self._live_type.get((agent.task_id, agent.type)) == agent.id:
                del self._live_type[(agent.task_id, agent.type)]
            if agent.tmux is not None and self._live_session.get(agent.tmux.session_id) == agent.id:
                del self._live_session[agent.tmux.session_id]
            if agent.conversation is not None and self._conversations.get(agent.conversation) == agent.id:
                del self._conversations[agent.conversation]
            for approval in agent.approvals:
                self._approvals.pop(approval.id, None)
            self._awaiting.discard(agent.id)
        self._uncleaned.discard(agent.id)
