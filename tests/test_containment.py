"""Agents cannot act as the operator or escape supervision: each attack is made from inside
a real agent of a real daemon, as a confused or prompt-injected agent would make it.

The daemon runs with cgroups where this machine gives it a writable cgroup2 hierarchy
(agents in cgroups of their own), and again with ``cgroup_root = "off"`` (identity by the
runner's ancestry), so the weaker boundary is tested too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from supervisord_agents import procs
from supervisord_agents.clients.client import Client, resolve_socket
from supervisord_agents.config import Settings, default_runtime_dir, load_config
from supervisord_agents.daemon import Daemon
from supervisord_agents.errors import Forbidden, SupervisorError
from supervisord_agents.handlers import Caller
from supervisord_agents.protocol import (
    AGENT_SPAWN,
    ENV_TOKEN,
    PROTOCOL_VERSION,
    TASK_CREATE,
    Boundary,
    SpawnParams,
    TaskCreateParams,
)
from supervisord_agents.server import bind_socket
from tests.fake_tmux import FakeTmux
from tests.harness import BIN, FAKE_AGENT, DaemonProcess, alive, eventually, short_tmpdir

PROBE = str(Path(__file__).with_name("agent_probe.py"))


@pytest.fixture(params=["cgroup", "ancestry"])
def boundary(request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    """A daemon with each way of telling agents apart."""
    settings = {"cgroup_root": "off"} if request.param == "ancestry" else {}
    d = DaemonProcess(kill_grace=1, **settings).start()
    try:
        health = d.call("daemon.health")
        if request.param == "cgroup" and health["boundary"] != "cgroup":
            pytest.skip(f"no writable cgroup2 hierarchy here: {health['boundary_note']}")
        assert health["boundary"] == request.param
        yield d
    finally:
        d.close()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def probe(d: DaemonProcess, task: str, calls: list[list[Any]], type: str = "probe") -> list[dict[str, Any]]:
    """Run ``calls`` from inside a new agent of ``task``; what each one got."""
    out = d.base / f"{type}.json"
    d.call("agent.spawn", task_id=task, type=type, argv=[sys.executable, PROBE, str(out), json.dumps(calls)])
    results: list[dict[str, Any]] = eventually(lambda: read_json(out), 60, "the probe's results")
    return results


def sleeper(d: DaemonProcess, task: str, type: str) -> str:
    return str(d.spawn_fake(task, type, "--sleep", "60")["id"])


def outcome(result: dict[str, Any]) -> str:
    return "ok" if "ok" in result else result["error"]


def test_every_method_follows_its_rule_for_an_agent(boundary: DaemonProcess) -> None:
    """Method by method, an agent is refused (forbidden, naming the rule) whatever reaches beyond itself,
    its own descendants and its own task, and allowed what its rule allows: the kernel says who it is,
    with no token in its environment."""
    d = boundary
    mine, other = d.create_task(), d.create_task()
    sibling, stranger = sleeper(d, mine, "sibling"), sleeper(d, other, "stranger")
    child_argv = [sys.executable, FAKE_AGENT, "--sleep", "60"]
    calls: list[list[Any]] = [
        ["hello", {}],
        ["task.create", {"description": "mine now", "limits": {"max_concurrent": 1000}}],
        ["task.get", {"task_id": other}],
        ["task.list", {}],
        ["task.close", {"task_id": mine}],
        ["agent.spawn", {"task_id": other, "type": "intruder", "argv": child_argv}],
        ["agent.spawn", {"type": "adopted", "argv": child_argv, "parent": sibling}],
        ["agent.get", {"agent_id": sibling}],
        ["agent.list", {}],
        ["agent.progress", {"agent_id": sibling, "message": "done, all good"}],
        ["agent.finding", {"agent_id": sibling, "type": "bug", "severity": "critical", "message": "fake"}],
        ["agent.finding", {"task_id": other, "type": "bug", "message": "fake"}],
        ["agent.kill", {"agent_id": sibling}],
        ["agent.kill", {"agent_id": stranger}],
        ["agent.wait", {"agent_ids": [stranger], "timeout": 0}],
        ["agent.output", {"agent_id": stranger}],
        ["agent.peek", {"agent_id": stranger}],
        ["findings.list", {"task_id": other}],
        ["events.subscribe", {"since": 0}],
        ["daemon.health", {}],
        ["daemon.reconcile", {"kill_orphans": True}],
        ["daemon.stop", {}],
        # What the rules allow:
        ["task.get", {"task_id": mine}],
        ["agent.progress", {"message": "working"}],
        ["agent.finding", {"type": "note", "message": "mine"}],
        ["findings.list", {}],
        ["agent.spawn", {"type": "kid", "argv": child_argv}, "kid"],
        ["agent.get", {"agent_id": "$kid"}],
        ["agent.output", {"agent_id": "$kid"}],
        ["agent.kill", {"agent_id": "$kid"}],
    ]
    results = probe(d, mine, calls)
    refused, allowed = results[:22], results[22:]
    assert [outcome(r) for r in refused] == ["ok"] + ["forbidden"] * 21, results
    assert all(f"{call[0]}:" in r["message"] for call, r in zip(calls[1:22], refused[1:], strict=True))
    assert [outcome(r) for r in allowed] == ["ok"] * 8, allowed
    probe_id = results[26]["ok"]["parent"]
    assert results[22]["ok"]["task"]["id"] == mine
    assert {f["task_id"] for f in results[25]["ok"]["items"]} == {mine}
    assert results[27]["ok"]["parent"] == probe_id and results[29]["ok"]["state"] == "killed"
    # Nothing of the refused calls happened.
    assert d.call("daemon.health")["ok"] is True
    assert len(d.list("task.list")) == 2 and d.call("task.get", task_id=mine)["task"]["state"] == "open"
    for agent_id in (sibling, stranger):
        agent = d.call("agent.get", agent_id=agent_id)
        assert agent["state"] == "running" and agent["message"] == ""
    assert [f["message"] for f in d.list("findings.list")] == ["mine"]
    assert [a["type"] for a in d.list("agent.list", task_id=other)] == ["stranger"]


def test_agentctl_without_a_token_cannot_stop_the_daemon(boundary: DaemonProcess) -> None:
    """``env -u SUPERVISORD_AGENTS_TOKEN agentctl stop`` inside an agent is refused (exit 1, forbidden);
    the agent's own agentctl progress still works without any token."""
    d = boundary
    task = d.create_task()
    out = d.base / "rc"
    script = ("env -u SUPERVISORD_AGENTS_TOKEN agentctl stop 2>err; echo $? > rc.tmp; "
              "env -u SUPERVISORD_AGENTS_TOKEN agentctl progress mine; echo $? >> rc.tmp; mv rc.tmp rc")
    agent = d.call("agent.spawn", task_id=task, type="stopper", argv=["sh", "-c", script])
    codes = eventually(lambda: out.exists() and out.read_text().split(), 60, "agentctl ran")
    assert codes == ["1", "0"], (d.base / "err").read_text()
    assert "forbidden" in (d.base / "err").read_text() or "operator" in (d.base / "err").read_text()
    assert d.call("daemon.health")["ok"] is True
    assert d.call("agent.get", agent_id=agent["id"])["message"] == "mine"


