"""The meter counts what an agent has used from its provider's stream as it arrives, in any chunks."""

from __future__ import annotations

import json

import pytest

from supervisord_agents.meter import MAX_LINE, Meter
from supervisord_agents.model import EventFormat, Usage


def lines(*events: object) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


CLAUDE = lines(
    {"type": "system", "subtype": "init", "session_id": "s"},
    {"type": "assistant", "message": {"id": "m1", "usage": {"input_tokens": 10, "cache_read_input_tokens": 5,
                                                             "output_tokens": 1}}},
    {"type": "assistant", "message": {"id": "m1", "usage": {"input_tokens": 10, "cache_read_input_tokens": 5,
                                                             "output_tokens": 7}}},  # the same response, later
    {"type": "user", "message": {"content": [{"type": "tool_result", "content": "ok"}]}},
    {"type": "assistant", "message": {"id": "m2", "usage": {"input_tokens": 20, "output_tokens": 3}}},
)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_claude_turns_are_responses_whatever_the_chunks(chunk: int) -> None:
    meter = Meter(EventFormat.CLAUDE)
    for i in range(0, len(CLAUDE), chunk):
        meter.feed(CLAUDE[i:i + chunk])
    assert meter.usage == Usage(turns=2, input_tokens=35, output_tokens=10)
    meter.feed(lines({"type": "result", "num_turns": 3, "total_cost_usd": 0.25, "is_error": False}))
    assert meter.usage == Usage(turns=3, input_tokens=35, output_tokens=10, cost_usd=0.25)


def test_codex_and_gemini() -> None:
    codex = Meter(EventFormat.CODEX)
    codex.feed(lines({"type": "thread.started", "thread_id": "t"}, {"type": "turn.started"},
                     {"type": "turn.completed", "usage": {"input_tokens": 50, "output_tokens": 5}}))
    assert codex.usage == Usage(turns=1, input_tokens=50, output_tokens=5)
    gemini = Meter(EventFormat.GEMINI)
    gemini.feed(lines({"type": "init", "session_id": "g"}, {"type": "message", "role": "assistant", "content": "a",
                                                            "delta": True},
                      {"type": "tool_use", "tool_name": "run_shell_command"},
                      {"type": "message", "role": "assistant", "content": "done"}))
    assert gemini.usage.turns == 2
    gemini.feed(lines({"type": "result", "status": "success", "stats": {"turns": 4, "input_tokens": 9,
                                                                        "output_tokens": 2}}))
    assert gemini.usage == Usage(turns=4, input_tokens=9, output_tokens=2)


def test_what_is_not_an_event_counts_for_nothing() -> None:
    """The agent's own text, broken JSON, arrays, forged fields of the wrong type, a line past MAX_LINE."""
    meter = Meter(EventFormat.CLAUDE)
    meter.feed(b"hello\n{not json\n[1,2]\n" + lines(
        {"type": "assistant", "message": {"id": 5}},
        {"type": "assistant", "message": {"id": "x", "usage": {"output_tokens": -4, "input_tokens": True}}},
        {"type": "result", "num_turns": "many", "total_cost_usd": "free"}))
    meter.feed(b'{"type": "assistant", "message": {"id": "huge", "pad": "' + b"x" * MAX_LINE + b'"}}\n')
    assert meter.usage == Usage(turns=1)
