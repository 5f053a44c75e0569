"""The model behind ``agentctl top``, without its terminal UI: the snapshot it starts from,
the board of tasks and agents that events keep current, the rows as markup, and the reader
thread that feeds it (see :mod:`.top` for how it stays live, and why urwid draws it).
It imports no terminal library, so it is tested and measured on its own.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Final, Literal

import msgspec

from supervisord_agents.digest import outcome
from supervisord_agents.errors import SupervisorError
from supervisord_agents.model import Agent, AgentState, Event, EventKind, Task, TaskState
from supervisord_agents.protocol import AGENT_LIST, DAEMON_HEALTH, MAX_PAGE, TASK_GET, TASK_LIST

from .client import Client
from .render import ago, visible

BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0

# Column widths after the agent id (whose width follows the longest id seen).
STATE_W: Final = 10
ACTIVITY_W: Final = 14
PROGRESS_W: Final = 5
COST_W: Final = 9
AGE_W: Final = 6
APPROVAL_W: Final = 10


def pending_approval(agent: Agent) -> str:
    """What ``agent`` waits for a person to approve (the tool of its oldest waiting permission
    request, and how many more), or "" when nothing. The APPROVAL column shows while any shown
    agent has one."""
    if not agent.approvals:
        return ""
    more = f" +{len(agent.approvals) - 1}" if len(agent.approvals) > 1 else ""
    return one_line(agent.approvals[0].tool)[: APPROVAL_W - 1 - len(more)] + more


def one_line(text: str) -> str:
    """What an agent or an operator wrote, safe for the terminal and on one line."""
    return visible(" ".join(text.split()))


# --- what the reader thread posts -------------------------------------------------------


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Open tasks and their agents, as of event ``seq`` or later."""

    tasks: list[Task]
    agents: list[Agent]
    seq: int


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """The stream's connection changed: up, or down with why and when the next try is."""

    up: bool
    error: str = ""
    attempt: int = 0
    retry_at: float = 0.0  # time.monotonic() of the next try


class Note(msgspec.Struct, frozen=True, kw_only=True):
    """What an action came to, for the status line."""

    text: str


def take_snapshot(c: Client, task_id: str | None) -> Snapshot:
    """The open tasks (or ``task_id`` alone) and all their agents, with the event log's last
    sequence number read first: replaying from it may show an event again, never miss one.
    Raises the daemon's errors (NotFound for an unknown task)."""
    seq = c.call(DAEMON_HEALTH).last_seq
    if task_id is not None:
        tasks = [c.call(TASK_GET, task_id=task_id).task]
    else:
        tasks = [summary.task for summary in c.pages(TASK_LIST, state=TaskState.OPEN, limit=MAX_PAGE)]
    agents = [a for t in tasks for a in c.pages(AGENT_LIST, task_id=t.id, limit=MAX_PAGE)]
    return Snapshot(tasks=tasks, agents=agents, seq=seq)


# --- the view's data: pure, no I/O ------------------------------------------------------


class TaskLine:
    """One task and what its shown agents add up to."""

    __slots__ = ("agents", "cost", "findings", "states", "task", "task_id")

    def __init__(self, task_id: str, task: Task | None = None) -> None:
        self.task_id = task_id
        self.task = task  # None: an agent of it was seen before the task itself
        self.agents: dict[str, None] = {}  # ids in the order first seen
        self.states: Counter[AgentState] = Counter()
        self.cost = 0.0
        self.findings = 0


def cost_of(agent: Agent) -> float:
    """What the agent cost, as its final result said (0 while it runs, or when it did not say)."""
    return (agent.exit.cost_usd or 0.0) if agent.exit is not None else 0.0


