"""What an event says, for people and for hooks: which events a selector picks, and one
short line per event.

A selector names the events it picks:

- ``*``: every event;
- an event kind, a value of :class:`~.model.EventKind`: ``finding``, ``task_closed``,
  ``drift``, ``daemon_downtime``;
- ``agent:<state>``, a value of :class:`~.model.AgentState`: the ``agent_state`` events
  into that state, ``agent:failed``, ``agent:lost``.

Both vocabularies are the model's enums, so a kind or a state added there can be selected
here without a change. A selector is checked once, where it is given (the config, the
command line), by :func:`check_selector`; an unknown one is refused there, not silently
never matched.

:func:`summary` is the same line in ``agentctl events`` and in a desktop notification:
for an agent's state, the state and (once it ended) how; for progress, the percent and
the message; for a finding, its severity, type and message; and so on, kind by kind. It
is the text as agents wrote it, on one line (whitespace runs collapsed): whoever shows it
to a terminal escapes what would drive it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, TypeVar

import msgspec

from .errors import InvalidParams
from .model import Agent, AgentState, CleanupRecord, Event, EventKind, Exit, Finding, Task
from .results import one_line

ANY: Final = "*"
AGENT_PREFIX: Final = "agent:"
#: A summary longer than this is clipped (an agent's answer or message can be long).
SUMMARY_WIDTH: Final = 200

T = TypeVar("T")


# --- selectors ----------------------------------------------------------------------


def check_selector(selector: str) -> str:
    """``selector`` if it names events that exist; raises InvalidParams (a ValueError)
    saying what a selector may be."""
    if selector == ANY or selector in EventKind._value2member_map_:
        return selector
    if selector.startswith(AGENT_PREFIX) and selector[len(AGENT_PREFIX):] in AgentState._value2member_map_:
        return selector
    kinds = ", ".join(k.value for k in EventKind)
    states = ", ".join(s.value for s in AgentState)
    raise InvalidParams(
        f"unknown event selector {selector!r}: use {ANY}, an event kind ({kinds}) "
        f"or {AGENT_PREFIX}<state> ({states})"
    )


def selects(selectors: Iterable[str], event: Event) -> bool:
    """True if any of ``selectors`` (checked ones) picks ``event``."""
    for selector in selectors:
        if selector == ANY or selector == event.kind:
            return True
        if (selector.startswith(AGENT_PREFIX) and event.kind == EventKind.AGENT_STATE
                and event.state is not None and selector[len(AGENT_PREFIX):] == event.state):
            return True
    return False


# --- one line per event ---------------------------------------------------------------


def who(event: Event) -> str:
    """Whom an event is about: its agent, else its task, else the daemon itself."""
    return event.agent_id or event.task_id or "daemon"


def summary(event: Event, width: int = SUMMARY_WIDTH) -> str:
    """One line saying what ``event`` means, at most ``width`` characters."""
    data = event.data
    match event.kind:
        case EventKind.AGENT_STATE:
            agent = _as(data, Agent)
            state = event.state or (agent.state if agent else "")
            text = str(state)
            if agent is not None and (standing := how_it_stands(agent)):
                text = f"{state}: {standing}"
        case EventKind.PROGRESS if isinstance(data, dict):
            parts = [f"{data['percent']}%" if data.get("percent") is not None else "",
                     f"[{data['activity']}]" if data.get("activity") else "", data.get("message") or ""]
            text = " ".join(str(p) for p in parts if p)
        case EventKind.FINDING if (finding := _as(data, Finding)) is not None:
            text = f"{finding.severity} {finding.type}: {finding.message}"
        case EventKind.CLEANUP if (cleanup := _as(data, CleanupRecord)) is not None:
            text = "ok" if cleanup.ok else f"failed (attempt {cleanup.attempts}): {cleanup.error}"
        case EventKind.TASK_CREATED | EventKind.TASK_CLOSED if (task := _as(data, Task)) is not None:
            text = f"{task.priority} {task.description}"
        case EventKind.DRIFT if isinstance(data, dict):
            text = "undone: " + "; ".join(str(w) for w in data.get("what") or [])
        case EventKind.TASK_PURGED if isinstance(data, dict):
            text = f"{data.get('agents', 0)} agents' history deleted" + (
                f" ({data['reason']})" if data.get("reason") else "")
        case EventKind.DAEMON_DOWNTIME if isinstance(data, dict):
            text = downtime(data)
        case EventKind.LIMIT if isinstance(data, dict):
            how = "reached, stopped" if data.get("stopped") else "near"
            text = f"{data.get('limit')} {how}: {data.get('used')} of {data.get('value')}"
        case EventKind.STALLED if isinstance(data, dict):
            then = {"nothing": "", "kill": "; killing it", "restart": "; restarting it"}.get(str(data.get("then")), "")
            text = f"no output or progress for {duration(float(data.get('seconds', 0)))}{then}"
        case _:
            text = "" if data is None else msgspec.json.encode(msgspec.to_builtins(data)).decode()
    return clip(" ".join(text.split()), width)


def downtime(data: dict[str, Any]) -> str:
    """A downtime event's data in words: how long, how it ended, what changed meanwhile."""
    how = "stopped" if data.get("stopped") else "not stopped cleanly"
    text = f"the daemon was down {duration(float(data.get('seconds', 0)))} ({how})"
    ended, adopted = data.get("ended") or [], data.get("adopted") or []
    if ended:
        text += f"; {len(ended)} agent(s) found ended: {', '.join(map(str, ended))}"
    if adopted:
        text += f"; {len(adopted)} found running: {', '.join(map(str, adopted))}"
    return text


