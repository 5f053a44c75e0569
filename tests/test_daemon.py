"""The daemon over its real socket: methods, durability across restarts, instance lock."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisord_agents.clients.client import Client
from supervisord_agents.errors import BadRequest, Forbidden, InvalidParams, LimitExceeded, NotFound, UnknownMethod
from supervisord_agents.protocol import MAX_DATA_DEPTH, PROTOCOL_VERSION
from tests.harness import DaemonProcess, eventually


def test_health_reports_the_daemon(daemon: DaemonProcess) -> None:
    """daemon.health answers with the pid, protocol version and zero counts on a fresh state."""
    health = daemon.call("daemon.health")
    assert health["pid"] == daemon.proc.pid
    assert health["protocol"] == PROTOCOL_VERSION
    assert health["counts"]["active"] == 0 and health["tasks"] == 0


def test_task_lifecycle(daemon: DaemonProcess) -> None:
    """A task is created with its context and limits, listed, shown with counts, and closed."""
    task = daemon.call("task.create", description="refactor the parser", priority="P1", cwd=str(daemon.base),
                       context={"deliverables": ["a PR"], "constraints": ["no new deps"]},
                       limits={"max_concurrent": 3, "max_total": 7, "max_depth": 2})
    assert task["id"].startswith("TASK-") and task["limits"]["max_concurrent"] == 3
    status = daemon.call("task.get", task_id=task["id"])
    assert status["counts"]["spawned"] == 0 and status["headroom"]["concurrent_left"] == 3
    assert [t["task"]["id"] for t in daemon.list("task.list")] == [task["id"]]
    closed = daemon.call("task.close", task_id=task["id"])
    assert closed["state"] == "closed"
    assert daemon.list("task.list", state="open") == []


def test_findings_filters_and_since_cursor(daemon: DaemonProcess) -> None:
    """findings.list filters by type and severity and returns only what is new after a cursor."""
    task_id = daemon.create_task()
    seqs = [daemon.call("agent.finding", task_id=task_id, type=t, severity=s, message=f"m{i}")["seq"]
            for i, (t, s) in enumerate([("bug", "high"), ("note", "info"), ("bug", "low")])]
    assert [f["message"] for f in daemon.list("findings.list", task_id=task_id, type="bug")] == ["m0", "m2"]
    assert [f["message"] for f in daemon.list("findings.list", task_id=task_id, severity="high")] == ["m0"]
    assert [f["seq"] for f in daemon.list("findings.list", task_id=task_id, since=seqs[0])] == seqs[1:]
    status = daemon.call("task.get", task_id=task_id)
    assert [f["message"] for f in status["latest_findings"]] == ["m0", "m1", "m2"]


def test_state_survives_a_restart(daemon: DaemonProcess) -> None:
    """Tasks and findings written before a clean stop are all there after a restart."""
    task_id = daemon.create_task(description="durable")
    for i in range(20):
        daemon.call("agent.finding", task_id=task_id, type="note", message=f"f{i}")
    assert daemon.stop() == 0
    daemon.start()
    assert daemon.call("task.get", task_id=task_id)["task"]["description"] == "durable"
    assert len(daemon.list("findings.list", task_id=task_id, limit=100)) == 20


def test_events_replay_then_live(daemon: DaemonProcess) -> None:
    """events.subscribe replays committed events after `since`, then streams new ones, in order."""
    task_id = daemon.create_task()
    daemon.call("agent.finding", task_id=task_id, type="note", message="before")
    with daemon.client(timeout=10) as c:
        stream = c.events(since=0)
        first = [next(stream) for _ in range(2)]
        assert [e.kind for e in first] == ["task_created", "finding"]
        daemon.call("agent.finding", task_id=task_id, type="note", message="after")
        live = next(stream)
    assert live.kind == "finding" and live.data["message"] == "after"
    assert [e.seq for e in first] + [live.seq] == [1, 2, 3]


def test_unknown_ids_are_not_found(daemon: DaemonProcess) -> None:
    """Well-formed ids that do not exist give not_found, for tasks and agents."""
    with daemon.client() as c:
        with pytest.raises(NotFound):
            c.request("task.get", task_id="TASK-20260101-000000-00000000")
        with pytest.raises(NotFound):
            c.request("agent.get", agent_id="worker-000000-abcdef")


@pytest.mark.parametrize("bad", ["a/b", "..", ".", "a:b", "a;b", "a'b", 'a"b', "$(touch x)", "a\nb", "a\n", "A", ""])
def test_hostile_names_are_refused_before_anything_happens(daemon: DaemonProcess, bad: str) -> None:
    """Agent types with path, tmux-target or shell syntax are refused with invalid_params; nothing is stored."""
    task_id = daemon.create_task()
    with daemon.client() as c:
        with pytest.raises(InvalidParams):
            c.request("agent.spawn", task_id=task_id, type=bad, argv=["true"])
        with pytest.raises(InvalidParams):
            c.request("agent.get", agent_id=bad)
    assert daemon.list("agent.list") == []
    assert daemon.call("daemon.health")["last_seq"] == 1  # only the task_created event


BAD_LIMITS = [{"max_concurrent": -1}, {"max_total": 10**12}, {"max_depth": 0}, {"max_depth": "5"}]


@pytest.mark.parametrize("limits", BAD_LIMITS)
def test_bad_limits_are_refused(daemon: DaemonProcess, limits: dict[str, object]) -> None:
    """Negative, huge or mistyped limits give invalid_params and create no task."""
    with daemon.client() as c, pytest.raises(InvalidParams):
        c.request("task.create", description="x",
                  limits={"max_concurrent": 1, "max_total": 1, "max_depth": 1, **limits})
    assert daemon.list("task.list") == []


def _raw_exchange(daemon: DaemonProcess, payload: bytes) -> list[bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(daemon.socket))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.splitlines()


@pytest.mark.parametrize(("payload", "code"), [
    (b"{not json\n", "bad_request"),
    (b"\xff\xfe\xfd\n", "bad_request"),
    (b"[1, 2]\n", "bad_request"),
    (b'{"id": 1}\n', "bad_request"),
    (b'{"id": 1, "method": "no.such"}\n', "unknown_method"),
    (b'{"id": 1, "method": "task.create", "params": {"description": 5}}\n', "invalid_params"),
    (b'{"id": 1, "method": "task.create", "params": {"description": "x", "bogus": 1}}\n', "invalid_params"),
    (b'{"id": 1, "method": "findings.list", "params": {"limit": -5}}\n', "invalid_params"),
    (b'{"id": 1, "method": "agent.get", "params": {"agent_id": "../../etc-000000-abcdef"}}\n', "invalid_params"),
])
def test_malformed_requests_get_typed_errors(daemon: DaemonProcess, payload: bytes, code: str) -> None:
    """Each malformed request gets an error reply with a stable code, and the daemon keeps serving."""
    import msgspec

    replies = [msgspec.json.decode(line) for line in _raw_exchange(daemon, payload)]
    assert [r["error"]["code"] for r in replies] == [code]
    assert daemon.call("daemon.health")["ok"] is True
    assert daemon.list("task.list") == []


def test_oversized_line_closes_the_connection(daemon: DaemonProcess) -> None:
    """A line past the 1 MiB cap gets a too_large error and a closed connection; the daemon lives on."""
    import msgspec

    big = b'{"id": 1, "method": "task.create", "params": {"description": "' + b"x" * (1 << 20) + b'"}}\n'
    replies = [msgspec.json.decode(line) for line in _raw_exchange(daemon, big)]
    assert replies[0]["error"]["code"] == "too_large"
    assert daemon.list("task.list") == []


def test_pipelined_requests_on_one_connection(daemon: DaemonProcess) -> None:
    """Many requests written without reading replies are all answered, in order, by id."""
    task_id = daemon.create_task()
    with daemon.client() as c:
        ids = [c.send("agent.finding", {"task_id": task_id, "type": "note", "message": f"p{i}"}) for i in range(500)]
        results = [c.request("daemon.health")]
        many = c.pipeline("agent.finding", [{"task_id": task_id, "type": "note", "message": f"q{i}"}
                                            for i in range(200)], window=16)
    assert len(ids) == 500 and results[0]["last_seq"] == 501
    assert [f["message"] for f in many] == [f"q{i}" for i in range(200)]


def test_a_pipeline_keeps_replies_that_come_out_of_order(daemon: DaemonProcess) -> None:
    """A method answered in the background ends when it ends: the later request's reply comes
    first, and the client keeps it for its turn rather than waiting for ever."""
    task_id = daemon.create_task()
    agent = daemon.call("agent.spawn", task_id=task_id, type="sleeper", argv=["sleep", "30"])
    with daemon.client(timeout=30) as c:
        waits = c.pipeline("agent.wait", [{"agent_ids": [agent["id"]], "timeout": t} for t in (1.5, 0.1)])
    assert [w["done"] for w in waits] == [False, False]
    daemon.call("agent.kill", agent_id=agent["id"])


def test_pipelined_reports_share_commits_and_are_answered_in_their_place(daemon: DaemonProcess) -> None:
    """Reports written in one go are carried out together, in order (they share commits);
    each reply, an error among them too, comes in its request's place; a request after them
    sees every one; a client that closed its side after writing still gets every reply."""
    import msgspec

    task_id = daemon.create_task()
    commits = daemon.call("daemon.health")["actor"]["commits"]
    requests: list[dict[str, object]] = [
        {"id": i, "method": "agent.finding", "params": {"task_id": task_id, "type": "note", "message": f"p{i}"}}
        for i in range(1, 301)]
    requests.insert(150, {"id": 1000, "method": "agent.finding", "params": {"task_id": "TASK-20990101-000000-0000dead",
                                                                           "type": "note", "message": "lost"}})
    requests.append({"id": 2000, "method": "findings.list", "params": {"task_id": task_id, "limit": 500}})
    payload = b"".join(msgspec.json.encode(r) + b"\n" for r in requests[:100]) + b"{broken\n" + \
        b"".join(msgspec.json.encode(r) + b"\n" for r in requests[100:])
    replies = [msgspec.json.decode(line) for line in _raw_exchange(daemon, payload)]
    assert [r["id"] for r in replies] == [*range(1, 101), None, *range(101, 151), 1000, *range(151, 301), 2000]
    assert replies[100]["error"]["code"] == "bad_request" and replies[151]["error"]["code"] == "not_found"
    assert [f["message"] for f in replies[-1]["result"]["items"]] == [f"p{i}" for i in range(1, 301)]
    assert [r["result"]["seq"] for r in replies[:100]] == sorted(r["result"]["seq"] for r in replies[:100])
    assert daemon.call("daemon.health")["actor"]["commits"] - commits < 150


def test_waits_that_time_out_leave_nothing_behind(daemon: DaemonProcess) -> None:
    """A wait that times out (or whose client went away) is forgotten: 300 of them leave no
    waiter in the daemon, and a wait still running is counted once per agent it waits on."""
    task_id = daemon.create_task()
    agents = [daemon.spawn_fake(task_id, f"sleeper{i}", "--sleep", "600")["id"] for i in range(2)]
    with daemon.client() as c:
        for _ in range(300):
            assert c.request("agent.wait", agent_ids=agents, timeout=0.001)["done"] is False
        assert c.request("daemon.health")["waiters"] == 0
        with daemon.client() as waiting:
            waiting.send("agent.wait", {"agent_ids": agents, "timeout": 600})
            eventually(lambda: c.request("daemon.health")["waiters"] == 2, 10, "the wait registered")
        eventually(lambda: c.request("daemon.health")["waiters"] == 0, 10, "the wait forgotten with its client")
    for agent_id in agents:
        daemon.call("agent.kill", agent_id=agent_id)


def test_finding_data_that_nests_too_deep_is_refused_and_harms_nothing(daemon: DaemonProcess) -> None:
    """Showing a finding walks its data: data nested deeper than MAX_DATA_DEPTH is refused at
    the door (even 100,000 levels, the most a request line holds), and the task stays readable."""
    task_id = daemon.create_task()
    ok = {"level": 1}
    for _ in range(MAX_DATA_DEPTH - 1):
        ok = {"level": ok}
    daemon.call("agent.finding", task_id=task_id, type="note", message="deep enough", data=ok)
    with daemon.client() as c:
        for depth in (MAX_DATA_DEPTH + 1, 985, 100_000):
            deep = b'{"d": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
            c._sock.sendall(b'{"id": 9, "method": "agent.finding", "params": {"task_id": "' + task_id.encode() +
                            b'", "type": "note", "message": "deep", "data": ' + deep + b"}}\n")
            # Past what the decoder walks (about 1,000 levels, less the daemon's own stack),
            # the request itself is refused (bad_request); short of it, its params.
            with pytest.raises(InvalidParams if depth < 100 else (InvalidParams, BadRequest), match="nest"):
                c._reply(9)
    assert [f["message"] for f in daemon.list("findings.list", task_id=task_id)] == ["deep enough"]
    assert daemon.call("task.get", task_id=task_id)["task"]["id"] == task_id
    assert daemon.agentctl("status").returncode == 0


def test_socket_and_runtime_dir_permissions(daemon: DaemonProcess) -> None:
    """The socket is 0600 inside a 0700 runtime directory."""
    assert stat.S_IMODE(daemon.runtime_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600


def _exchange_as(uid: int, path: Path, request: bytes) -> bytes:
    """Send ``request`` from a forked child running as ``uid``; return what it read back.
    (A fork, not a new interpreter: another uid may not be able to read this venv.)"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(path))
                with contextlib.suppress(BrokenPipeError):  # refused at accept: it may hang up first
                    s.sendall(request)
                os.write(w, s.recv(4096))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, repr(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reply = f.read()
    os.waitpid(pid, 0)
    return reply


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another uid")
def test_peer_of_another_uid_is_refused(daemon: DaemonProcess) -> None:
    """Even with the file permissions opened up, a client of another uid is refused by SO_PEERCRED."""
    daemon.base.chmod(0o755)
    daemon.runtime_dir.chmod(0o755)
    daemon.socket.chmod(0o666)
    assert _exchange_as(65534, daemon.socket, b'{"id":1,"method":"daemon.health"}\n').find(b'"forbidden"') >= 0
    assert daemon.call("daemon.health")["ok"] is True


def test_second_daemon_on_the_same_state_refuses(daemon: DaemonProcess) -> None:
    """A second daemon on the same state directory exits 75 with a clear message; the first keeps serving."""
    second = subprocess.run([sys.executable, "-m", "supervisord_agents.daemon"], env=daemon.env,
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 75
    assert "already running" in second.stderr
    assert daemon.call("daemon.health")["pid"] == daemon.proc.pid


def test_stale_socket_is_replaced() -> None:
    """A socket file left by a SIGKILLed daemon does not stop the next one from serving."""
    d = DaemonProcess().start()
    try:
        d.kill()
        assert d.socket.exists()
        d.start()
        assert d.call("daemon.health")["ok"]
    finally:
        d.close()


def test_agent_identity_is_enforced(daemon: DaemonProcess) -> None:
    """An unknown identity token is refused at hello."""
    with pytest.raises(Forbidden):
        Client(daemon.socket, token="x" * 43)


def test_unknown_method_from_the_client_library(daemon: DaemonProcess) -> None:
    """The client library turns an unknown_method reply into UnknownMethod."""
    with daemon.client() as c, pytest.raises(UnknownMethod):
        c.request("agent.teleport")


def test_stop_exits_cleanly(daemon: DaemonProcess) -> None:
    """daemon.stop makes the daemon exit 0 after answering."""
    assert daemon.call("daemon.stop") == {"stopping": True}
    assert daemon.proc.wait(30) == 0


def test_print_config_shows_defaults_file_and_environment(daemon: DaemonProcess) -> None:
    """--print-config shows the effective config: built-in defaults, the file, then the environment."""
    (daemon.base / "config.toml").write_text("[daemon]\ntmux_command_timeout = 7.5\n\n[limits]\nmax_total = 30\n")
    out = subprocess.run([sys.executable, "-m", "supervisord_agents.daemon", "--print-config"],
                         env={**daemon.env, "SUPERVISORD_AGENTS_IDLE_TIMEOUT": "42"}, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "tmux_command_timeout = 7.5" in out.stdout and "max_total = 30" in out.stdout
    assert "kill_grace = 2" in out.stdout  # the environment wins over the file
    assert "idle_timeout = 42" in out.stdout and "max_depth = 5" in out.stdout


def test_sighup_reloads_the_config(daemon: DaemonProcess) -> None:
    """After SIGHUP a lowered global cap applies to the next spawn, without a restart."""
    task = daemon.create_task()
    first = daemon.spawn_fake(task, "first", "--sleep", "60")
    (daemon.base / "config.toml").write_text("[daemon]\nglobal_max_concurrent = 1\n")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while True:
        try:
            daemon.spawn_fake(task, f"probe{time.monotonic_ns()}", "--sleep", "60")
        except LimitExceeded as e:
            assert "global" in e.message
            break
        assert time.monotonic() < deadline, "the reloaded cap never applied"
        time.sleep(0.05)
    assert daemon.call("daemon.health")["pid"] == daemon.proc.pid
    daemon.call("agent.kill", agent_id=first["id"])
