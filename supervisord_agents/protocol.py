"""The wire protocol: NDJSON messages as typed msgspec Structs, and the method table.

One request per line::

    {"id": 7, "method": "agent.get", "params": {"agent_id": "worker-101500-0a1b2c"}}

One reply per request, carrying the same id, with either a result or an error::

    {"id": 7, "result": {...}}
    {"id": 7, "error": {"code": "not_found", "message": "...", "data": {...}}}

A subscription (``events.subscribe``) is acknowledged by a reply and then streams
``{"seq": N, "event": {...}}`` lines on the same connection.

Params are decoded (by :mod:`.codec`) with their method's own Struct, so every name
field is pattern-checked here (see :mod:`.model`), before any other code sees it.

Every method is declared once, as a :class:`Method` in ``METHODS``: its name, params
and result types, who may call it (:class:`Rule`) and how it is answered
(:class:`Answer`). The server decodes and dispatches from that declaration, the API
binds exactly one handler to each, and the client decodes each result into its type.
Requests on one connection are answered in order, except those declared to wait
(``BACKGROUND``), whose replies come when they are ready; replies carry the request's
id. A client may pipeline: send many requests without waiting, then read the replies.
Pipelined reports (``PIPELINED``: progress, findings) are also carried out together:
the next is taken once the previous one is queued for the actor, and they share a
commit; any other request waits until the reports before it are answered, so it sees
their changes, as it would one at a time.

Lists page (DESIGN section 11): a list method returns a :class:`Page` of at most
``limit`` items (``MAX_PAGE`` at most) and, when there is more, an opaque ``next`` cursor
to pass back as ``cursor``. Every size a client controls is bounded where its field is
declared, in this module's annotations (checked at decode), and nowhere else.

Compatibility: the ``hello`` exchange carries ``PROTOCOL_VERSION``; wire Structs only
gain fields with defaults. Version 2: list methods return pages. Version 3: an agent may be
``sleeping`` between attempts (with its ``attempts``, ``policy`` and ``wake_at``), and ``agent.wake``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Generic, TypeVar

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from .model import (
    AbsPath,
    Agent,
    AgentId,
    AgentState,
    Approval,
    ApprovalId,
    Counts,
    Exit,
    Finding,
    Limits,
    ModelName,
    Name,
    Percent,
    Policy,
    Priority,
    Resources,
    Sandbox,
    Seq,
    SessionId,
    Severity,
    ShortText,
    Task,
    TaskContext,
    TaskId,
    TaskState,
    Text,
    ToolName,
    nesting,
)
from .reports import (  # the daemon's reports of itself, part of the protocol
    ActorStats as ActorStats,
)
from .reports import (
    Boundary as Boundary,
)
from .reports import (
    DoctorReport as DoctorReport,
)
from .reports import (
    Health as Health,
)
from .reports import (
    HookStats as HookStats,
)
from .reports import (
    Problem as Problem,
)
from .reports import (
    ProviderCheck as ProviderCheck,
)
from .reports import (
    ReconcileReport as ReconcileReport,
)

PROTOCOL_VERSION: Final = 3  # 3: the sleeping state, attempts, policies, agent.wake
MAX_LINE: Final = 1 << 20  # default cap on one line, in bytes
MAX_DATA_DEPTH: Final = 32  # how deep a finding's data may nest (whatever shows it walks it recursively)
MAX_PAGE: Final = 500  # items in one page of a list
DEFAULT_PAGE: Final = 100

# How an agent finds the daemon and says who it is: set in every agent's environment.
ENV_AGENT_ID: Final = "SUPERVISORD_AGENTS_AGENT_ID"
ENV_TASK_ID: Final = "SUPERVISORD_AGENTS_TASK_ID"
ENV_SOCKET: Final = "SUPERVISORD_AGENTS_SOCKET"
ENV_TOKEN: Final = "SUPERVISORD_AGENTS_TOKEN"

#: The daemon's exit status when another daemon already holds its state directory
#: (EX_TEMPFAIL): service files tell their manager not to restart on it.
EXIT_ALREADY_RUNNING: Final = 75

# An argv element: anything printable (it is never given to a shell), bounded.
# Tabs and newlines are legal in an argument (a multi-line ``sh -c`` script); other control
# characters are not.
ArgvItem = Annotated[str, Meta(pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*\Z", max_length=32 * 1024)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")]
EnvValue = Annotated[str, Meta(pattern=r"^[^\x00]*\Z", max_length=32 * 1024)]
Prompt = Annotated[str, Meta(max_length=512 * 1024)]
Token = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{16,128}\Z")]
Limit = Annotated[int, Meta(ge=1, le=10_000)]
PageSize = Annotated[int, Meta(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,256}\Z")]

# --- envelope -----------------------------------------------------------------------


class Request(Struct):
    id: int
    method: str
    params: Raw = Raw(b"{}")


class ErrorBody(Struct, omit_defaults=True):
    code: str
    message: str
    data: dict[str, Any] | None = None


class Reply(Struct, omit_defaults=True):
    id: int | None
    result: Any | UnsetType = UNSET
    error: ErrorBody | UnsetType = UNSET


class Notice(Struct):
    """One streamed event of a subscription."""

    seq: int
    event: Any


# --- params -------------------------------------------------------------------------


class Params(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every method's params."""


