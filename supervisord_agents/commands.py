"""What goes into the registry and what comes out of it.

Commands are the only way to change the registry (:meth:`Registry.apply
<supervisord_agents.registry.Registry.apply>`); each application returns an
:class:`Applied`: the events to append to the durable log, the effects for the daemon to
carry out once they are committed (start a session, stop an agent, clean up), and the
result for the caller. All of them are plain frozen values, so the registry stays pure.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from .model import Agent, AgentState, Approval, CleanupRecord, Event, EventKind, Exit, Severity, Task, TmuxIds, Usage

# --- commands -----------------------------------------------------------------------


class CreateTask(Struct, frozen=True):
    task: Task


class CloseTask(Struct, frozen=True):
    task_id: str


class SpawnAgent(Struct, frozen=True):
    """Admit an agent. ``agent`` is complete except for ``depth``, which is derived.
    With ``queue``, a spawn over a concurrency limit waits as ``queued`` for a free slot
    instead of being refused."""

    agent: Agent
    queue: bool = False


class SetGlobalLimit(Struct, frozen=True):
    """Change the global concurrency cap (on a config reload); queued agents that now
    fit are started."""

    global_max_concurrent: int


class Started(Struct, frozen=True):
    agent_id: str
    tmux: TmuxIds


class StartFailed(Struct, frozen=True):
    """The agent's session could not be created (the agent ends ``failed``)."""

    agent_id: str
    reason: str


class Adopt(Struct, frozen=True):
    """A session with our marker exists for an agent recorded as ``starting``."""

    agent_id: str
    tmux: TmuxIds


class ReportProgress(Struct, frozen=True, kw_only=True):
    agent_id: str
    activity: str | None = None
    message: str | None = None
    percent: int | None = None


class ReportFinding(Struct, frozen=True, kw_only=True):
    task_id: str
    agent_id: str | None
    type: str
    severity: Severity
    message: str
    data: dict[str, Any] | None = None


class RequestKill(Struct, frozen=True, kw_only=True):
    agent_id: str
    reason: str = ""
    tree: bool = False


class Exited(Struct, frozen=True):
    """The agent's process is gone; ``exit`` says how and what decided it."""

    agent_id: str
    exit: Exit


class Wake(Struct, frozen=True, kw_only=True):
    """Start the next attempt of a sleeping agent: its timer fired (``attempt`` is the attempt
    it was set for: a timer of an earlier sleep is stale), or the operator woke it (``early``)."""

    agent_id: str
    attempt: int
    early: bool = False


class ReportUsage(Struct, frozen=True, kw_only=True):
    """What a running agent's attempt has used so far, read from its event stream."""

    agent_id: str
    usage: Usage


class RequestApproval(Struct, frozen=True, kw_only=True):
    """An agent's CLI asks permission for a tool call (allowed at once if the tool is always allowed)."""

    agent_id: str
    approval: Approval


class AnswerApproval(Struct, frozen=True, kw_only=True):
    """Allow or deny a pending request; with ``always``, the tool is allowed for the agent from now on."""

    agent_id: str
    approval_id: str
    allow: bool
    by: str
    message: str = ""
    always: bool = False


class MarkStalled(Struct, frozen=True, kw_only=True):
    """A running agent has shown no output and no progress since ``since``."""

    agent_id: str
    since: float


class ClearStall(Struct, frozen=True, kw_only=True):
    """A stalled agent wrote output again."""

    agent_id: str


class RecordCleanup(Struct, frozen=True):
    agent_id: str
    cleanup: CleanupRecord


class PurgeTask(Struct, frozen=True, kw_only=True):
    """Delete a closed task's history (rows, findings, events); ``settled`` is what its agents
    were, by state, as the store holds them (they leave the global counts)."""

    task_id: str
    settled: dict[AgentState, int]
    reason: str = ""


class ReportDrift(Struct, frozen=True):
    """Something changed behind the daemon's back (its tmux server's hooks or options, a
    foreign session or pane) and was undone: recorded in the event log, no state change."""

    what: list[str]


class ReportDowntime(Struct, frozen=True, kw_only=True):
    """The daemon was not running from ``down_since`` (its last heartbeat, wall time) for
    ``seconds``; ``stopped`` if it had stopped on request (else it was killed, crashed, or
    the machine went down). ``ended`` and ``adopted``: the agents its first reconciliation
    pass found ended, or running, meanwhile. Recorded in the event log, no state change."""

    down_since: float
    seconds: float
    stopped: bool = False
    ended: list[str] = []
    adopted: list[str] = []


Command = (
    CreateTask
    | CloseTask
    | SpawnAgent
    | Started
    | StartFailed
    | Adopt
    | ReportProgress
    | ReportFinding
    | RequestKill
    | Exited
    | RecordCleanup
    | SetGlobalLimit
    | ReportDrift
    | ReportDowntime
    | PurgeTask
    | Wake
    | MarkStalled
    | ClearStall
    | ReportUsage
    | RequestApproval
    | AnswerApproval
)

# --- effects -------------------------------------------------------------


class StartSession(Struct, frozen=True):
    """Create the agent's session (its start reports ``Started`` or ``StartFailed``)."""

    agent: Agent


class StopAgent(Struct, frozen=True):
    """End the agent (and with ``tree``, what it left running); reports ``Exited``."""

    agent: Agent
    tree: bool


class CleanUpAgent(Struct, frozen=True):
    """After a terminal state: session, secrets, log archive; reports ``RecordCleanup``."""

    agent: Agent


class EndAttempt(Struct, frozen=True):
    """An attempt ended and the agent sleeps: end what is left of the attempt (session,
    processes, exit record) but keep its files, and set its wake-up timer. ``tmux``: where
    the attempt ran, if it got that far."""

    agent: Agent
    tmux: TmuxIds | None = None


Effect = StartSession | StopAgent | CleanUpAgent | EndAttempt


class Applied(Struct, frozen=True):
    """What applying one command did: events to commit, effects to run after the commit,
    and the value the caller gets."""

    events: list[Event]
    effects: list[Effect]
    result: Any


__all__ = [
    "Adopt", "AnswerApproval", "Applied", "CleanUpAgent", "ClearStall", "CloseTask", "Command", "CreateTask",
    "Effect", "EndAttempt", "Event", "EventKind", "Exited", "MarkStalled", "PurgeTask", "RecordCleanup",
    "ReportDowntime", "ReportDrift", "ReportFinding", "ReportProgress", "ReportUsage", "RequestApproval",
    "RequestKill", "SetGlobalLimit", "SpawnAgent", "StartFailed", "StartSession", "Started", "StopAgent", "Wake",
]