def test_no_agent_holds_a_secret_another_could_steal(boundary: DaemonProcess) -> None:
    """No identity token exists to be read from another agent's environment or files."""
    d = boundary
    task = d.create_task()
    dump = d.base / "env.json"
    agent = d.spawn_fake(task, "dumper", "--dump-env", str(dump), "--sleep", "60")
    env = eventually(lambda: read_json(dump), 60, "the agent's environment")
    assert "SUPERVISORD_AGENTS_TOKEN" not in env and env["SUPERVISORD_AGENTS_AGENT_ID"] == agent["id"]
    folder = d.state_dir / "tasks" / task / "agents" / agent["id"]
    assert json.loads((folder / "launch.json").read_bytes())["token"] == ""  # kept for a later attempt, no token


def test_an_agent_that_kills_its_runner_is_ended_not_left_running(boundary: DaemonProcess) -> None:
    """``kill -9 $PPID; exec sleep`` (the agent kills its runner) leaves no ghost: the agent is lost with
    the reason "runner killed", its process is ended, and the next queued agent of a one-slot task starts
    only once it is (limits count what really runs)."""
    d = boundary
    task = d.create_task(limits={"max_concurrent": 1})
    agents = []
    for n in range(3):
        pidfile = d.base / f"ghost{n}.pid"
        script = f"echo $$ > {pidfile}; kill -9 $PPID; exec sleep 900"
        agents.append((d.call("agent.spawn", task_id=task, type=f"ghost{n}", argv=["sh", "-c", script], queue=True),
                       pidfile))
    seen_alive: list[int] = []
    for agent, pidfile in agents:
        pid = int(eventually(lambda p=pidfile: p.exists() and p.read_text().strip(), 60, "the agent started"))
        seen_alive = [p for p in seen_alive if alive(p)]
        assert seen_alive == [], "an earlier ghost still ran when the next one started"
        seen_alive.append(pid)
        ended = d.wait_state(agent["id"], timeout=60)
        assert ended["state"] == "lost" and "runner killed" in ended["exit"]["reason"], ended
        assert not alive(pid)