def outcome(state: AgentState, exit: Exit | None, width: int = 0) -> str:
    """How an agent ended, in one line: why it failed, was killed or lost, or (completed)
    the start of its answer. ``width`` > 0 clips it."""
    if exit is None:
        return ""
    if state is AgentState.COMPLETED:
        text = "ok" + (f" ${exit.cost_usd:.4f}" if exit.cost_usd is not None else "")
        text += f" ({exit.reason})" if exit.reason else ""  # a warning, such as its MCP server not starting
        answer = " ".join(exit.answer.split())
        text = f"{text}: {answer}" if answer else text
    else:
        text = exit.reason or f"code={exit.code} signal={exit.signal} ({exit.decided_by})"
    return clip(text, width) if width else text


def how_it_stands(agent: Agent, width: int = 0) -> str:
    """In one line, what is to know of an agent beyond its state: how it ended; when a sleeping
    one wakes and why it sleeps; what a running one waits for the operator to allow; since when
    it is stalled; else what it used."""
    if agent.state.terminal:
        return outcome(agent.state, agent.exit, width)
    if agent.state is AgentState.SLEEPING and agent.wake_at is not None:
        text = f"attempt {agent.attempt} at {_clock(agent.wake_at)}; {agent.sleep_reason}"
    elif agent.approvals:
        first, more = agent.approvals[0], len(agent.approvals) - 1
        text = f"awaiting approval since {_clock(first.at)}: {one_line(first.tool, 60)} ({first.id})" + (
            f" and {more} more" if more else "")
    elif agent.stalled_since is not None:
        text = f"stalled: no output or progress since {_clock(agent.stalled_since)}"
    else:
        used = [f"attempt {agent.attempt}"] if agent.attempt > 1 else []
        if agent.usage.turns:
            used.append(f"{agent.usage.turns} turns")
        if agent.usage.cost_usd is not None:
            used.append(f"${agent.usage.cost_usd:.4f}")
        text = ", ".join(used)
    return clip(text, width) if width else text


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``42 s``, ``5.5 min``, ``3.2 h``, ``2.1 days``."""
    if seconds < 100:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _as(data: Any, kind: type[T]) -> T | None:
    """``data`` as a ``kind`` (live events carry Structs; replayed ones, their JSON), or
    None if it is not one."""
    if isinstance(data, kind):
        return data
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError:
        return None
