"""The registry: a pure state machine over tasks, agents and findings.

Rules
-----

The registry is the only model of the world the daemon has, and :meth:`Registry.apply`
is the only way to change it. ``apply(command, now)`` either raises a
:class:`~supervisord_agents.errors.SupervisorError` and changes nothing, or changes the
registry and returns an :class:`Applied`: the events to persist (each with the next
sequence number), the side effects to run *after* those events are durable, and the
value the caller gets back.

An agent moves through these states::

    queued --slot free--> starting --started/adopt--> running --kill--> stopping
      |                      |                          |                 |
      +-- kill --> killed    +--------- exited ---------+---- exited -----+--> completed | failed
                             +-- spawn_failed --> failed |                         | killed | lost
                                                        exited early (rate limit, transient failure)
    sleeping <------------------------------------------+ and its policy says try again
      |  +-- wake (timer, or early) --> starting (or queued when no slot is free)
      +-- kill --> killed

A kill is sticky: a stopping agent's exit ends it, whatever its policy (but for a stall's
restart, which the next kill turns into an ordinary stop). What follows an early end is
:func:`~supervisord_agents.retry.after`'s decision; each earlier attempt is kept in the
agent's ``attempts``, and its final exit sums what they all cost.

Admission (which spawns fit, which queue, promotion when a slot frees) is the registry's
first part, :class:`~supervisord_agents.admission.Admission`.

Which command is allowed in which state is the table ``TRANSITIONS`` below; a pair that
is not in the table raises :class:`IllegalTransition`. Terminal states never change
again; only their cleanup record is updated.

Counts (active, completed, failed, spawned, per task and globally) are never stored.
They are the sizes of index sets that ``apply`` keeps in step with the rows, so they
cannot drift: the Hypothesis test in ``tests/test_registry_stateful.py`` recomputes
them from the rows after every step.

Admission of a spawn is checked and recorded in the same ``apply`` call, so two spawns
can never both pass a limit that only one of them fits under: the actor applies
commands one at a time.

Memory follows live work: the rows, indexes and tallies are the registry's
:class:`~supervisord_agents.tables.Tables`, which hold live tasks and agents and let
settled ones go (their rows stay in the store).

This module does no I/O and reads no clock; ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from msgspec import Struct, structs

from .admission import Admission
from .commands import (  # noqa: F401 - the registry's vocabulary, re-exported for its users
    Adopt,
    AnswerApproval,
    Applied,
    CleanUpAgent,
    ClearStall,
    CloseTask,
    Command,
    CreateTask,
    Effect,
    EndAttempt,
    Event,
    EventKind,
    Exited,
    MarkStalled,
    PurgeTask,
    RecordCleanup,
    ReportDowntime,
    ReportDrift,
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
)
from .errors import (
    Conflict,
    IllegalTransition,
    InvalidParams,
    LimitExceeded,
)
from .model import (
    MAX_PENDING_APPROVALS,
    SESSION_ID_RE,
    Agent,
    AgentState,
    ApprovalState,
    Attempt,
    DecidedBy,
    Exit,
    Finding,
    OnStall,
    Task,
    TaskState,
    TmuxIds,
    Usage,
    spent,
    turns,
)
from .results import explained
from .retry import GiveUp, Retry, after, limit_reached, summed
from .tables import Image, Tables, finding_size, image_of  # noqa: F401 - re-exported

S = AgentState


def terminal_state(exit: Exit, *, kill_requested: bool) -> AgentState:
    """The terminal state an exit leads to."""
    if kill_requested:
        return S.KILLED
    if exit.decided_by is DecidedBy.SESSION_VANISHED:
        return S.LOST
    if exit.decided_by is DecidedBy.SPAWN_ERROR:
        return S.FAILED
    if exit.is_error:  # the agent's own report says it failed, whatever its exit code
        return S.FAILED
    if exit.decided_by is DecidedBy.RESULT_EVENT:
        return S.COMPLETED
    return S.COMPLETED if exit.code == 0 and exit.signal is None else S.FAILED


# --- the registry -----------------------------------------------------------------------


class Registry(Admission):
    """The state machine over the held tables: commands in, events and effects out."""

    # -- the one way in ----------------------------------------------------------------

    def apply(self, command: Command, now: float) -> Applied:
        """Apply one command. Raises a SupervisorError and changes nothing, or returns
        the events, effects and result of the change."""
        match command:
            case CreateTask(task):
                return self._create_task(task, now)
            case CloseTask(task_id):
                return self._close_task(task_id, now)
            case PurgeTask():
                return self._purge_task(command, now)
            case SpawnAgent(agent, queue):
                return self._spawn(agent, now, queue=queue)
            case ReportFinding():
                return self._finding(command, now)
            case ReportDrift(what):
                return Applied([self._event(now, EventKind.DRIFT, "", data={"what": what})], [], None)
            case ReportDowntime():
                data = structs.asdict(command)
                return Applied([self._event(now, EventKind.DAEMON_DOWNTIME, "", data=data)], [], None)
            case SetGlobalLimit(limit):
                self.global_max_concurrent = limit
                events, effects = self._promote(now)
                return Applied(events, effects, limit)
            case _:
                agent = self.agent(command.agent_id)
                transition = TRANSITIONS.get((agent.state, type(command)))
                if transition is None:
                    raise IllegalTransition(
                        f"agent {agent.id} is {agent.state}: cannot {_verb(command)}",
                        data={"agent_id": agent.id, "state": agent.state.value},
                    )
                return transition(self, agent, command, now)

    # -- tasks ---------------------------------------------------------------------------

    def _create_task(self, task: Task, now: float) -> Applied:
        if task.id in self.tasks:
            raise Conflict(f"task {task.id} already exists", data={"task_id": task.id})
        task = structs.replace(task, state=TaskState.OPEN, created_at=now, closed_at=None)
        self._put_task(task)
        return Applied([self._event(now, EventKind.TASK_CREATED, task.id, data=task)], [], task)

    def _close_task(self, task_id: str, now: float) -> Applied:
        task = self.task(task_id)
        if task.state is TaskState.CLOSED:
            raise IllegalTransition(f"task {task_id} is already closed", data={"task_id": task_id})
        task = structs.replace(task, state=TaskState.CLOSED, closed_at=now)
        self.tasks[task.id] = self._changed_tasks[task.id] = task
        self._drop_task_if_done(task.id)
        return Applied([self._event(now, EventKind.TASK_CLOSED, task.id, data=task)], [], task)

    def _purge_task(self, cmd: PurgeTask, now: float) -> Applied:
        # The caller found the task closed in the store; here: it must not be held.
        task = self.tasks.get(cmd.task_id)
        if task is not None:
            why = "is open" if task.state is TaskState.OPEN else "has agents not yet ended and cleaned up"
            raise IllegalTransition(f"task {task.id} {why}: it cannot be purged", data={"task_id": task.id})
        for state, n in cmd.settled.items():
            self._totals[state] -= n
        self._purged.append(cmd.task_id)
        data = {"agents": sum(cmd.settled.values()), "reason": cmd.reason}
        return Applied([self._event(now, EventKind.TASK_PURGED, cmd.task_id, data=data)], [], data)

    # -- agent transitions (the values of TRANSITIONS) ----------------------------------

    def _started(self, agent: Agent, cmd: Started | Adopt, now: float) -> Applied:
        self._claim_session(agent, cmd.tmux)
        agent = self._replace(agent, state=S.RUNNING, tmux=cmd.tmux, started_at=now, updated_at=now)
        return Applied([self._agent_event(now, agent)], [], agent)

    def _started_while_stopping(self, agent: Agent, cmd: Started | Adopt, now: float) -> Applied:
        # A kill arrived while the session was being created: record where it runs and
        # stop it now that there is something to stop.
        self._claim_session(agent, cmd.tmux)
        agent = self._replace(agent, tmux=cmd.tmux, started_at=now, updated_at=now)
        return Applied([self._agent_event(now, agent)], [StopAgent(agent, tree=False)], agent)

    def _start_failed(self, agent: Agent, cmd: StartFailed, now: float) -> Applied:
        exit = Exit(decided_by=DecidedBy.SPAWN_ERROR, reason=cmd.reason)
        return self._end(agent, S.FAILED, exit, now)

    def _progress(self, agent: Agent, cmd: ReportProgress, now: float) -> Applied:
        changes: dict[str, Any] = {"updated_at": now, "stalled_since": None}
        if cmd.activity is not None:
            changes["activity"] = cmd.activity
        if cmd.message is not None:
            changes["message"] = cmd.message
        if cmd.percent is not None:
            changes["progress"] = cmd.percent
        agent = self._replace(agent, **changes)
        data = {"activity": agent.activity, "message": cmd.message, "percent": agent.progress}
        event = self._event(now, EventKind.PROGRESS, agent.task_id, agent.id, data=data)
        return Applied([event], [], agent)

    def _kill(self, agent: Agent, cmd: RequestKill, now: float) -> Applied:
        reason = cmd.reason or "kill requested"
        agent = self._replace(agent, state=S.STOPPING, kill_reason=reason, updated_at=now)
        # Without tmux ids the session is still being created; ``_started_while_stopping``
        # issues the stop once it exists, and a failed start ends the agent anyway.
        effects: list[Effect] = [StopAgent(agent, tree=cmd.tree)] if agent.tmux is not None else []
        return Applied([self._agent_event(now, agent)], effects, agent)

    def _kill_waiting(self, agent: Agent, cmd: RequestKill, now: float) -> Applied:
        # Nothing runs (yet, or between attempts): the agent ends here, and only its files need cleaning.
        agent = self._replace(agent, kill_reason=cmd.reason or "kill requested")
        return self._end(agent, S.KILLED, Exit(decided_by=DecidedBy.KILL, reason=agent.kill_reason), now)

    def _kill_again(self, agent: Agent, cmd: RequestKill, now: float) -> Applied:
        # Idempotent (a second kill re-issues the stop); after a stall's restart, an ordinary stop: sticky.
        events: list[Event] = []
        if agent.then_restart:
            agent = self._replace(agent, then_restart=False, kill_reason=cmd.reason or "kill requested",
                                  updated_at=now)
            events.append(self._agent_event(now, agent))
        effects: list[Effect] = [StopAgent(agent, tree=cmd.tree)] if agent.tmux is not None else []
        return Applied(events, effects, agent)

    def _exited(self, agent: Agent, cmd: Exited, now: float) -> Applied:
        stopping = agent.state is S.STOPPING and not agent.then_restart
        state = terminal_state(cmd.exit, kill_requested=stopping)
        if agent.then_restart:  # stopped for a stall: the next attempt resumes at once
            exit = explained(S.KILLED, cmd.exit, agent.kill_reason)  # the stall is the reason
            if agent.attempt >= (agent.policy.max_attempts or 1):
                gave_up = f"gave up after {agent.attempt} attempts: {exit.reason}"
                return self._end(agent, S.FAILED, exit, now, gave_up=gave_up)
            return self._sleep(agent, exit, Retry(now, "stalled: restarted at once"), now)
        if state is S.FAILED:
            exit = explained(state, cmd.exit, "")
            match after(agent, exit, now):
                case Retry() as retry:
                    return self._sleep(agent, exit, retry, now)
                case GiveUp(reason):
                    return self._end(agent, state, exit, now, gave_up=reason)
        return self._end(agent, state, cmd.exit, now)

    def _sleep(self, agent: Agent, exit: Exit, retry: Retry, now: float) -> Applied:
        """The attempt ended and another follows at ``retry.wake_at``: the agent sleeps, holding
        no slot, its files and its conversation kept."""
        record = Attempt(n=agent.attempt, started_at=agent.started_at, ended_at=now, exit=exit, then=retry.why)
        # An agent that has used up a limit is not given another attempt.
        counted = structs.replace(agent, attempts=[*agent.attempts, record], usage=Usage())
        reached = next((limit_reached(what, used, value) for _, what, used, value in self._limits(counted)
                        if used >= value), None)
        if reached is not None:
            return self._end(agent, S.FAILED, exit, now, gave_up=f"{exit.reason}; not retried: {reached}")
        ran_in = agent.tmux
        # Its next attempt resumes the conversation it reported, unless no id, another live agent's (a stream
        # is its agent's to forge), or never answered in (gemini keeps none then; a fresh start loses nothing).
        reported = exit.session_id or ""
        if SESSION_ID_RE.match(reported) and exit.output_tokens != 0 and self.conversation_holder(reported) in (
                None, agent):
            agent = self._replace(agent, conversation=reported)
        agent = self._replace(
            agent, state=S.SLEEPING, attempt=agent.attempt + 1, attempts=[*agent.attempts, record],
            wake_at=retry.wake_at, sleep_reason=retry.why, tmux=None, started_at=None,
            stalled_since=None, then_restart=False, kill_reason="", updated_at=now,
            usage=Usage(warned=agent.usage.warned),  # the attempt's figures are in its exit now
            approvals=[],  # the CLI that asked is gone
        )
        slept = self._agent_event(now, agent)
        promoted, starts = self._promote(now) if self._queued else ([], [])
        return Applied([slept, *promoted], [EndAttempt(agent, ran_in), *starts], agent)

    def _wake(self, agent: Agent, cmd: Wake, now: float) -> Applied:
        if cmd.attempt != agent.attempt and not cmd.early:
            raise IllegalTransition(f"agent {agent.id} sleeps before attempt {agent.attempt}, not {cmd.attempt}",
                                    data={"agent_id": agent.id, "attempt": agent.attempt})
        waits = self._slot_refusal(self.tasks[agent.task_id]) is not None
        agent = self._replace(agent, state=S.QUEUED if waits else S.STARTING, wake_at=None, sleep_reason="",
                              progress=0, updated_at=now)
        woke = self._agent_event(now, agent)
        # Its wake may lift its provider's rate limit: agents queued behind it may start.
        promoted, starts = self._promote(now) if self._queued else ([], [])
        return Applied([woke, *promoted], [] if waits else [StartSession(agent), *starts], agent)

    def _stalled(self, agent: Agent, cmd: MarkStalled, now: float) -> Applied:
        # The watch saw the agent a moment ago: if it has since reported, or asked the operator
        # something (it waits for the answer, not stalled), the stall is no longer true.
        if agent.stalled_since is not None or agent.approvals or agent.updated_at > cmd.since:
            return Applied([], [], agent)
        seconds = round(now - cmd.since, 1)
        action = agent.policy.on_stall or OnStall.NOTHING
        agent = self._replace(agent, stalled_since=cmd.since, updated_at=now)
        data = {"since": cmd.since, "seconds": seconds, "then": action.value}
        events = [self._event(now, EventKind.STALLED, agent.task_id, agent.id, data=data)]
        if action is OnStall.NOTHING:
            return Applied(events, [], agent)
        reason = f"stalled: no output or progress for {seconds:g} s"
        agent = self._replace(agent, state=S.STOPPING, kill_reason=reason, then_restart=action is OnStall.RESTART)
        events.append(self._agent_event(now, agent))
        return Applied(events, [StopAgent(agent, tree=False)] if agent.tmux is not None else [], agent)

    def _usage(self, agent: Agent, cmd: ReportUsage, now: float) -> Applied:
        """Record what the attempt has used; warn once near a limit (``warn_at`` of it), and stop
        the agent at one: its turns or cost over all its attempts, or its task's budget."""
        warned = [w for w in agent.usage.warned if w not in cmd.usage.warned]
        agent = self._replace(agent, usage=structs.replace(cmd.usage, warned=[*cmd.usage.warned, *warned]),
                              updated_at=now)
        limits = self.tasks[agent.task_id].limits
        events: list[Event] = []
        for name, what, used, value in self._limits(agent):
            data = {"limit": name, "used": used, "value": value, "stopped": used >= value}
            if used >= value:
                agent = self._replace(agent, state=S.STOPPING, kill_reason=limit_reached(what, used, value))
                events += [self._event(now, EventKind.LIMIT, agent.task_id, agent.id, data=data),
                           self._agent_event(now, agent)]
                return Applied(events, [StopAgent(agent, tree=False)] if agent.tmux is not None else [], agent)
            if used >= limits.warn_at * value and name not in agent.usage.warned:
                agent = self._replace(agent, usage=structs.replace(agent.usage, warned=[*agent.usage.warned, name]))
                events.append(self._event(now, EventKind.LIMIT, agent.task_id, agent.id, data=data))
        return Applied(events, [], agent)

    def _limits(self, agent: Agent) -> Iterator[tuple[str, str, float, float]]:
        """(limit, what, used, value) of each limit set: its turns and cost, its task's budget."""
        limits = self.tasks[agent.task_id].limits
        checks = (("agent_max_turns", "turns", turns(agent), limits.agent_max_turns),
                  ("agent_max_cost_usd", "cost", spent(agent) or 0.0, limits.agent_max_cost_usd),
                  ("max_cost_usd", "its task's budget", self.cost(agent.task_id), limits.max_cost_usd))
        return ((name, what, used, value) for name, what, used, value in checks if value is not None)

    def _ask(self, agent: Agent, cmd: RequestApproval, now: float) -> Applied:
        """Record a permission request, pending; one for a tool the agent is always allowed is
        answered at once."""
        approval = structs.replace(cmd.approval, task_id=agent.task_id, agent_id=agent.id, at=now,
                                   state=ApprovalState.PENDING, answered_by="", answered_at=None, message="")
        if approval.id in self._approvals:
            raise Conflict(f"approval {approval.id} already exists", data={"approval_id": approval.id})
        if approval.tool in agent.always_allowed:
            approval = structs.replace(approval, state=ApprovalState.ALLOWED, answered_at=now,
                                       answered_by="always allowed for this tool")
            return Applied([self._event(now, EventKind.APPROVAL, agent.task_id, agent.id, data=approval)], [], approval)
        if len(agent.approvals) >= MAX_PENDING_APPROVALS:
            raise LimitExceeded(f"agent {agent.id} already has {len(agent.approvals)} requests waiting",
                                data={"limit": "pending_approvals", "value": MAX_PENDING_APPROVALS})
        # Asking is activity: an agent waiting for the operator is not stalled.
        agent = self._replace(agent, approvals=[*agent.approvals, approval], stalled_since=None, updated_at=now)
        event = self._event(now, EventKind.APPROVAL, agent.task_id, agent.id, data=approval)
        return Applied([event, self._agent_event(now, agent)], [], approval)

    def _answer(self, agent: Agent, cmd: AnswerApproval, now: float) -> Applied:
        """Allow or deny a pending request (and with ``always``, its tool for good)."""
        approval = next((a for a in agent.approvals if a.id == cmd.approval_id), None)
        if approval is None:
            raise IllegalTransition(f"approval {cmd.approval_id} of agent {agent.id} is not pending",
                                    data={"approval_id": cmd.approval_id})
        approval = structs.replace(approval, state=ApprovalState.ALLOWED if cmd.allow else ApprovalState.DENIED,
                                   answered_by=cmd.by, answered_at=now, message=cmd.message)
        always = [*agent.always_allowed, approval.tool] if cmd.allow and cmd.always \
            and approval.tool not in agent.always_allowed else agent.always_allowed
        agent = self._replace(agent, approvals=[a for a in agent.approvals if a.id != approval.id],
                              always_allowed=always, updated_at=now)
        event = self._event(now, EventKind.APPROVAL, agent.task_id, agent.id, data=approval)
        return Applied([event, self._agent_event(now, agent)], [], approval)

    def _unstalled(self, agent: Agent, cmd: ClearStall, now: float) -> Applied:
        if agent.stalled_since is None:
            return Applied([], [], agent)
        agent = self._replace(agent, stalled_since=None, updated_at=now)
        return Applied([self._agent_event(now, agent)], [], agent)

    def _cleanup(self, agent: Agent, cmd: RecordCleanup, now: float) -> Applied:
        agent = self._replace(agent, cleanup=cmd.cleanup, updated_at=now)
        event = self._event(now, EventKind.CLEANUP, agent.task_id, agent.id, data=cmd.cleanup)
        self._settle(agent)
        return Applied([event], [], agent)

    def _end(self, agent: Agent, state: AgentState, exit: Exit, now: float, *, gave_up: str = "") -> Applied:
        exit = explained(state, exit, agent.kill_reason)
        if gave_up:
            exit = structs.replace(exit, reason=gave_up)
        if agent.attempts:
            exit = summed(agent.attempts, exit)
        agent = self._replace(agent, state=state, exit=exit, ended_at=now, updated_at=now, wake_at=None,
                              then_restart=False, approvals=[])  # its CLI, which asked, is gone
        ended = self._agent_event(now, agent)
        promoted, starts = self._promote(now) if self._queued else ([], [])
        return Applied([ended, *promoted], [CleanUpAgent(agent), *starts], agent)

    # -- findings ----------------------------------------------------------------------

    def _finding(self, cmd: ReportFinding, now: float) -> Applied:
        task = self.task(cmd.task_id)
        if cmd.agent_id is not None:
            agent = self.agent(cmd.agent_id)
            if agent.task_id != task.id:
                raise InvalidParams(
                    f"agent {agent.id} belongs to task {agent.task_id}, not {task.id}",
                    data={"agent_id": agent.id},
                )
        count, used = self.findings_use(task.id)
        size = finding_size(cmd.message, cmd.data)
        limits = task.limits
        if count >= limits.max_findings:
            raise LimitExceeded(
                f"task {task.id} has {count} findings (max {limits.max_findings})",
                data={"limit": "max_findings", "value": limits.max_findings},
            )
        if used + size > limits.max_findings_bytes:
            raise LimitExceeded(
                f"task {task.id} has {used} bytes of findings; {size} more would pass its"
                f" max of {limits.max_findings_bytes}",
                data={"limit": "max_findings_bytes", "value": limits.max_findings_bytes},
            )
        seq = self.last_seq + 1
        finding = Finding(
            seq=seq, task_id=task.id, agent_id=cmd.agent_id, type=cmd.type,
            severity=cmd.severity, message=cmd.message, data=cmd.data, at=now,
        )
        event = self._event(now, EventKind.FINDING, task.id, cmd.agent_id, data=finding)
        self._findings[task.id] = [count + 1, used + size]
        return Applied([event], [], finding)

    def _claim_session(self, agent: Agent, tmux: TmuxIds) -> None:
        holder = self._live_session.get(tmux.session_id)
        if holder is not None and holder != agent.id:
            raise Conflict(
                f"session {tmux.session_id} already belongs to agent {holder}",
                data={"session_id": tmux.session_id, "agent_id": holder},
            )

