"""The meter: what a running agent has used so far, read from its provider's event stream.

The runner reads only the first and last events, for how a run ended (``results``). Limits
the supervisor enforces while an agent runs need running figures: a :class:`Meter` is fed the
agent's log as it grows and counts, per provider:

- claude (stream-json): a turn per model response (distinct ``message.id`` of its
  ``assistant`` events) and that response's tokens; the final ``result`` gives the turns and
  the cost (claude says its cost nowhere else).
- codex (``exec --json``): a turn per ``turn.completed``/``turn.failed``, with its tokens.
- gemini (stream-json): a turn per whole assistant message or tool call; the final ``result``
  gives the turns and tokens.

Pure: bytes in, a :class:`~.model.Usage` out. Lines that are not JSON objects (the agent's own
text, a line cut by rotation) are skipped; a line longer than ``MAX_LINE`` is dropped.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .model import EventFormat, Usage

MAX_LINE: Final = 1 << 20

_decode: Final = msgspec.json.Decoder().decode


class Meter:
    """Running figures of one agent's attempt (see the module doc)."""

    def __init__(self, events: EventFormat) -> None:
        self.events = events
        self._partial = b""
        self._messages: dict[str, tuple[int, int]] = {}  # claude: message id -> (input, output) tokens
        self.turns = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd: float | None = None
        self._final_turns: int | None = None

    @property
    def usage(self) -> Usage:
        if self._messages:
            inputs = sum(i for i, _ in self._messages.values())
            outputs = sum(o for _, o in self._messages.values())
            turns = max(len(self._messages), self._final_turns or 0)
            return Usage(turns=turns, input_tokens=inputs, output_tokens=outputs, cost_usd=self.cost_usd)
        turns = max(self.turns, self._final_turns or 0)
        return Usage(turns=turns, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                     cost_usd=self.cost_usd)

    def feed(self, data: bytes) -> None:
        """Count what the complete lines of ``data`` (after what was fed before) say."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._partial = b""
        for line in lines:
            if line.startswith(b"{") and len(line) <= MAX_LINE:
                try:
                    event = _decode(line)
                except msgspec.DecodeError:
                    continue
                if isinstance(event, dict):
                    self._count(event)

    def _count(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.events is EventFormat.CLAUDE:
            message = event.get("message")
            if kind == "assistant" and isinstance(message, dict) and isinstance(message.get("id"), str):
                usage = _dict(message.get("usage"))
                inputs = sum(_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens",
                                                          "cache_read_input_tokens"))
                self._messages[message["id"]] = (inputs, _int(usage.get("output_tokens")))
            elif kind == "result":
                self._final(event.get("num_turns"), event.get("total_cost_usd"))
        elif self.events is EventFormat.CODEX:
            if kind in ("turn.completed", "turn.failed"):
                self.turns += 1
                usage = _dict(event.get("usage"))
                self.input_tokens += _int(usage.get("input_tokens"))
                self.output_tokens += _int(usage.get("output_tokens"))
        elif self.events is EventFormat.GEMINI:
            if (kind == "message" and event.get("role") == "assistant" and not event.get("delta")) \
                    or kind == "tool_use":
                self.turns += 1
            elif kind == "result":
                stats = _dict(event.get("stats"))
                self._final(stats.get("turns"), None)
                self.input_tokens = _int(stats.get("input_tokens")) or self.input_tokens
                self.output_tokens = _int(stats.get("output_tokens")) or self.output_tokens

    def _final(self, turns: Any, cost: Any) -> None:
        if isinstance(turns, int) and not isinstance(turns, bool):
            self._final_turns = turns
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            self.cost_usd = float(cost)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