def test_leftovers_are_ended_even_when_the_agent_closed_its_output(boundary: DaemonProcess) -> None:
    """An agent that redirects its output and leaves a background child completes, and the child
    does not outlive it."""
    d = boundary
    task = d.create_task()
    pidfile = d.base / "child.pid"
    script = f"exec >/dev/null 2>&1; sleep 900 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; sleep 0.3"
    agent = d.call("agent.spawn", task_id=task, type="leaver", argv=["sh", "-c", script])
    ended = d.wait_state(agent["id"], timeout=60)
    assert ended["state"] == "completed"
    child = int(pidfile.read_text())
    eventually(lambda: not alive(child), 10, "the background child ended")


def tmux_argv(d: DaemonProcess, *args: str) -> list[str]:
    return ["tmux", "-S", str(d.tmux_socket), *args]


def test_hooks_an_agent_sets_on_our_tmux_server_are_undone(boundary: DaemonProcess) -> None:
    """A global hook set from inside an agent never runs: the next reconcile pass removes it and
    records a drift event; the agent's pane has no TMUX variable to find the server by."""
    d = boundary
    task = d.create_task()
    marker = d.base / "hook-ran"
    dump = d.base / "env.json"
    script = (f"{sys.executable} {FAKE_AGENT} --dump-env {dump}; "
              f"tmux -S {d.tmux_socket} set-hook -g session-created 'run-shell \"touch {marker}\"'")
    agent = d.call("agent.spawn", task_id=task, type="hooker", argv=["sh", "-c", script])
    d.wait_state(agent["id"], timeout=60)
    env = eventually(lambda: read_json(dump), 10, "the agent's environment")
    assert "TMUX" not in env and "TMUX_PANE" not in env
    eventually(lambda: "session-created" in json.dumps(d.call("daemon.reconcile")["restored"]) or
               any(e.get("kind") == "drift" for e in _events(d)), 20, "the hook was found and removed")
    d.spawn_fake(task, "next", "--sleep", "1")
    time.sleep(0.5)
    assert not marker.exists()
    assert any(e["kind"] == "drift" and any("session-created" in w for w in e["data"]["what"]) for e in _events(d))


def test_a_session_an_agent_creates_on_our_server_is_ended(boundary: DaemonProcess) -> None:
    """A session without our marker (made by an agent through the tmux socket) is reported and ended,
    with what ran in it; so is a window an agent opens beside its own pane."""
    d = boundary
    task = d.create_task()
    pidfile, windowfile = d.base / "evil.pid", d.base / "window.pid"
    script = (f"tmux -S {d.tmux_socket} new-session -d -s evil 'echo $$ > {pidfile}; exec sleep 900'; "
              f"tmux -S {d.tmux_socket} new-window -d -t \"sa-$SUPERVISORD_AGENTS_AGENT_ID\" "
              f"'echo $$ > {windowfile}; exec sleep 900'; sleep 30")
    agent = d.call("agent.spawn", task_id=task, type="squatter", argv=["sh", "-c", script])

    def drift() -> list[str]:
        return [w for e in _events(d) if e["kind"] == "drift" for w in e["data"]["what"]]

    eventually(lambda: any("(evil)" in w for w in drift()) and any(w.startswith("pane ") for w in drift()), 30,
               "the foreign session and window reported")
    # Either was ended before its command even ran, or what it ran is gone too.
    for f in (pidfile, windowfile):
        if f.exists() and f.read_text().strip():
            pid = int(f.read_text())
            eventually(lambda p=pid: not alive(p), 30, f"{f.name}'s process ended")
    assert "evil" not in subprocess.run(["tmux", "-S", str(d.tmux_socket), "ls"], capture_output=True,
                                        text=True).stdout
    assert d.call("agent.get", agent_id=agent["id"])["state"] == "running"  # its own pane was kept


