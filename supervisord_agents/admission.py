"""Admission: which spawns the limits let in, now or once a slot frees.

A spawn over a concurrency limit (the task's ``max_concurrent``, the global cap) is refused,
or, when the caller asked to queue, admitted as ``queued``; so is any spawn of a provider
whose agents sleep on a rate limit, until they have woken. Queued agents hold no slot; the
oldest that fit are promoted to ``starting`` whenever a slot frees (:meth:`Admission._promote`,
called by the registry in the same ``apply``). The other limits (depth, total, one live agent
per type, the budget, one live agent per conversation) refuse a spawn whether it queues or not:
waiting would not make it fit.

Pure, like the registry it is part of: ``now`` is an argument.
"""

from __future__ import annotations

from msgspec import structs

from .commands import Applied, Effect, StartSession
from .errors import Conflict, DuplicateAgent, IllegalTransition, InvalidParams, LimitExceeded
from .model import ACTIVE_STATES, Agent, AgentState, ErrorClass, Event, Task, TaskState
from .tables import Tables

S = AgentState


class Admission(Tables):
    """The admission rules over the tables (the registry adds the rest of the state machine)."""

    def _spawn(self, agent: Agent, now: float, *, queue: bool = False) -> Applied:
        task = self.task(agent.task_id)
        if task.state is not TaskState.OPEN:
            raise IllegalTransition(f"task {task.id} is closed", data={"task_id": task.id})
        if agent.id in self.agents:  # the api checks the store for settled agents' ids
            raise Conflict(f"agent id {agent.id} is already in use", data={"agent_id": agent.id})
        if agent.parent is not None:
            parent = self.agent(agent.parent)
            if parent.task_id != task.id:
                raise InvalidParams(
                    f"parent {parent.id} belongs to task {parent.task_id}, not {task.id}",
                    data={"parent": parent.id},
                )
            if not parent.state.live:
                raise IllegalTransition(
                    f"parent {parent.id} is {parent.state} and cannot have children",
                    data={"parent": parent.id, "state": parent.state.value},
                )
        depth = self.child_depth(agent.parent)
        self.check_admission(task, agent.type, depth)
        if agent.conversation is not None:
            self.check_conversation(agent.conversation)
        # Queued agents still waiting are held back by a limit this spawn is held back by
        # too (promotion starts whatever fits the moment a slot frees), so it never
        # overtakes them.
        refusal = self._slot_refusal(task)
        if refusal is not None and not queue:
            raise refusal
        # A provider that rate-limits its agents would refuse this one too: it waits for the reset.
        waits = refusal is not None or self.rate_limited_until(agent.provider) is not None
        agent = structs.replace(
            agent, depth=depth, state=S.QUEUED if waits else S.STARTING, created_at=now, updated_at=now,
            started_at=None, ended_at=None, exit=None, tmux=None, cleanup=None,
        )
        self._put_agent(agent)
        effects: list[Effect] = [] if waits else [StartSession(agent)]
        return Applied([self._agent_event(now, agent)], effects, agent)

    def child_depth(self, parent: str | None) -> int:
        """The depth of an agent spawned by ``parent`` (1 for the orchestrator's). Raises UnknownAgent."""
        return 1 if parent is None else self.agent(parent).depth + 1

    def check_admission(self, task: Task, type: str, depth: int) -> None:
        """Raise LimitExceeded (or DuplicateAgent) if a spawn breaks a limit that waiting
        would not lift: depth, one live agent per type, total spawned, the budget."""
        limits = task.limits
        if depth > limits.max_depth:
            raise LimitExceeded(
                f"depth {depth} exceeds the task's max depth {limits.max_depth}",
                data={"limit": "max_depth", "value": limits.max_depth},
            )
        existing = self._live_type.get((task.id, type))
        if existing is not None:
            raise DuplicateAgent(
                f"agent {existing} of type {type!r} is already active in task {task.id}",
                data={"existing_agent": existing, "type": type},
            )
        spawned = self.counts(task.id).spawned
        if spawned >= limits.max_total:
            raise LimitExceeded(
                f"task {task.id} has spawned {spawned} agents (max total {limits.max_total})",
                data={"limit": "max_total", "value": limits.max_total},
            )
        if limits.max_cost_usd is not None:
            spent = self.cost(task.id)
            if spent >= limits.max_cost_usd:
                raise LimitExceeded(
                    f"task {task.id} has spent ${spent:.4f} of its ${limits.max_cost_usd:.4f} budget",
                    data={"limit": "max_cost_usd", "value": limits.max_cost_usd},
                )

    def check_conversation(self, session_id: str) -> None:
        """Raise Conflict if a live agent holds this provider conversation: one process per conversation."""
        holder = self.conversation_holder(session_id)
        if holder is not None:
            raise Conflict(
                f"conversation {session_id} is held by agent {holder.id} ({holder.state}): one live agent per"
                " conversation", data={"session_id": session_id, "agent_id": holder.id},
            )

    def rate_limited_until(self, provider: str) -> float | None:
        """While agents of the provider sleep on a rate limit, when the last of them wakes (else
        None): until they have woken, its new agents queue rather than start into the same limit."""
        return max((a.wake_at or 0.0 for a in self.agents_in([S.SLEEPING]) if a.provider == provider
                    and a.attempts and a.attempts[-1].exit.error_class is ErrorClass.RATE_LIMIT), default=None)

    def _slot_refusal(self, task: Task) -> LimitExceeded | None:
        active = self._active(task.id)
        if active >= task.limits.max_concurrent:
            return LimitExceeded(
                f"task {task.id} has {active} active agents (max concurrent {task.limits.max_concurrent})",
                data={"limit": "max_concurrent", "value": task.limits.max_concurrent},
            )
        total = sum(len(self._by_state[s]) for s in ACTIVE_STATES)
        if total >= self.global_max_concurrent:
            return LimitExceeded(
                f"{total} agents are active in all tasks (global max {self.global_max_concurrent})",
                data={"limit": "global_max_concurrent", "value": self.global_max_concurrent},
            )
        return None

    def _active(self, task_id: str) -> int:
        by_state = self._task_by_state.get(task_id, {})
        return sum(len(by_state.get(s, ())) for s in ACTIVE_STATES)

    def _promote(self, now: float) -> tuple[list[Event], list[Effect]]:
        """Start the oldest queued agents that fit under every concurrency limit now."""
        events: list[Event] = []
        effects: list[Effect] = []
        limited: dict[str, bool] = {}
        for agent_id in list(self._queued):
            agent = self.agents[agent_id]
            if self._slot_refusal(self.tasks[agent.task_id]) is not None:
                continue
            if agent.attempt == 1 and limited.setdefault(
                    agent.provider, self.rate_limited_until(agent.provider) is not None):
                continue
            agent = self._replace(agent, state=S.STARTING, updated_at=now)
            events.append(self._agent_event(now, agent))
            effects.append(StartSession(agent))
        return events, effects
