"""What an agent's own event stream says of how its run ended.

Claude Code, Codex and Gemini CLI each print JSON events on stdout, each in a format of
its own. The runner keeps the first and the last of them (``tee.EventScanner``);
:func:`read_events` reads those into one :class:`Report`: whether the run succeeded, and
if not the error's class and text; the final answer; cost, tokens, turns; the provider's
session id; and when a rate limit resets, if the provider said. :func:`conclude` then
decides the agent's :class:`~.model.Exit` from the report and how the process ended: a
run whose report says error is a failure whatever its exit code, and every failure says
why in one line.

Pure: no I/O, no clock (times are handed in).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec
from msgspec import Struct

from .model import TIMED_OUT, AgentState, DecidedBy, ErrorClass, EventFormat, Exit

ANSWER_MAX: Final = 2000  # characters of the final answer kept with the exit (and in memory)
REASON_MAX: Final = 300  # characters of a one-line reason

Event = Mapping[str, Any]


class Report(Struct, frozen=True, kw_only=True):
    """One run's outcome as the agent itself reported it."""

    ok: bool | None = None  # None: no final event (it crashed or was killed first)
    error_class: ErrorClass | None = None
    error: str = ""
    answer: str = ""
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    turns: int | None = None
    session_id: str | None = None
    retry_after: float | None = None  # seconds from the end of the run, for a rate limit
    warning: str = ""  # what went wrong in a run that still succeeded


def read_events(fmt: EventFormat, events: Sequence[Event]) -> Report:
    """The report in ``events`` (the first and last of the run) of a provider of ``fmt``."""
    reader = _READERS.get(fmt)
    return Report() if reader is None or not events else reader(events)


def conclude(report: Report, *, code: int | None, signal_number: int | None, runner_error: str = "",
             stderr: str = "", ended_at: float | None = None) -> Exit:
    """The exit of a run that ended on its own (a kill's reason is the registry's)."""
    exit = Exit(decided_by=DecidedBy.EXIT_STATUS, code=code, signal=signal_number, answer=report.answer,
                is_error=None if report.ok is None else not report.ok, cost_usd=report.cost_usd,
                input_tokens=report.input_tokens, output_tokens=report.output_tokens, turns=report.turns,
                session_id=report.session_id)
    error_class: ErrorClass | None = None
    if runner_error and code == 127 and report.ok is None:
        error_class, reason = ErrorClass.START_FAILED, runner_error
    elif report.ok is False:
        error_class = report.error_class or ErrorClass.AGENT_ERROR
        reason = f"{error_class}: {report.error or stderr or 'the agent reported an error'}"
    elif signal_number is not None:
        error_class, reason = ErrorClass.CRASHED, ended_by(code, signal_number) + _colon(stderr)
    elif code not in (0, None):
        error_class = classify(stderr) or ErrorClass.CRASHED
        reason = ended_by(code, signal_number) + _colon(report.error or stderr)
    else:
        reason = report.warning or runner_error
    retry_at = None
    if error_class is ErrorClass.RATE_LIMIT and report.retry_after is not None and ended_at is not None:
        retry_at = ended_at + report.retry_after
    return msgspec.structs.replace(exit, reason=one_line(reason), error_class=error_class, retry_at=retry_at)


def ended_by(code: int | None, signal_number: int | None) -> str:
    """How a process ended, in words."""
    if signal_number is not None:
        return f"killed by {_signal_name(signal_number)}"
    return f"exited with code {code}"


def _colon(text: str) -> str:
    return f": {text}" if text else ""


def explained(state: AgentState, exit: Exit, kill_reason: str) -> Exit:
    """``exit`` with a one-line reason and an error class for every end but completion."""
    if state is AgentState.KILLED:
        timed_out = kill_reason.startswith(TIMED_OUT)
        return msgspec.structs.replace(exit, reason=kill_reason or exit.reason or "kill requested",
                                       error_class=ErrorClass.TIMEOUT if timed_out else ErrorClass.KILLED)
    if state is AgentState.LOST:
        return msgspec.structs.replace(exit, reason=exit.reason or "session gone without an exit record",
                                       error_class=ErrorClass.LOST)
    if exit.decided_by is DecidedBy.SPAWN_ERROR:
        return msgspec.structs.replace(exit, error_class=ErrorClass.START_FAILED)
    if state is AgentState.FAILED and not exit.reason:
        if exit.is_error:
            return msgspec.structs.replace(exit, reason="the agent reported an error",
                                   error_class=exit.error_class or ErrorClass.AGENT_ERROR)
        return msgspec.structs.replace(exit, reason=ended_by(exit.code, exit.signal),
                               error_class=exit.error_class or ErrorClass.CRASHED)
    return exit