class Board:
    """Tasks and agents as the event log says they are. Each event is O(1): it updates a
    row and marks it changed; rows that come or go mark the order for a rebuild."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskLine] = {}
        self.agents: dict[str, Agent] = {}
        self.states: Counter[AgentState] = Counter()
        self.seq = 0
        self.last_event: Event | None = None
        self.approvals = 0  # shown agents with a pending approval
        self.id_width = 24  # the agent column: the longest id seen, never narrower
        self.changed: set[str] = set()  # rows (task or agent ids) to draw again
        self.reshaped = True  # rows came or went: the order is to be rebuilt
        self.restyled = True  # a column's width changed: every row is to be drawn again

    def load(self, snapshot: Snapshot) -> None:
        for task in snapshot.tasks:
            self._task(task)
        for agent in snapshot.agents:
            self._agent(agent)
        self.seq = max(self.seq, snapshot.seq)

    def apply(self, event: Event) -> None:
        """Take one event into the view (one already applied is ignored)."""
        if event.seq <= self.seq:
            return
        self.seq = event.seq
        self.last_event = event
        data = event.data
        match event.kind:
            case EventKind.TASK_CREATED | EventKind.TASK_CLOSED:
                if (task := _convert(data, Task)) is not None:
                    self._task(task)
            case EventKind.AGENT_STATE:
                if (agent := _convert(data, Agent)) is not None:
                    self._agent(agent)
            case EventKind.PROGRESS if isinstance(data, dict) and event.agent_id in self.agents:
                agent = self.agents[event.agent_id]
                message = data.get("message")
                self._agent(msgspec.structs.replace(
                    agent, activity=data.get("activity"), progress=int(data.get("percent") or 0),
                    message=agent.message if message is None else str(message), updated_at=event.at))
            case EventKind.FINDING if event.task_id in self.tasks:
                self.tasks[event.task_id].findings += 1
                self.changed.add(event.task_id)
            case EventKind.TASK_PURGED:
                self._purge(event.task_id)

    def _task(self, task: Task) -> None:
        line = self.tasks.get(task.id)
        if line is None:
            self.tasks[task.id] = TaskLine(task.id, task)
            self.reshaped = True
        else:
            line.task = task
        self.changed.add(task.id)

    def _agent(self, agent: Agent) -> None:
        line = self.tasks.get(agent.task_id)
        if line is None:
            line = self.tasks[agent.task_id] = TaskLine(agent.task_id)
            self.reshaped = True
        old = self.agents.get(agent.id)
        if old is not None:
            self._count(line, old, -1)
        else:
            line.agents[agent.id] = None
            self.reshaped = True
            if len(agent.id) > self.id_width:
                self.id_width = len(agent.id)
                self.restyled = True
        self.agents[agent.id] = agent
        self._count(line, agent, 1)
        self.changed.update((agent.id, agent.task_id))

    def _count(self, line: TaskLine, agent: Agent, sign: int) -> None:
        self.states[agent.state] += sign
        line.states[agent.state] += sign
        line.cost += sign * cost_of(agent)
        if pending_approval(agent):
            before = self.approvals
            self.approvals += sign
            self.restyled |= (before == 0) != (self.approvals == 0)  # the column comes or goes

    def _purge(self, task_id: str) -> None:
        line = self.tasks.pop(task_id, None)
        if line is None:
            return
        for agent_id in line.agents:
            self._count(line, self.agents.pop(agent_id), -1)
        self.reshaped = True

    def rows(self, query: str = "") -> list[str]:
        """The ids to show, in order: each task, then its agents; with a query, the agents whose
        id, state, type, activity or provider contain it (any case), under their tasks, and every
        agent of a task whose id or description contains it."""
        needle = query.strip().lower()
        out: list[str] = []
        for task_id, line in self.tasks.items():
            if not needle or needle in _task_text(line):
                out.append(task_id)
                out.extend(line.agents)
                continue
            matching = [a for a in line.agents if needle in _agent_text(self.agents[a])]
            if matching:
                out.append(task_id)
                out.extend(matching)
        return out


def _task_text(line: TaskLine) -> str:
    return f"{line.task_id} {line.task.description if line.task else ''}".lower()


def _agent_text(agent: Agent) -> str:
    return f"{agent.id} {agent.state} {agent.type} {agent.activity or ''} {agent.provider}".lower()


def _convert(data: Any, kind: type[Any]) -> Any:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError:
        return None


# --- how rows read ----------------------------------------------------------------------

Markup = list[tuple[str, str]]
Size = int | tuple[Literal["relative"], int]  # of a dialog: cells, or percent of the screen


def column_headers(board: Board) -> str:
    approval = f"{'APPROVAL':<{APPROVAL_W}}" if board.approvals else ""
    return (f"    {'AGENT':<{board.id_width}}  {'STATE':<{STATE_W}}{'ACTIVITY':<{ACTIVITY_W}}{'PROG':>{PROGRESS_W}}"
            f"{'COST':>{COST_W}}{'AGE':>{AGE_W}}  {approval}REASON / MESSAGE")


def agent_markup(board: Board, agent: Agent, selected: bool) -> Markup:
    """One agent's row: state, activity, progress, cost, age, approval (while any shown agent
    has one), and how it ended (or, live, its last message)."""
    state = agent.state
    if state.terminal:
        said = outcome(state, agent.exit, 200)
    elif state is AgentState.STOPPING and agent.kill_reason:
        said = f"stopping: {agent.kill_reason}"
    else:
        said = agent.message
    cost = cost_of(agent)
    approval = pending_approval(agent)
    parts: Markup = [
        ("", f"{'> ' if selected else '  '}  {agent.id:<{board.id_width}}  "),
        (state.value, f"{state.value:<{STATE_W}}"),
        ("", f"{(agent.activity or '')[:ACTIVITY_W - 1]:<{ACTIVITY_W}}{agent.progress:>{PROGRESS_W - 1}}%"
             f"{f'${cost:.4f}' if cost else '':>{COST_W}}{ago(agent.updated_at):>{AGE_W}}  "),
    ]
    if board.approvals:
        parts.append(("approval" if approval else "", f"{approval:<{APPROVAL_W}}"))
    parts.append(("" if state.live else "dim" if state is AgentState.COMPLETED else state.value, one_line(said)))
    return parts


def task_markup(line: TaskLine, selected: bool) -> Markup:
    """A task's row: id, state, priority, its shown agents by state, their cost, findings, description."""
    task = line.task
    counts = ", ".join(f"{n} {s.value}" for s in AgentState if (n := line.states[s])) or "no agents"
    cost = f"  ${line.cost:.4f}" if line.cost else ""
    findings = f"  {line.findings} findings" if line.findings else ""
    head = f"{'> ' if selected else '  '}{line.task_id}  {task.state.value if task else '?'}  " \
           f"{task.priority.value if task else ''}  "
    return [("task", head), ("", f"{counts}{cost}{findings}  "), ("task", one_line(task.description if task else ""))]