class HelloParams(Params, frozen=True, kw_only=True):
    protocol: int = PROTOCOL_VERSION
    client: Annotated[str, Meta(max_length=200)] = ""
    token: Token | None = None  # an agent's identity token; the connection then acts as it


class NoParams(Params, frozen=True, kw_only=True):
    pass


class LimitsGiven(Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The limits a caller sets for a new task; the daemon takes every other one from its
    configured ``[limits]`` (a field left out is not "the built-in default")."""

    max_concurrent: Annotated[int, Meta(ge=1, le=1000)] | UnsetType = UNSET
    max_total: Annotated[int, Meta(ge=1, le=100_000)] | UnsetType = UNSET
    max_depth: Annotated[int, Meta(ge=1, le=50)] | UnsetType = UNSET
    max_cost_usd: Annotated[float, Meta(ge=0, le=1_000_000)] | None | UnsetType = UNSET
    agent_max_turns: Annotated[int, Meta(ge=1, le=1_000_000)] | None | UnsetType = UNSET
    agent_max_cost_usd: Annotated[float, Meta(ge=0, le=1_000_000)] | None | UnsetType = UNSET
    max_wall_seconds: Annotated[float, Meta(gt=0, le=365 * 86400)] | None | UnsetType = UNSET
    warn_at: Annotated[float, Meta(gt=0, le=1)] | UnsetType = UNSET
    max_findings: Annotated[int, Meta(ge=1, le=10_000_000)] | UnsetType = UNSET
    max_findings_bytes: Annotated[int, Meta(ge=1, le=1 << 40)] | UnsetType = UNSET
    resources: Resources | UnsetType = UNSET

    def over(self, base: Limits) -> Limits:
        """``base`` with the limits given here put over it."""
        given = {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}
        return msgspec.structs.replace(base, **given)


class TaskCreateParams(Params, frozen=True, kw_only=True):
    description: Text
    priority: Priority = Priority.P2
    cwd: AbsPath | None = None
    context: TaskContext = TaskContext()
    limits: LimitsGiven = LimitsGiven()
    sandbox: Sandbox | None = None  # run its agents under bubblewrap; None: as each provider says
    policy: Policy = Policy()  # rate limits, restarts, stalls; what is left out comes from each provider's


class TaskRef(Params, frozen=True, kw_only=True):
    task_id: TaskId


class TaskListParams(Params, frozen=True, kw_only=True):
    state: TaskState | None = None
    cursor: Cursor | None = None  # a page's ``next``
    limit: PageSize = DEFAULT_PAGE


class SpawnParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None  # defaults to the calling agent's task
    type: Name
    prompt: Prompt = ""
    parent: AgentId | None = None  # defaults to the calling agent, if any
    provider: Name = "command"
    model: ModelName | None = None
    cwd: AbsPath | None = None
    argv: Annotated[list[ArgvItem], Meta(max_length=256)] = []
    timeout: Annotated[float, Meta(gt=0, le=30 * 86400)] | None = None  # wall-time limit (s), else the provider's
    queue: bool = False  # over a concurrency limit: wait as ``queued`` instead of being refused
    env: Annotated[dict[EnvName, EnvValue], Meta(max_length=64)] = {}  # over the daemon's (never its identity)
    #: Continue this provider conversation (an ended agent's ``exit.session_id``) instead of starting one.
    resume: SessionId | None = None


class ApprovalRequestParams(Params, frozen=True, kw_only=True):
    """A tool call an agent's CLI needs permission for (claude's ``--permission-prompt-tool``)."""

    agent_id: AgentId | None = None  # inside an agent: itself
    tool_name: ToolName
    input: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if nesting(self.input, MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
            raise ValueError(f"`input` may nest at most {MAX_DATA_DEPTH} levels deep")


class ApprovalListParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None


class ApprovalAnswerParams(Params, frozen=True, kw_only=True):
    approval_id: ApprovalId
    allow: bool
    always_for_tool: bool = False  # allowed: the agent may use this tool from now on without asking
    message: ShortText = ""  # to the agent, with a denial


class AgentRef(Params, frozen=True, kw_only=True):
    agent_id: AgentId


class AgentListParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None
    state: AgentState | None = None
    live: bool | None = None
    cursor: Cursor | None = None  # a page's ``next``
    limit: PageSize = DEFAULT_PAGE


class ProgressParams(Params, frozen=True, kw_only=True):
    agent_id: AgentId | None = None  # defaults to the caller's identity
    activity: Name | None = None
    message: ShortText | None = None
    percent: Percent | None = None


class FindingParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None
    agent_id: AgentId | None = None
    type: Name
    severity: Severity = Severity.INFO
    message: Text
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.data is not None and nesting(self.data, MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
            raise ValueError(f"`data` may nest at most {MAX_DATA_DEPTH} levels deep")


class FindingsListParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None
    agent_id: AgentId | None = None
    type: Name | None = None
    severity: Severity | None = None
    since: Seq = 0  # findings after this sequence number
    cursor: Cursor | None = None  # a page's ``next`` (instead of since)
    limit: PageSize = DEFAULT_PAGE


class SubscribeParams(Params, frozen=True, kw_only=True):
    since: Seq | None = None  # replay events after this sequence number; None: live only
    task_id: TaskId | None = None
    agent_id: AgentId | None = None


class KillParams(Params, frozen=True, kw_only=True):
    agent_id: AgentId
    reason: ShortText = ""
    tree: bool = False


class WaitParams(Params, frozen=True, kw_only=True):
    agent_ids: Annotated[list[AgentId], Meta(min_length=1, max_length=1000)]
    any: bool = False
    timeout: Annotated[float, Meta(ge=0, le=7 * 86400)] | None = None


class OutputFormat(StrEnum):
    """How ``agent.output`` renders an agent's log."""

    TEXT = "text"  # the lines as written
    JSONL = "jsonl"  # only the lines that are JSON objects (stream-json events)
    SUMMARY = "summary"  # one compact line per stream-json event


