"""The wire protocol: NDJSON messages as typed msgspec Structs, and a sans-IO line buffer.

One request per line::

    {"id": 7, "method": "agent.get", "params": {"agent_id": "worker-101500-0a1b2c"}}

One reply per request, carrying the same id, with either a result or an error::

    {"id": 7, "result": {...}}
    {"id": 7, "error": {"code": "not_found", "message": "...", "data": {...}}}

A subscription (``events.subscribe``) is acknowledged by a reply and then streams
``{"seq": N, "event": {...}}`` lines on the same connection.

Params are decoded in two steps: the envelope first, with ``params`` kept raw, and then
the raw params with the decoder of the method's own Struct. So an unknown method is
reported as such, and wrong types name the method's field. Every name field is
pattern-checked here (see :mod:`.model`), before any other code sees it.

Compatibility: the ``hello`` exchange carries ``PROTOCOL_VERSION``; wire Structs only
gain fields with defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from .errors import BadRequest, InvalidParams, SupervisorError, TooLarge, UnknownMethod
from .model import (
    AbsPath,
    Agent,
    AgentId,
    AgentState,
    Counts,
    Finding,
    Limits,
    ModelName,
    Name,
    Percent,
    Priority,
    Seq,
    Severity,
    ShortText,
    Task,
    TaskContext,
    TaskId,
    TaskState,
    Text,
)

PROTOCOL_VERSION: Final = 1
MAX_LINE: Final = 1 << 20  # default cap on one line, in bytes

# An argv element: anything printable (it is never given to a shell), bounded.
ArgvItem = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]*\Z", max_length=4096)]
Prompt = Annotated[str, Meta(max_length=512 * 1024)]
Token = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{16,128}\Z")]
Limit = Annotated[int, Meta(ge=1, le=10_000)]

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


class TaskCreateParams(Params, frozen=True, kw_only=True):
    description: Text
    priority: Priority = Priority.P2
    cwd: AbsPath | None = None
    context: TaskContext = TaskContext()
    limits: Limits | None = None


class TaskRef(Params, frozen=True, kw_only=True):
    task_id: TaskId


class TaskListParams(Params, frozen=True, kw_only=True):
    state: TaskState | None = None


class SpawnParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None  # defaults to the calling agent's task
    type: Name
    prompt: Prompt = ""
    parent: AgentId | None = None  # defaults to the calling agent, if any
    provider: Name = "command"
    model: ModelName | None = None
    cwd: AbsPath | None = None
    argv: Annotated[list[ArgvItem], Meta(max_length=256)] = []
    timeout: Annotated[float, Meta(gt=0, le=30 * 86400)] | None = None  # wall-clock limit, seconds
    queue: bool = False  # over a concurrency limit: wait as ``queued`` instead of being refused


class AgentRef(Params, frozen=True, kw_only=True):
    agent_id: AgentId


class AgentListParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None
    state: AgentState | None = None
    live: bool | None = None


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


class FindingsListParams(Params, frozen=True, kw_only=True):
    task_id: TaskId | None = None
    agent_id: AgentId | None = None
    type: Name | None = None
    severity: Severity | None = None
    since: Seq = 0
    limit: Limit = 100


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


class OutputParams(Params, frozen=True, kw_only=True):
    agent_id: AgentId
    tail: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    offset: Annotated[int, Meta(ge=0)] | None = None
    regex: Annotated[str, Meta(max_length=1000)] | None = None
    format: Annotated[str, Meta(pattern=r"^(text|jsonl|summary)\Z")] = "text"
    max_bytes: Annotated[int, Meta(ge=256, le=4 << 20)] = 64 * 1024


class PeekParams(Params, frozen=True, kw_only=True):
    agent_id: AgentId
    lines: Annotated[int, Meta(ge=0, le=10_000)] = 0


class ReconcileParams(Params, frozen=True, kw_only=True):
    dry_run: bool = False
    kill_orphans: bool = False


#: Every method the daemon serves, with the Struct its params decode into.
METHODS: Final[dict[str, type[Params]]] = {
    "hello": HelloParams,
    "task.create": TaskCreateParams,
    "task.get": TaskRef,
    "task.list": TaskListParams,
    "task.close": TaskRef,
    "agent.spawn": SpawnParams,
    "agent.get": AgentRef,
    "agent.list": AgentListParams,
    "agent.progress": ProgressParams,
    "agent.finding": FindingParams,
    "agent.kill": KillParams,
    "agent.wait": WaitParams,
    "agent.output": OutputParams,
    "agent.peek": PeekParams,
    "findings.list": FindingsListParams,
    "events.subscribe": SubscribeParams,
    "daemon.health": NoParams,
    "daemon.reconcile": ReconcileParams,
    "daemon.stop": NoParams,
}

# --- results ------------------------------------------------------------------------


class HelloResult(Struct, kw_only=True):
    protocol: int
    version: str
    pid: int
    agent_id: str | None = None


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
    agents: list[Agent]
    latest_findings: list[Finding]


class AgentExit(Struct, kw_only=True):
    """One agent's outcome as ``agent.wait`` reports it."""

    agent_id: str
    state: AgentState
    exit: Any = None


class WaitResult(Struct, kw_only=True):
    done: bool  # False when the timeout passed first
    agents: list[AgentExit]


class OutputResult(Struct, kw_only=True):
    agent_id: str
    format: str
    output: str
    offset: int  # byte offset just past what was read: pass it back to continue
    size: int  # bytes written so far (live); for an archive, as far as this read went
    truncated: bool = False
    note: str = ""


# --- codec --------------------------------------------------------------------------

_request_decoder: Final = msgspec.json.Decoder(Request)
_param_decoders: Final = {name: msgspec.json.Decoder(t) for name, t in METHODS.items()}


def decode_request(line: bytes) -> Request:
    """Decode one request line. Raises BadRequest."""
    try:
        return _request_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:  # msgspec reports bad UTF-8 in a string so
        raise BadRequest(f"malformed request: {e}") from None


def decode_params(request: Request) -> Params:
    """Decode a request's params with its method's schema. Raises UnknownMethod, InvalidParams."""
    decoder = _param_decoders.get(request.method)
    if decoder is None:
        raise UnknownMethod(f"unknown method {request.method!r}", data={"method": request.method})
    try:
        return decoder.decode(request.params)
    except msgspec.ValidationError as e:
        raise InvalidParams(f"{request.method}: {e}", data={"method": request.method}) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"{request.method}: malformed params: {e}") from None


def error_reply(request_id: int | None, error: SupervisorError) -> Reply:
    return Reply(id=request_id, error=ErrorBody(code=error.code.value, message=error.message, data=error.data))


class LineBuffer:
    """Split a byte stream into lines, refusing any line longer than ``max_line``.

    Sans-IO: feed it whatever the socket returned, get back the complete lines (without
    their newline). A partial line that grows past the cap raises TooLarge, after which
    the connection should be closed: there is no way to find the next message boundary
    without reading the rest of the oversized one.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        if b"\n" not in data:
            self._check()
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        self._check()
        for line in lines:
            if len(line) > self.max_line:
                raise TooLarge(f"line of {len(line)} bytes exceeds the cap of {self.max_line}")
        return [bytes(line) for line in lines if line.strip()]

    def _check(self) -> None:
        if len(self._buf) > self.max_line:
            raise TooLarge(f"line exceeds the cap of {self.max_line} bytes")

    @property
    def pending(self) -> int:
        return len(self._buf)
