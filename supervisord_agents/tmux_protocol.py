"""tmux control mode as pure functions and a sans-IO parser: no process, no socket, no clock.

A control client (``tmux -C``) reads commands on its stdin and writes lines on its stdout.
The rules this module relies on:

1. **Commands, one per line.** A command line is parsed by tmux's own command parser, so
   every argument is single-quoted (:func:`quote`, :func:`command_line`). A newline would
   end the command, so an argument cannot carry one; it is refused, never altered.

2. **Every command is answered by one block**, in the order the commands were sent::

       %begin 1796222825 265 1
       ...the command's output, zero or more lines...
       %end 1796222825 265 1

   or, if it failed, ``%error TIME NUMBER FLAGS`` in place of ``%end``, with tmux's
   message as the block's lines. TIME, NUMBER and FLAGS on the closing line are those
   of its ``%begin``. Attaching is answered by a block too, before any command we send.

3. **A block ends at the %end or %error that carries its NUMBER**, not at the first line
   that starts with ``%end``: the output is whatever the command printed (a pane's
   title, an option's value, a format), so a line of it may itself read
   ``%end 1 2 3``. Inside a block every line is output, including lines starting with
   ``%``; tmux never interleaves a notification with a block.

4. **Every other line that starts with % is a notification**: ``%sessions-changed``,
   ``%window-close @3``, ``%exit [reason]`` (the client is going away), and so on: a
   name, then arguments after the first space. ``%output %1 TEXT`` and
   ``%extended-output %1 AGE ... : TEXT`` carry what a pane printed, with every byte
   below 32 and the backslash written as ``\\ooo`` (three octal digits); see
   :func:`unescape_output`.

5. **Lines end with a newline**, and a read may end in the middle of one: the parser
   keeps the partial line for the next :meth:`ControlParser.feed`.

The parser is tolerant, because what it reads comes from another program: a line it
cannot make sense of (a ``%begin`` without a number, a stray ``%end``, text outside a
block) is dropped, never raised. Matching a block to the command that sent it is the
adapter's business (:mod:`.tmux_control`): tmux answers in order, so the n-th block
answers the n-th command.
"""

from __future__ import annotations

import re
from typing import Final

from msgspec import Struct

from .errors import TmuxError
from .model import AGENT_ID_PATTERN, TASK_ID_PATTERN
from .tmux import AGENT_MARKER, TASK_MARKER, PaneInfo

# The row format of ``list-panes -F``, read back by :func:`parse_pane`. The session name
# goes last: it is the only field that may contain the separator.
PANE_FORMAT: Final = "|".join(
    ["#{session_id}", "#{window_id}", "#{pane_id}", "#{pane_pid}", "#{pane_dead}",
     "#{" + AGENT_MARKER + "}", "#{" + TASK_MARKER + "}", "#{session_name}"]
)
_AGENT_FROM_NAME = re.compile(r"sa-(" + AGENT_ID_PATTERN.removeprefix("^").removesuffix(r"\Z") + r")\Z")
_AGENT_RE = re.compile(AGENT_ID_PATTERN)
_TASK_RE = re.compile(TASK_ID_PATTERN)
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def quote(arg: str) -> str:
    """Quote one argument for tmux's command parser: single quotes, which tmux takes
    literally (no ``$``, ``~``, ``\\`` or ``;`` processing). Raises TmuxError for an
    argument containing a newline, carriage return or NUL: those cannot be carried on
    one control-mode line, so they are refused, never silently altered."""
    if any(c in arg for c in "\n\r\0"):
        raise TmuxError("arguments passed to tmux cannot contain newlines or NUL")
    return "'" + arg.replace("'", "'\\''") + "'"


def command_line(args: list[str]) -> bytes:
    """One command as the line a control client reads: quoted arguments, a newline.
    Raises TmuxError as :func:`quote` does."""
    return (" ".join(quote(a) for a in args) + "\n").encode()


def parse_pane(line: str) -> PaneInfo | None:
    """One row of ``list-panes -F PANE_FORMAT``; None for a row that is not well formed."""
    fields = line.split("|", 7)
    if len(fields) != 8:
        return None
    session_id, window_id, pane_id, pid, dead, agent_id, task_id, name = fields
    if not pid.isdigit():
        return None
    if not _AGENT_RE.match(agent_id):
        # The marker is set just after the session is created; a session named for an
        # agent on our private server is ours too (the daemon may have died in between).
        m = _AGENT_FROM_NAME.match(name)
        agent_id = m.group(1) if m else ""
    return PaneInfo(
        session_id=session_id, session_name=name, window_id=window_id, pane_id=pane_id,
        pane_pid=int(pid), pane_dead=dead == "1",
        agent_id=agent_id or None, task_id=task_id if _TASK_RE.match(task_id) else None,
    )


