"""The data model: ids, names, tasks, agents, findings and their states.

Everything here is a frozen msgspec Struct or a StrEnum, and every name that can reach
a path, a tmux target or an argv is constrained by a pattern *at decode time*. The
patterns keep out tmux target syntax (``.``, ``:``), path separators, shell
metacharacters, whitespace and control characters, so code further in never has to
sanitise: a value that decoded is safe to use as a file name or a tmux session name.

This module is pure: no I/O, no clocks. Timestamps are floats (seconds since the
epoch) handed in by the caller.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Any, Final

from msgspec import Meta, Struct

# --- names and ids ------------------------------------------------------------------

NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,39}\Z"
TASK_ID_PATTERN: Final = r"^TASK-[0-9]{8}-[0-9]{6}-[0-9a-f]{8}\Z"
AGENT_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,39}-[0-9]{6}-[0-9a-f]{6}\Z"
APPROVAL_ID_PATTERN: Final = r"^AP-[0-9a-f]{12}\Z"

Name = Annotated[str, Meta(pattern=NAME_PATTERN, description="lower-case name: [a-z0-9][a-z0-9_-]{0,39}")]
TaskId = Annotated[str, Meta(pattern=TASK_ID_PATTERN, description="TASK-YYYYMMDD-HHMMSS-<8 hex>")]
AgentId = Annotated[str, Meta(pattern=AGENT_ID_PATTERN, description="<type>-<HHMMSS>-<6 hex>")]
ApprovalId = Annotated[str, Meta(pattern=APPROVAL_ID_PATTERN, description="AP-<12 hex>")]
ToolName = Annotated[str, Meta(max_length=200)]
# Model names end up as one argv element; they may never look like a flag.
ModelName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}\Z")]
# Absolute path without control characters, bounded. Existence is checked where the path is used.
AbsPath = Annotated[str, Meta(pattern=r"^/[^\x00-\x1f\x7f]*\Z", max_length=4096)]
Text = Annotated[str, Meta(max_length=65536)]
ShortText = Annotated[str, Meta(max_length=4096)]
#: A provider's conversation id, as an agent's own event stream reported it (so untrusted): it
#: becomes one argv item of a resume, so it may never look like a flag or carry anything else.
SessionId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")]
SESSION_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
Percent = Annotated[int, Meta(ge=0, le=100)]
Seq = Annotated[int, Meta(ge=0)]

def nesting(value: object, limit: int) -> int:
    """How many levels of objects and arrays ``value`` nests (a scalar: 0), counted without
    recursion and no further than ``limit + 1``."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = []
        for container in containers:
            level.extend(container.values() if isinstance(container, dict) else container)
    return depth


# --- states -------------------------------------------------------------------------


class AgentState(StrEnum):
    """Where an agent is in its life (supervisord's vocabulary where it fits)."""

    QUEUED = "queued"
    SLEEPING = "sleeping"  # between attempts: a rate limit's reset, or a retry's back-off (``wake_at``)
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    LOST = "lost"

    @property
    def live(self) -> bool:
        """True while the agent holds (or is about to hold) a session and a process."""
        return self in LIVE_STATES

    @property
    def terminal(self) -> bool:
        """True once the agent has ended; terminal states never change again."""
        return self not in LIVE_STATES


LIVE_STATES: Final = frozenset(
    {AgentState.QUEUED, AgentState.SLEEPING, AgentState.STARTING, AgentState.RUNNING, AgentState.STOPPING}
)
#: The live states that hold one of the concurrency slots a task's limits count.
ACTIVE_STATES: Final = LIVE_STATES - {AgentState.QUEUED, AgentState.SLEEPING}
TERMINAL_STATES: Final = frozenset(AgentState) - LIVE_STATES


