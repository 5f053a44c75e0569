"""A faithful model of the old orchestrator's registry, for comparison.

The old system kept each task's registry as one JSON file (agent records of ~25 fields)
that every process read, modified and rewrote whole for every update, under an
exclusive ``fcntl.flock`` where the lock helpers were used, and without one on the hot
paths (old-orchestrator.md, section 6, A1-A3): truncate and rewrite in place, no temp
file and rename, no fsync.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path
from typing import Any


def agent_record(i: int) -> dict[str, Any]:
    """One agent record shaped like the old registry's (25 fields)."""
    now = time.time()
    return {
        "id": f"worker-{i:06d}-abcdef", "type": "worker", "tmux_session": f"agent_worker-{i:06d}",
        "parent": "orchestrator", "depth": 1, "phase_index": 0, "status": "running",
        "started_at": now, "last_update": now, "progress": 0, "message": "", "model": "claude-opus",
        "effort": "medium", "prompt_preview": "Review the parser for off-by-one errors " * 3,
        "claude_pid": 10_000 + i, "cursor_pid": None, "log_file": f"logs/worker-{i:06d}_stream.jsonl",
        "progress_file": f"progress/worker-{i:06d}_progress.jsonl", "findings_count": 0,
        "completed_at": None, "exit_code": None, "validation": {"warnings": [], "checked": False},
        "workspace": "/home/user/.agent-workspace/TASK-20251001-120000-abcdef12", "backend": "claude",
        "updates": 0,
    }


def create(path: Path, agents: int) -> None:
    registry = {
        "task_id": "TASK-20251001-120000-abcdef12", "description": "benchmark task", "status": "ACTIVE",
        "priority": "P2", "created_at": time.time(), "max_agents": 45, "max_concurrent": 20, "max_depth": 5,
        "total_spawned": agents, "active_count": agents, "completed_count": 0,
        "agents": [agent_record(i) for i in range(agents)],
        "agent_hierarchy": {"orchestrator": [f"worker-{i:06d}-abcdef" for i in range(agents)]},
    }
    path.write_text(json.dumps(registry, indent=2))


def update(path: Path, index: int, *, lock: bool = True) -> None:
    """One progress update: read the whole file, change one record, rewrite it in place."""
    with path.open("r+") as f:
        if lock:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            registry = json.loads(f.read())
            record = registry["agents"][index]
            record["updates"] += 1
            record["progress"] = min(100, record["updates"])
            record["message"] = f"update {record['updates']}"
            record["last_update"] = time.time()
            f.seek(0)
            f.truncate()
            f.write(json.dumps(registry, indent=2))
            f.flush()
        finally:
            if lock:
                fcntl.flock(f, fcntl.LOCK_UN)


def read_status(path: Path) -> int:
    """The old status query: parse the whole file, count the active agents."""
    registry = json.loads(path.read_text())
    return sum(a["status"] in ("running", "working", "blocked") for a in registry["agents"])


def count_updates(path: Path) -> tuple[int | None, bool]:
    """(sum of the agents' update counters, whether the file still parses)."""
    try:
        registry = json.loads(path.read_text())
    except (ValueError, OSError):
        return None, False
    return sum(a["updates"] for a in registry["agents"]), True


def writer(path: str, index: int, count: int, lock: bool) -> int:
    """Run ``count`` updates of agent ``index``; return how many raised (a torn read)."""
    errors = 0
    for _ in range(count):
        try:
            update(Path(path), index, lock=lock)
        except (ValueError, KeyError, OSError):
            errors += 1
    return errors


