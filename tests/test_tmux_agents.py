"""Agents in real tmux: spawn, exit status, kill, cleanup, limits, reconciliation and
re-adoption, against a real daemon whose private tmux server is watched independently
through libtmux (what tmux really holds) and /proc (what really runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libtmux
import libtmux.exc
import pytest
import trio

from supervisord_agents.errors import DuplicateAgent, InvalidParams, LimitExceeded, SupervisorError
from supervisord_agents.files import AgentFiles, read_start, read_status
from supervisord_agents.tmux import AGENT_MARKER
from supervisord_agents.tmux_control import SETTLE, ControlModeTmux
from tests.harness import FAKE_AGENT, DaemonProcess, alive, eventually

LIVE = ("queued", "starting", "running", "stopping")


def group_alive(pgid: int) -> list[int]:
    """Live members of process group ``pgid``, read from /proc."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                members.append(int(name))
    return members


def our_sessions(d: DaemonProcess) -> dict[str, str]:
    """Session name -> agent marker, for every marked session on the daemon's tmux server (libtmux)."""
    server = libtmux.Server(socket_path=str(d.tmux_socket))
    sessions = {}
    for session in server.sessions:
        try:
            marker = session.show_option(AGENT_MARKER)
        except libtmux.exc.InvalidOption:  # a session without the marker (the daemon's keeper)
            continue
        if marker:
            sessions[session.session_name] = str(marker)
    return sessions


def files_of(d: DaemonProcess, agent: dict[str, Any]) -> AgentFiles:
    return AgentFiles(d.state_dir, agent["task_id"], agent["id"])


