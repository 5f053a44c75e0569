"""``agentctl top``: the live view as a person sees it, in a real tmux pane (a private tmux
server per test, killed by its socket), against the real daemon; and its view of the event
log (the board) directly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from supervisord_agents.clients.render import to_json
from supervisord_agents.model import Agent, AgentState, DecidedBy, Event, EventKind, Exit, Task
from tests.harness import BIN, DaemonProcess, eventually, short_tmpdir

pytest.importorskip("urwid", reason="agentctl top needs the 'top' extra (urwid)")

from supervisord_agents.clients.top import Board, Snapshot, backoff  # noqa: E402

TASK = "TASK-20260101-120000-0123abcd"


class Pane:
    """``agentctl top`` in a 160x40 pane of a tmux server of its own (its socket in a temp
    folder; only ever killed by that socket). When top exits, the pane says how, and stays.

    (Not tmux's ``remain-on-exit`` and ``pane_dead_status``: tmux 3.3a at times leaves the
    pane's exited process unreaped, and the pane never dead.)"""

    def __init__(self, daemon: DaemonProcess, *args: str) -> None:
        self.folder = short_tmpdir("top-")
        self.socket = str(self.folder / "tmux.sock")
        # The pager is less, as a person without $PAGER gets it; nothing of the caller's tmux.
        env = {k: v for k, v in daemon.env.items() if k not in ("PAGER", "LESS", "TMUX", "TMUX_PANE")}
        then = '"$0" top "$@"; echo "top exited with status $?"; exec sleep 600'
        subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "40",
                        "sh", "-c", then, str(BIN / "agentctl"), *args], env=env, check=True, capture_output=True)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def top(daemon: DaemonProcess) -> Iterator[Callable[..., Pane]]:
    panes: list[Pane] = []

    def start(*args: str) -> Pane:
        panes.append(Pane(daemon, *args))
        return panes[-1]

    yield start
    for pane in panes:
        pane.close()


def see(pane: Pane, want: Callable[[str], object], what: str, timeout: float = 30) -> str:
    """Wait until the screen shows ``what``; fail with the screen as it was last seen."""
    last = [""]

    def check() -> object:
        last[0] = pane.screen()
        return want(last[0])

    try:
        eventually(check, timeout, what)
    except AssertionError:
        raise AssertionError(f"{what}: not seen within {timeout} s; the screen:\n{last[0]}") from None
    return last[0]


def row(screen: str, agent_id: str) -> str:
    """The line of the screen that shows ``agent_id`` (or "")."""
    return next((line for line in screen.splitlines() if agent_id in line), "")


def state(screen: str, agent_id: str) -> str:
    """The STATE column of ``agent_id``'s row: the word after its id."""
    words = row(screen, agent_id).split()
    return words[words.index(agent_id) + 1] if agent_id in words[:-1] else ""


def selected(screen: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith(">")), "")


def select(pane: Pane, key: str) -> str:
    """Move the selection down to the row that shows ``key``, as a person would with the arrow keys."""
    for _ in range(20):
        screen = pane.screen()
        if key in selected(screen):
            return screen
        before = selected(screen)
        pane.keys("Down")
        see(pane, lambda s: selected(s) != before, "the selection moving down")  # noqa: B023 - used at once
    raise AssertionError(f"could not select {key}; the screen:\n{pane.screen()}")