class OutputParams(Params, frozen=True, kw_only=True):
    agent_id: AgentId
    tail: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    offset: Annotated[int, Meta(ge=0)] | None = None
    regex: Annotated[str, Meta(max_length=1000)] | None = None
    format: OutputFormat = OutputFormat.TEXT
    max_bytes: Annotated[int, Meta(ge=256, le=4 << 20)] = 64 * 1024


class PeekParams(Params, frozen=True, kw_only=True):
    agent_id: AgentId
    lines: Annotated[int, Meta(ge=0, le=10_000)] = 0


class ReconcileParams(Params, frozen=True, kw_only=True):
    dry_run: bool = False
    kill_orphans: bool = False


class DoctorParams(Params, frozen=True, kw_only=True):
    providers: Annotated[list[Name], Meta(max_length=64)] = []  # empty: every configured provider


# --- results ------------------------------------------------------------------------


class HelloResult(Struct, kw_only=True):
    protocol: int
    version: str
    pid: int
    agent_id: str | None = None


T = TypeVar("T")


class Page(Struct, Generic[T], kw_only=True):
    """One page of a list, and the cursor to the next (None: this is the last)."""

    items: list[T]
    next: str | None = None


class TaskSummary(Struct, kw_only=True):
    task: Task
    counts: Counts


class Headroom(Struct, kw_only=True):
    """How far a task is from each of its limits."""

    concurrent_left: int
    total_left: int
    max_depth: int
    cost_usd: float = 0.0  # what the task's ended agents cost
    cost_left_usd: float | None = None  # of its budget, if it has one


class TaskStatus(Struct, kw_only=True):
    task: Task
    counts: Counts
    headroom: Headroom
    agents: list[Agent]  # its live agents, then the latest ended ones (at most STATUS_AGENTS); agent.list has all
    latest_findings: list[Finding]


class AgentExit(Struct, kw_only=True, omit_defaults=True):
    """One agent's outcome as ``agent.wait`` reports it: its exit record says why it did not
    complete (``reason``, ``error_class``) or its final ``answer`` (bounded; ``agent.output``
    has the rest)."""

    agent_id: str
    state: AgentState
    exit: Exit | None = None


class WaitResult(Struct, kw_only=True):
    done: bool  # False when the timeout passed first
    agents: list[AgentExit]