# --- the transition table -------------------------------------------------------------

_TERMINALS: Final = (S.COMPLETED, S.FAILED, S.KILLED, S.LOST)
Transition = Callable[[Registry, Agent, Any, float], Applied]

#: (state, command type) -> the method that applies it. A pair that is not here is
#: illegal. Methods decide the target state (an exit may end in any terminal state).
TRANSITIONS: Final[dict[tuple[AgentState, type[Struct]], Transition]] = {
    (S.STARTING, Started): Registry._started,
    (S.STOPPING, Started): Registry._started_while_stopping,
    (S.STARTING, Adopt): Registry._started,
    (S.STOPPING, Adopt): Registry._started_while_stopping,
    (S.STARTING, StartFailed): Registry._start_failed,
    (S.STOPPING, StartFailed): Registry._start_failed,
    **{(s, ReportProgress): Registry._progress for s in (S.STARTING, S.RUNNING, S.STOPPING)},
    (S.QUEUED, RequestKill): Registry._kill_waiting,
    (S.SLEEPING, RequestKill): Registry._kill_waiting,
    (S.SLEEPING, Wake): Registry._wake,
    (S.RUNNING, MarkStalled): Registry._stalled,
    (S.RUNNING, ClearStall): Registry._unstalled,
    (S.RUNNING, ReportUsage): Registry._usage,
    (S.RUNNING, RequestApproval): Registry._ask,
    **{(s, AnswerApproval): Registry._answer for s in (S.RUNNING, S.STOPPING)},
    (S.STARTING, RequestKill): Registry._kill,
    (S.RUNNING, RequestKill): Registry._kill,
    (S.STOPPING, RequestKill): Registry._kill_again,
    **{(s, Exited): Registry._exited for s in (S.STARTING, S.RUNNING, S.STOPPING)},
    **{(s, RecordCleanup): Registry._cleanup for s in _TERMINALS},
}

#: The commands addressed to one agent (looked up in TRANSITIONS by its state).
AGENT_COMMANDS: Final = (Started, Adopt, StartFailed, ReportProgress, RequestKill, Exited, RecordCleanup, Wake,
                         MarkStalled, ClearStall, ReportUsage, RequestApproval, AnswerApproval)


def _verb(command: Struct) -> str:
    return type(command).__name__
