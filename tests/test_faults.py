"""The fault suite: the daemon crashed on purpose, tmux misbehaving, the disk failing,
hostile bytes and hostile clients. After each: nothing acknowledged is lost, nothing
half-applied, no ghost, and the daemon answers.

Bounded for CI; ``SUPERVISORD_AGENTS_SOAK=N`` multiplies the rounds for a local soak.
If ``SUPERVISORD_AGENTS_FAULT_REPORT`` names a file, the figures of the run are written
there as JSON (the README quotes them).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libtmux
import libtmux.exc
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisord_agents.clients.client import Client
from supervisord_agents.errors import IllegalTransition, SupervisorError
from supervisord_agents.protocol import METHODS
from supervisord_agents.tmux import AGENT_MARKER
from tests.harness import DaemonProcess, eventually, short_tmpdir

SOAK = int(os.environ.get("SUPERVISORD_AGENTS_SOAK", "1"))
FIGURES: dict[str, Any] = {}
LIVE = ("queued", "starting", "running", "stopping")
GLOBAL_CAP = 100  # the daemon's default global_max_concurrent


@pytest.fixture(scope="module", autouse=True)
def report_figures() -> Iterator[None]:
    yield
    path = os.environ.get("SUPERVISORD_AGENTS_FAULT_REPORT")
    if path:
        Path(path).write_text(json.dumps(FIGURES, indent=2, sort_keys=True))


def control_clients(d: DaemonProcess) -> list[int]:
    """Pids of the control-mode clients attached to the daemon's tmux server."""
    listing = ["tmux", "-S", str(d.tmux_socket), "list-clients", "-F", "#{client_pid} #{client_control_mode}"]
    out = subprocess.run(listing, capture_output=True, text=True, check=False).stdout
    return [int(pid) for pid, control in (line.split() for line in out.splitlines()) if control == "1"]


def marked_sessions(d: DaemonProcess) -> dict[str, str]:
    """Marker (agent id) -> session id of every marked session, seen through libtmux."""
    found = {}
    try:
        sessions = libtmux.Server(socket_path=str(d.tmux_socket)).sessions
    except libtmux.exc.LibTmuxException:
        return {}
    for session in sessions:
        try:
            marker = session.show_option(AGENT_MARKER)
        except libtmux.exc.LibTmuxException:
            continue
        if marker and session.session_id:
            found[str(marker)] = session.session_id
    return found


def all_findings(d: DaemonProcess) -> list[dict[str, Any]]:
    """Every finding, read page by page."""
    return d.list("findings.list", limit=500)


def snapshot(d: DaemonProcess) -> dict[str, Any]:
    """Everything a client can read of the state."""
    return {
        "tasks": d.list("task.list"),
        "agents": d.list("agent.list"),
        "findings": all_findings(d),
        "last_seq": d.call("daemon.health")["last_seq"],
    }


def recount(agents: list[dict[str, Any]]) -> dict[str, int]:
    states = [a["state"] for a in agents]
    counts = {s: states.count(s) for s in ("queued", "sleeping", "completed", "failed", "killed", "lost")}
    waiting = sum(a["state"] in LIVE and bool(a.get("approvals")) for a in agents)
    return {"active": sum(s in LIVE and s not in ("queued", "sleeping") for s in states), **counts,
            "awaiting_approval": waiting, "spawned": len(states)}


# -- 1. crash anywhere --------------------------------------------------------------------


class Load:
    """Eight clients doing a mixed load, recording what was acknowledged. Half the spawns
    go to a narrow task (max concurrent 3) and ask to queue."""

    def __init__(self, d: DaemonProcess, task: str, narrow: str) -> None:
        self.d = d
        self.task = task
        self.narrow = narrow
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.findings: set[str] = set()
        self.spawned: set[str] = set()
        self.killed: set[str] = set()
        self.progress: dict[str, int] = {}
        self.requests = 0
        self.queued = 0  # spawns acknowledged as queued

    def run(self, worker: int) -> None:
        rng = random.Random(worker)
        n = 0
        mine: list[str] = []
        while not self.stop.is_set():
            n += 1
            try:
                with Client(self.d.socket, timeout=10) as c:
                    while not self.stop.is_set():
                        n += 1
                        self.step(c, worker, n, rng, mine)
            except (SupervisorError, OSError):
                time.sleep(0.01)  # the daemon is down: retry until told to stop (unacknowledged)

    def step(self, c: Client, worker: int, n: int, rng: random.Random, mine: list[str]) -> None:
        action = rng.random()
        self.requests += 1
        if action < 0.5:
            message = f"w{worker}-{n}"
            c.request("agent.finding", task_id=self.task, type="note", message=message)
            with self.lock:
                self.findings.add(message)
        elif action < 0.6 and len(mine) < 2:
            queue = rng.random() < 0.5
            agent = c.request("agent.spawn", task_id=self.narrow if queue else self.task, type=f"w{worker}-{n}",
                           argv=["sleep", str(rng.choice([0.2, 1, 30]))], queue=queue)
            with self.lock:
                self.spawned.add(agent["id"])
                self.queued += agent["state"] == "queued"
            mine.append(agent["id"])
        elif action < 0.8 and mine:
            try:
                agent = c.request("agent.progress", agent_id=mine[-1], message=f"p{n}", percent=n % 100)
            except IllegalTransition:
                return  # queued (not started yet) or already ended
            with self.lock:
                self.progress[agent["id"]] = n % 100
        elif action < 0.9 and mine:
            killed = c.request("agent.kill", agent_id=mine.pop(0), reason="load")
            with self.lock:
                self.killed.add(killed["id"])
        elif mine:
            c.request("agent.wait", agent_ids=[mine[0]], timeout=0.05)