def test_top_shows_the_tasks_and_agents_live_and_kills_peeks_pages_and_filters(
        daemon: DaemonProcess, top: Callable[..., Pane]) -> None:
    """Tasks and agents show with their state and how they ended, progress arrives live (what
    an agent wrote escaped), a kill asks first and the row turns killed, peek shows the agent's
    screen, logs open its output in the pager, the filter narrows the rows, q quits with 0."""
    task_id = daemon.create_task(description="review the parser")
    victim = daemon.call("agent.spawn", task_id=task_id, type="victim", argv=["sleep", "600"])["id"]
    talker = daemon.call("agent.spawn", task_id=task_id, type="talker",
                         argv=["sh", "-c", "echo hello-from-talker; sleep 600"])["id"]
    failer = daemon.call("agent.spawn", task_id=task_id, type="failer", argv=["sh", "-c", "exit 3"])["id"]
    daemon.wait_state(failer)
    pane = top()

    screen = see(pane, lambda s: "exited with code 3" in row(s, failer) and "running" in row(s, victim),
                 "the task, its agents' states and the failed agent's reason")
    assert task_id in screen and "review the parser" in screen, screen
    assert "running" in row(screen, talker) and "failed" in row(screen, failer), screen
    assert "1 failed" in screen.splitlines()[0] and "connected" in screen.splitlines()[0], screen

    daemon.call("agent.progress", agent_id=talker, activity="testing", percent=40,
                message="halfway\x1b[31m there")
    screen = see(pane, lambda s: "40%" in row(s, talker), "the talker's progress, live")
    assert "testing" in row(screen, talker) and "halfway\\x1b[31m there" in row(screen, talker), screen
    assert "progress" in screen and "\x1b" not in screen, screen

    select(pane, victim)
    pane.keys("k")
    see(pane, lambda s: f"Kill {victim}?" in s and "y: kill it" in s, "the kill's confirmation")
    pane.keys("n")
    screen = see(pane, lambda s: f"{victim} not killed" in s, "the kill called off")
    assert "running" in row(screen, victim), screen
    pane.keys("k")
    see(pane, lambda s: f"Kill {victim}?" in s, "the kill's confirmation, again")
    pane.keys("y")
    screen = see(pane, lambda s: state(s, victim) == "killed" and "killed with agentctl top" in row(s, victim),
                 "the victim killed")
    assert daemon.call("agent.get", agent_id=victim)["state"] == "killed", screen

    select(pane, talker)
    pane.keys("p")
    screen = see(pane, lambda s: "its screen" in s and "hello-from-talker" in s, "the talker's screen (peek)")
    pane.keys("q")
    see(pane, lambda s: "its screen" not in s and talker in s, "the view again after peek")
    pane.keys("l")
    screen = see(pane, lambda s: "hello-from-talker" in s and "AGENT" not in s, "the talker's output in less")
    pane.keys("q")
    see(pane, lambda s: "AGENT" in s and talker in s, "the view again after the pager")

    pane.keys("/", "fail", "Enter")
    screen = see(pane, lambda s: failer in s and talker not in s, "only the failed agent, filtered")
    assert "filter: fail" in screen.splitlines()[0], screen
    pane.keys("/", "Escape")
    see(pane, lambda s: failer in s and talker in s and victim in s, "every agent, the filter cleared")

    pane.keys("q")
    see(pane, lambda s: "top exited with status 0" in s, "top exited, with status 0", timeout=10)


def test_top_reconnects_when_the_daemon_restarts_and_shows_what_happened_meanwhile(
        daemon: DaemonProcess, top: Callable[..., Pane]) -> None:
    """The view says it is reconnecting while the daemon is down, then picks up the event log
    where it left it: the downtime event, and an agent spawned after the restart."""
    task_id = daemon.create_task(description="survive a restart")
    sleeper = daemon.call("agent.spawn", task_id=task_id, type="sleeper", argv=["sleep", "600"])["id"]
    pane = top()
    see(pane, lambda s: "running" in row(s, sleeper) and "connected" in s, "the sleeper running")

    daemon.stop()
    see(pane, lambda s: "reconnecting" in s.splitlines()[0], "reconnecting while the daemon is down")
    daemon.start()
    screen = see(pane, lambda s: "connected" in s.splitlines()[0] and "daemon_downtime" in s,
                 "connected again, with the downtime event")
    assert "running" in row(screen, sleeper), screen
    later = daemon.call("agent.spawn", task_id=task_id, type="later", argv=["sleep", "600"])["id"]
    see(pane, lambda s: "running" in row(s, later), "an agent spawned after the restart")


def test_top_with_one_task_shows_only_that_task(daemon: DaemonProcess, top: Callable[..., Pane]) -> None:
    """--task: that task's agents, none of another's, live too."""
    mine = daemon.create_task(description="mine")
    other = daemon.create_task(description="other")
    theirs = daemon.call("agent.spawn", task_id=other, type="theirs", argv=["sleep", "600"])["id"]
    pane = top("--task", mine)
    see(pane, lambda s: mine in s and "connected" in s, "the task")
    ours = daemon.call("agent.spawn", task_id=mine, type="ours", argv=["sleep", "600"])["id"]
    screen = see(pane, lambda s: "running" in row(s, ours), "the task's new agent")
    assert other not in screen and theirs not in screen, screen


