"""Memory follows live work: settled agents and closed tasks leave memory and stay readable,
every list pages, findings have quotas, closed tasks' history can be purged (DESIGN section 11).

The store's queries are checked against the pure definition (:func:`image_of` of every row)
over random histories; the rest runs against the real daemon over its socket.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from supervisord_agents.commands import EventKind
from supervisord_agents.errors import SupervisorError
from supervisord_agents.model import (
    Agent,
    AgentState,
    CleanupRecord,
    DecidedBy,
    Exit,
    Finding,
    Limits,
    Severity,
    Task,
    TmuxIds,
)
from supervisord_agents.registry import (
    CloseTask,
    CreateTask,
    Exited,
    PurgeTask,
    RecordCleanup,
    Registry,
    ReportFinding,
    SpawnAgent,
    Started,
    image_of,
)
from supervisord_agents.store import Batch, Store
from tests.harness import DaemonProcess, eventually

T0 = 1_700_000_000.0


# --- the store's image is the image of every row ----------------------------------------


class Stored:
    """A registry whose every change is committed to a real store, as the actor does."""

    def __init__(self, path: Path) -> None:
        self.reg = Registry(global_max_concurrent=1000)
        self.store = Store(path)
        self.store.open()
        self.now = T0
        self.n = 0

    def apply(self, command: Any) -> Any:
        self.now += 1.0
        try:
            applied = self.reg.apply(command, self.now)
        except SupervisorError:
            return None
        tasks, agents, purged = self.reg.take_changes()
        findings = [e.data for e in applied.events if e.kind is EventKind.FINDING]
        self.store.commit(Batch(events=applied.events, tasks=tasks, agents=agents, findings=findings, purged=purged))
        return applied.result

    def rows(self) -> tuple[list[Task], list[Agent], list[Finding]]:
        """Every row the store has (read directly, not through its queries)."""
        db = sqlite3.connect(self.store.path)
        try:
            def all_of(table: str, kind: type[Any]) -> list[Any]:
                return [msgspec.msgpack.decode(r[0], type=kind) for r in db.execute(f"SELECT data FROM {table}")]

            return all_of("tasks", Task), all_of("agents", Agent), all_of("findings", Finding)
        finally:
            db.close()


def _normal(image: Any) -> Any:
    return (sorted(t.id for t in image.tasks), sorted(a.id for a in image.agents), sorted(map(repr, image.settled)),
            image.totals, image.findings, image.last_seq)


def _random_history(w: Stored, rng: random.Random, steps: int) -> None:
    for _ in range(steps):
        live = [a for a in w.reg.agents.values() if a.state.live]
        ended = [a for a in w.reg.agents.values() if a.state.terminal]
        tasks = list(w.reg.tasks.values())
        roll = rng.random()
        if roll < 0.08 or not tasks:
            w.n += 1
            w.apply(CreateTask(Task(id=f"TASK-20240101-000000-{w.n:08x}", description="t", created_at=0.0,
                                    limits=Limits(max_concurrent=50, max_total=500, max_depth=4, max_findings=8))))
        elif roll < 0.35:
            task = rng.choice(tasks)
            parents = [a for a in live if a.task_id == task.id and a.state is AgentState.RUNNING]
            parent = rng.choice(parents) if parents and rng.random() < 0.5 else None
            w.n += 1
            w.apply(SpawnAgent(Agent(id=f"w{w.n % 7}-000000-{w.n:06x}", task_id=task.id, type=f"w{w.n % 7}",
                                     parent=None if parent is None else parent.id, created_at=0.0, updated_at=0.0)))
        elif roll < 0.5 and live:
            agent = rng.choice(live)
            k = w.n = w.n + 1
            w.apply(Started(agent.id, TmuxIds(session_id=f"${k}", window_id=f"@{k}", pane_id=f"%{k}", pane_pid=k)))
        elif roll < 0.65 and live:
            cost = rng.choice([None, 0.1, 0.25, 1e-9])
            w.apply(Exited(rng.choice(live).id, Exit(decided_by=DecidedBy.EXIT_STATUS, code=rng.choice([0, 1]),
                                                     cost_usd=cost)))
        elif roll < 0.8 and ended:
            w.apply(RecordCleanup(rng.choice(ended).id, CleanupRecord(ok=rng.random() < 0.8, at=w.now)))
        elif roll < 0.9:
            task = rng.choice(tasks)
            w.apply(ReportFinding(task_id=task.id, agent_id=None, type="note", severity=Severity.LOW,
                                  message="m" * rng.randrange(1, 50), data={"k": rng.random()}))
        elif roll < 0.95:
            w.apply(CloseTask(rng.choice(tasks).id))
        else:
            stored = {t.id for t in w.rows()[0]} - set(w.reg.tasks)
            if stored:
                task_id = rng.choice(sorted(stored))
                states: dict[AgentState, int] = {}
                for a in w.rows()[1]:
                    if a.task_id == task_id:
                        states[a.state] = states.get(a.state, 0) + 1
                w.apply(PurgeTask(task_id=task_id, settled=states))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_stores_image_is_the_image_of_every_row(tmp_path: Path, seed: int) -> None:
    """Over a random history (settling agents, closing and purging tasks), what Store.load reads with its
    queries equals image_of(every row), and a registry loaded from it counts exactly what the live one does."""
    w = Stored(tmp_path / "db.sqlite3")
    _random_history(w, random.Random(seed), 400)
    tasks, agents, findings = w.rows()
    assert len(w.reg.agents) < len(agents), "nothing settled: the history proves nothing"
    image = w.store.load()
    assert _normal(image) == _normal(image_of(tasks, agents, findings, w.reg.last_seq))
    fresh = Registry(global_max_concurrent=1000)
    fresh.load(image)
    assert fresh.counts() == w.reg.counts()
    for task_id in w.reg.tasks:
        assert (fresh.counts(task_id), fresh.cost(task_id)) == (w.reg.counts(task_id), w.reg.cost(task_id))
        assert fresh.findings_use(task_id) == w.reg.findings_use(task_id)
    w.store.close()


def test_a_schema_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A database written by the previous schema (rows as blobs only) opens, is rebuilt with the columns
    the queries need, and loads with every row where it was."""
    path = tmp_path / "db.sqlite3"
    task = Task(id="TASK-20240101-000000-00000001", description="t", created_at=T0)
    done = Agent(id="w-000000-000001", task_id=task.id, type="w", state=AgentState.COMPLETED, created_at=T0,
                 updated_at=T0, exit=Exit(decided_by=DecidedBy.EXIT_STATUS, code=0, cost_usd=0.5),
                 cleanup=CleanupRecord(ok=True, at=T0))
    running = Agent(id="w-000000-000002", task_id=task.id, type="w", state=AgentState.RUNNING, created_at=T0 + 1,
                    updated_at=T0)
    finding = Finding(seq=3, task_id=task.id, type="note", severity=Severity.HIGH, message="hi", at=T0)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE tasks (id TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE agents (id TEXT PRIMARY KEY, task_id TEXT NOT NULL, state TEXT NOT NULL, data BLOB NOT NULL)
            WITHOUT ROWID;
        CREATE TABLE findings (seq INTEGER PRIMARY KEY, task_id TEXT NOT NULL, data BLOB NOT NULL);
        CREATE TABLE events (seq INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, task_id TEXT NOT NULL,
            agent_id TEXT, data BLOB NOT NULL);
        PRAGMA user_version = 1;
    """)
    enc = msgspec.msgpack.encode
    db.execute("INSERT INTO tasks VALUES (?, ?)", (task.id, enc(task)))
    db.executemany("INSERT INTO agents VALUES (?, ?, ?, ?)", [(a.id, a.task_id, a.state.value, enc(a))
                                                             for a in (done, running)])
    db.execute("INSERT INTO findings VALUES (?, ?, ?)", (3, task.id, enc(finding)))
    db.execute("INSERT INTO events VALUES (4, 0, 'finding', ?, NULL, '{}')", (task.id,))
    db.commit()
    db.close()
    store = Store(path)
    store.open()
    image = store.load()
    assert [a.id for a in image.agents] == [running.id]
    assert image.settled == [(task.id, AgentState.COMPLETED, 0.5)] and image.last_seq == 4
    assert store.findings(task_id=task.id, severity="high") == [finding]
    assert store.agent(done.id) == done
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
    store.close()


# --- the daemon -------------------------------------------------------------------------


def _spawn_done(d: DaemonProcess, task_id: str, type: str, **params: Any) -> dict[str, Any]:
    agent = d.call("agent.spawn", task_id=task_id, type=type, argv=["true"], **params)
    return eventually(lambda: (a := d.call("agent.get", agent_id=agent["id"]))["cleanup"] and a,
                      what=f"{agent['id']} cleaned up")


def test_settled_agents_leave_memory_and_stay_readable(daemon: DaemonProcess) -> None:
    """An agent that ended and was cleaned up is no longer held in memory, but every read still finds it
    (get, wait, output, list, task status), a kill is refused as for any ended agent, and counts and ids
    hold across a restart."""
    task_id = daemon.create_task()
    done = [_spawn_done(daemon, task_id, f"w{i}") for i in range(3)]
    eventually(lambda: daemon.call("daemon.health")["agents_held"] == 0, what="agents settle")
    agent = done[0]
    assert daemon.call("agent.get", agent_id=agent["id"])["state"] == "completed"
    assert daemon.call("agent.wait", agent_ids=[a["id"] for a in done], timeout=1)["done"]
    assert daemon.call("agent.output", agent_id=agent["id"])["agent_id"] == agent["id"]
    with daemon.client() as c, pytest.raises(SupervisorError, match="is completed: cannot kill") as info:
        c.request("agent.kill", agent_id=agent["id"])
    assert info.value.code == "illegal_transition"
    status = daemon.call("task.get", task_id=task_id)
    assert status["counts"]["completed"] == status["counts"]["spawned"] == 3
    assert [a["id"] for a in status["agents"]] == [a["id"] for a in done]
    assert [a["id"] for a in daemon.list("agent.list", task_id=task_id)] == [a["id"] for a in done]
    daemon.call("task.close", task_id=task_id)
    health = daemon.call("daemon.health")
    assert health["tasks"] == 0 and health["counts"]["spawned"] == 3
    with daemon.client() as c, pytest.raises(SupervisorError, match="is closed") as info:
        c.request("agent.finding", task_id=task_id, type="note", message="late")
    assert info.value.code == "illegal_transition"
    daemon.stop()
    daemon.start()
    again = daemon.call("daemon.health")
    assert (again["tasks"], again["agents_held"], again["counts"]) == (0, 0, health["counts"])
    assert daemon.call("task.get", task_id=task_id)["counts"] == status["counts"]


def test_every_list_pages_with_a_cursor(daemon: DaemonProcess) -> None:
    """Tasks, agents and findings come a page at a time; following `next` visits every row once, in order,
    and a cursor of one list is refused by another."""
    tasks = [daemon.create_task(description=f"t{i}") for i in range(5)]
    agents = [_spawn_done(daemon, tasks[0], f"w{i}")["id"] for i in range(5)]
    with daemon.client() as c:
        seqs = [f["seq"] for f in c.pipeline("agent.finding", [{"task_id": tasks[1], "type": "n", "message": str(i)}
                                                               for i in range(7)])]
        for method, params, key, expected in [
            ("task.list", {}, lambda x: x["task"]["id"], tasks),
            ("agent.list", {"task_id": tasks[0]}, lambda x: x["id"], agents),
            ("findings.list", {"task_id": tasks[1]}, lambda x: x["seq"], seqs),
        ]:
            pages, cursor = [], None
            while True:
                page = c.request(method, limit=2, **params, **({"cursor": cursor} if cursor else {}))
                pages.append([key(x) for x in page["items"]])
                if (cursor := page.get("next")) is None:
                    break
            assert [x for p in pages for x in p] == expected and all(len(p) == 2 for p in pages[:-1]), method
        wrong = c.request("task.list", limit=1)["next"]
        with pytest.raises(SupervisorError, match="not a cursor of agents") as info:
            c.request("agent.list", cursor=wrong)
        assert info.value.code == "invalid_params"


def test_finding_quotas_refuse_with_a_limit_error(daemon: DaemonProcess) -> None:
    """A task's findings are bounded in count and bytes; past either, a finding is refused naming the limit,
    and nothing of it is kept."""
    task_id = daemon.create_task(limits={"max_findings": 3, "max_findings_bytes": 1000})
    with daemon.client() as c:
        for i in range(3):
            c.request("agent.finding", task_id=task_id, type="n", message=str(i))
        with pytest.raises(SupervisorError, match=r"has 3 findings \(max 3\)") as info:
            c.request("agent.finding", task_id=task_id, type="n", message="one too many")
        assert info.value.code == "limit_exceeded" and info.value.data["limit"] == "max_findings"
        other = daemon.create_task(limits={"max_findings_bytes": 1000})
        c.request("agent.finding", task_id=other, type="n", message="x" * 600)
        with pytest.raises(SupervisorError) as info:
            c.request("agent.finding", task_id=other, type="n", message="y" * 600)
        assert info.value.code == "limit_exceeded" and info.value.data["limit"] == "max_findings_bytes"
    assert len(daemon.list("findings.list", task_id=task_id)) == 3


def test_purge_deletes_a_closed_tasks_history(daemon: DaemonProcess) -> None:
    """`agentctl task purge` deletes a closed task's agents, findings, events and files; an open task, or one
    with agents still to settle, is refused; other tasks and the global counts stay right."""
    keep = daemon.create_task()
    _spawn_done(daemon, keep, "k")
    task_id = daemon.create_task()
    agents = [_spawn_done(daemon, task_id, f"w{i}")["id"] for i in range(2)]
    daemon.call("agent.finding", task_id=task_id, type="n", message="gone soon")
    task_dir = daemon.state_dir / "tasks" / task_id
    assert task_dir.is_dir()
    refused = daemon.agentctl("task", "purge", task_id)
    assert refused.returncode != 0 and "is open" in refused.stderr
    daemon.call("task.close", task_id=task_id)
    eventually(lambda: daemon.call("daemon.health")["agents_held"] == 0, what="agents settle")
    done = daemon.agentctl("task", "purge", task_id)
    assert done.returncode == 0, done.stderr
    assert "2 agents and 1 findings deleted" in done.stdout
    assert not task_dir.exists()
    for method, params in [("task.get", {"task_id": task_id}), ("agent.get", {"agent_id": agents[0]})]:
        with daemon.client() as c, pytest.raises(SupervisorError) as info:
            c.request(method, **params)
        assert info.value.code == "not_found"
    assert daemon.list("findings.list", task_id=keep) == [] and len(daemon.list("agent.list")) == 1
    with daemon.client() as c:
        replay = c.events(since=0, task_id=task_id)
        purged = next(replay)  # the task's only event left is its purge
    assert (purged.kind, purged.data["agents"], purged.data["reason"]) == ("task_purged", 2, "asked")
    assert daemon.call("daemon.health")["counts"]["spawned"] == 1
    daemon.stop()
    daemon.start()
    assert daemon.call("daemon.health")["counts"]["spawned"] == 1


def test_retention_purges_closed_tasks_at_start(tmp_path: Path) -> None:
    """With closed_task_retention_days set, a task closed longer ago than that is purged when the daemon
    starts (and hourly after); an open task is kept."""
    d = DaemonProcess()
    d.start()
    try:
        old = d.create_task()
        _spawn_done(d, old, "w")
        d.call("task.close", task_id=old)
        kept = d.create_task()
        eventually(lambda: d.call("daemon.health")["agents_held"] == 0, what="agents settle")
        d.stop()
        time.sleep(0.2)
        d.settings["closed_task_retention_days"] = str(0.1 / 86400)
        d.start()
        eventually(lambda: [t["task"]["id"] for t in d.list("task.list")] == [kept], what="the old task purged")
        assert not (d.state_dir / "tasks" / old).exists()
        with d.client() as c, pytest.raises(SupervisorError) as info:
            c.request("task.get", task_id=old)
        assert info.value.code == "not_found"
    finally:
        d.close()


def test_resident_memory_does_not_follow_findings(daemon: DaemonProcess) -> None:
    """Findings are stored, not held: 48 MB of findings leave the daemon's resident memory within a fraction
    of that (it held every one before)."""
    task_id = daemon.create_task()
    pid = daemon.call("daemon.health")["pid"]

    def rss() -> int:
        fields = Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()
        return int(fields[0]) * 1024

    before = rss()
    blob = "x" * (900 << 10)
    with daemon.client() as c:
        for i in range(54):
            c.request("agent.finding", task_id=task_id, type="n", message=f"#{i}", data={"blob": blob})
    grown = rss() - before
    assert grown < 16 << 20, f"resident memory grew {grown >> 20} MB for {54 * 900 >> 10} MB of findings"
    assert len(daemon.list("findings.list", task_id=task_id, limit=10)) == 54
