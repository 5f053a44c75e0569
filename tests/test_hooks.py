"""Hooks (``[[hooks]]``): the real daemon runs a program with the event as JSON on stdin when
a committed event matches; bounded in time, deduplicated, rate-limited per agent, and never
fatal. Plus the runner in-process, for what a daemon cannot be made to do on demand."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from supervisord_agents.actor import Hub
from supervisord_agents.config import Config, Hook, Settings, load_config
from supervisord_agents.errors import InvalidParams
from supervisord_agents.hooks import HookRunner
from supervisord_agents.model import AgentState, Event, EventKind
from tests.harness import DaemonProcess, alive, eventually

#: A hook: append its stdin to the file named by its first argument (and its pid to the second).
RECORDER = """\
import os, sys
if len(sys.argv) > 2:
    with open(sys.argv[2], "a") as f:
        f.write(f"{os.getpid()}\\n")
data = sys.stdin.buffer.read()
with open(sys.argv[1], "ab") as f:
    f.write(data)
"""


def toml_list(items: list[str]) -> str:
    return json.dumps(items)


def start(d: DaemonProcess, hooks: str) -> DaemonProcess:
    (d.base / "recorder.py").write_text(RECORDER)
    (d.base / "config.toml").write_text(hooks)
    return d.start()


def recorded(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def full_log(d: DaemonProcess) -> str:
    return d.log_path.read_text(errors="replace")


def hooks_health(d: DaemonProcess) -> dict[str, int]:
    stats: dict[str, int] = d.call("daemon.health")["hooks"]
    return stats


@pytest.fixture
def d() -> Iterator[DaemonProcess]:
    daemon = DaemonProcess()
    try:
        yield daemon
    finally:
        daemon.close()


def test_a_failed_agent_runs_its_hook_with_the_event_as_json(d: DaemonProcess) -> None:
    """A hook on agent:failed runs once for the agent that failed, with that agent_state event
    as one JSON line on stdin; an agent that completed runs nothing."""
    out = d.base / "out.jsonl"
    start(d, f"""
[[hooks]]
name = "on-failure"
on = ["agent:failed"]
argv = {toml_list([sys.executable, str(d.base / "recorder.py"), str(out)])}
""")
    task_id = d.create_task()
    ok = d.spawn_fake(task_id, "fine")["id"]
    d.wait_state(ok)
    bad = d.spawn_fake(task_id, "broken", "--exit", "3")["id"]
    d.wait_state(bad)
    [event] = eventually(lambda: recorded(out), 30, "the hook's record")
    assert event["kind"] == "agent_state" and event["state"] == "failed"
    assert event["agent_id"] == bad and event["task_id"] == task_id
    assert event["data"]["exit"]["code"] == 3 and event["data"]["id"] == bad
    eventually(lambda: hooks_health(d)["ran"] == 1 and hooks_health(d)["running"] == 0, 10, "counted")
    time.sleep(0.5)
    assert len(recorded(out)) == 1 and hooks_health(d) == {"ran": 1, "failed": 0, "dropped": 0, "running": 0}
    assert '"event":"hook_ran"' in full_log(d) and '"hook":"on-failure"' in full_log(d)


def test_a_hook_that_hangs_is_killed_at_its_timeout_and_the_daemon_goes_on(d: DaemonProcess) -> None:
    """A hook that never ends is killed (with what it started) at its timeout, logged and
    counted as failed; meanwhile and after, the daemon serves and runs the next hook."""
    pids = d.base / "pids"
    (d.base / "hang.py").write_text(
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n{{child.pid}}\\n')\n"
        "time.sleep(120)\n")
    start(d, f"""
[[hooks]]
name = "hangs"
on = ["task_created"]
argv = {toml_list([sys.executable, str(d.base / "hang.py")])}
timeout = 1.0
""")
    began = time.monotonic()
    d.create_task()

    def started() -> list[int]:
        found = [int(p) for p in pids.read_text().split()] if pids.exists() else []
        return found if len(found) == 2 else []

    hook_pid, child_pid = eventually(started, 20, "the hook started")
    assert alive(hook_pid) and alive(child_pid)
    assert d.call("daemon.health")["ok"]  # served while the hook hangs
    eventually(lambda: hooks_health(d)["failed"] == 1, 20, "the hook timed out")
    assert time.monotonic() - began < 15
    eventually(lambda: not alive(hook_pid) and not alive(child_pid), 10, "the hook and its child killed")
    assert '"event":"hook_timed_out"' in full_log(d)
    d.create_task()  # the next event runs the hook again: nothing is stuck
    eventually(lambda: hooks_health(d)["ran"] == 2, 20, "the next run")
    assert hooks_health(d)["running"] <= 1


def test_a_flood_from_one_agent_is_rate_limited_per_agent(d: DaemonProcess) -> None:
    """30 progress reports from one agent run a progress hook 3 times (the limit per agent per
    minute); the other 27 are dropped and counted, said once in the log; another agent's
    reports still run it."""
    d.settings["hooks_per_agent_per_minute"] = "3"
    out = d.base / "out.jsonl"
    start(d, f"""
