"""What goes into the registry and what comes out of it.

Commands are the only way to change the registry (:meth:`Registry.apply
<supervisord_agents.registry.Registry.apply>`); each application returns an
:class:`Outcome`: the events to append to the durable log, the effects for the daemon to
carry out once they are committed (start a session, stop an agent, clean up), and the
result for the caller. All of them are plain frozen values, so the registry stays pure.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from msgspec import Struct

from .model import Agent, AgentState, Cleanup, Exit, Severity, Task, TmuxIds

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


class SpawnFailed(Struct, frozen=True):
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


class RecordCleanup(Struct, frozen=True):
    agent_id: str
    cleanup: Cleanup


Command = (
    CreateTask
    | CloseTask
    | SpawnAgent
    | Started
    | SpawnFailed
    | Adopt
    | ReportProgress
    | ReportFinding
    | RequestKill
    | Exited
    | RecordCleanup
    | SetGlobalLimit
)

# --- events and effects -------------------------------------------------------------


class EventKind(StrEnum):
    TASK_CREATED = "task_created"
    TASK_CLOSED = "task_closed"
    AGENT_STATE = "agent_state"  # data: the agent row after the change
    PROGRESS = "progress"  # data: {"activity", "message", "percent"}
    FINDING = "finding"  # data: the finding
    CLEANUP = "cleanup"  # data: the cleanup record


class Event(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of the append-only event log."""

    seq: int
    at: float
    kind: EventKind
    task_id: str
    agent_id: str | None = None
    state: AgentState | None = None
    data: Any = None


class StartSession(Struct, frozen=True):
    agent: Agent


class StopAgent(Struct, frozen=True):
    agent: Agent
    tree: bool


class CleanUp(Struct, frozen=True):
    agent: Agent


Effect = StartSession | StopAgent | CleanUp


class Outcome(Struct, frozen=True):
    events: list[Event]
    effects: list[Effect]
    result: Any