def _events(d: DaemonProcess) -> list[dict[str, Any]]:
    last = d.call("daemon.health")["last_seq"]
    out = []
    with d.client(timeout=10) as c:
        for event in c.events(since=0):
            out.append({"kind": event.kind, "data": event.data, "seq": event.seq})
            if event.seq >= last:
                break
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


AGENT_HOLDS_CONNECTIONS = """
import os, socket, sys, time
me = os.environ["SUPERVISORD_AGENTS_AGENT_ID"].encode()
held = []
for _ in range(8):  # each waits on the agent itself: busy, so none is evicted
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ["SUPERVISORD_AGENTS_SOCKET"])
    s.sendall(b'{"id": 1, "method": "agent.wait", "params": {"agent_ids": ["' + me + b'"], "timeout": 600}}\\n')
    held.append(s)
time.sleep(1.0)
refused = 0
for s in held:
    s.settimeout(0.2)
    try:
        refused += b"max_connections_per_agent" in s.recv(4096)
    except TimeoutError:
        pass
open(sys.argv[1], "w").write(str(refused))
time.sleep(600)
"""


def test_an_agent_cannot_fill_the_connection_table() -> None:
    """An agent holds at most max_connections_per_agent connections: the others are refused
    with a reason it can read, and the operator still gets in."""
    d = DaemonProcess(max_connections_per_agent=3).start()
    try:
        task = d.create_task()
        result = d.base / "refused.txt"
        agent = d.call("agent.spawn", task_id=task, type="hoarder",
                       argv=[sys.executable, "-c", AGENT_HOLDS_CONNECTIONS, str(result)])
        assert eventually(lambda: result.exists() and result.read_text(), 60, "the agent counted") == "5"
        assert d.call("daemon.health")["connections"] >= 3  # its three, and this one
        d.call("agent.kill", agent_id=agent["id"])
    finally:
        d.close()


AGENT_FILLS_THE_TABLE = """
import json, os, socket, sys, time
me = os.environ["SUPERVISORD_AGENTS_AGENT_ID"]
wait = {"id": 1, "method": "agent.wait", "params": {"agent_ids": [me], "timeout": 600}}
get = {"id": 2, "method": "agent.get", "params": {"agent_id": me}}
held, refusal = [], None
while refusal is None and len(held) < 20:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(os.environ["SUPERVISORD_AGENTS_SOCKET"])
    s.sendall(json.dumps(wait).encode() + b"\\n" + json.dumps(get).encode() + b"\\n")
    reply = json.loads(s.makefile("rb").readline())  # agent.get's: the wait before it is under way
    if reply.get("id") == 2:
        held.append(s)
    else:
        refusal = reply
open(sys.argv[1], "w").write(json.dumps({"held": len(held), "refusal": refusal}))
time.sleep(600)
"""