def cleaned(d: DaemonProcess, agent_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        agent: dict[str, Any] = d.call("agent.get", agent_id=agent_id)
        return agent if agent["cleanup"] and agent["cleanup"]["ok"] else None

    return eventually(done, what=f"cleanup of {agent_id}")


@pytest.fixture
def fast() -> Iterator[DaemonProcess]:
    """A daemon with a short kill grace and reconcile interval."""
    d = DaemonProcess(kill_grace=1, reconcile_interval=0.5).start()
    try:
        yield d
    finally:
        d.close()


def test_ten_concurrent_spawns(fast: DaemonProcess) -> None:
    task = fast.create_task()
    with ThreadPoolExecutor(10) as pool:
        agents = list(pool.map(lambda i: fast.spawn_fake(task, f"w{i}", "--sleep", "30"), range(10)))
    ids = {a["id"] for a in agents}
    assert len(ids) == 10 and [a["state"] for a in agents] == ["running"] * 10, agents
    assert set(our_sessions(fast).values()) == ids
    assert len({a["tmux"]["session_id"] for a in agents}) == 10
    counts = fast.call("task.get", task_id=task)["counts"]
    assert (counts["active"], counts["spawned"]) == (10, 10)
    assert fast.call("daemon.health")["counts"]["active"] == 10
    for a in agents:
        fast.call("agent.kill", agent_id=a["id"])


def test_fifty_completions_leave_nothing_behind(fast: DaemonProcess) -> None:
    task = fast.create_task(limits={"max_total": 100})
    agents = []
    for _ in range(50):
        agent = fast.spawn_fake(task, "worker", "--result", "ok")
        ended = fast.wait_state(agent["id"])
        assert ended["state"] == "completed", ended
        agents.append(ended)
    for agent in agents:
        done = cleaned(fast, agent["id"])
        files = files_of(fast, done)
        status = read_status(files)
        assert status is not None and status.code == 0
        assert not files.prompt.exists() and not files.log.exists()
        assert files.archive.exists() and done["cleanup"]["archive"] == str(files.archive)
        assert status.pgid is not None and not group_alive(status.pgid)
    assert our_sessions(fast) == {}
    archive = fast.state_dir / "tasks" / task / "archive"
    assert len(list(archive.glob("*.log.gz"))) == 50


def test_rapid_spawn_then_kill_leaks_nothing(fast: DaemonProcess) -> None:
    task = fast.create_task(limits={"max_total": 100_000})
    groups: list[int] = []
    outcomes: dict[str, int] = {}
    for i in range(200):
        agent = fast.spawn_fake(task, f"k{i % 4}", "--sleep", "60")
        killed = fast.call("agent.kill", agent_id=agent["id"], reason="cycle")
        # A kill that lands as the agent is still starting its runner is still a kill.
        assert killed["state"] == "killed", killed
        outcomes[killed["exit"]["decided_by"]] = outcomes.get(killed["exit"]["decided_by"], 0) + 1
        start = read_start(files_of(fast, agent))
        if start is not None:
            groups.append(start.pgid)
    assert fast.call("task.get", task_id=task)["counts"]["killed"] == 200
    eventually(lambda: fast.call("daemon.health")["counts"]["active"] == 0)
    eventually(lambda: our_sessions(fast) == {}, what="no sessions left")
    assert [g for g in groups if group_alive(g)] == []
    agents = fast.list("agent.list", task_id=task)
    eventually(lambda: all(a["cleanup"] and a["cleanup"]["ok"] for a in fast.list("agent.list", task_id=task)),
               what="every cleanup recorded")
    assert not any(files_of(fast, a).prompt.exists() for a in agents)


EXITS = [
    (["--exit", "0"], "completed", {"code": 0}),
    (["--exit", "3"], "failed", {"code": 3}),
    (["--signal", "TERM"], "failed", {"signal": signal.SIGTERM}),
    (["--signal", "KILL"], "failed", {"signal": signal.SIGKILL}),
]


@pytest.mark.parametrize("run", range(5))
@pytest.mark.parametrize(("args", "state", "expected"), EXITS, ids=["exit0", "exit3", "sigterm", "sigkill"])
def test_exit_is_recorded(daemon: DaemonProcess, args: list[str], state: str, expected: dict[str, int],
                          run: int) -> None:
    task = daemon.create_task()
    agent = daemon.spawn_fake(task, "ender", *args)
    ended = daemon.wait_state(agent["id"])
    assert ended["state"] == state
    assert ended["exit"]["decided_by"] == "exit_status"
    assert {k: ended["exit"].get(k) for k in expected} == expected


def test_stream_json_result_is_recorded(daemon: DaemonProcess, tmp_path: Path) -> None:
    """A provider marked stream_json gets its final result event recorded with the exit."""
    config = daemon.base / "config.toml"
    config.write_text(f'[providers.fake]\nargv = ["{sys.executable}", "{FAKE_AGENT}"]\nevents = "claude"\n'
                      "model_flag = []\n")
    daemon.stop()
    daemon.start()
    task = daemon.create_task()
    agent = daemon.call("agent.spawn", task_id=task, type="streamer", provider="fake", argv=["--result", "error"])
    ended = daemon.wait_state(agent["id"])
    assert ended["exit"]["is_error"] is True and ended["exit"]["turns"] == 3
    assert ended["exit"]["cost_usd"] == pytest.approx(0.0123) and ended["exit"]["session_id"] == "fake-session"


def test_kill_escalates_and_empties_the_group(fast: DaemonProcess) -> None:
    """An agent that ignores SIGTERM is SIGKILLed after the grace period; nothing of its group remains."""
    task = fast.create_task()
    agent = fast.spawn_fake(task, "stubborn", "--ignore-term", "--sleep", "60")
    files = files_of(fast, agent)
    start = eventually(lambda: read_start(files))
    eventually(lambda: "read" in fast.call("agent.output", agent_id=agent["id"])["output"], what="agent started")
    killed = fast.call("agent.kill", agent_id=agent["id"], reason="stop it")
    assert killed["state"] == "killed" and killed["exit"].get("signal") == signal.SIGKILL, killed["exit"]
    assert group_alive(start.pgid) == []
    eventually(lambda: not alive(start.runner_pid), what="the runner exits after writing its record")
    assert agent["tmux"]["session_id"] not in {s.session_id for s in
                                               libtmux.Server(socket_path=str(fast.tmux_socket)).sessions}


def test_kill_tree_kills_descendants(fast: DaemonProcess) -> None:
    task = fast.create_task()
    parent = fast.spawn_fake(task, "parent", "--sleep", "60")
    child = fast.spawn_fake(task, "child", "--sleep", "60", parent=parent["id"])
    assert child["depth"] == 2
    grandchild = fast.spawn_fake(task, "grandchild", "--sleep", "60", parent=child["id"])
    fast.call("agent.kill", agent_id=parent["id"], tree=True, reason="tree")
    for agent in (parent, child, grandchild):
        assert fast.wait_state(agent["id"])["state"] == "killed"
    eventually(lambda: our_sessions(fast) == {}, what="no sessions left")


def test_killing_the_tmux_server_ends_every_live_agent_and_spawns_still_work(fast: DaemonProcess) -> None:
    task = fast.create_task()
    agents = [fast.spawn_fake(task, f"w{i}", "--sleep", "60") for i in range(3)]
    fast.kill_tmux()

    def all_ended() -> bool:
        return all(fast.call("agent.get", agent_id=a["id"])["state"] not in LIVE for a in agents)

    eventually(all_ended, timeout=30, what="every agent out of the live states")
    for a in agents:
        ended = fast.call("agent.get", agent_id=a["id"])
        assert ended["state"] in ("failed", "lost"), ended  # SIGHUP from the dying server, or no record
    eventually(lambda: fast.call("daemon.health")["tmux_healthy"], what="tmux back")
    again = fast.spawn_fake(task, "again", "--exit", "0")
    assert fast.wait_state(again["id"])["state"] == "completed"


def test_a_restarted_daemon_re_adopts_running_agents(fast: DaemonProcess) -> None:
    """SIGKILL the daemon while 10 agents run: the next daemon adopts them and sees them complete."""
    task = fast.create_task()
    agents = [fast.spawn_fake(task, f"w{i}", "--sleep", "4") for i in range(10)]
    fast.kill()
    fast.start()
    for a in agents:
        now = fast.call("agent.get", agent_id=a["id"])
        assert now["state"] == "running" and now["tmux"] == a["tmux"]
    for a in agents:
        assert fast.wait_state(a["id"])["state"] == "completed"


def test_limits_hold_under_concurrent_spawns(fast: DaemonProcess) -> None:
    task = fast.create_task(limits={"max_concurrent": 20, "max_total": 45})

    def spawn(i: int) -> Any:
        try:
            return fast.spawn_fake(task, f"w{i}", "--sleep", "30")
        except SupervisorError as e:
            return e

    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(spawn, range(30)))
    admitted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, SupervisorError)]
    assert len(admitted) == 20 and len(refused) == 10
    assert all(isinstance(e, LimitExceeded) for e in refused)
    assert len(our_sessions(fast)) == 20
    with pytest.raises(DuplicateAgent) as dup:
        fast.spawn_fake(task, admitted[0]["type"])
    assert admitted[0]["id"] in dup.value.message
    for a in admitted:
        fast.call("agent.kill", agent_id=a["id"])


