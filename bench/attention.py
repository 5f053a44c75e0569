"""Attention (issue 17): how soon a hook starts after its event, and what ``agentctl top``
costs with 1,000 agents and 100 events a second.

**Hooks.** A ``[[hooks]]`` entry on ``agent:failed`` whose program is ``bash``, noting
``$EPOCHREALTIME`` as its first act, then the event it was given on stdin. Agents that
exit 3 at once are spawned 20 a second; each failure is one event and one run. Latency is
the run's start (bash's own start included, about a millisecond) minus the event's ``at``
(when the actor applied it, before its commit). Goal: p50 and p99 under 50 ms.

**top.** ``agentctl top`` runs in a 160x45 pane of a tmux server of the bench's own,
through :mod:`bench.top_probe`, which times each frame (taking the events that arrived and
marking their rows) and each redraw (urwid rendering the changed rows and writing them out)
from the outside, by wrapping those two methods. The daemon holds 1,000 live agents: agents
asleep between attempts (one task, a back-off of an hour) and 10 "chatters" (another task),
each reporting progress 10 times a second through its own identity (``bench/chatter.py``),
which makes 100 ``progress`` events a second. Figures are over a window that starts once
every chatter runs; CPU is the view's process from ``/proc``. Goal: under 10 % of one core.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sleepers import _cpu_seconds, _ms, _pct, _sleeping_task, _spawn, _wait_sleeping
from tests.harness import BIN, ROOT, DaemonProcess, eventually

Row = tuple[str, str, str]

FAIL = ["sh", "-c", "exit 3"]


# -- hooks ------------------------------------------------------------------------------


def bench_hooks(quick: bool) -> list[Row]:
    n = 40 if quick else 200
    runs = Path(tempfile.mkdtemp(prefix="sa-bench-hooks-"))
    d = DaemonProcess(reconcile_interval=2.0, kill_grace=1)
    # One file per run: the script names it once ($RANDOM is read once per expansion, so
    # the name is fixed in a variable first).
    script = 'f="$0/$$.$RANDOM"; printf "%s\\n" "$EPOCHREALTIME" > "$f"; cat >> "$f"'
    (d.base / "config.toml").write_text(
        f'[[hooks]]\non = ["agent:failed"]\nargv = ["bash", "-c", {json.dumps(script)}, {json.dumps(str(runs))}]\n'
        "timeout = 10.0\n")
    try:
        d.start()
        task = d.create_task(limits={"max_total": n + 10, "max_concurrent": n + 10})
        with d.client() as c:
            for i in range(n):
                c.request("agent.spawn", task_id=task, type=f"failing{i}", argv=FAIL, provider="command")
                time.sleep(0.05)
        done = eventually(lambda: len(list(runs.iterdir())) >= n and all(
            f.read_text().count("\n") >= 2 for f in runs.iterdir()), 120, f"{n} hook runs")
        assert done
        late = []
        for f in runs.iterdir():
            started, line = f.read_text().split("\n", 1)
            late.append(float(started) - json.loads(line)["at"])
        stats = d.call("daemon.health").get("hooks", {})
    finally:
        d.close()
        shutil.rmtree(runs, ignore_errors=True)
    note = (f"{n} agent:failed events, one every ~50 ms; bash notes its start first; "
            f"max {_ms(max(late))}; runs: {json.dumps(stats, sort_keys=True)}")
    return [("event -> hook started, p50 (goal < 50 ms)", _ms(_pct(late, 0.5)), note),
            ("event -> hook started, p99 (goal < 50 ms)", _ms(_pct(late, 0.99)), "")]


# -- top --------------------------------------------------------------------------------


def bench_top(quick: bool) -> list[Row]:
    sleepers, chatters, rate, window = (190, 10, 10.0, 5.0) if quick else (990, 10, 10.0, 20.0)
    d = DaemonProcess(global_max_concurrent=2000, reconcile_interval=2.0, kill_grace=1)
    folder = Path(tempfile.mkdtemp(prefix="sa-bench-top-", dir="/tmp"))
    tmux = ["tmux", "-S", str(folder / "tmux.sock"), "-f", "/dev/null"]
    stats_file = folder / "frames.json"
    try:
        d.start()
        # The chatters' task first: the view lists tasks oldest first, so their rows are on screen.
        chatting = d.create_task(limits={"max_concurrent": chatters, "max_total": chatters})
        asleep = _sleeping_task(d, 3600.0)
        _spawn(d, asleep, "sleeper", sleepers)
        _wait_sleeping(d, asleep, sleepers)

        env = {**d.env, "TERM": "xterm-256color", "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        env.pop("TMUX", None)
        subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "45", sys.executable, "-m", "bench.top_probe",
                        str(stats_file)], env=env, cwd=ROOT, check=True, capture_output=True)
        pid = int(subprocess.run([*tmux, "display-message", "-p", "#{pane_pid}"], capture_output=True, text=True,
                                 check=True).stdout)
        eventually(lambda: "agentctl top" in _screen(tmux), 60, "agentctl top on screen")

        chatter = str(ROOT / "bench" / "chatter.py")
        ids = [d.call("agent.spawn", task_id=chatting, type=f"chatter{i}", provider="command",
                      argv=[sys.executable, chatter, str(rate)])["id"] for i in range(chatters)]
        eventually(lambda: all(d.call("agent.get", agent_id=i)["state"] == "running" for i in ids), 60,
                   "the chatters running")
        time.sleep(1.0)  # every chatter past its start
        start, cpu0 = time.monotonic(), _cpu_seconds(pid)
        time.sleep(window)
        end, cpu1 = time.monotonic(), _cpu_seconds(pid)
        screen = _screen(tmux)
        assert screen.count("chatting") >= chatters, screen
        subprocess.run([*tmux, "send-keys", "q"], check=True)
        written = eventually(lambda: stats_file.exists() and stats_file.read_text(), 30, "the probe's figures")
        frames = json.loads(written)
        for agent_id in ids:
            d.call("agent.kill", agent_id=agent_id)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
        d.close()
        shutil.rmtree(folder, ignore_errors=True)

    def within(samples: list[list[float]]) -> list[float]:
        return [took for at, took in samples if start <= at <= end]

    applied = within(frames["frames"])
    drawn = within(frames["draws"])
    events = sum(n for at, n in frames["events"] if start <= at <= end)
    seconds = end - start
    assert applied and drawn, f"no frame in the window: {frames} {screen}"
    total = frames["agents"][-1] if frames["agents"] else 0
    note = (f"{total} agents shown ({sleepers} asleep, {chatters} chatting), {events / seconds:.0f} events/s "
            f"over {seconds:.0f} s, their rows on screen; {len(applied) / seconds:.1f} frames/s, "
            f"{len(drawn) / seconds:.1f} redraws/s (ticks and wake-ups included)")
    return [("top: CPU of one core (goal < 10 %)", f"{(cpu1 - cpu0) / seconds * 100:.1f} %", note),
            ("top: frame (apply events) p50 / p99", f"{_ms(_pct(applied, 0.5))} / {_ms(_pct(applied, 0.99))}", ""),
            ("top: redraw p50 / p99", f"{_ms(_pct(drawn, 0.5))} / {_ms(_pct(drawn, 0.99))}",
             "urwid renders the rows on screen that changed and writes the difference to the terminal")]


def _screen(tmux: list[str]) -> str:
    return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=False).stdout