class TaskState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Priority(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Sandbox(StrEnum):
    """What an agent runs in, beyond its cgroup."""

    NONE = "none"
    BWRAP = "bwrap"  # bubblewrap: the working directory writable, the rest read-only, the daemon's files hidden


class EventFormat(StrEnum):
    """The JSON event stream a provider prints on stdout, read for how its run ended."""

    NONE = "none"  # plain output: the exit status alone decides
    CLAUDE = "claude"  # claude -p --output-format stream-json: a final ``result`` event
    CODEX = "codex"  # codex exec --json: ``turn.completed`` / ``turn.failed`` / ``error``
    GEMINI = "gemini"  # gemini --output-format stream-json: a final ``result`` with ``status``


class ErrorClass(StrEnum):
    """Why an agent did not complete, in a few classes a caller can act on."""

    AUTH = "auth"  # no or a bad key: a human must fix the credentials
    RATE_LIMIT = "rate_limit"  # the provider refused for now; ``retry_at`` when it said
    API_ERROR = "api_error"  # the provider failed (5xx, overloaded, a broken stream)
    MAX_TURNS = "max_turns"
    PERMISSION_DENIED = "permission_denied"  # a tool it needed was not allowed
    AGENT_ERROR = "agent_error"  # the agent said it failed, for another reason
    TIMEOUT = "timeout"  # its wall-time limit fired
    KILLED = "killed"  # someone asked for it to stop
    CRASHED = "crashed"  # non-zero exit or a signal, with no report of its own
    START_FAILED = "start_failed"  # it never ran
    LOST = "lost"  # its session vanished with no exit record


#: How a kill by the agent's wall-time limit begins its reason (see :func:`timed_out`).
TIMED_OUT: Final = "timed out after"


def timed_out(seconds: float) -> str:
    """The kill reason of an agent whose wall-time limit fired."""
    return f"{TIMED_OUT} {seconds:g} s (its wall-time limit)"


class DecidedBy(StrEnum):
    """What decided an agent's terminal state."""

    EXIT_STATUS = "exit_status"  # the runner's status record
    RESULT_EVENT = "result_event"  # stream-json final result, no exit record
    KILL = "kill"  # a kill request
    SESSION_VANISHED = "session_vanished"  # the session went away with no exit record
    SPAWN_ERROR = "spawn_error"  # the session never started


# --- limits and specs ---------------------------------------------------------------


class Resources(Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Bounds for one agent's cgroup, applied where the controller is available."""

    memory_max_mb: Annotated[int, Meta(ge=1, le=1 << 30)] | None = None
    pids_max: Annotated[int, Meta(ge=1, le=1 << 22)] | None = None
    cpu_max: Annotated[float, Meta(gt=0, le=4096)] | None = None  # cores

    def over(self, base: Resources) -> Resources:
        """These bounds, each taken from ``base`` where not set here."""
        return Resources(
            memory_max_mb=self.memory_max_mb if self.memory_max_mb is not None else base.memory_max_mb,
            pids_max=self.pids_max if self.pids_max is not None else base.pids_max,
            cpu_max=self.cpu_max if self.cpu_max is not None else base.cpu_max,
        )


class OnRateLimit(StrEnum):
    SLEEP = "sleep"  # sleep until the provider's reset (or a back-off), then resume the conversation
    FAIL = "fail"  # end ``failed``, as any other error


class Restart(StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"  # a transient failure (API error, crash) is retried, with back-off


class OnApprovalTimeout(StrEnum):
    DENY = "deny"
    ALLOW = "allow"


class OnStall(StrEnum):
    NOTHING = "nothing"  # flag it and say so (an event), nothing more
    KILL = "kill"
    RESTART = "restart"  # stop it and start a new attempt that resumes its conversation


#: The outcome classes a restart policy retries: the provider or the process failed, and
#: the same request may well succeed later. Auth errors, permission denials, max turns and
#: the agent's own errors are permanent: another attempt would end the same way.
TRANSIENT: Final = frozenset({ErrorClass.API_ERROR, ErrorClass.CRASHED})


class Policy(Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """What happens when an agent's attempt ends early or it stalls. A field left out is
    taken from the next level (a task's over its provider's over the daemon's defaults,
    :data:`DEFAULT_POLICY`); an agent keeps the complete policy it was admitted with."""

    on_rate_limit: OnRateLimit | None = None
    #: How many times a rate-limited agent may sleep and resume before it ends ``failed``.
    max_rate_limit_waits: Annotated[int, Meta(ge=0, le=1000)] | None = None
    #: Seconds to sleep after a rate limit whose reset the provider did not say (doubling each time).
    rate_limit_backoff: Annotated[float, Meta(ge=0, le=86400)] | None = None
    restart: Restart | None = None
    max_attempts: Annotated[int, Meta(ge=1, le=100)] | None = None  # in all, the first one included
    backoff: Annotated[float, Meta(ge=0, le=86400)] | None = None  # before the 2nd attempt, doubling after
    backoff_max: Annotated[float, Meta(ge=0, le=86400)] | None = None
    #: Seconds without output or progress after which a running agent is ``stalled`` (None: never).
    stall_after: Annotated[float, Meta(gt=0, le=30 * 86400)] | None = None
    on_stall: OnStall | None = None
    #: Seconds a permission request of an agent waits for an answer, then ``on_approval_timeout``.
    approval_timeout: Annotated[float, Meta(gt=0, le=7 * 86400)] | None = None
    on_approval_timeout: OnApprovalTimeout | None = None

    def over(self, base: Policy) -> Policy:
        """This policy, each field left out taken from ``base``."""
        return Policy(**{f: v if (v := getattr(self, f)) is not None else getattr(base, f)
                         for f in self.__struct_fields__})


DEFAULT_POLICY: Final = Policy(
    on_rate_limit=OnRateLimit.SLEEP, max_rate_limit_waits=10, rate_limit_backoff=60.0,
    restart=Restart.NEVER, max_attempts=3, backoff=10.0, backoff_max=600.0, on_stall=OnStall.NOTHING,
    approval_timeout=600.0, on_approval_timeout=OnApprovalTimeout.DENY,
)


class Limits(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Anti-spiral limits of one task, checked atomically when a spawn is admitted."""

    max_concurrent: Annotated[int, Meta(ge=1, le=1000)] = 20
    max_total: Annotated[int, Meta(ge=1, le=100_000)] = 45
    max_depth: Annotated[int, Meta(ge=1, le=50)] = 5
    #: A budget: no spawn once the task's ended agents have cost this much (USD, from their
    #: final stream-json results). None: no budget.
    max_cost_usd: Annotated[float, Meta(ge=0, le=1_000_000)] | None = None
    #: What the supervisor stops an agent at, counted from its provider's event stream as it runs
    #: (over all its attempts): turns, and cost (USD, where the stream says); and the task's wall
    #: time from its creation, at which its live agents are stopped. None: no such limit.
    agent_max_turns: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    agent_max_cost_usd: Annotated[float, Meta(ge=0, le=1_000_000)] | None = None
    max_wall_seconds: Annotated[float, Meta(gt=0, le=365 * 86400)] | None = None
    #: The fraction of a turn or cost limit at which a ``limit`` warning event is recorded (once).
    warn_at: Annotated[float, Meta(gt=0, le=1)] = 0.8
    #: Quotas of the findings its agents may record: how many, and their bytes (message and data).
    max_findings: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    max_findings_bytes: Annotated[int, Meta(ge=1, le=1 << 40)] = 64 << 20
    #: Bounds of each agent's cgroup (over the provider's); None: the provider's, or none.
    resources: Resources = Resources()


class TaskContext(Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Optional context given to every agent of a task."""

    background: Text = ""
    deliverables: Annotated[list[ShortText], Meta(max_length=100)] = []
    success_criteria: Annotated[list[ShortText], Meta(max_length=100)] = []
    constraints: Annotated[list[ShortText], Meta(max_length=100)] = []
    relevant_files: Annotated[list[ShortText], Meta(max_length=200)] = []


class Task(Struct, frozen=True, kw_only=True):
    id: TaskId
    description: Text
    priority: Priority = Priority.P2
    cwd: AbsPath | None = None
    context: TaskContext = TaskContext()
    limits: Limits = Limits()
    sandbox: Sandbox | None = None  # None: each provider's own setting
    policy: Policy = Policy()  # over each provider's
    state: TaskState = TaskState.OPEN
    created_at: float
    closed_at: float | None = None


class TmuxIds(Struct, frozen=True, kw_only=True):
    """Exact tmux identifiers of an agent's session (never a name prefix)."""

    session_id: str
    window_id: str
    pane_id: str
    pane_pid: int


class Exit(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How an agent ended and what decided it."""

    decided_by: DecidedBy
    code: int | None = None
    signal: int | None = None
    reason: str = ""  # one line: why it failed, was killed or lost ("" when it completed)
    error_class: ErrorClass | None = None
    is_error: bool | None = None  # what the agent's own final event said
    answer: str = ""  # its final answer (bounded; the log has all of it)
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    turns: int | None = None
    session_id: str | None = None  # the provider's, for resuming
    retry_at: float | None = None  # a rate limit's reset, when the provider said
    cpu_seconds: float | None = None  # CPU time of all the agent's processes (its cgroup, else its rusage)
    memory_peak_kb: int | None = None  # its cgroup's memory.peak, else the largest process's max RSS


class CleanupRecord(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What cleanup after a terminal state did, or why it failed (then it is retried)."""

    ok: bool
    at: float
    archive: str | None = None
    error: str = ""
    attempts: int = 1


class Usage(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What an agent's current attempt has used so far, counted from its provider's event stream
    as it runs (its final exit has the provider's own figures); and which limits it was warned of."""

    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None  # where the stream says (claude: in its final result only)
    warned: list[str] = []  # the limits a warning event was recorded for


class ApprovalState(StrEnum):
    PENDING = "pending"
    ALLOWED = "allowed"
    DENIED = "denied"


class Approval(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A permission an agent's CLI asked for (a tool call its flags do not allow), and its answer."""

    id: ApprovalId
    task_id: TaskId
    agent_id: AgentId
    tool: ToolName
    input: dict[str, Any] = {}  # the tool call's arguments, as the agent's CLI gave them
    at: float
    state: ApprovalState = ApprovalState.PENDING
    answered_by: str = ""  # "operator", "timeout", "always allowed for this tool", or why it lapsed
    answered_at: float | None = None
    message: str = ""  # to the agent, with a denial


#: Permission requests one agent may have waiting at once.
MAX_PENDING_APPROVALS: Final = 8


class Attempt(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One earlier run of an agent that did not end it: how it ended, and why another followed."""

    n: int
    started_at: float | None = None
    ended_at: float
    exit: Exit
    then: str  # what followed, in words: "slept until 12:00:05 (rate limited)", "retried after 10 s"


class Agent(Struct, frozen=True, kw_only=True):
    id: AgentId
    task_id: TaskId
    type: Name
    parent: AgentId | None = None
    depth: int = 1
    provider: Name = "command"
    model: ModelName | None = None
    argv: list[str] = []
    cwd: AbsPath | None = None
    state: AgentState = AgentState.STARTING
    activity: Name | None = None
    progress: int = 0
    message: str = ""
    exit: Exit | None = None
    tmux: TmuxIds | None = None
    token_hash: str = ""
    timeout: float | None = None  # seconds from creation; the reconciler kills it after that
    resources: Resources = Resources()  # its cgroup's bounds, decided at spawn
    sandbox: Sandbox = Sandbox.NONE
    kill_reason: str = ""
    cleanup: CleanupRecord | None = None
    policy: Policy = DEFAULT_POLICY  # complete: decided at spawn from the task's, the provider's, the defaults
    #: Its provider's argv that resumes a conversation, ``{session_id}`` where the id goes
    #: (empty: a new attempt starts afresh with ``argv``).
    resume_argv: list[str] = []
    attempt: int = 1  # the current attempt (or, sleeping, the next one)
    attempts: list[Attempt] = []  # the earlier ones, oldest first
    #: The provider conversation it holds, which its next attempt resumes (None: none known, a fresh start).
    conversation: SessionId | None = None
    wake_at: float | None = None  # sleeping: when the next attempt starts
    sleep_reason: str = ""  # sleeping: why, in words
    stalled_since: float | None = None  # running without output or progress since then (a flag, not a state)
    then_restart: bool = False  # stopping to start a new attempt (a stall's restart), not to end
    usage: Usage = Usage()  # the current attempt's, as it runs
    approvals: list[Approval] = []  # its permission requests waiting for an answer
    always_allowed: list[ToolName] = []  # tools the operator allowed it for good ("always for this tool")
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    updated_at: float


def launch_argv(agent: Agent) -> list[str]:
    """The argv of the agent's current attempt: its provider's resume argv when it continues
    a conversation, else the argv it was spawned with."""
    if agent.conversation is None or not agent.resume_argv:
        return agent.argv
    return [item.replace("{session_id}", agent.conversation) for item in agent.resume_argv]


def spent(agent: Agent) -> float | None:
    """What the agent has cost so far: its final exit's figure (which sums its attempts) once
    it has ended, else what its earlier attempts cost and its current one has so far."""
    if agent.exit is not None:
        return agent.exit.cost_usd
    costs = [a.exit.cost_usd for a in agent.attempts if a.exit.cost_usd is not None]
    if agent.usage.cost_usd is not None:
        costs.append(agent.usage.cost_usd)
    return sum(costs) if costs else None


def turns(agent: Agent) -> int:
    """The turns the agent has taken so far, over all its attempts."""
    if agent.exit is not None and agent.exit.turns is not None:
        return agent.exit.turns
    return sum(a.exit.turns or 0 for a in agent.attempts) + agent.usage.turns


def jitter(agent_id: str, attempt: int) -> float:
    """A fraction in [0, 1) fixed by the agent and attempt: spreads the wake-ups of agents that
    failed together, yet the same history always gives the same schedule (tests, replays)."""
    digest = hashlib.blake2b(f"{agent_id}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / (1 << 64)


class Finding(Struct, frozen=True, kw_only=True):
    seq: int
    task_id: TaskId
    agent_id: AgentId | None = None
    type: Name
    severity: Severity
    message: Text
    data: dict[str, Any] | None = None
    at: float


class Counts(Struct, frozen=True, kw_only=True):
    """Counts of one task or of the whole registry, always derived from the rows."""

    active: int = 0  # starting, running or stopping: holding a slot
    queued: int = 0  # admitted, waiting for a slot
    sleeping: int = 0  # between attempts (a rate limit's reset, a retry's back-off)
    awaiting_approval: int = 0  # live agents with a permission request waiting for an answer
    completed: int = 0
    failed: int = 0
    killed: int = 0
    lost: int = 0
    spawned: int = 0


class EventKind(StrEnum):
    TASK_CREATED = "task_created"
    TASK_CLOSED = "task_closed"
    AGENT_STATE = "agent_state"  # data: the agent row after the change
    PROGRESS = "progress"  # data: {"activity", "message", "percent"}
    FINDING = "finding"  # data: the finding
    CLEANUP = "cleanup"  # data: the cleanup record
    STALLED = "stalled"  # data: {"since", "seconds", "then"}: no output or progress for that long
    #: data: {"limit", "used", "value", "stopped"}: an agent neared (warn_at) or reached a limit (then stopped)
    LIMIT = "limit"
    APPROVAL = "approval"  # data: the approval: asked for (pending), or answered
    DRIFT = "drift"  # data: {"what": [...]}: what the daemon found changed behind its back and undid
    TASK_PURGED = "task_purged"  # data: {"agents", "reason"}: a closed task's history was deleted
    #: data: {"down_since", "seconds", "stopped", "ended", "adopted"}: the daemon was not running from its
    #: last heartbeat until it started again; the agents its first pass then found ended or running
    DAEMON_DOWNTIME = "daemon_downtime"


class Event(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of the append-only event log."""

    seq: int
    at: float
    kind: EventKind
    task_id: str
    agent_id: str | None = None
    state: AgentState | None = None
    data: Any = None