def test_depth_six_is_refused(fast: DaemonProcess) -> None:
    task = fast.create_task()
    parent = None
    chain = []
    for depth in range(1, 6):
        agent = fast.spawn_fake(task, f"d{depth}", "--sleep", "60", parent=parent)
        assert agent["depth"] == depth
        chain.append(agent)
        parent = agent["id"]
    with pytest.raises(LimitExceeded, match="depth"):
        fast.spawn_fake(task, "d6", parent=parent)
    fast.call("agent.kill", agent_id=chain[0]["id"], tree=True)


def test_prompt_reaches_the_agent_byte_for_byte(fast: DaemonProcess, tmp_path: Path) -> None:
    prompt = "'; rm -rf / #\n\"$(touch /tmp/pwned)\" `id` $HOME #{session_name} \\n %1 ;\n\tünïcødé ✓ 漢字\r\n"
    copy = tmp_path / "copy"
    task = fast.create_task()
    agent = fast.spawn_fake(task, "reader", "--copy-stdin", str(copy), prompt=prompt)
    assert fast.wait_state(agent["id"])["state"] == "completed"
    received = copy.read_bytes().decode()
    assert received.startswith(prompt) and agent["id"] in received[len(prompt):]
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("bad", ["a.b", "a:b", "a;b", "a/b", "$(id)", "../x", "A", "-x", "a b", "=x", "%1"])
def test_hostile_type_names_never_reach_tmux(fast: DaemonProcess, bad: str) -> None:
    task = fast.create_task()
    before = {s.session_id for s in libtmux.Server(socket_path=str(fast.tmux_socket)).sessions}
    with pytest.raises(InvalidParams):
        fast.spawn_fake(task, bad)
    after = {s.session_id for s in libtmux.Server(socket_path=str(fast.tmux_socket)).sessions}
    assert after == before
    assert fast.call("task.get", task_id=task)["counts"]["spawned"] == 0


