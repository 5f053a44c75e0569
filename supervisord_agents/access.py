"""Who a caller is, and what its method's rule lets it do: the trust boundary of the API.

Agents run under the operator's uid, so the uid tells them from nothing. Identity comes
from the kernel (:meth:`Access.identify`): the agent whose cgroup a peer runs in, or,
without cgroups, the agent whose runner it descends from; any other peer of our uid is
the operator. Each method's :class:`~supervisord_agents.protocol.Rule` is then applied to
an agent's params (:meth:`Access.scope`), once, before any handler runs: what the agent
left out is filled in with itself or its task, what reaches beyond is refused with
``forbidden`` naming the rule.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from . import procs
from .cgroups import Cgroups
from .errors import Forbidden
from .model import LIVE_STATES, Agent
from .protocol import Boundary, Method, P, R, Rule
from .registry import Registry


class Access:
    """Identity and rules, over the registry (for runners), the agents' rows (for descendants,
    settled ones too: ``lookup``) and the cgroups."""

    def __init__(self, registry: Registry, lookup: Callable[[str], Agent], cgroups: Cgroups | None) -> None:
        self.registry = registry
        self.lookup = lookup
        self.cgroups = cgroups
        self.boundary = Boundary.CGROUP if cgroups else Boundary.ANCESTRY if procs.HAVE_PROC else Boundary.TOKEN

    def identify(self, pid: int | None) -> str | None:
        """The agent a peer process runs in, by the kernel's account; None: the operator."""
        if pid is None:
            return None
        if self.cgroups is not None:
            return self.cgroups.agent_of(pid)
        if self.boundary is Boundary.ANCESTRY:
            runners = {a.tmux.pane_pid: a.id for a in self.registry.agents_in(LIVE_STATES) if a.tmux is not None}
            return procs.ancestor_in(pid, runners)
        return None

    def scope(self, method: Method[P, R], params: P, me: Agent) -> P:
        """An agent's params under its method's rule: narrowed to itself, its task or its
        descendants, or refused. Raises Forbidden naming the rule."""
        rule = method.rule

        def refuse(detail: str = "") -> Forbidden:
            return Forbidden(f"{method.name}: {rule.value}{detail}",
                             data={"method": method.name, "rule": rule.name.lower(), "agent_id": me.id})

        def narrow(field: str, mine: str) -> dict[str, str]:
            given = getattr(params, field, None)
            if given not in (None, mine):
                raise refuse(f" ({field} {given} is not {mine})")
            return {field: mine}

        if rule is Rule.ANYONE:
            return params
        if rule is Rule.OPERATOR:
            raise refuse()
        if rule is Rule.SELF:
            changes = narrow("agent_id", me.id)
            if hasattr(params, "task_id"):
                changes |= narrow("task_id", me.task_id)
            return msgspec.structs.replace(params, **changes)
        if rule is Rule.CHILDREN:
            return msgspec.structs.replace(params, **narrow("task_id", me.task_id), **narrow("parent", me.id))
        if rule is Rule.OWN_TASK:
            return msgspec.structs.replace(params, **narrow("task_id", me.task_id))
        targets = getattr(params, "agent_ids", None) or [getattr(params, "agent_id")]  # noqa: B009
        for target in targets:
            if target != me.id and not self.is_descendant(target, me.id):
                raise refuse(f" ({target} is not one of them)")
        return params

    def is_descendant(self, agent_id: str, ancestor: str) -> bool:
        current: str | None = agent_id
        while current is not None:
            current = self.lookup(current).parent  # raises UnknownAgent for an unknown id
            if current == ancestor:
                return True
        return False