[[hooks]]
on = ["progress"]
argv = {toml_list([sys.executable, str(d.base / "recorder.py"), str(out)])}
""")
    task_id = d.create_task()
    noisy = d.spawn_fake(task_id, "noisy", "--sleep", "60")["id"]
    quiet = d.spawn_fake(task_id, "quiet", "--sleep", "60")["id"]
    with d.client() as c:
        for i in range(30):
            c.request("agent.progress", agent_id=noisy, message=f"step {i}", percent=i)
        c.request("agent.progress", agent_id=quiet, message="once")
    eventually(lambda: len(recorded(out)) == 4 and hooks_health(d)["running"] == 0, 30, "4 runs")
    runs = recorded(out)
    assert sorted(e["data"]["message"] for e in runs) == ["once", "step 0", "step 1", "step 2"]
    assert len({e["seq"] for e in runs}) == 4
    assert hooks_health(d) == {"ran": 4, "failed": 0, "dropped": 27, "running": 0}
    assert full_log(d).count('"event":"hook_rate_limited"') == 1
    assert "hooks     4 ran, 0 failed, 27 dropped, 0 running" in d.agentctl("health").stdout


def test_a_bad_argv_is_logged_not_fatal(d: DaemonProcess) -> None:
    """A hook whose program does not exist, or that exits non-zero, is logged and counted as
    failed; the daemon keeps serving and keeps running the other hooks."""
    out = d.base / "out.jsonl"
    start(d, f"""
[[hooks]]
name = "missing"
on = ["task_created"]
argv = ["/nonexistent/hook", "--flag"]

[[hooks]]
name = "exits-2"
on = ["task_created"]
argv = {toml_list([sys.executable, "-c", "import sys; print('no good'); sys.exit(2)"])}

[[hooks]]
name = "works"
on = ["task_created"]
argv = {toml_list([sys.executable, str(d.base / "recorder.py"), str(out)])}
""")
    d.create_task()
    eventually(lambda: hooks_health(d) == {"ran": 3, "failed": 2, "dropped": 0, "running": 0}, 20, "three runs")
    assert len(recorded(out)) == 1
    log = full_log(d)
    assert '"hook":"missing"' in log and "/nonexistent/hook" in log
    assert '"code":2' in log and "no good" in log
    assert d.call("daemon.health")["ok"]


def test_an_unknown_selector_or_a_hook_without_argv_refuses_the_config(tmp_path: Path) -> None:
    """The config is checked at load: a selector that names no event kind or agent state, and
    a command hook without an argv, are refused with the reason (not silently never run)."""
    path = tmp_path / "config.toml"
    path.write_text('[[hooks]]\non = ["agent:faild"]\nargv = ["true"]\n')
    with pytest.raises(InvalidParams, match=r"hooks\[0\].*agent:faild.*agent:<state>"):
        load_config(path, {})
    path.write_text('[[hooks]]\non = ["task_closed"]\n')
    with pytest.raises(InvalidParams, match="needs an argv"):
        load_config(path, {})
    path.write_text('[[hooks]]\non = ["agent:lost", "daemon_downtime", "finding"]\nkind = "notify"\n')
    assert load_config(path, {}).hooks[0].on == ["agent:lost", "daemon_downtime", "finding"]


def test_notify_runs_notify_send_with_the_events_summary(d: DaemonProcess) -> None:
    """kind = "notify" runs notify-send (found on the daemon's PATH) with a title and the
    event's one-line summary as arguments; without it, one log line and the runs are dropped."""
    fake_bin = d.base / "bin"
    fake_bin.mkdir()
    calls = d.base / "notify-calls"
    notify = fake_bin / "notify-send"
    notify.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    notify.chmod(0o755)
    d.extra_env["PATH"] = f"{fake_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    (d.base / "config.toml").write_text('[[hooks]]\nkind = "notify"\non = ["agent:failed"]\n')
    d.start()
    task_id = d.create_task()
    bad = d.spawn_fake(task_id, "broken", "--exit", "3")["id"]
    d.wait_state(bad)
    line = eventually(lambda: calls.exists() and calls.read_text(), 20, "a notification")
    app, sep, title, body = json.loads(line)
    assert (app, sep) == ("--app-name=supervisord-agents", "--")
    assert title == f"supervisord-agents: agent_state {bad}"
    assert body.startswith("failed: ")


def test_notify_without_a_tool_says_so_once(d: DaemonProcess) -> None:
    """Where neither notify-send nor osascript is on the daemon's PATH, notify hooks are
    skipped: one log line, the runs counted as dropped, the daemon unharmed."""
    empty = d.base / "empty-bin"
    empty.mkdir()
    d.extra_env["PATH"] = str(empty)
    d.settings["tmux"] = shutil.which("tmux") or "tmux"  # the daemon's PATH no longer finds it
    (d.base / "config.toml").write_text('[[hooks]]\nkind = "notify"\non = ["task_created"]\n')
    d.start()
    d.create_task()
    d.create_task()
    eventually(lambda: hooks_health(d)["dropped"] == 2, 20, "two skipped")
    assert full_log(d).count('"event":"hook_notify_unavailable"') == 1
    assert hooks_health(d)["ran"] == 0


# --- the runner in-process ----------------------------------------------------------------


def event(seq: int, agent_id: str | None = "worker-120000-abcdef") -> Event:
    return Event(seq=seq, at=time.time(), kind=EventKind.AGENT_STATE, task_id="TASK-20260101-120000-abcdef12",
                 agent_id=agent_id, state=AgentState.FAILED)


async def test_the_same_event_runs_a_hook_once(tmp_path: Path) -> None:
    """An event published again (a resubscription's replay would) does not run its hooks
    again: each hook runs at most once per event sequence number."""
    out = tmp_path / "out"
    (tmp_path / "recorder.py").write_text(RECORDER)
    hook = Hook(on=["agent:failed"], argv=[sys.executable, str(tmp_path / "recorder.py"), str(out)])
    hub = Hub()
    runner = HookRunner(hub, Settings(Config(hooks=[hook])))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        hub.publish([event(1), event(2)])
        hub.publish([event(2), event(1)])
        hub.publish([event(3)])
        with trio.fail_after(20):
            while runner.ran < 3 or runner.running:
                await trio.sleep(0.02)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert sorted(e["seq"] for e in recorded(out)) == [1, 2, 3]
    assert runner.stats().ran == 3 and runner.stats().failed == 0