def test_an_orphan_session_is_reported_and_killed_only_on_request(fast: DaemonProcess) -> None:
    server = libtmux.Server(socket_path=str(fast.tmux_socket))
    orphan = server.new_session(session_name="sa-ghost-000000-abcdef", attach=False, window_command="sleep 60")
    orphan.set_option(AGENT_MARKER, "ghost-000000-abcdef")
    report = fast.call("daemon.reconcile")
    assert report["orphans"] == [orphan.session_id] and report["orphans_killed"] == []
    assert server.has_session("sa-ghost-000000-abcdef")
    dry = fast.call("daemon.reconcile", dry_run=True, kill_orphans=True)
    assert dry["orphans_killed"] == [] and server.has_session("sa-ghost-000000-abcdef")
    fast.call("daemon.reconcile", kill_orphans=True)
    eventually(lambda: not server.has_session("sa-ghost-000000-abcdef"), what="orphan killed")


def test_a_session_of_an_ended_agent_is_killed_again(fast: DaemonProcess) -> None:
    """A marked session whose agent is already terminal (the daemon missed the kill) is killed."""
    task = fast.create_task()
    agent = fast.spawn_fake(task, "ended", "--exit", "0")
    fast.wait_state(agent["id"])
    server = libtmux.Server(socket_path=str(fast.tmux_socket))
    # Made and marked in one server command: an unmarked session would be ended as foreign at once.
    subprocess.run(["tmux", "-S", str(fast.tmux_socket), "new-session", "-d", "-s", "stray", "sleep 60", ";",
                    "set-option", "-t", "=stray:", AGENT_MARKER, agent["id"]], check=True)
    eventually(lambda: not server.has_session("stray"), what="stray session killed")


def test_logs_output_formats(fast: DaemonProcess) -> None:
    task = fast.create_task()
    agent = fast.spawn_fake(task, "talker", "--result", "ok", "--stderr", "a warning")
    fast.wait_state(agent["id"])
    cleaned(fast, agent["id"])  # read back from the compressed archive
    text = fast.call("agent.output", agent_id=agent["id"])
    assert "a warning" in text["output"] and '"type": "result"' in text["output"]
    jsonl = fast.call("agent.output", agent_id=agent["id"], format="jsonl")
    assert "a warning" not in jsonl["output"]
    summary = fast.call("agent.output", agent_id=agent["id"], format="summary")["output"]
    assert "[TOOL] Bash" in summary and "[RESULT]" in summary
    filtered = fast.call("agent.output", agent_id=agent["id"], regex="warn")
    assert filtered["output"].strip() == "a warning"
    tail = fast.call("agent.output", agent_id=agent["id"], tail=1)
    assert tail["output"].count("\n") == 1
    small = fast.call("agent.output", agent_id=agent["id"], max_bytes=256)
    assert len(small["output"].encode()) <= 256 and small["note"]


def test_a_runaway_log_is_rotated_and_read_back_by_offset() -> None:
    d = DaemonProcess(log_max_bytes=65536).start()
    try:
        task = d.create_task()
        agent = d.spawn_fake(task, "runaway", "--spam", "20000", "--result", "ok")
        assert d.wait_state(agent["id"])["state"] == "completed"
        done = cleaned(d, agent["id"])
        files = files_of(d, done)
        assert files.archive_start() > 1_000_000  # the first megabytes were rotated away
        last = d.call("agent.output", agent_id=agent["id"], tail=1, format="summary")
        assert last["output"].startswith("[DONE] ok")
        earliest = d.call("agent.output", agent_id=agent["id"], offset=0, max_bytes=256)
        assert "dropped when the log was rotated" in earliest["note"]
        spam = "".join(f"spam {i:09d} {'s' * 84}\n" for i in range(20000))
        start = files.archive_start()
        assert earliest["offset"] > start and earliest["output"] == spam[start:earliest["offset"]]
    finally:
        d.close()


