"""Reads of history: what the registry holds, else what the store has (DESIGN section 11).

The registry holds live work; settled agents, closed tasks and every finding are read
from the store. A point read (one agent, one task) is a primary-key lookup done in the
event loop's thread: microseconds, with no page scan. Everything that reads more runs
in the api's read threads, a page at a time, so a page costs the same whatever the
history behind it, and no reply grows with a table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from fractions import Fraction
from typing import Final, TypeVar

import trio

from .codec import cursor, read_cursor
from .errors import UnknownAgent, UnknownTask
from .model import LIVE_STATES, TERMINAL_STATES, Agent, AgentState, Counts, Finding, Task, TaskState
from .protocol import AgentListParams, FindingsListParams, Headroom, Page, TaskListParams, TaskStatus, TaskSummary
from .registry import Registry
from .store import Store, Tally

STATUS_AGENTS: Final = 100  # agents in one task's status: the held ones, then the latest ended
LATEST_FINDINGS: Final = 5
_R = TypeVar("_R")


class History:
    """The registry's rows where it holds them, the store's otherwise."""

    def __init__(self, registry: Registry, store: Store, reads: trio.CapacityLimiter) -> None:
        self.registry = registry
        self.store = store
        self._reads = reads

    async def _read(self, fn: Callable[[], _R]) -> _R:
        return await trio.to_thread.run_sync(fn, limiter=self._reads)

    # -- one row ---------------------------------------------------------------------

    def agent(self, agent_id: str) -> Agent:
        """An agent, held or settled. Raises UnknownAgent."""
        agent = self.registry.agents.get(agent_id) or self.store.agent(agent_id)
        if agent is None:
            raise UnknownAgent(f"no agent {agent_id!r}", data={"agent_id": agent_id})
        return agent

    def task(self, task_id: str) -> Task:
        """A task, held or closed. Raises UnknownTask."""
        task = self.registry.tasks.get(task_id) or self.store.task(task_id)
        if task is None:
            raise UnknownTask(f"no task {task_id!r}", data={"task_id": task_id})
        return task

    def agent_exists(self, agent_id: str) -> bool:
        return agent_id in self.registry.agents or self.store.has_agent(agent_id)

    def task_exists(self, task_id: str) -> bool:
        return task_id in self.registry.tasks or self.store.has_task(task_id)

    # -- tasks -----------------------------------------------------------------------

    async def task_status(self, task_id: str) -> TaskStatus:
        task = self.task(task_id)
        if task.id in self.registry.tasks:
            counts, spent = self.registry.counts(task.id), self.registry.cost(task.id)
        else:
            tally = (await self._read(functools.partial(self.store.tallies, [task.id])))[task.id]
            counts, spent = _counts(tally), _cost(tally)
        held = list(self.registry.agents_of(task.id))[:STATUS_AGENTS]
        ended: list[Agent] = []
        if len(held) < STATUS_AGENTS:
            read = functools.partial(self.store.agents, task_id=task.id, states=TERMINAL_STATES, after=None,
                                     limit=STATUS_AGENTS, newest_first=True)
            ids = {a.id for a in held}
            ended = [a for a in await self._read(read) if a.id not in ids][: STATUS_AGENTS - len(held)]
        findings = functools.partial(self.store.findings, task_id=task.id, limit=LATEST_FINDINGS, newest_first=True)
        limits = task.limits
        return TaskStatus(
            task=task,
            counts=counts,
            headroom=Headroom(
                concurrent_left=max(0, limits.max_concurrent - counts.active),
                total_left=max(0, limits.max_total - counts.spawned),
                max_depth=limits.max_depth,
                cost_usd=spent,
                cost_left_usd=None if limits.max_cost_usd is None else max(0.0, limits.max_cost_usd - spent),
            ),
            agents=sorted(held + ended, key=lambda a: (a.created_at, a.id)),
            latest_findings=await self._read(findings),
        )

    async def task_page(self, params: TaskListParams) -> Page[TaskSummary]:
        after = None if params.cursor is None else read_cursor("tasks", params.cursor, float, str)
        state = None if params.state is None else params.state.value
        read = functools.partial(self.store.tasks, state=state, after=after, limit=params.limit + 1)
        tasks = await self._read(read)
        page, more = tasks[: params.limit], len(tasks) > params.limit
        others = [t.id for t in page if t.id not in self.registry.tasks]
        tallies = await self._read(functools.partial(self.store.tallies, others)) if others else {}
        summaries = [
            TaskSummary(task=self.registry.tasks.get(t.id, t),
                        counts=_counts(tallies[t.id]) if t.id in tallies else self.registry.counts(t.id))
            for t in page
        ]
        last = page[-1] if page and more else None
        return Page(items=summaries, next=None if last is None else cursor("tasks", last.created_at, last.id))

    # -- agents and findings ---------------------------------------------------------

    async def agent_page(self, params: AgentListParams) -> Page[Agent]:
        if params.task_id is not None:
            self.task(params.task_id)
        after = None if params.cursor is None else read_cursor("agents", params.cursor, float, str)
        states: frozenset[AgentState] | None = None
        if params.live is not None:
            states = LIVE_STATES if params.live else TERMINAL_STATES
        if params.state is not None:
            states = (states or frozenset(AgentState)) & {params.state}
        read = functools.partial(self.store.agents, task_id=params.task_id, states=states, after=after,
                                 limit=params.limit + 1)
        agents = await self._read(read)
        page, more = agents[: params.limit], len(agents) > params.limit
        last = page[-1] if page and more else None
        return Page(items=page, next=None if last is None else cursor("agents", last.created_at, last.id))

    async def findings_page(self, params: FindingsListParams) -> Page[Finding]:
        if params.task_id is not None:
            self.task(params.task_id)
        since = params.since if params.cursor is None else read_cursor("findings", params.cursor, int)[0]
        severity = None if params.severity is None else params.severity.value
        read = functools.partial(self.store.findings, task_id=params.task_id, agent_id=params.agent_id,
                                 type=params.type, severity=severity, since=since, limit=params.limit + 1)
        findings = await self._read(read)
        page, more = findings[: params.limit], len(findings) > params.limit
        return Page(items=page, next=cursor("findings", page[-1].seq) if page and more else None)

    # -- purging ---------------------------------------------------------------------

    async def closed_tally(self, task_id: str) -> Tally:
        """The agents of a closed task no longer held, as stored. Raises UnknownTask."""
        task = self.task(task_id)
        if task.state is TaskState.OPEN:
            return Tally(states={}, costs=[])  # the registry refuses it, naming why
        return (await self._read(functools.partial(self.store.tallies, [task_id])))[task_id]


def _counts(tally: Tally) -> Counts:
    """Counts of a task the registry does not hold: all its agents have settled."""
    n = tally.states.get
    return Counts(completed=n(AgentState.COMPLETED, 0), failed=n(AgentState.FAILED, 0),
                  killed=n(AgentState.KILLED, 0), lost=n(AgentState.LOST, 0), spawned=sum(tally.states.values()))


def _cost(tally: Tally) -> float:
    return float(sum((Fraction(c) for c in tally.costs), Fraction(0)))
