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

Permission requests show in an APPROVAL column while any shown agent has one (the tool it asks
for, :func:`pending_approval`); ``a`` allows the selected agent's oldest request and ``d``
denies it, as ``agentctl approve|deny`` do.

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
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any, Final

from supervisord_agents.errors import InvalidParams, SupervisorError, Unavailable
from supervisord_agents.model import AgentState, Event
from supervisord_agents.protocol import (
    AGENT_KILL,
    AGENT_OUTPUT,
    AGENT_PEEK,
    APPROVAL_ANSWER,
)

from .client import Client
from .render import clock, event_line, log_view, visible
from .top_board import (  # noqa: F401 - Board, Snapshot, backoff are this verb's model, tested through it
    Board,
    Feed,
    Inbox,
    Link,
    Note,
    Size,
    Snapshot,
    agent_markup,
    backoff,
    column_headers,
    one_line,
    take_snapshot,
    task_markup,
)

try:
    import urwid
except ModuleNotFoundError as e:  # an optional extra: say how to get it, not a traceback
    raise Unavailable("agentctl top needs urwid: pip install 'supervisord-agents[top]'") from e

FRAME_SECONDS: Final = 0.1  # at most 10 frames a second, however many events arrive
TICK_SECONDS: Final = 1.0  # ages and the reconnect countdown
LOG_TAIL: Final = 10_000  # lines of an agent's output shown in the pager
LOG_MAX_BYTES: Final = 4 << 20  # the most agent.output gives in one reply
ACTION_TIMEOUT: Final = 10.0  # seconds for a peek or a log read (a kill waits as long as the kill takes)
KILL_REASON: Final = "killed with agentctl top"
DEFAULT_PAGER: Final = ["less", "-R", "+G"]  # colours kept, opened at the end of the log

#: The keys, as the bottom line shows them.
KEYS: Final = ("↑↓ PgUp PgDn select   k kill   l logs   p peek   / filter   q quit   "
               "a approve  d deny")

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
            self._answer(allow=key in ("a", "A"))
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

    def _answer(self, *, allow: bool) -> None:
        """Allow or deny the selected agent's oldest waiting permission request."""
        agent_id = self._selected_agent("approve or deny for")
        if agent_id is None:
            return
        waiting = self.board.agents[agent_id].approvals
        if not waiting:
            self._say(f"{agent_id} has no permission request waiting")
            return
        request = waiting[0]
        try:
            with self._connect() as c:
                answered = c.call(APPROVAL_ANSWER, approval_id=request.id, allow=allow)
            self._say(f"{answered.id} {answered.state}: {agent_id} {one_line(answered.tool)}")
        except (SupervisorError, OSError) as e:
            self._say(f"{'approve' if allow else 'deny'} {request.id}: {e}")

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