def test_queued_spawns_start_as_slots_free_and_run_to_completion(fast: DaemonProcess, tmp_path: Path) -> None:
    """With max concurrent 2, four spawns that ask to queue: two run, two return at once as
    ``queued``; each queued agent starts when a running one ends, gets its prompt, and completes."""
    task = fast.create_task(limits={"max_concurrent": 2})
    copies = [tmp_path / f"prompt{i}" for i in range(4)]
    agents = [fast.spawn_fake(task, f"q{i}", "--sleep", "2", "--copy-stdin", str(copies[i]), prompt=f"job {i}",
                              queue=True) for i in range(4)]
    assert [a["state"] for a in agents] == ["running", "running", "queued", "queued"]
    counts = fast.call("task.get", task_id=task)["counts"]
    assert (counts["active"], counts["queued"]) == (2, 2)
    assert not files_of(fast, agents[2]).prompt.exists() and files_of(fast, agents[2]).launch.exists()
    done = [fast.wait_state(a["id"]) for a in agents]
    assert [a["state"] for a in done] == ["completed"] * 4
    assert min(d["started_at"] for d in done[2:]) >= min(d["ended_at"] for d in done[:2])
    for i, copy in enumerate(copies):
        assert copy.read_text().startswith(f"job {i}")
    for agent in done[2:]:
        files = files_of(fast, cleaned(fast, agent["id"]))
        assert not files.launch.exists() and not files.prompt.exists()


def test_a_queued_agent_survives_a_daemon_restart_and_can_be_killed_before_it_starts(
    fast: DaemonProcess, tmp_path: Path,
) -> None:
    task = fast.create_task(limits={"max_concurrent": 1})
    first = fast.spawn_fake(task, "first", "--sleep", "2")
    waiting = fast.spawn_fake(task, "waiting", "--copy-stdin", str(tmp_path / "prompt"), prompt="after restart",
                              queue=True)
    dropped = fast.spawn_fake(task, "dropped", queue=True)
    killed = fast.call("agent.kill", agent_id=dropped["id"], reason="not needed")
    assert killed["state"] == "killed" and killed["exit"]["decided_by"] == "kill"
    assert not files_of(fast, cleaned(fast, dropped["id"])).launch.exists()
    fast.kill()  # SIGKILL: the queue is in the database, the launch record on disk
    fast.start()
    assert fast.call("agent.get", agent_id=waiting["id"])["state"] == "queued"
    assert fast.wait_state(first["id"])["state"] == "completed"
    assert fast.wait_state(waiting["id"])["state"] == "completed"
    assert (tmp_path / "prompt").read_text().startswith("after restart")


def test_agentctl_spawn_queue(fast: DaemonProcess) -> None:
    task = fast.create_task(limits={"max_concurrent": 1})
    fast.spawn_fake(task, "busy", "--sleep", "30")
    refused = fast.agentctl("spawn", "--task", task, "--type", "late", "--", sys.executable, FAKE_AGENT)
    assert refused.returncode != 0 and "max concurrent 1" in refused.stderr
    queued = fast.agentctl("spawn", "--task", task, "--type", "late", "--queue", "--", sys.executable, FAKE_AGENT)
    assert queued.returncode == 0 and queued.stdout.endswith(" queued\n")
    status = fast.agentctl("status")
    assert "1 active, 1 queued" in status.stdout


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_nothing_the_agent_started_outlives_it(fast: DaemonProcess, end: str) -> None:
    """A grandchild that escaped the agent's group and session (double fork + setsid) is ended
    with the agent, whether the agent exits by itself or is killed: the runner is its subreaper."""
    task = fast.create_task()
    agent = fast.spawn_fake(task, "leaky", "--child-sleep", "120", "--sleep", "60" if end == "kill" else "0.5")
    out = eventually(lambda: fast.call("agent.output", agent_id=agent["id"], regex="^grandchild")["output"],
                     what="the grandchild's pid")
    grandchild = int(out.split()[1])
    assert alive(grandchild)
    if end == "kill":
        fast.call("agent.kill", agent_id=agent["id"])
    assert fast.wait_state(agent["id"])["state"] == ("completed" if end == "exit" else "killed")
    eventually(lambda: not alive(grandchild), timeout=10, what="the grandchild gone")