def unescape_output(text: str) -> bytes:
    """The bytes a pane printed, from the escaped text of an ``%output`` notification:
    each ``\\ooo`` (three octal digits, at most 377) becomes that byte and everything else
    is encoded as UTF-8. Never raises: a backslash not followed by a valid escape is kept
    as it is. Bytes that were not UTF-8 were already replaced by U+FFFD when the
    notification line was decoded, so they come back as that character's encoding."""
    out = bytearray()
    # re.split with one group alternates: text, digits, text, digits, ..., text.
    for i, part in enumerate(_OCTAL_ESCAPE.split(text)):
        if i % 2 == 0:
            out += part.encode()
        elif (value := int(part, 8)) <= 0xFF:
            out.append(value)
        else:
            out += b"\\" + part.encode()
    return bytes(out)


class Reply(Struct, frozen=True):
    """The block that answers one command: its output lines, or tmux's error message if
    ``ok`` is false. ``number`` is tmux's command number, not the position of our command."""

    number: int
    ok: bool
    lines: list[str]


class Notification(Struct, frozen=True):
    """A line outside any block: ``name`` with its ``%`` (``"%window-close"``), and the
    rest of the line after the first space (``"@3"``), empty if there is none."""

    name: str
    args: str


Item = Reply | Notification


def pane_output(notification: Notification) -> tuple[str, bytes] | None:
    """The pane id and the bytes it printed, for ``%output`` and ``%extended-output``;
    None for any other notification, or one too malformed to carry output."""
    if notification.name == "%output":
        pane_id, sep, text = notification.args.partition(" ")
    elif notification.name == "%extended-output":
        # %extended-output PANE AGE [RESERVED...] : TEXT
        pane_id, sep, rest = notification.args.partition(" ")
        _, colon, text = rest.partition(" : ")
        sep = sep and colon
    else:
        return None
    if not sep or not pane_id.startswith("%"):
        return None
    return pane_id, unescape_output(text)


def _number(line: bytes) -> int | None:
    """The NUMBER of a ``%begin``/``%end``/``%error TIME NUMBER FLAGS`` line, or None."""
    fields = line.split(b" ")
    # Bounded, because int() refuses a string of more than 4300 digits by raising.
    if len(fields) < 3 or not fields[2].isdigit() or len(fields[2]) > 20:
        return None
    return int(fields[2])


class ControlParser:
    """The lines of a control client's stdout, turned into :class:`Reply` and
    :class:`Notification` items. Sans-IO: the caller reads, and feeds what it read.

    The framing rules are in this module's docstring. :meth:`feed` never raises.
    """

    def __init__(self) -> None:
        self._partial = b""
        # The open block: its number and the lines so far; None between blocks.
        self._number: int | None = None
        self._lines: list[str] = []

    def feed(self, data: bytes | bytearray) -> list[Item]:
        """Take the next bytes read from the client and return the items they complete,
        in order. A trailing partial line is kept until its newline arrives."""
        *lines, self._partial = (self._partial + data).split(b"\n")
        items: list[Item] = []
        for line in lines:
            item = self._line(line)
            if item is not None:
                items.append(item)
        return items

    def _line(self, line: bytes) -> Item | None:
        if self._number is not None:
            if line.startswith((b"%end ", b"%error ")) and _number(line) == self._number:
                reply = Reply(number=self._number, ok=line.startswith(b"%end "), lines=self._lines)
                self._number, self._lines = None, []
                return reply
            self._lines.append(line.decode(errors="replace"))
            return None
        name, _, args = line.partition(b" ")
        if name == b"%begin":
            # Without a number the block could never be closed by its own %end; dropping
            # the line leaves the command unanswered, which the adapter treats as a timeout.
            self._number = _number(line)
            return None
        if len(name) < 2 or not name.startswith(b"%") or name in (b"%end", b"%error"):
            return None  # not framing we know: text outside a block, a bare %, or a stray block end
        return Notification(name=name.decode(errors="replace"), args=args.decode(errors="replace"))
