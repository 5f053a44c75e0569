"""How agentctl shows things: JSON lines for --json, aligned tables for people."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

_json = msgspec.json.Encoder()

def emit_json(value: Any) -> None:
    sys.stdout.write(_json.encode(value).decode() + "\n")


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def ago(ts: float | None) -> str:
    if ts is None:
        return ""
    delta = max(0.0, time.time() - ts)
    if delta < 60:
        return f"{delta:.0f}s"
    if delta < 3600:
        return f"{delta / 60:.0f}m"
    return f"{delta / 3600:.1f}h"


def counts_cell(c: dict[str, int]) -> str:
    queued = f", {c['queued']} queued" if c.get("queued") else ""
    return f"{c['active']} active{queued}, {c['completed']} done, {c['failed']} failed, {c['spawned']} spawned"


def agent_rows(agents: Iterable[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for a in agents:
        exit = a.get("exit") or {}
        outcome = ""
        if exit:
            outcome = f"code={exit.get('code')}" if exit.get("code") is not None else ""
            if exit.get("signal") is not None:
                outcome = f"signal={exit['signal']}"
            outcome = f"{outcome} ({exit.get('decided_by')})".strip()
        rows.append([a["id"], a["state"], a.get("activity") or "", f"{a.get('progress', 0)}%",
                     ago(a.get("updated_at")), outcome, (a.get("message") or "")[:50]])
    return rows


AGENT_HEADERS: Final = ["AGENT", "STATE", "ACTIVITY", "PROGRESS", "UPDATED", "EXIT", "MESSAGE"]


def indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())
