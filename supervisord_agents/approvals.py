"""The approval desk: permission requests of agents' CLIs, waiting for the operator's answer.

Claude Code headless can hand its permission questions to an MCP tool
(``--permission-prompt-tool``): the shim's ``approve_tool_use`` calls ``approval.request``,
which records the request durably (the agent shows ``awaiting approval``) and waits here until
it is answered: by the operator (``approval.answer``: ``agentctl approve|deny``, an MCP tool of
the orchestrator), or by the task's policy when ``approval_timeout`` passes (deny by default).
Agents cannot answer: ``approval.answer`` is the operator's alone. A request whose caller stops
waiting (its CLI was killed, the connection dropped) is denied, so none is left pending; the
requests of an agent that ends or sleeps lapse with its CLI (the registry drops them).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from .actor import Mailbox
from .commands import AnswerApproval, RequestApproval
from .errors import NotFound, SupervisorError
from .model import DEFAULT_POLICY, Approval, ApprovalState, OnApprovalTimeout
from .registry import Registry


class _Answer:
    """Where the answer to a waiting request lands."""

    __slots__ = ("approval", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.approval: Approval | None = None


class ApprovalDesk:
    """Requests in, answers out (see the module doc)."""

    def __init__(self, registry: Registry, mailbox: Mailbox) -> None:
        self.registry = registry
        self.mailbox = mailbox
        self._waiting: dict[str, _Answer] = {}

    async def ask(self, agent_id: str, tool: str, input: dict[str, Any], approval_id: str) -> Approval:
        """Record the request and return its answer: the operator's, else the policy's at the timeout."""
        agent = self.registry.agent(agent_id)
        asking = Approval(id=approval_id, task_id=agent.task_id, agent_id=agent.id, tool=tool, input=input,
                          at=time.time())
        asked: Approval = await self.mailbox.submit(RequestApproval(agent_id=agent.id, approval=asking))
        if asked.state is not ApprovalState.PENDING:
            return asked  # a tool it is always allowed
        waiting = self._waiting[asked.id] = _Answer()
        policy = self.registry.agent(agent_id).policy
        timeout = policy.approval_timeout or DEFAULT_POLICY.approval_timeout or 600.0
        try:
            with trio.move_on_after(timeout):
                await waiting.done.wait()
            if waiting.approval is None:
                allow = policy.on_approval_timeout is OnApprovalTimeout.ALLOW
                await self._answer(asked, allow, by=f"timeout after {timeout:g} s ({'allow' if allow else 'deny'})")
        finally:
            if waiting.approval is None:
                with trio.CancelScope(shield=True):
                    await self._answer(asked, False, by="its agent stopped waiting", quiet=True)
            del self._waiting[asked.id]
        assert waiting.approval is not None
        return waiting.approval

    def pending(self, task_id: str | None = None) -> list[Approval]:
        """Requests waiting for an answer, oldest first (at most 8 per live agent)."""
        pending = [a for agent in self.registry.awaiting_approval() for a in agent.approvals
                   if task_id in (None, agent.task_id)]
        return sorted(pending, key=lambda a: a.at)

    async def answer(self, approval_id: str, allow: bool, *, message: str = "", always: bool = False) -> Approval:
        """The operator's answer. Raises NotFound if nothing with that id is pending."""
        found = self.registry.pending_approval(approval_id)
        if found is None:
            raise NotFound(f"no pending approval {approval_id} (answered, lapsed, or never asked)",
                           data={"approval_id": approval_id})
        return await self._answer(found[1], allow, by="operator", message=message, always=always)

    async def _answer(self, approval: Approval, allow: bool, *, by: str, message: str = "", always: bool = False,
                      quiet: bool = False) -> Approval:
        """Answer a pending request and hand the answer to the call that waits for it. With
        ``quiet``, a request answered or lapsed meanwhile is no error."""
        command = AnswerApproval(agent_id=approval.agent_id, approval_id=approval.id, allow=allow, by=by,
                                 message=message, always=always)
        try:
            answered: Approval = await self.mailbox.submit(command)
        except SupervisorError:
            if quiet:
                return approval
            raise
        waiting = self._waiting.get(answered.id)
        if waiting is not None and waiting.approval is None:
            waiting.approval = answered
            waiting.done.set()
        return answered