def test_top_shows_a_permission_request_and_a_approves_it(
        daemon: DaemonProcess, top: Callable[..., Pane], tmp_path: Path) -> None:
    """An agent asking permission shows the tool in the APPROVAL column and in the header's count;
    ``a`` on its row allows it: the agent gets the answer and the column goes."""
    task = daemon.create_task(description="asks")
    out = tmp_path / "out.json"
    calls = [["approve_tool_use", {"tool_name": "Bash", "input": {"command": "make"}}]]
    asker = daemon.call("agent.spawn", task_id=task, type="asker",
                        argv=[sys.executable, str(Path(__file__).with_name("mcp_probe.py")), str(out),
                              json.dumps(calls)])["id"]
    pane = top()
    screen = see(pane, lambda s: "Bash" in row(s, asker) and "1 awaiting approval" in s, "the request")
    assert "APPROVAL" in screen, screen
    select(pane, asker)
    pane.keys("a")
    see(pane, lambda s: "allowed" in s and "Bash" not in row(s, asker), "the request allowed")
    result = json.loads(eventually(lambda: out.exists() and out.read_text(), 30, "the agent's answer"))
    assert json.loads(result[0]["ok"])["behavior"] == "allow", result


def test_top_refuses_without_a_terminal_and_other_verbs_do_not_import_it(daemon: DaemonProcess) -> None:
    """Without a terminal top exits 2 and says why, without urwid it says how to install it;
    agentctl status runs without importing top or its terminal UI library."""
    result = daemon.agentctl("top")
    assert result.returncode == 2 and "needs a terminal" in result.stderr, result.stderr
    probe = ("import sys; from supervisord_agents.clients import agentctl; code = agentctl.main(['status']); "
             "print(code, sorted(m for m in ('urwid', 'supervisord_agents.clients.top') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], env=daemon.env, capture_output=True, text=True, timeout=60)
    assert run.stdout.splitlines()[-1] == "0 []", run.stdout + run.stderr
    without = ("import sys; sys.modules['urwid'] = None; from supervisord_agents.clients import agentctl; "
               "print(agentctl.main(['top']))")
    run = subprocess.run([sys.executable, "-c", without], env=daemon.env, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "1" and "pip install 'supervisord-agents[top]'" in run.stderr, run.stderr


# --- the board: the event log as the view holds it ---------------------------------------


def agent(n: int, state: AgentState = AgentState.RUNNING, **fields: object) -> Agent:
    return Agent(id=f"worker-120000-{n:06x}", task_id=TASK, type="worker", state=state, created_at=1.0,
                 updated_at=1.0, **fields)


def event(seq: int, kind: EventKind, data: object, agent_id: str | None = None) -> Event:
    return Event(seq=seq, at=float(seq), kind=kind, task_id=TASK, agent_id=agent_id,
                 data=msgspec.json.decode(to_json(data)))  # as the client decodes it: plain JSON


def test_the_board_converges_on_the_log_whatever_the_snapshot_already_holds() -> None:
    """Events at or before what the board has seen are ignored; an agent_state event replaces
    the row, progress updates it, counts and cost follow, a purge removes the task's rows."""
    board = Board()
    task = Task(id=TASK, description="t", created_at=1.0)
    done = agent(2, AgentState.COMPLETED, exit=Exit(decided_by=DecidedBy.EXIT_STATUS, code=0, cost_usd=0.25))
    board.load(Snapshot(tasks=[task], agents=[agent(1), done], seq=10))
    assert board.rows() == [TASK, agent(1).id, done.id] and board.tasks[TASK].cost == 0.25

    board.apply(event(9, EventKind.AGENT_STATE, agent(1, AgentState.FAILED)))  # already in the snapshot
    assert board.agents[agent(1).id].state is AgentState.RUNNING
    board.apply(event(11, EventKind.PROGRESS, {"activity": "lint", "message": None, "percent": 30}, agent(1).id))
    assert (board.agents[agent(1).id].activity, board.agents[agent(1).id].progress) == ("lint", 30)
    board.apply(event(12, EventKind.AGENT_STATE, agent(3)))
    board.apply(event(13, EventKind.AGENT_STATE, agent(1, AgentState.KILLED, kill_reason="enough")))
    assert board.states == {AgentState.KILLED: 1, AgentState.COMPLETED: 1, AgentState.RUNNING: 1}
    assert board.tasks[TASK].states == board.states
    assert board.rows("KILL") == [TASK, agent(1).id] and board.rows("nothing") == []
    assert board.rows("review") == [] and board.rows("t") == board.rows()

    board.apply(event(14, EventKind.TASK_PURGED, {"agents": 3}))
    assert board.rows() == [] and not board.agents and +board.states == {}


def test_reconnects_back_off_from_a_tenth_of_a_second_to_five() -> None:
    """0.1 s, doubling, at most 5 s."""
    assert [backoff(n) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff(10_000) == 5.0
