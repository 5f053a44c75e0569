"""``agentctl top``: a full-screen live view of tasks and agents, fed by the event stream.

How it stays live, and what it costs:

- **A snapshot, then events; no polling.** It reads the event log's last sequence number,
  then the open tasks (or the one of ``--task``) and all their agents, then subscribes with
  replay from that number. An event the snapshot already shows is applied again, harmlessly:
  an ``agent_state`` event carries the whole agent row and a ``progress`` event the values
  after it, so the view converges on the log, whatever the order of the two reads.
- **A reader thread.** :class:`Feed` runs the blocking client's event iterator on a thread of
  its own and posts what arrives to an :class:`Inbox`: a deque, and one byte on a pipe that
  wakes the UI's loop when the deque was empty. Only the UI thread touches the view.
- **Frames, not events, are drawn.** The UI takes the inbox at most ``FRAME_SECONDS`` apart (10
  frames a second); each event costs a dictionary update and marks its row changed (O(1)), and
  a frame rebuilds the widgets of changed rows only as they are shown: urwid's list box asks its
  walker (:class:`Rows`) for the rows on screen alone, so 1,000 agents cost what 40 do. The row
  order is rebuilt (O(n)) only when rows come or go or the filter changes. Ages tick once a
  second.
- **Reconnects.** When the stream ends (the daemon stopped, restarted, or cut off a subscriber
  that fell behind) the reader says "reconnecting", tries again with back-off (0.1 s doubling
  to 5 s), and resubscribes from the last sequence number it saw, so nothing is missed or shown
  twice.
- **Actions** each open a connection of their own: kill (after a confirmation, on a thread,
  since ``agent.kill`` returns once the agent has ended), peek (``agent.peek``, shown over the
  view) and logs (the tail of ``agent.output`` in ``$PAGER``, the view suspended meanwhile).

Everything an agent wrote is shown escaped (:func:`.render.visible`) and on one line.

Approvals are not in the protocol yet. Their place is kept: :func:`pending_approval` is the
one function that reads one off an agent row, an APPROVAL column appears while any shown agent
has one, and the keys ``a`` and ``d`` (approve, deny) are bound and say they are coming.

Why urwid (the ``top`` extra): the view is a long list whose rows change underneath, and urwid's
list box renders only what is on screen from a walker we write, with a select-based loop that
is plain synchronous code (no asyncio to bridge to the blocking client: a pipe wakes it),
``watch_pipe`` for the reader thread, alarms for frame coalescing, overlays for the dialogs, and
a screen that stops and starts around a pager. It weighs two small pure-Python dependencies
(wcwidth, typing_extensions) and ~0.15 s of imports, paid by this verb alone. Rejected: Textual
(many more dependencies and an asyncio compositor that redraws more than this needs), the stdlib
curses (no list, dialog or line-editing widgets: they would be written here), prompt_toolkit
(about the same weight, but asyncio-based, and full-screen lists are built by hand).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any, Final, Literal

import msgspec

from supervisord_agents.digest import outcome
from supervisord_agents.errors import InvalidParams, SupervisorError, Unavailable
from supervisord_agents.model import Agent, AgentState, Event, EventKind, Task, TaskState
from supervisord_agents.protocol import (
    AGENT_KILL,
    AGENT_LIST,
    AGENT_OUTPUT,
    AGENT_PEEK,
    DAEMON_HEALTH,
    MAX_PAGE,
    TASK_GET,
    TASK_LIST,
)

from .client import Client
from .render import ago, clock, event_line, log_view, visible

try:
    import urwid
except ModuleNotFoundError as e:  # an optional extra: say how to get it, not a traceback
    raise Unavailable("agentctl top needs urwid: pip install 'supervisord-agents[top]'") from e

FRAME_SECONDS: Final = 0.1  # at most 10 frames a second, however many events arrive
TICK_SECONDS: Final = 1.0  # ages and the reconnect countdown
BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0
LOG_TAIL: Final = 10_000  # lines of an agent's output shown in the pager
LOG_MAX_BYTES: Final = 4 << 20  # the most agent.output gives in one reply
ACTION_TIMEOUT: Final = 10.0  # seconds for a peek or a log read (a kill waits as long as the kill takes)
KILL_REASON: Final = "killed with agentctl top"
DEFAULT_PAGER: Final = ["less", "-R", "+G"]  # colours kept, opened at the end of the log

#: The keys, as the bottom line shows them.
KEYS: Final = ("↑↓ PgUp PgDn select   k kill   l logs   p peek   / filter   q quit   "
               "a approve  d deny (coming with approvals)")

PALETTE: Final = [
    ("title", "white,bold", "dark blue"),
    ("down", "white,bold", "dark red"),
    ("columns", "bold", ""),
    ("task", "bold", ""),
    ("selected", "black", "light gray"),
    ("note", "yellow", ""),
    ("dim", "dark gray", ""),
    ("approval", "white,bold", "dark magenta"),
    ("queued", "light blue", ""),
    ("starting", "light cyan", ""),
    ("running", "light green", ""),
    ("stopping", "yellow", ""),
    ("completed", "dark green", ""),
    ("failed", "light red", ""),
    ("killed", "yellow", ""),
    ("lost", "light magenta", ""),
]

# Column widths after the agent id (whose width follows the longest id seen).
STATE_W: Final = 10
ACTIVITY_W: Final = 14
PROGRESS_W: Final = 5
COST_W: Final = 9
AGE_W: Final = 6
APPROVAL_W: Final = 10


def pending_approval(agent: Agent) -> str:
    """What ``agent`` waits for a person to approve, or "" when nothing.

    The protocol has no approvals yet: another change adds them (``approve``/``deny``), as a
    state that joins the registry's table ("awaiting approval", in the style guide's plan).
    Until the agent row says more, an agent in a state whose name speaks of approval is
    shown as waiting. This is the one place that reads it; the APPROVAL column shows while
    any shown agent has one."""
    return "waiting" if "approval" in agent.state.value else ""


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


# --- the UI -----------------------------------------------------------------------------


class Line(urwid.Text):
    """A row of the list: text that can be selected."""

    _selectable = True

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str:
        return key


class Rows(urwid.ListWalker[int, Line]):
    """The list box's rows: positions index the board's order; a row's widget is built when
    the list box shows it and kept until its row changes, the focus moves, or the clock ticks."""

    def __init__(self, build: Callable[[str, bool], Line]) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self.focus = 0
        self._build = build
        self._widgets: dict[str, Line] = {}

    def __getitem__(self, position: int) -> Line:
        if position < 0:
            raise IndexError(position)
        key = self.keys[position]
        widget = self._widgets.get(key)
        if widget is None:
            widget = self._widgets[key] = self._build(key, position == self.focus)
        return widget

    def next_position(self, position: int) -> int:
        if position + 1 >= len(self.keys):
            raise IndexError(position)
        return position + 1

    def prev_position(self, position: int) -> int:
        if position <= 0:
            raise IndexError(position)
        return position - 1

    def set_focus(self, position: int) -> None:
        self.forget((self.selected or "", self.keys[position] if 0 <= position < len(self.keys) else ""))
        self.focus = position
        self._modified()

    @property
    def selected(self) -> str | None:
        return self.keys[self.focus] if 0 <= self.focus < len(self.keys) else None

    def reshape(self, keys: list[str]) -> None:
        """Show ``keys`` in this order, keeping the selected row if it is still shown."""
        selected = self.selected
        self.keys = keys
        self._index = {key: i for i, key in enumerate(keys)}
        self.focus = self._index.get(selected or "", min(self.focus, max(0, len(keys) - 1)))
        self.forget((selected or "", self.selected or ""))

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._widgets.pop(key, None)

    def forget_all(self) -> None:
        self._widgets.clear()

    def modified(self) -> None:
        self._modified()


class Top:
    """The view: a header (connection, counts, columns), the rows, and a footer (the last
    event, what an action came to or the filter, the keys)."""

    def __init__(self, first: Client, snapshot: Snapshot, task_id: str | None) -> None:
        self.board = Board()
        self.board.load(snapshot)
        self.rows = Rows(self._row)
        self.listbox: urwid.ListBox[int] = urwid.ListBox(self.rows)
        self.title = urwid.Text("", wrap="clip")
        self.columns = urwid.Text("", wrap="clip")
        self.last = urwid.Text("", wrap="clip")
        self.note = urwid.Text("", wrap="clip")
        self.keys = urwid.Text(("dim", KEYS), wrap="clip")
        self.filter = urwid.Edit("filter: ")
        urwid.connect_signal(self.filter, "postchange", self._filtered)
        self.query = ""
        self.frame: urwid.Frame[urwid.ListBox[int], urwid.Pile, urwid.Pile] = urwid.Frame(
            self.listbox, header=urwid.Pile([self.title, urwid.AttrMap(self.columns, "columns")]),
            footer=self._footer(self.note))
        self.loop = urwid.MainLoop(self.frame, PALETTE, unhandled_input=self._key, handle_mouse=False)
        wake_fd = self.loop.watch_pipe(self._woken)

        def wake() -> None:
            with suppress(OSError):  # the view has gone: nothing to wake
                os.write(wake_fd, b"\0")

        self.inbox = Inbox(wake)
        self.feed = Feed(first, snapshot.seq, task_id, self.inbox.post)
        self.socket_path = first.socket_path
        self.link = Link(up=True)
        self.mode = "rows"  # or "confirm" (a kill), "view" (peek), "filter"
        self.confirming = ""  # the agent a kill waits to be confirmed for
        self._frame_alarm: Any = None
        self._last_frame = 0.0

    def run(self) -> None:
        self.feed.start()
        self._frame()
        self.loop.set_alarm_in(TICK_SECONDS, self._tick)
        try:
            self.loop.run()
        finally:
            self.feed.stop()

    # -- frames

    def _woken(self, data: bytes) -> bool:
        if self._frame_alarm is None:
            delay = max(0.0, self._last_frame + FRAME_SECONDS - time.monotonic())
            self._frame_alarm = self.loop.set_alarm_in(delay, lambda *_: self._frame())
        return True

    def _frame(self) -> None:
        """Take what arrived, and redraw what it changed."""
        self._frame_alarm = None
        board = self.board
        for item in self.inbox.take():
            if isinstance(item, Event):
                board.apply(item)
            elif isinstance(item, Link):
                self.link = item
            elif isinstance(item, Note):
                self.note.set_text(("note", one_line(item.text)))
        if board.restyled:
            board.restyled = False
            self.rows.forget_all()
            self.columns.set_text(column_headers(board))
        self.rows.forget(board.changed)
        # Filtered, a row that changed may now match or no longer: the order is rebuilt (O(n), per frame).
        if board.reshaped or (self.query and board.changed):
            board.reshaped = False
            self.rows.reshape(board.rows(self.query))
        board.changed.clear()
        self.rows.modified()
        self._title()
        last = board.last_event
        self.last.set_text(("dim", one_line(event_line(last)) if last else f"no event since #{board.seq}"))
        self._last_frame = time.monotonic()

    def _tick(self, loop: Any = None, data: Any = None) -> None:
        self.rows.forget_all()  # ages; only the rows on screen are built again
        self.rows.modified()
        self._title()
        self.loop.set_alarm_in(TICK_SECONDS, self._tick)

    def _title(self) -> None:
        board, link = self.board, self.link
        counts = ", ".join(f"{n} {s.value}" for s in AgentState if (n := board.states[s])) or "none"
        approvals = f"  {board.approvals} awaiting approval" if board.approvals else ""
        shown = f"  filter: {visible(self.query)}" if self.query else ""
        if link.up:
            state = ("title", f" agentctl top  connected  event #{board.seq}  {len(board.tasks)} tasks  "
                              f"agents: {counts}{approvals}{shown}  {clock(time.time(), seconds_only=True)} ")
        else:
            wait = max(0.0, link.retry_at - time.monotonic())
            state = ("down", f" agentctl top  reconnecting (attempt {link.attempt}, next in {wait:.1f} s)  "
                             f"showing event #{board.seq}  {one_line(link.error)} ")
        self.title.set_text(state)

    def _row(self, key: str, selected: bool) -> Line:
        board = self.board
        if key in board.tasks:
            markup = task_markup(board.tasks[key], selected)
        else:
            markup = agent_markup(board, board.agents[key], selected)
        if selected:
            markup = [("selected", "".join(text for _, text in markup))]
        return Line(markup, wrap="clip")

    def _footer(self, middle: urwid.Widget) -> urwid.Pile:
        return urwid.Pile([self.last, middle, self.keys])

    # -- keys

    def _key(self, key: str | tuple[str, int, int, int]) -> bool | None:
        if not isinstance(key, str):
            return None
        if self.mode == "confirm":
            self._close_dialog()
            if key in ("y", "Y"):
                self._kill(self.confirming)
            else:
                self._say(f"{self.confirming} not killed")
        elif self.mode == "view":
            if key in ("q", "Q", "esc", "enter"):
                self._close_dialog()
        elif self.mode == "filter":
            if key in ("enter", "esc"):
                if key == "esc":
                    self.filter.set_edit_text("")
                self.mode = "rows"
                self.frame.footer = self._footer(self.note)
                self.frame.focus_position = "body"
        elif key in ("q", "Q"):
            raise urwid.ExitMainLoop
        elif key in ("home", "g"):
            self._focus(0)
        elif key in ("end", "G"):
            self._focus(len(self.rows.keys) - 1)
        elif key == "/":
            self.mode = "filter"
            self.frame.footer = self._footer(self.filter)
            self.frame.focus_position = "footer"
        elif key == "esc" and self.query:
            self.filter.set_edit_text("")
        elif key in ("k", "K", "f9"):
            self._ask_kill()
        elif key in ("p", "P"):
            self._peek()
        elif key in ("l", "L"):
            self._logs()
        elif key in ("a", "A", "d", "D"):
            self._say("approve and deny are coming: the daemon has no approvals yet")
        else:
            return None
        return True

    def _focus(self, position: int) -> None:
        if self.rows.keys:
            self.listbox.set_focus(max(0, position))

    def _filtered(self, edit: Any, before: Any) -> None:
        self.query = self.filter.edit_text
        self.board.reshaped = True
        self._frame()

    def _say(self, text: str) -> None:
        self.note.set_text(("note", one_line(text)))

    def _selected_agent(self, doing: str) -> str | None:
        key = self.rows.selected
        if key is None or key not in self.board.agents:
            self._say(f"select an agent to {doing}")
            return None
        return key

    def _dialog(self, body: urwid.Widget, title: str, width: Size, height: Size, mode: str) -> None:
        box = urwid.LineBox(body, title=title)
        self.loop.widget = urwid.Overlay(box, self.frame, "center", width, "middle", height)
        self.mode = mode

    def _close_dialog(self) -> None:
        self.loop.widget = self.frame
        self.mode = "rows"

    # -- actions

    def _connect(self, timeout: float | None = ACTION_TIMEOUT) -> Client:
        return Client(self.socket_path, client="agentctl top", timeout=timeout)

    def _ask_kill(self) -> None:
        agent_id = self._selected_agent("kill")
        if agent_id is None:
            return
        agent = self.board.agents[agent_id]
        if agent.state.terminal:
            self._say(f"{agent_id} has already ended ({agent.state})")
            return
        self.confirming = agent_id
        text = urwid.Text(f"Kill {agent_id}?\n({agent.state}, task {agent.task_id})\n\n"
                          "y: kill it   any other key: keep it", align="center")
        self._dialog(urwid.Filler(text), "kill", 80, 8, "confirm")

    def _kill(self, agent_id: str) -> None:
        """Kill on a thread (``agent.kill`` returns once the agent has ended, within the
        daemon's kill grace); the event stream shows it stop, and the note what came of it.
        A daemon thread: a view that quits meanwhile leaves the kill to the daemon."""
        self._say(f"killing {agent_id}...")

        def work() -> None:
            try:
                with self._connect(timeout=None) as c:
                    agent = c.call(AGENT_KILL, agent_id=agent_id, reason=KILL_REASON)
                text = f"{agent.id} {agent.state}"
            except (SupervisorError, OSError) as e:
                text = f"kill {agent_id}: {e}"
            self.inbox.post(Note(text=text))

        threading.Thread(target=work, name="agentctl-top-kill", daemon=True).start()

    def _peek(self) -> None:
        agent_id = self._selected_agent("peek at")
        if agent_id is None:
            return
        try:
            with self._connect() as c:
                screen = c.call(AGENT_PEEK, agent_id=agent_id).screen
        except (SupervisorError, OSError) as e:
            self._say(f"peek {agent_id}: {e}")
            return
        self._show_text(f"{agent_id}: its screen (q to close)", screen.rstrip("\n"))

    def _show_text(self, title: str, text: str) -> None:
        lines = [urwid.Text(visible(line), wrap="clip") for line in text.split("\n")] or [urwid.Text("")]
        self._dialog(urwid.ListBox(urwid.SimpleListWalker(lines)), visible(title), ("relative", 90),
                     ("relative", 85), "view")

    def _logs(self) -> None:
        """The tail of the agent's output in ``$PAGER`` (``less -R +G`` without one), the view
        suspended meanwhile; shown over the view when no pager can start."""
        agent_id = self._selected_agent("read the output of")
        if agent_id is None:
            return
        try:
            with self._connect() as c:
                result = c.call(AGENT_OUTPUT, agent_id=agent_id, tail=LOG_TAIL, max_bytes=LOG_MAX_BYTES)
        except (SupervisorError, OSError) as e:
            self._say(f"logs {agent_id}: {e}")
            return
        text = (f"({result.note})\n" if result.note else "") + result.output
        try:
            pager = shlex.split(os.environ.get("PAGER", "")) or DEFAULT_PAGER
        except ValueError:  # unbalanced quotes: as if it were not set
            pager = DEFAULT_PAGER
        screen = self.loop.screen
        screen.stop()
        try:
            subprocess.run(pager, input=log_view(text).encode(), check=False)  # an argv, no shell
        except OSError as e:
            self._say(f"cannot run the pager {shlex.join(pager)} ({e.strerror}): the output is shown here")
            self._show_text(f"{agent_id}: its output (q to close)", text)
        finally:
            screen.start()
            screen.clear()


def cmd_top(args: argparse.Namespace, c: Client) -> None:
    """``agentctl top``: the live view until ``q``. Raises InvalidParams without a terminal,
    and the daemon's errors from the first snapshot (NotFound for an unknown ``--task``)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidParams("agentctl top needs a terminal (for a log of events: agentctl events --follow)")
    snapshot = take_snapshot(c, args.task)
    Top(c, snapshot, args.task).run()