def test_a_task_budget_stops_spawns_once_its_agents_cost_it(daemon: DaemonProcess) -> None:
    """Each fake agent's final result reports $0.0123; with a $0.02 budget two run, the third is refused."""
    (daemon.base / "config.toml").write_text(
        f'[providers.fake]\nargv = ["{sys.executable}", "{FAKE_AGENT}", "--result", "ok"]\nevents = "claude"\n'
        "model_flag = []\n")
    daemon.stop()
    daemon.start()
    task = daemon.create_task(limits={"max_cost_usd": 0.02})
    for i in range(2):
        done = daemon.wait_state(daemon.call("agent.spawn", task_id=task, type=f"w{i}", provider="fake")["id"])
        assert done["exit"]["cost_usd"] == pytest.approx(0.0123)
    status = daemon.call("task.get", task_id=task)["headroom"]
    assert status["cost_usd"] == pytest.approx(0.0246) and status["cost_left_usd"] == 0.0
    with pytest.raises(LimitExceeded, match="budget"):
        daemon.call("agent.spawn", task_id=task, type="w2", provider="fake")
    assert "$0.0000 of the budget left" in daemon.agentctl("task", "show", task).stdout


def test_a_killed_daemon_leaves_no_control_client_behind(fast: DaemonProcess) -> None:
    """The control clients of SIGKILLed daemons are detached by the next one: one stays
    attached, and the tmux server can still be shut down (tmux 3.3a ignores kill-server
    while a stale control client hangs on)."""
    def control_clients() -> list[int]:
        out = subprocess.run(["tmux", "-S", str(fast.tmux_socket), "list-clients", "-F",
                              "#{client_pid} #{client_control_mode}"], capture_output=True, text=True, check=True)
        return [int(pid) for pid, control in (line.split() for line in out.stdout.splitlines()) if control == "1"]

    first = control_clients()
    for _ in range(2):
        fast.kill()
        fast.start()
    eventually(lambda: len(control_clients()) == 1, timeout=10, what="one control client")
    assert not any(alive(pid) for pid in first)
    server = int(subprocess.run(["tmux", "-S", str(fast.tmux_socket), "display-message", "-p", "#{pid}"],
                                capture_output=True, text=True, check=True).stdout)
    fast.stop()
    fast.kill_tmux()
    eventually(lambda: not alive(server), timeout=10, what="the tmux server gone")


# -- the reconciler's wake-up: what tmux says changed ---------------------------------------


class _Script:
    """A control client's stdout that says what the test feeds it, chunk by chunk."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](16)
        self.stdout = self

    def __aiter__(self) -> _Script:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@pytest.mark.parametrize(("notification", "after"), [
    (b"%sessions-changed\n", SETTLE),  # a session made: most often our own spawn, which knows it
    (b"%unlinked-window-close @4\n%sessions-changed\n", 0.0),  # an agent's session ended: at once
    (b"%window-close @2\n", 0.0),
])
async def test_an_end_wakes_the_reconciler_at_once_a_session_made_after_a_settle(
        autojump_clock: trio.abc.Clock, notification: bytes, after: float) -> None:
    backend = ControlModeTmux(socket_path=Path("/nonexistent/tmux.sock"), config_path=Path("/nonexistent/tmux.conf"))
    script = _Script()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend._reader, script, trio.Event())
        await script.send.send(notification)
        start = trio.current_time()
        await backend.wait_changed()
        assert trio.current_time() - start == pytest.approx(after)
        # A burst of sessions made while it settles costs one pass, not one each.
        await script.send.send(b"%sessions-changed\n" * 5)
        await backend.wait_changed()
        with trio.move_on_after(1.0) as idle:
            await backend.wait_changed()
        assert idle.cancelled_caught
        await script.send.aclose()