def one_line(text: str, limit: int = REASON_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: The signals an agent is usually ended by (the same numbers on Linux and macOS).
_SIGNALS: Final = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 8: "SIGFPE", 9: "SIGKILL",
                   11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"}


def _signal_name(number: int) -> str:
    return _SIGNALS.get(number, f"signal {number}")


# --- error classes from what the provider said --------------------------------------------

_CLASSES: Final = [
    (ErrorClass.RATE_LIMIT, re.compile(
        r"\b429\b|rate[ _-]?limit|too many requests|quota|resource[ _]exhausted|usage limit", re.I)),
    (ErrorClass.AUTH, re.compile(
        r"\b40[13]\b|invalid[ _-]?(x-)?api[ _-]?key|api key not valid|authenticat|unauthori[sz]ed|"
        r"permission_denied.*key|/login|not logged in|credential", re.I)),
    (ErrorClass.MAX_TURNS, re.compile(r"max(imum)?[ _-]?turns", re.I)),
    (ErrorClass.PERMISSION_DENIED, re.compile(
        r"permission denied|not allowed|requires approval|denied by|was blocked|approval", re.I)),
    (ErrorClass.API_ERROR, re.compile(
        r"\b5\d\d\b|api[ _]error|overloaded|internal server error|service unavailable|bad gateway|"
        r"connection (refused|error|reset)|fetch failed|econnrefused|stream (disconnected|error)|timed? ?out|"
        r"high demand|temporary error", re.I)),
]
_RETRY_IN: Final = re.compile(
    r"(?:try again|retry|retrying)\s+(?:in|after)\s+(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?|m|min|minutes?)\b", re.I)


def classify(text: str) -> ErrorClass | None:
    """The class of an error message, or None if nothing in it says."""
    for error_class, pattern in _CLASSES:
        if pattern.search(text):
            return error_class
    return None


def retry_after(text: str) -> float | None:
    """Seconds until a rate limit resets, if the message says ("try again in 20s")."""
    match = _RETRY_IN.search(text)
    if match is None:
        return None
    value, unit = float(match.group(1)), match.group(2).lower()
    return value / 1000 if unit == "ms" else value * 60 if unit.startswith("m") else value


def _failure(text: str, default: ErrorClass = ErrorClass.AGENT_ERROR, **fields: Any) -> Report:
    error_class = classify(text) or default
    delay = retry_after(text) if error_class is ErrorClass.RATE_LIMIT else None
    return Report(ok=False, error_class=error_class, error=one_line(text), retry_after=delay, **fields)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _answer(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    text = value.strip()
    return text if len(text) <= ANSWER_MAX else text[: ANSWER_MAX - 1] + "…"


# --- Claude Code: stream-json, one final ``result`` event ------------------------------------


def _mcp_failed(init: Event) -> str:
    """What claude's init event says of MCP servers that did not start (the supervisor's among
    them: the run then "succeeds" without a tool to report with), or ""."""
    servers = init.get("mcp_servers") if init.get("subtype") == "init" else None
    failed = [f"{_str(s.get('name')) or '?'} (failed)" for s in servers if isinstance(s, Mapping)
              and s.get("status") == "failed"] if isinstance(servers, list) else []
    return one_line("MCP server did not start in the agent: " + ", ".join(failed)) if failed else ""


def _claude(events: Sequence[Event]) -> Report:
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    session = _str(events[0].get("session_id"))
    retries = [e for e in events if e.get("type") == "system" and e.get("subtype") == "api_retry"]
    if result is None:
        if retries:  # it gave up (or was stopped) while retrying: the last retry says why
            return Report(ok=None, error=one_line(_retry_text(retries[-1])), session_id=session)
        return Report(session_id=session)
    usage = _map(result.get("usage"))
    cost = result.get("total_cost_usd", result.get("cost_usd"))
    fields: dict[str, Any] = dict(
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        input_tokens=_sum_ints(usage, "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"),
        output_tokens=_int(usage.get("output_tokens")),
        turns=_int(result.get("num_turns")),
        session_id=_str(result.get("session_id")) or session,
    )
    subtype = result.get("subtype")
    is_error = result.get("is_error")
    if is_error is None:
        is_error = subtype not in (None, "success")
    if not is_error:
        return Report(ok=True, answer=_answer(result.get("result")), warning=_mcp_failed(events[0]), **fields)
    if subtype == "error_max_turns":
        return Report(ok=False, error_class=ErrorClass.MAX_TURNS, error="reached its maximum number of turns", **fields)
    text = _str(result.get("result")) or _str(subtype) or "error"
    if retries and not classify(text):
        text = f"{text} ({_retry_text(retries[-1])})"
    denials = result.get("permission_denials")
    if isinstance(denials, list) and denials and not classify(text):
        names = sorted({str(d.get("tool_name")) for d in denials if isinstance(d, Mapping)})
        return Report(ok=False, error_class=ErrorClass.PERMISSION_DENIED,
                      error=one_line(f"{text}; permission denied for {', '.join(names)}"), **fields)
    report = _failure(text, **fields)
    delay = retries[-1].get("retry_delay_ms") if retries else None
    if report.error_class is ErrorClass.RATE_LIMIT and report.retry_after is None \
            and isinstance(delay, int | float) and not isinstance(delay, bool) and 0 <= delay <= 86_400_000:
        # It gave up retrying; its last retry said how long the provider asked it to wait.
        report = msgspec.structs.replace(report, retry_after=delay / 1000)
    return report


def _retry_text(event: Event) -> str:
    status, error = event.get("error_status"), event.get("error")
    parts = [f"API retry {event.get('attempt', '?')}/{event.get('max_retries', '?')}"]
    if status is not None:
        parts.append(f"HTTP {status}")
    if error:
        parts.append(str(error))
    return ": ".join(parts)


def _sum_ints(mapping: Mapping[str, Any], *keys: str) -> int | None:
    values = [v for k in keys if (v := _int(mapping.get(k))) is not None]
    return sum(values) if values else None


# --- Codex: exec --json, thread / turn / item events ---------------------------------------------


def _codex(events: Sequence[Event]) -> Report:
    session = next((_str(e.get("thread_id")) for e in events if e.get("type") == "thread.started"), None)
    answers = [e["item"] for e in events if e.get("type") == "item.completed" and isinstance(e.get("item"), Mapping)
               and e["item"].get("type") == "agent_message"]
    turns = [e for e in events if e.get("type") in ("turn.completed", "turn.failed")]
    usage: dict[str, int] = {}
    for turn in turns:
        for key, value in (turn.get("usage") or {}).items():
            if _int(value) is not None:
                usage[key] = usage.get(key, 0) + value
    fields: dict[str, Any] = dict(
        answer=_answer(answers[-1].get("text")) if answers else "",
        input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"),
        turns=len(turns) or None, session_id=session,
    )
    last = turns[-1] if turns else None
    errors = [e for e in events if e.get("type") == "error"]
    if last is not None and last.get("type") == "turn.completed":
        return Report(ok=True, **fields)
    # An error that codex retried ("Reconnecting... 3/5") was the API's, whatever its words.
    retried = any(str(e.get("message", "")).startswith("Reconnecting") for e in errors)
    default = ErrorClass.API_ERROR if retried else ErrorClass.AGENT_ERROR
    if last is not None:  # turn.failed
        error = last.get("error")
        text = _str(error.get("message")) if isinstance(error, Mapping) else _str(error)
        text = text or (_str(errors[-1].get("message")) if errors else None) or "turn failed"
        return _failure(text, default, **fields)
    if errors:
        return _failure(_str(errors[-1].get("message")) or "error", default, **fields)
    return Report(**fields)


# --- Gemini CLI: stream-json, a final ``result`` with a status --------------------------------------


def _gemini(events: Sequence[Event]) -> Report:
    init = next((e for e in events if e.get("type") == "init"), None)
    session = _str(init.get("session_id")) if init is not None else None
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    answer = _gemini_answer(events)
    if result is None:
        errors = [e for e in events if e.get("type") == "error" and e.get("severity") != "warning"]
        if errors:
            return _failure(_str(errors[-1].get("message")) or "error", session_id=session, answer=answer)
        return Report(session_id=session, answer=answer)
    stats = _map(result.get("stats"))
    fields: dict[str, Any] = dict(
        answer=answer, input_tokens=_int(stats.get("input_tokens")), output_tokens=_int(stats.get("output_tokens")),
        turns=_int(stats.get("turns")) or _turns(events), session_id=_str(result.get("session_id")) or session,
    )
    if result.get("status") == "success":
        return Report(ok=True, **fields)
    error = result.get("error")
    text = ""
    if isinstance(error, Mapping):
        text = " ".join(s for s in (_str(error.get("type")), _str(error.get("message"))) if s)
    elif isinstance(error, str):
        text = error
    return _failure(text or f"status {result.get('status')!r}", **fields)


def _gemini_answer(events: Sequence[Event]) -> str:
    """The assistant's text after its last tool call (streamed as deltas)."""
    parts: list[str] = []
    for event in events:
        kind = event.get("type")
        if kind in ("tool_use", "tool_result") or (kind == "message" and event.get("role") == "user"):
            parts = []
        elif kind == "message" and event.get("role") == "assistant" and isinstance(event.get("content"), str):
            parts.append(event["content"])
    return _answer("".join(parts))


def _turns(events: Sequence[Event]) -> int | None:
    count = sum(1 for e in events if e.get("type") == "message" and e.get("role") == "assistant"
                and not e.get("delta"))
    return count or None


_READERS: Final[dict[EventFormat, Callable[[Sequence[Event]], Report]]] = {
    EventFormat.CLAUDE: _claude,
    EventFormat.CODEX: _codex,
    EventFormat.GEMINI: _gemini,
}