class OutputResult(Struct, kw_only=True):
    agent_id: str
    format: OutputFormat
    output: str
    offset: int  # byte offset just past what was read: pass it back to continue
    size: int  # bytes written so far (live); for an archive, as far as this read went
    truncated: bool = False
    note: str = ""


class Screen(Struct, kw_only=True):
    """An agent's pane as it is on screen (``agent.peek``)."""

    agent_id: str
    screen: str


class Subscribed(Struct, kw_only=True):
    """The acknowledgement of ``events.subscribe``; events follow as :class:`Notice` lines."""

    subscribed: bool
    last_seq: int


class Purged(Struct, kw_only=True):
    task_id: str
    agents: int  # agent rows deleted (and their archives)
    findings: int


class Stopping(Struct, kw_only=True):
    stopping: bool


# --- the method table ----------------------------------------------------------------

P = TypeVar("P", bound=Params)
R = TypeVar("R")


class Answer(StrEnum):
    """How the server answers a method on one connection."""

    INLINE = "inline"  # at once, in order with the connection's other requests
    # A report: in order too, but the connection's next report is taken as soon as this
    # one's command is queued for the actor, so that pipelined reports share a commit.
    PIPELINED = "pipelined"
    BACKGROUND = "background"  # it may wait (for an agent): the connection serves others meanwhile
    STREAM = "stream"  # an acknowledgement, then a stream of Notice lines


class Rule(StrEnum):
    """Who may call a method. The operator (a peer of our uid that runs in no agent) may
    call every method; a connection from inside an agent is held to its method's rule,
    and a refusal (``forbidden``) states the rule in these words. An agent's params are
    scoped by its rule: what it leaves out is filled in with itself or its task."""

    ANYONE = "anyone may"
    OPERATOR = "only the operator may, never an agent"
    SELF = "an agent may do this only for itself"
    CHILDREN = "an agent may spawn only children of its own, into its own task"
    DESCENDANTS = "an agent may do this only to itself and its own descendants"
    OWN_TASK = "an agent may see only its own task"


class Method(Generic[P, R]):
    """One method of the protocol, declared once: everything else (decoding, dispatch,
    the handler table, the client's typed results, the documentation) derives from it."""

    __slots__ = ("answer", "doc", "name", "params", "result", "rule")

    def __init__(self, name: str, params: type[P], result: Any, doc: str, *,
                 rule: Rule, answer: Answer = Answer.INLINE) -> None:
        self.name = name
        self.params = params
        self.result: type[R] = result  # a type, or a generic alias such as list[Agent]
        self.doc = doc
        self.rule = rule
        self.answer = answer

    def __repr__(self) -> str:
        return f"Method({self.name!r})"


HELLO: Final = Method[HelloParams, HelloResult](
    "hello", HelloParams, HelloResult, "open a session: protocol version, client name, an agent's token",
    rule=Rule.ANYONE)
TASK_CREATE: Final = Method[TaskCreateParams, Task](
    "task.create", TaskCreateParams, Task, "create a task (limits not given come from the daemon's config)",
    rule=Rule.OPERATOR)
TASK_GET: Final = Method[TaskRef, TaskStatus](
    "task.get", TaskRef, TaskStatus, "one task's status: counts, headroom, agents, latest findings", rule=Rule.OWN_TASK)
TASK_LIST: Final = Method[TaskListParams, Page[TaskSummary]](
    "task.list", TaskListParams, Page[TaskSummary], "tasks with their counts, a page at a time", rule=Rule.OPERATOR)
TASK_CLOSE: Final = Method[TaskRef, Task](
    "task.close", TaskRef, Task, "close a task to new agents", rule=Rule.OPERATOR)
TASK_PURGE: Final = Method[TaskRef, Purged](
    "task.purge", TaskRef, Purged, "delete a closed task's history: agents, findings, events, archives",
    rule=Rule.OPERATOR)
AGENT_SPAWN: Final = Method[SpawnParams, Agent](
    "agent.spawn", SpawnParams, Agent, "admit and start an agent; returns once it runs (or is queued)",
    rule=Rule.CHILDREN, answer=Answer.BACKGROUND)
AGENT_GET: Final = Method[AgentRef, Agent](
    "agent.get", AgentRef, Agent, "one agent", rule=Rule.DESCENDANTS)
AGENT_LIST: Final = Method[AgentListParams, Page[Agent]](
    "agent.list", AgentListParams, Page[Agent], "agents, by task and state, a page at a time", rule=Rule.OPERATOR)