# --- the reader thread ------------------------------------------------------------------


class Inbox:
    """What the reader and the actions hand to the UI thread: a deque, and a wake-up that is
    sent only when the UI has taken everything before (so at most once per frame)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._items: deque[Any] = deque()
        self._wake = wake
        self._pending = False

    def post(self, item: Any) -> None:
        """Hand ``item`` to the UI (from any thread)."""
        self._items.append(item)
        if not self._pending:
            self._pending = True
            self._wake()

    def take(self) -> list[Any]:
        """Everything posted so far (on the UI thread)."""
        self._pending = False  # before taking: a post from now on wakes the UI again
        items = []
        while self._items:
            items.append(self._items.popleft())
        return items


def backoff(attempt: int) -> float:
    """Seconds before reconnect attempt ``attempt`` (1, 2, ...): 0.1 doubling to 5."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(attempt - 1, 16))  # a long outage overflows no float


class Feed:
    """The event stream, read on a thread of its own from ``since``, posted event by event;
    when it breaks, reconnect with back-off and resubscribe from the last event seen.

    The thread is a daemon thread: it spends its life blocked in the socket's ``recv``, which
    closing the socket from another thread does not wake, so it ends with the process when
    the view quits (the daemon drops the subscription with the connection)."""

    def __init__(self, first: Client, since: int, task_id: str | None, post: Callable[[Any], None]) -> None:
        self.socket_path = first.socket_path
        self._first: Client | None = first
        self._since = since
        self._task_id = task_id
        self._post = post
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentctl-top-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            client, self._first = self._first, None
            try:
                if client is None:
                    client = Client(self.socket_path, client="agentctl top")
                    attempt = 0
                    self._post(Link(up=True))
                for event in client.events(since=self._since, task_id=self._task_id):
                    self._since = event.seq
                    self._post(event)
                error = "the stream ended"
            except (SupervisorError, OSError, msgspec.DecodeError) as e:  # DecodeError: an event it cannot read
                error = str(e) or type(e).__name__
            finally:
                if client is not None:
                    client.close()
            attempt += 1
            delay = backoff(attempt)
            self._post(Link(up=False, error=error, attempt=attempt, retry_at=time.monotonic() + delay))
            self._stopping.wait(delay)
