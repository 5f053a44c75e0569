"""Sleeping agents (issue 16): what many agents asleep between attempts cost a daemon that
has nothing else to do, and how late the waker fires 100 timers due at the same instant.

The sleepers are made the ordinary way: a task whose policy restarts on failure, agents
that exit 3 at once, so each ends its first attempt and sleeps for the back-off (its own
jittered ``wake_at``). Goals: under 1 % of one core while idle with 1,000 asleep, and a
wake-up p99 under 100 ms for 100 due together.

The back-off's jitter (up to 25 %, fixed per agent) keeps agents that failed together from
waking together, so the ordinary path never makes 100 timers due at one instant. For that
figure the daemon is stopped, 100 of the sleepers' rows get one ``wake_at`` (written
straight into the store, as ``seed`` in ``__main__`` writes history), and the daemon is
started again: it hands every sleeper to the waker as it starts, and the 100 fire together.
A second figure takes the ordinary path: 100 agents with a 2 s back-off, each wake measured
against its own ``wake_at`` (spread over the seconds their spawns take, and the jitter's half
second).

Lateness is the ``at`` of the agent's event that leaves ``sleeping`` (the time the actor
applied the ``Wake``) minus its ``wake_at``; the note gives the time a subscribed client
received that event, after its commit, too.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from supervisord_agents.clients.client import Client
from supervisord_agents.errors import SupervisorError
from supervisord_agents.model import AgentState
from supervisord_agents.store import Batch, Store
from tests.harness import DaemonProcess

Row = tuple[str, str, str]
FAIL = ["sh", "-c", "exit 3"]  # every attempt fails: the first sleeps, the second gives up
WOKEN = (AgentState.STARTING, AgentState.QUEUED)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of the whole process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _idle_cpu(pid: int, seconds: float) -> float:
    """The share of one core the process used over ``seconds`` of wall time."""
    c0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def _sleeping_task(d: DaemonProcess, backoff: float) -> str:
    return d.create_task(limits={"max_total": 2000, "max_concurrent": 1000},
                         policy={"restart": "on-failure", "max_attempts": 2, "backoff": backoff,
                                 "backoff_max": backoff})


def _spawn(d: DaemonProcess, task: str, prefix: str, n: int) -> list[str]:
    """Spawn ``n`` agents that fail, from 8 threads, each with a connection of its own."""
    local, clients = threading.local(), []

    def one(i: int) -> str:
        if not hasattr(local, "client"):
            local.client = d.client()
            clients.append(local.client)
        return str(local.client.request("agent.spawn", task_id=task, type=f"{prefix}{i}", argv=FAIL,
                                        provider="command")["id"])

    try:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for client in clients:
            client.close()


def _wait_sleeping(d: DaemonProcess, task: str, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (counts := d.call("task.get", task_id=task)["counts"])["sleeping"] < n:
        assert time.monotonic() < deadline, f"{n} agents not asleep after {timeout} s: {counts}"
        time.sleep(0.1)


class Watch:
    """A client subscribed to one task's events on a thread: each agent's ``wake_at`` (from
    its event entering ``sleeping``, or given), and when it left ``sleeping``."""

    def __init__(self, d: DaemonProcess, task: str, since: int | None = None,
                 wake_at: dict[str, float] | None = None) -> None:
        self.wake_at: dict[str, float] = dict(wake_at or {})
        self.woke: dict[str, tuple[float, float]] = {}  # agent id: (event's at, received at)
        self._client = Client(d.socket, timeout=600)
        self._stream = self._client.events(task_id=task, since=since)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                if event.kind != "agent_state" or event.agent_id is None:
                    continue
                if event.state is AgentState.SLEEPING:
                    self.wake_at[event.agent_id] = event.data["wake_at"]
                elif event.state in WOKEN and event.agent_id in self.wake_at and event.agent_id not in self.woke:
                    self.woke[event.agent_id] = (event.at, time.time())
        except (OSError, SupervisorError):
            pass  # closed by lateness() once every wake is in

    def lateness(self, n: int, timeout: float) -> tuple[list[float], list[float]]:
        """Once ``n`` have woken: how late each was applied, and received, after its ``wake_at``."""
        deadline = time.monotonic() + timeout
        while len(self.woke) < n:
            assert time.monotonic() < deadline, f"{len(self.woke)} of {n} woke within {timeout} s"
            time.sleep(0.05)
        self._client.close()
        applied = [at - self.wake_at[a] for a, (at, _) in self.woke.items()]
        received = [seen - self.wake_at[a] for a, (_, seen) in self.woke.items()]
        return applied, received


def _figure(samples: list[float]) -> str:
    return f"p50 {_ms(_pct(samples, .5))}, p99 {_ms(_pct(samples, .99))}, max {_ms(max(samples))}"


def bench_sleepers(quick: bool) -> list[Row]:
    sleepers, together, window = (300, 100, 3.0) if quick else (1_000, 100, 15.0)
    # The daemon's own reconcile interval (the harness's is 0.5 s, for tests), so idle is idle.
    d = DaemonProcess(global_max_concurrent=2000, reconcile_interval=2.0, kill_grace=1)
    rows: list[Row] = []
    try:
        d.start()
        assert d.proc is not None
        rss_empty, cpu_empty = _rss_mb(d.proc.pid), _idle_cpu(d.proc.pid, window)

        # (a) many asleep, the daemon otherwise idle.
        task = _sleeping_task(d, 3600.0)
        t0 = time.perf_counter()
        ids = _spawn(d, task, "s", sleepers)
        _wait_sleeping(d, task, sleepers)
        made = time.perf_counter() - t0
        time.sleep(2.0)  # the last attempts' cleanup done, the burst's reconcile passes over
        pid = d.proc.pid
        rss_asleep, cpu_asleep = _rss_mb(pid), _idle_cpu(pid, window)
        tick = 1 / (window * os.sysconf("SC_CLK_TCK"))
        rows += [
            (f"daemon RSS, {sleepers:,} agents sleeping on timers", f"{rss_asleep:,.1f} MB",
             f"{rss_empty:,.1f} MB with none; {(rss_asleep - rss_empty) * 1024 / sleepers:,.1f} kB a sleeper; "
             f"made the ordinary way ({sleepers:,} spawns that exit 3, {made:.0f} s)"),
            (f"daemon CPU while idle, {sleepers:,} sleeping", f"{cpu_asleep * 100:.2f} % of one core",
             f"goal < 1 %; {window:g} s of /proc utime+stime (a clock tick is {tick * 100:.2f} %); "
             f"{cpu_empty * 100:.2f} % with none; reconcile every 2 s (the default)"),
        ]

        # (b) the ordinary path: 100 wake-ups spread by the jitter, among the sleepers above.
        if not quick:
            near = _sleeping_task(d, 2.0)
            watch = Watch(d, near)
            _spawn(d, near, "n", together)
            applied, received = watch.lateness(together, 120)
            spread = max(watch.wake_at.values()) - min(watch.wake_at.values())
            rows.append((f"wake-up lateness, {together} agents with a 2 s back-off ({sleepers:,} more asleep)",
                         _figure(applied), f"each against its own `wake_at` (spread over {spread:.2f} s); "
                         f"received by a subscribed client: {_figure(received)}"))

        # (c) 100 timers due at one instant: rows rewritten while the daemon is stopped.
        d.stop()
        store = Store(d.state_dir / "state.sqlite3")
        store.open()
        try:
            chosen = set(ids[:together])
            mine = [a for a in store.load().agents if a.id in chosen]
            assert len(mine) == together, f"{len(mine)} of the {together} chosen sleepers in the store"
            due = time.time() + (3.0 if quick else 5.0)  # the restart takes well under that
            store.commit(Batch(events=[], tasks=[], agents=[msgspec.structs.replace(a, wake_at=due) for a in mine],
                               findings=[]))
        finally:
            store.close()
        t0 = time.perf_counter()
        d.start()
        startup = time.perf_counter() - t0
        margin = due - time.time()
        watch = Watch(d, task, since=d.call("daemon.health")["last_seq"], wake_at=dict.fromkeys(chosen, due))
        applied, received = watch.lateness(together, 120)
        rss_loaded = _rss_mb(d.proc.pid)
        rows += [
            (f"wake-up lateness, {together} agents due at the same instant ({sleepers - together:,} more asleep)",
             _figure(applied), f"goal p99 < 100 ms; received by a subscribed client: {_figure(received)}; "
             f"their `wake_at` set in the store, the daemon restarted ({startup:.1f} s, ready {margin:.1f} s "
             f"before)"),
            (f"daemon RSS after that restart, {sleepers:,} sleepers loaded", f"{rss_loaded:,.1f} MB",
             f"{together} of them woken and failed for good"),
        ]
    finally:
        d.close()
    return rows