def test_agents_holding_every_connection_cannot_lock_the_operator_out() -> None:
    """With the table full of an agent's busy connections, the operator still gets in through
    the one slot kept beyond max_connections, which no agent gets: the agent's next connection
    is refused with a line saying why, and a second operator connection while the first holds
    the slot busy is refused too."""
    d = DaemonProcess(max_connections=4).start()
    holder: Client | None = None
    try:
        task = d.create_task()
        result = d.base / "table.json"
        agent = d.call("agent.spawn", task_id=task, type="filler",
                       argv=[sys.executable, "-c", AGENT_FILLS_THE_TABLE, str(result)])
        filled = eventually(lambda: read_json(result), 60, "the agent filled the table")
        assert filled["held"] == 4
        error = filled["refusal"]["error"]
        assert error["code"] == "limit_exceeded"
        assert error["message"] == ("too many connections (max 4), none of them idle"
                                    " (the one kept beyond them is the operator's)")
        status = d.agentctl("status")  # the real CLI, as the operator
        assert status.returncode == 0, status.stderr
        assert task in status.stdout
        holder = eventually(lambda: _operator_client(d), 10, "the operator's slot free again")
        holder.send("agent.wait", {"agent_ids": [agent["id"]], "timeout": 600})
        assert holder.request("daemon.health")["connections"] == 5  # the table's four, and the operator's one
        refused = d.agentctl("status")
        assert refused.returncode != 0 and "the one kept beyond them for the operator is busy" in refused.stderr
        holder.close()
        with eventually(lambda: _operator_client(d), 10, "the operator's slot free again") as c:
            c.request("agent.kill", agent_id=agent["id"])
    finally:
        if holder is not None:
            holder.close()
        d.close()


def _operator_client(d: DaemonProcess) -> Client | None:
    """A connection of the operator's, or None while there is no room for it."""
    try:
        return d.client(timeout=10)
    except SupervisorError as e:
        if "too many connections" in e.message:
            return None
        raise


async def test_a_token_cannot_take_the_operators_slot(monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery) -> None:
    """Where only a token tells an agent from the operator (no cgroups, no /proc), every peer
    looks like the operator at accept: a connection that came in through the operator's slot
    and then says it is an agent (hello with its token) is refused and closed."""
    monkeypatch.setattr(procs, "HAVE_PROC", False)
    base = short_tmpdir()
    env = {"SUPERVISORD_AGENTS_CONFIG": str(base / "config.toml"), "SUPERVISORD_AGENTS_STATE_DIR": str(base / "s"),
           "SUPERVISORD_AGENTS_RUNTIME_DIR": str(base / "r"), "SUPERVISORD_AGENTS_CGROUP_ROOT": "off",
           "SUPERVISORD_AGENTS_MAX_CONNECTIONS": "2"}
    (base / "config.toml").write_text("")
    config = load_config(None, environ=env)
    config.state_dir.mkdir(mode=0o700)
    fake = FakeTmux()
    daemon = Daemon(Settings(config), backend=fake)
    assert daemon.api.access.boundary is Boundary.TOKEN
    done = trio.Event()

    async def run() -> None:
        try:
            await daemon.run([bind_socket(config.socket_path)])
        finally:
            done.set()

    nursery.start_soon(run)
    with trio.fail_after(30):  # serving: the store is open and the first pass done
        while not daemon.reconciler.passes:
            await trio.sleep(0.005)
    streams: list[trio.SocketStream] = []
    try:
        operator = Caller(pid=os.getpid(), uid=os.getuid())
        task = await daemon.api.call(TASK_CREATE, TaskCreateParams(description="t", cwd=str(base)), operator)
        agent = await daemon.api.call(AGENT_SPAWN, SpawnParams(task_id=task.id, type="w", argv=["true"]), operator)
        hello = {"id": 1, "method": "hello", "params": {"protocol": PROTOCOL_VERSION,
                                                         "token": fake.specs[0].env[ENV_TOKEN]}}
        wait = {"id": 2, "method": "agent.wait", "params": {"agent_ids": [agent.id], "timeout": 600}}
        get = {"id": 3, "method": "agent.get", "params": {"agent_id": agent.id}}
        for _ in range(2):  # the agent's, by its token, busy: the table is full
            streams.append(stream := await trio.open_unix_socket(str(config.socket_path)))
            replies = await _replies(stream, [hello, wait, get], until=3)
            assert replies[0]["result"]["agent_id"] == agent.id
        streams.append(stream := await trio.open_unix_socket(str(config.socket_path)))
        (refusal,) = await _replies(stream, [hello], until=1)
        assert "slot kept for the operator" in refusal["error"]["message"]
        assert await _replies(stream, [], until=0) == []  # and closed
        streams.append(stream := await trio.open_unix_socket(str(config.socket_path)))
        replies = await _replies(stream, [{**hello, "params": {"protocol": PROTOCOL_VERSION}}], until=1)
        assert replies[0]["result"]["agent_id"] is None  # the operator gets the slot it left
    finally:
        for stream in streams:
            await stream.aclose()
        daemon.stopping.set()
        with trio.fail_after(30):
            await done.wait()
        shutil.rmtree(base, ignore_errors=True)