AGENT_PROGRESS: Final = Method[ProgressParams, Agent](
    "agent.progress", ProgressParams, Agent, "report an agent's activity, message and percent", rule=Rule.SELF,
    answer=Answer.PIPELINED)
AGENT_FINDING: Final = Method[FindingParams, Finding](
    "agent.finding", FindingParams, Finding, "record a finding for a task", rule=Rule.SELF,
    answer=Answer.PIPELINED)
AGENT_KILL: Final = Method[KillParams, Agent](
    "agent.kill", KillParams, Agent, "stop an agent (and with tree, its descendants); returns it ended",
    rule=Rule.DESCENDANTS, answer=Answer.BACKGROUND)
AGENT_WAKE: Final = Method[AgentRef, Agent](
    "agent.wake", AgentRef, Agent, "start a sleeping agent's next attempt now, not at its wake-up time",
    rule=Rule.OPERATOR)
APPROVAL_REQUEST: Final = Method[ApprovalRequestParams, Approval](
    "approval.request", ApprovalRequestParams, Approval,
    "ask permission for a tool call; returns once the operator answers, or the task's policy does at its timeout",
    rule=Rule.SELF, answer=Answer.BACKGROUND)
APPROVAL_LIST: Final = Method[ApprovalListParams, list[Approval]](
    "approval.list", ApprovalListParams, list[Approval],
    "permission requests waiting for an answer (at most 8 per live agent)", rule=Rule.OPERATOR)
APPROVAL_ANSWER: Final = Method[ApprovalAnswerParams, Approval](
    "approval.answer", ApprovalAnswerParams, Approval, "allow or deny a waiting permission request",
    rule=Rule.OPERATOR)
AGENT_WAIT: Final = Method[WaitParams, WaitResult](
    "agent.wait", WaitParams, WaitResult, "wait until all (or any) of the agents have ended",
    rule=Rule.DESCENDANTS, answer=Answer.BACKGROUND)
AGENT_OUTPUT: Final = Method[OutputParams, OutputResult](
    "agent.output", OutputParams, OutputResult, "an agent's output: tail, offset, regex, format", rule=Rule.DESCENDANTS)
AGENT_PEEK: Final = Method[PeekParams, Screen](
    "agent.peek", PeekParams, Screen, "an agent's screen as it is now", rule=Rule.DESCENDANTS)
FINDINGS_LIST: Final = Method[FindingsListParams, Page[Finding]](
    "findings.list", FindingsListParams, Page[Finding], "findings after a sequence number, filtered, a page at a time",
    rule=Rule.OWN_TASK)
EVENTS_SUBSCRIBE: Final = Method[SubscribeParams, Subscribed](
    "events.subscribe", SubscribeParams, Subscribed, "replay the event log after a sequence number, then follow it",
    rule=Rule.OPERATOR, answer=Answer.STREAM)
DAEMON_HEALTH: Final = Method[NoParams, Health](
    "daemon.health", NoParams, Health, "the daemon's health and counts", rule=Rule.OPERATOR)
DAEMON_RECONCILE: Final = Method[ReconcileParams, ReconcileReport](
    "daemon.reconcile", ReconcileParams, ReconcileReport, "reconcile the registry with tmux now", rule=Rule.OPERATOR)
DAEMON_DOCTOR: Final = Method[DoctorParams, DoctorReport](
    "daemon.doctor", DoctorParams, DoctorReport, "check each provider: binary, version, flags, credentials, tools",
    rule=Rule.OPERATOR, answer=Answer.BACKGROUND)
DAEMON_STOP: Final = Method[NoParams, Stopping](
    "daemon.stop", NoParams, Stopping, "stop the daemon (agents keep running)", rule=Rule.OPERATOR)

#: Every method the daemon serves, by name.
METHODS: Final[dict[str, Method[Any, Any]]] = {m.name: m for m in (
    HELLO, TASK_CREATE, TASK_GET, TASK_LIST, TASK_CLOSE, TASK_PURGE, AGENT_SPAWN, AGENT_GET, AGENT_LIST, AGENT_PROGRESS,
    AGENT_FINDING, AGENT_KILL, AGENT_WAKE, AGENT_WAIT, APPROVAL_REQUEST, APPROVAL_LIST, APPROVAL_ANSWER,
    AGENT_OUTPUT, AGENT_PEEK, FINDINGS_LIST, EVENTS_SUBSCRIBE,
    DAEMON_HEALTH, DAEMON_RECONCILE, DAEMON_DOCTOR, DAEMON_STOP,
)}
