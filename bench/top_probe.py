"""``agentctl top``, timed from the outside for ``bench/attention.py``: runs the view with its
frame (taking the events that arrived) and urwid's redraw wrapped in timers, and on exit writes
``{"frames": [[at, seconds]...], "draws": [...], "events": [[at, n]...], "agents": [n...]}`` to
the file named (``at``: CLOCK_MONOTONIC, which the bench's process shares).

    python -m bench.top_probe OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import urwid

from supervisord_agents.clients import agentctl, top, top_board
from supervisord_agents.model import Event


def main() -> int:
    out = Path(sys.argv[1])
    samples: dict[str, list[Any]] = {"frames": [], "draws": [], "events": [], "agents": []}
    frame, draw, apply = top.Top._frame, urwid.MainLoop.draw_screen, top_board.Board.apply
    applied = 0

    def counted_apply(self: top_board.Board, event: Event) -> None:
        nonlocal applied
        applied += 1
        apply(self, event)

    def timed_frame(self: top.Top) -> None:
        nonlocal applied
        applied = 0
        t0 = time.monotonic()
        frame(self)
        t1 = time.monotonic()
        samples["frames"].append([t1, t1 - t0])
        samples["events"].append([t1, applied])
        samples["agents"].append(len(self.board.agents))

    def timed_draw(self: urwid.MainLoop) -> None:
        t0 = time.monotonic()
        draw(self)
        t1 = time.monotonic()
        samples["draws"].append([t1, t1 - t0])

    top_board.Board.apply = counted_apply  # type: ignore[method-assign]
    top.Top._frame = timed_frame  # type: ignore[method-assign]
    urwid.MainLoop.draw_screen = timed_draw  # type: ignore[method-assign]
    try:
        return agentctl.main(["top"])
    finally:
        out.with_suffix(".tmp").write_text(json.dumps(samples))
        out.with_suffix(".tmp").replace(out)


if __name__ == "__main__":
    sys.exit(main())