def test_crash_anywhere_loses_nothing_acknowledged() -> None:
    """SIGKILL the daemon at random moments under a mixed load from 8 clients, 20+ times."""
    rounds = 20 * SOAK
    d = DaemonProcess(kill_grace=1, reconcile_interval=0.5)
    rng = random.Random(1)
    try:
        d.start()
        task = d.create_task(limits={"max_concurrent": 1000, "max_total": 100_000})
        narrow = d.create_task(limits={"max_concurrent": 3, "max_total": 100_000})
        load = Load(d, task, narrow)
        for _ in range(rounds):
            threads = [threading.Thread(target=load.run, args=(w,), daemon=True) for w in range(8)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 1.2))
            d.kill()
            load.stop.set()  # the clients see the daemon die, and stop
            for t in threads:
                t.join(60)
            load.stop.clear()
            d.start()
            check_after_restart(d, load)
        check_after_restart(d, load)
        FIGURES["crash_rounds"] = rounds
        FIGURES["crash_requests"] = load.requests
        FIGURES["crash_acked_findings"] = len(load.findings)
        FIGURES["crash_acked_spawns"] = len(load.spawned)
        FIGURES["crash_acked_queued"] = load.queued
        FIGURES["crash_acked_kills"] = len(load.killed)
        d.stop()
        with contextlib.closing(sqlite3.connect(d.state_dir / "state.sqlite3")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        d.close()


def check_after_restart(d: DaemonProcess, load: Load) -> None:
    with load.lock:
        findings, spawned, killed = set(load.findings), set(load.spawned), set(load.killed)
    stored = {f["message"] for f in all_findings(d)}
    assert findings <= stored, f"lost findings: {sorted(findings - stored)[:5]}"
    agents = {a["id"]: a for a in d.list("agent.list")}
    assert spawned <= set(agents), f"lost spawns: {sorted(spawned - set(agents))[:5]}"
    assert all(agents[a]["state"] in ("killed", "completed", "failed", "lost") for a in killed)
    sessions = marked_sessions(d)  # taken before the pass
    pass_started = time.time()
    d.call("daemon.reconcile")
    agents = {a["id"]: a for a in d.list("agent.list")}
    # Queued agents start by themselves whenever an agent ends (the pass may end some): those
    # started since the first listing are in this one, or still `starting` (in flight).
    sessions_after = marked_sessions(d)
    live = {a for a, row in agents.items() if row["state"] in ("running", "stopping")}
    ghosts = [a for a in live if a not in sessions and a not in sessions_after]
    # After one pass, a live agent must have had a session: otherwise it is a ghost.
    assert not ghosts, f"live agents without a session: {ghosts}"
    # And no agent stays `starting` (one a crash left so is settled by the pass; one promoted
    # from the queue just before it is on its way to `running`).
    def settled() -> bool:
        rows = d.list("agent.list", state="starting")
        return not [a for a in rows if a["updated_at"] < pass_started]

    eventually(settled, timeout=15, what="agents from before the pass settled out of starting")
    stray = [a for a in sessions if a not in agents or agents[a]["state"] not in LIVE]
    if stray:  # sessions of ended agents are killed again by the pass just run
        eventually(lambda: not [a for a in marked_sessions(d) if a in stray], timeout=30, what="stray sessions gone")
    # The control clients of the daemons killed so far are gone: only the live daemon's is attached.
    eventually(lambda: len(control_clients(d)) == 1, timeout=10, what="one tmux control client")
    for task in (load.task, load.narrow):  # counts from memory, rows from the store, page by page
        eventually(lambda t=task: d.call("task.get", task_id=t)["counts"] == recount(d.list("agent.list", task_id=t)),
                   timeout=15, what="counts equal to a recount of the rows")
    # Nobody waits in the queue while a slot is free for it, even across crashes: the narrow
    # task is at its 3 slots, or the whole daemon at its global cap.
    rows = d.call("agent.list", live=True, limit=500)["items"]  # every live agent, at one moment
    active = [a for a in rows if a["state"] in LIVE and a["state"] != "queued"]
    if any(a["state"] == "queued" for a in rows):
        assert sum(a["task_id"] == load.narrow for a in active) == 3 or len(active) >= GLOBAL_CAP
    assert d.call("daemon.health")["ok"]


# -- 2. tmux misbehaves -------------------------------------------------------------------


def tmux_server_pid(d: DaemonProcess) -> int:
    out = subprocess.run(["tmux", "-S", str(d.tmux_socket), "display-message", "-p", "#{pid}"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def control_client_pid(d: DaemonProcess) -> int | None:
    """The daemon's live ``tmux -C`` child, if it has one right now."""
    assert d.proc is not None
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(stat[1]) == d.proc.pid and b"-C" in cmdline and stat[0] != b"Z":
            return int(name)
    return None


@pytest.fixture
def quick_tmux() -> Iterator[DaemonProcess]:
    d = DaemonProcess(kill_grace=1, reconcile_interval=0.5, tmux_command_timeout=1).start()
    try:
        yield d
    finally:
        d.close()


def test_a_killed_control_client_is_replaced_and_nothing_is_lost(quick_tmux: DaemonProcess) -> None:
    d = quick_tmux
    task = d.create_task()
    agent = d.spawn_fake(task, "survivor", "--sleep", "3")
    first = control_client_pid(d)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    eventually(lambda: control_client_pid(d) not in (None, first), what="a new control client")
    eventually(lambda: d.call("daemon.health")["tmux_healthy"], what="tmux healthy again")
    assert d.call("agent.get", agent_id=agent["id"])["state"] == "running"  # the server kept it
    assert d.wait_state(agent["id"])["state"] == "completed"
    assert d.wait_state(d.spawn_fake(task, "after", "--exit", "0")["id"])["state"] == "completed"


def test_a_stopped_tmux_server_makes_spawns_fail_fast_and_reads_keep_working(quick_tmux: DaemonProcess) -> None:
    d = quick_tmux
    task = d.create_task()
    pid = tmux_server_pid(d)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(SupervisorError) as refused:
            d.spawn_fake(task, "blocked")
        assert refused.value.code.value in ("spawn_failed", "unavailable")
        assert "tmux" in refused.value.message
        eventually(lambda: not d.call("daemon.health")["tmux_healthy"], what="tmux reported unhealthy")
        assert d.call("task.get", task_id=task)["counts"]["failed"] == 1  # reads answer
    finally:
        os.kill(pid, signal.SIGCONT)
    eventually(lambda: d.call("daemon.health")["tmux_healthy"], what="tmux healthy again")
    assert d.wait_state(d.spawn_fake(task, "after", "--exit", "0")["id"])["state"] == "completed"


# -- 3. disk trouble ----------------------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[DaemonProcess]:
    """A daemon whose state directory is a 4 MiB tmpfs of its own (needs root and mount)."""
    if os.getuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    base = short_tmpdir()
    state = base / "state"
    state.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(state)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    d = DaemonProcess(base)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        subprocess.run(["umount", "-l", str(state)], capture_output=True)
        d.close()


def test_a_full_disk_refuses_mutations_whole_and_recovers(small_disk: DaemonProcess) -> None:
    d = small_disk
    task = d.create_task()
    d.call("agent.finding", task_id=task, type="note", message="before")
    filler = d.state_dir / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k", "count=1000"], capture_output=True)
    before = snapshot(d)
    refused = 0
    for i in range(50):  # the WAL may still have room for a few: write until refused
        try:
            d.call("agent.finding", task_id=task, type="note", message="x" * 60_000 + str(i))
        except SupervisorError as e:
            assert e.code.value == "unavailable", e
            refused += 1
            break
        before = snapshot(d)
    assert refused, "the disk never filled"
    assert snapshot(d) == before  # nothing half-applied, reads still work
    filler.unlink()
    d.call("agent.finding", task_id=task, type="note", message="after")
    assert [f["message"] for f in d.list("findings.list", task_id=task)][-1] == "after"
    d.stop()
    d.start()
    assert "after" in [f["message"] for f in d.list("findings.list", task_id=task, limit=500)]
    FIGURES["disk_full_refused"] = True


# -- 4. hostile protocol input ------------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[DaemonProcess]:
    d = DaemonProcess().start()
    try:
        yield d
    finally:
        d.close()


def exchange(d: DaemonProcess, data: bytes) -> list[dict[str, Any]] | None:
    """Send raw bytes and a newline; return the replies (None if the daemon hung up)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(d.socket))
        try:
            s.sendall(data + b"\n")
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return None
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    raw = b"".join(chunks)
    return [json.loads(line) for line in raw.splitlines() if line] if raw else None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
FIELDS = {name: [f.name for f in msgspec.structs.fields(cls)] for name, m in METHODS.items() for cls in [m.params]}
MUTATING = sorted(m for m in METHODS if m not in ("hello", "daemon.stop", "daemon.reconcile", "events.subscribe",
                                                  "agent.wait"))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "typed"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    method = draw(st.sampled_from(MUTATING + ["no.such.method"]))
    fields = FIELDS.get(method, ["x"])
    params = draw(st.dictionaries(st.sampled_from(fields + ["bogus"]), JSON, max_size=4))
    request: dict[str, Any] = {"id": draw(st.integers(min_value=-(2**70), max_value=2**70) | st.none()),
                               "method": method, "params": params}
    return json.dumps(request).encode()


@settings(max_examples=300 * SOAK, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=requests())
def test_fuzzed_requests_get_errors_and_change_nothing(shared: DaemonProcess, data: bytes) -> None:
    before = snapshot(shared)
    replies = exchange(shared, data)
    FIGURES["fuzz_inputs"] = FIGURES.get("fuzz_inputs", 0) + 1
    if replies:
        for reply in replies:
            if "error" in reply:
                assert reply["error"]["code"] in {
                    "bad_request", "invalid_params", "unknown_method", "not_found", "forbidden", "too_large",
                    "illegal_transition", "limit_exceeded", "conflict", "unavailable", "spawn_failed",
                }, reply
            else:  # a well-formed, valid request that happened to be generated: it may change state
                return
    assert snapshot(shared) == before


def test_deep_nesting_huge_numbers_and_unread_replies(shared: DaemonProcess) -> None:
    pid = shared.proc.pid if shared.proc else 0
    before = snapshot(shared)
    for payload in (b"[" * 100_000 + b"]" * 100_000, b'{"id": 1e999, "method": "task.list"}',
                    b'{"id": 1, "method": "task.create", "params": {"description": "x", "limits": '
                    b'{"max_concurrent": 99999999999999999999999}}}', b"\xff\xfe" * 1000, b'{"id": 1, "method": 5}'):
        replies = exchange(shared, payload)
        assert replies is None or all("error" in r for r in replies), replies
    # Thousands of requests on one connection, never reading a reply: the daemon stops
    # reading that connection when its replies back up (bounded memory); others are served.
    flood = b"".join(b'{"id": %d, "method": "daemon.health"}\n' % i for i in range(20_000))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(shared.socket))
        def send() -> None:
            with contextlib.suppress(OSError):
                s.sendall(flood)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(0.5)
        assert shared.call("daemon.health")["pid"] == pid  # others are still served meanwhile
        FIGURES["unread_requests_sent"] = 20_000
        s.shutdown(socket.SHUT_RDWR)
    sender.join(30)
    assert snapshot(shared) == before
    assert shared.call("daemon.health")["pid"] == pid


# -- 5. hostile clients -------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_idle_slow_and_silent_clients_do_not_starve_others() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    d = DaemonProcess(max_connections=2000).start()
    sockets: list[socket.socket] = []
    try:
        assert d.proc is not None
        rss_before = rss_kb(d.proc.pid)
        for _ in range(1000):  # idle connections
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.socket))
            sockets.append(s)
        for _ in range(20):  # slow readers: many requests, replies never read
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.socket))
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                for i in range(2000):
                    s.send(b'{"id": %d, "method": "agent.list"}\n' % i)
            sockets.append(s)
        for _ in range(20):  # subscribers that never read
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.socket))
            s.sendall(b'{"id": 1, "method": "events.subscribe", "params": {"since": 0}}\n')
            sockets.append(s)
        task = d.create_task()
        t0 = time.monotonic()
        for i in range(2000):  # events the silent subscribers would have to buffer
            d.call("agent.finding", task_id=task, type="note", message="x" * 200 + str(i))
        assert d.call("daemon.health")["ok"]
        FIGURES["hostile_clients_fresh_client_seconds"] = round(time.monotonic() - t0, 2)
        growth_mb = (rss_kb(d.proc.pid) - rss_before) / 1024
        FIGURES["hostile_clients_rss_growth_mb"] = round(growth_mb, 1)
        assert growth_mb < 200, f"memory grew {growth_mb:.0f} MB"
    finally:
        for s in sockets:
            s.close()
        d.close()


def test_idle_connections_give_way_and_a_refused_client_is_told_why() -> None:
    """At the connection cap the connection idle the longest is closed to let a new one in, so
    that no client locks others out by opening connections; when every one is busy, a newcomer
    is refused with a typed error it can read (not a reset connection), once the one slot kept
    beyond the cap for the operator is busy too."""
    d = DaemonProcess(max_connections=6).start()
    sockets: list[socket.socket] = []
    busy: list[Client] = []
    try:
        for _ in range(6):  # idle: connected, never a request
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.socket))
            sockets.append(s)
        for _ in range(20):  # each new client gets in, the idlest gives way
            assert d.call("daemon.health")["ok"]
        sockets[0].settimeout(10)
        assert sockets[0].recv(1) == b""  # the oldest was closed
        task = d.create_task()
        agent = d.spawn_fake(task, "sleeper", "--sleep", "600")["id"]
        for _ in range(6):  # each waits for an agent: not idle (its wait is under way once the
            # request after it is answered), and each pushes out an idle one
            busy.append(Client(str(d.socket)))
            busy[-1].send("agent.wait", {"agent_ids": [agent], "timeout": 600})
            busy[-1].request("daemon.health")
        eventually(lambda: all(_closed_or_none(s) for s in sockets), 10, "every idle connection closed")
        busy.append(Client(str(d.socket)))  # the operator's slot: in, and busy
        busy[-1].send("agent.wait", {"agent_ids": [agent], "timeout": 600})
        busy[-1].request("daemon.health")
        with pytest.raises(SupervisorError, match="too many connections .* for the operator is busy"):
            Client(str(d.socket))
        for c in busy:
            c.close()
        eventually(lambda: _answers(d), 10, "the daemon serves again once the busy clients left")
        assert d.call("daemon.health")["connections_evicted"] >= 6
        d.call("agent.kill", agent_id=agent)
    finally:
        for c in busy:
            c.close()
        for s in sockets:
            s.close()
        d.close()


def _closed_or_none(s: socket.socket) -> bool:
    """True if the daemon has closed ``s`` (it reads end of file)."""
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _answers(d: DaemonProcess) -> bool:
    try:
        return bool(d.call("daemon.health")["ok"])
    except SupervisorError:
        return False


# -- 7. hostile names and prompts ---------------------------------------------------------


HOSTILE = ["$(touch /tmp/sa-pwned)", "`touch /tmp/sa-pwned`", "'; touch /tmp/sa-pwned; '", "../../etc/passwd",
           "#{session_name}", "=sa:1.0", "%1", "@1", "$1", "a\nb", "tab\there", "\x1b[31mred", "x" * 5000]


def test_hostile_text_is_carried_inert_or_refused(shared: DaemonProcess) -> None:
    state_files_before = {p for p in shared.base.rglob("*")}
    task = shared.create_task()
    inert = 0
    for text in HOSTILE:
        for method, params in (
            ("task.create", {"description": text, "cwd": str(shared.base)}),
            ("agent.finding", {"task_id": task, "type": "note", "message": text, "data": {text[:50]: text}}),
            ("agent.finding", {"task_id": task, "type": text, "message": "m"}),
            ("agent.spawn", {"task_id": task, "type": text, "argv": ["true", "x"]}),
            ("agent.spawn", {"task_id": task, "type": "t", "model": text, "provider": "claude"}),
            ("agent.spawn", {"task_id": task, "type": "t", "provider": text}),
            ("agent.spawn", {"task_id": task, "type": "t", "cwd": text, "argv": ["true", "x"]}),
            ("agent.get", {"agent_id": text}),
            ("task.get", {"task_id": text}),
        ):
            try:
                result = shared.call(method, **params)
            except SupervisorError as e:
                assert e.code.value in ("invalid_params", "not_found", "bad_request"), (method, text, e)
                continue
            inert += 1
            if method == "task.create":
                assert result["description"] == text
            elif method == "agent.finding":
                assert result["message"] in (text, "m")
    FIGURES["hostile_texts_carried_inert"] = inert
    assert not Path("/tmp/sa-pwned").exists()
    created = {p for p in shared.base.rglob("*")} - state_files_before
    assert all(shared.base in p.parents for p in created)
    for p in created:
        assert ".." not in p.relative_to(shared.base).parts
