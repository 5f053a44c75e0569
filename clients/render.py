"""How agentctl shows things: one JSON line for ``--json``, aligned tables and short times
for people. It knows the Structs it renders and nothing of the socket."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from supervisord_agents.digest import how_it_stands as how_it_stands  # re-exported: beyond its state
from supervisord_agents.digest import outcome as outcome  # re-exported: how an agent ended, in one line
from supervisord_agents.digest import summary, who
from supervisord_agents.model import Agent, Counts, Event

AGENT_HEADERS: Final = ["AGENT", "STATE", "ACTIVITY", "PROGRESS", "UPDATED", "OUTCOME", "MESSAGE"]

_json: Final = msgspec.json.Encoder()


#: Characters that drive a terminal rather than show on it: C0 controls but tab and newline,
#: DEL, C1 controls, and the bidirectional overrides that reorder what is shown.
_DRIVERS: Final = [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F),
                   *range(0x2066, 0x206A)]
_VISIBLE: Final = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _DRIVERS}


def visible(text: str) -> str:
    """``text`` safe to write to a terminal: what would drive it (escape sequences, carriage
    returns, title and clipboard requests, bidi overrides) shown escaped, as ``\\x1b``.
    Agents write much of what agentctl shows, and an agent can be wrong or hostile."""
    return text.translate(_VISIBLE)


#: Escape sequences in an agent's output: group 1 is a colour (SGR), kept on a terminal;
#: the rest (cursor moves, erases, title and clipboard requests, device strings) are removed.
_SEQUENCES: Final = re.compile(
    r"(\x1b\[[0-9;:]*m)"  # SGR: colours and text styles
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # any other CSI: cursor, erase, scroll, modes
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: title, clipboard, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # two-byte escapes (and a lone ESC)
)


def log_view(text: str) -> str:
    """An agent's output for a terminal: its colours kept, every other escape sequence
    removed, and what else would drive the terminal (a carriage return that hides a line,
    a bidi override) shown escaped."""
    parts, pos = [], 0
    for match in _SEQUENCES.finditer(text):
        parts.append(visible(text[pos:match.start()]))
        parts.append(match.group(1) or "")
        pos = match.end()
    parts.append(visible(text[pos:]))
    return "".join(parts)


def to_json(value: Any) -> str:
    """``value`` (Structs, enums, and containers of them) as one line of JSON: the shape
    the daemon sent it in."""
    return _json.encode(value).decode()


def emit_json(value: Any) -> None:
    """Write ``value`` to stdout as one line of JSON."""
    sys.stdout.write(to_json(value) + "\n")


def emit_json_items(items: Iterable[Any]) -> None:
    """Write ``items`` to stdout as one JSON array, an item at a time, as they arrive."""
    sep = "["
    for item in items:
        sys.stdout.write(sep + to_json(item))
        sep = ","
    sys.stdout.write("[]\n" if sep == "[" else "]\n")


def stream_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *, chunk: int = 100) -> None:
    """Rows under headers, written ``chunk`` rows at a time as they arrive; columns are as
    wide as the widest cell seen so far, so they line up within each chunk and widen, never
    narrow, further down."""
    widths = [len(h) for h in headers]
    lines: list[list[str]] = [[str(h) for h in headers]]

    def flush() -> None:
        for r in lines:
            sys.stdout.write(visible("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()) + "\n")
        lines.clear()

    for row in rows:
        cells = ["" if c is None else str(c) for c in row]
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
        lines.append(cells)
        if len(lines) >= chunk:
            flush()
    flush()


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """Rows under headers, in columns two spaces apart; None shows as empty."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def ago(ts: float | None) -> str:
    """How long ago ``ts`` (seconds since the epoch) was: ``42s``, ``5m``, ``1.5h``."""
    if ts is None:
        return ""
    delta = max(0.0, time.time() - ts)
    if delta < 60:
        return f"{delta:.0f}s"
    if delta < 3600:
        return f"{delta / 60:.0f}m"
    return f"{delta / 3600:.1f}h"


def clock(ts: float, *, seconds_only: bool = False) -> str:
    """``ts`` in local time: ISO date and time, or only ``HH:MM:SS``."""
    from datetime import datetime  # here: only a few verbs show a clock

    moment = datetime.fromtimestamp(ts)
    return moment.strftime("%H:%M:%S") if seconds_only else moment.isoformat(timespec="seconds")


def counts_cell(c: Counts) -> str:
    queued = f", {c.queued} queued" if c.queued else ""
    sleeping = f", {c.sleeping} sleeping" if c.sleeping else ""
    return f"{c.active} active{queued}{sleeping}, {c.completed} done, {c.failed} failed, {c.spawned} spawned"


def event_line(event: Event) -> str:
    """One line per event for people: time, sequence number, kind, who (agent, task or the
    daemon) and what it says (:func:`supervisord_agents.digest.summary`). Not yet escaped."""
    return f"{clock(event.at, seconds_only=True)} {event.seq:>6} {event.kind:<15} {who(event):<29} {summary(event)}"


def agent_rows(agents: Iterable[Agent]) -> list[list[Any]]:
    """One row per agent, under ``AGENT_HEADERS``."""
    return [[a.id, a.state, a.activity or "", f"{a.progress}%", ago(a.updated_at), how_it_stands(a, 60),
             a.message[:50]] for a in agents]