async def _replies(stream: trio.SocketStream, requests: list[dict[str, Any]], until: int) -> list[dict[str, Any]]:
    """Send ``requests``; the replies read until the one with id ``until`` (or end of file)."""
    await stream.send_all(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    replies: list[dict[str, Any]] = []
    buffer = b""
    with trio.fail_after(10):
        while not any(r.get("id") == until or r.get("id") is None for r in replies):
            data = await stream.receive_some(65536)
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            replies += [json.loads(line) for line in lines]
    return replies


def test_the_state_directory_is_private_whatever_was_there() -> None:
    """A pre-existing 0755 state directory is tightened to 0700, and the database, its WAL, the lock,
    task folders and log archives are 0600/0700."""
    d = DaemonProcess()
    d.state_dir.mkdir(mode=0o755, parents=True)
    os.chmod(d.state_dir, 0o755)
    try:
        d.start()
        task = d.create_task()
        agent = d.spawn_fake(task, "w")
        d.wait_state(agent["id"])
        eventually(lambda: d.call("agent.get", agent_id=agent["id"])["cleanup"], 30, "cleanup")
        assert mode(d.state_dir) == 0o700
        files = [p for p in d.state_dir.rglob("*")]
        assert any(p.name == "state.sqlite3-wal" for p in files)
        loose = {str(p.relative_to(d.state_dir)): oct(mode(p)) for p in files
                 if mode(p) & 0o077}
        assert loose == {}
    finally:
        d.close()


def test_clients_refuse_a_socket_someone_else_could_have_placed() -> None:
    """A socket in a folder others can write, or one that belongs to another uid, is refused before
    anything (a token, a prompt) is sent to it; agentctl says so in one line."""
    shared = short_tmpdir()
    path = shared / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen()
        listener.setblocking(False)
        os.chmod(shared, 0o777)
        with pytest.raises(Forbidden, match="writable by others"):
            Client(path)
        result = subprocess.run([str(BIN / "agentctl"), "--socket", str(path), "status"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode != 0 and "refusing" in result.stderr and result.stderr.count("\n") == 1
        os.chmod(shared, 0o700)
        os.chown(path, 65534, 65534)
        with pytest.raises(Forbidden, match="uid 65534"):
            Client(path)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()
        shutil.rmtree(shared, ignore_errors=True)


def test_clients_find_the_socket_where_the_daemon_binds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit socket, a client reads the daemon's config file (its [paths] runtime_dir) and
    environment, as the daemon does; with XDG_RUNTIME_DIR unset both use the same per-uid temp folder."""
    base = short_tmpdir()
    try:
        (base / "config.toml").write_text(f'[paths]\nruntime_dir = "{base / "rt"}"\n')
        for key in list(os.environ):
            if key.startswith("SUPERVISORD_AGENTS_"):
                monkeypatch.delenv(key)
        monkeypatch.setenv("SUPERVISORD_AGENTS_CONFIG", str(base / "config.toml"))
        assert resolve_socket() == base / "rt" / "control.sock"
        monkeypatch.setenv("SUPERVISORD_AGENTS_CONFIG", str(base / "none.toml"))
        (base / "none.toml").write_text("")
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        assert resolve_socket() == load_config().socket_path == default_runtime_dir() / "control.sock"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)")
def test_a_sandboxed_agent_reports_and_reaches_nothing_else(boundary: DaemonProcess) -> None:
    """Under ``sandbox = "bwrap"`` an agent reports through its own socket, writes its working directory,
    and cannot see the control socket, reach the tmux server or read another agent's files."""
    d = boundary
    neighbour_task = d.create_task()
    neighbour = sleeper(d, neighbour_task, "neighbour")
    secret = d.state_dir / "tasks" / neighbour_task / "agents" / neighbour / "prompt.txt"
    assert secret.exists()
    task = d.create_task(sandbox="bwrap")
    out = d.base / "sandbox.txt"
    script = "; ".join([
        f"exec > {out}.tmp 2>&1",
        'agentctl progress "inside the sandbox" && echo report=ok',
        f"test -e {d.socket} && echo control=visible || echo control=hidden",
        f"tmux -S {d.tmux_socket} ls >/dev/null 2>&1 && echo tmux=reachable || echo tmux=unreachable",
        f"cat {secret} >/dev/null 2>&1 && echo neighbour=readable || echo neighbour=unreadable",
        f"echo hi > {d.base}/written && echo cwd=writable",
        f"mv {out}.tmp {out}",
    ])
    agent = d.call("agent.spawn", task_id=task, type="boxed", argv=["sh", "-c", script])
    assert agent["sandbox"] == "bwrap"
    ended = d.wait_state(agent["id"], timeout=60)
    seen = dict(line.split("=", 1) for line in out.read_text().split() if "=" in line)
    assert seen == {"report": "ok", "control": "hidden", "tmux": "unreachable", "neighbour": "unreadable",
                    "cwd": "writable"}, out.read_text()
    assert ended["state"] == "completed" and ended["message"] == "inside the sandbox"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)")
def test_another_agent_cannot_use_a_sandboxed_agents_socket(boundary: DaemonProcess) -> None:
    """A sandboxed agent's own socket answers only that agent: another agent that finds it in the runtime
    folder is refused, and nothing is reported in the sandboxed agent's name."""
    d = boundary
    task = d.create_task(sandbox="bwrap")
    boxed = d.call("agent.spawn", task_id=task, type="boxed", argv=["sh", "-c", "sleep 60"])
    its_socket = d.runtime_dir / "agents" / boxed["id"] / "control.sock"
    assert its_socket.exists()
    out = d.base / "rc"
    script = (f"SUPERVISORD_AGENTS_SOCKET={its_socket} agentctl progress 'as the boxed one' 2>err; "
              "echo $? > rc.tmp; mv rc.tmp rc")
    d.call("agent.spawn", task_id=d.create_task(), type="intruder", argv=["sh", "-c", script])
    code = eventually(lambda: out.exists() and out.read_text().strip(), 60, "agentctl ran")
    assert code != "0" and "socket is agent" in (d.base / "err").read_text()
    assert d.call("agent.get", agent_id=boxed["id"])["message"] == ""


def test_links_an_agent_left_in_its_home_are_removed_never_followed(tmp_path: Path) -> None:
    """A sandboxed agent can write only its working directory and its CLI home, but the daemon
    makes that home again at each attempt, outside the sandbox: links the agent planted there
    (a folder pointing at the user's, a file pointing at one of theirs) must not let it make the
    daemon delete, replace or write the user's files."""
    from supervisord_agents.files import AgentFiles

    users = tmp_path / "user-home"
    (users / ".claude").mkdir(parents=True)
    secret = users / ".claude" / ".credentials.json"
    secret.write_text("the user's token")
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text("the user's file")
    (tmp_path / "state").mkdir()
    files = AgentFiles(tmp_path / "state", "TASK-20261205-000000-0000abcd", "agent-000000-abcdef")
    files.create("prompt", None)
    login = {".claude/.credentials.json": secret}
    files.create_home({}, login)
    assert (files.home / ".claude" / ".credentials.json").read_text() == "the user's token"  # linked in

    # Attempt 1's agent replaces its .claude folder with a link to the user's, and a settings
    # file with a link to another of the user's files.
    shutil.rmtree(files.home / ".claude")
    (files.home / ".claude").symlink_to(users / ".claude")
    (files.home / ".gemini").mkdir()
    (files.home / ".gemini" / "settings.json").symlink_to(elsewhere)
    files.create_home({".gemini/settings.json": b"{}"}, login)  # attempt 2

    assert secret.read_text() == "the user's token" and not secret.is_symlink()
    assert elsewhere.read_text() == "the user's file"
    assert not (files.home / ".claude").is_symlink() and (files.home / ".claude").is_dir()
    assert (files.home / ".claude" / ".credentials.json").resolve() == secret
    assert (files.home / ".gemini" / "settings.json").read_bytes() == b"{}"
    assert not (files.home / ".gemini" / "settings.json").is_symlink()
