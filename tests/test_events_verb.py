"""``agentctl events``, the real CLI as a subprocess: one readable line per event, filters by
task, agent and kind, ``--json`` unchanged, ``--follow`` live, agents' text escaped."""

from __future__ import annotations

import json
import selectors
import sqlite3
import subprocess

from tests.harness import BIN, DaemonProcess


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def kinds_of(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines()]


def test_each_event_reads_as_one_line_and_filters_pick_by_task_agent_and_kind(daemon: DaemonProcess) -> None:
    """Each event is one line (time, seq, kind, who, what it says, per kind); --kind (repeatable,
    agent:<state> too), --agent and --task pick events; what agents wrote stays escaped and on
    one line."""
    task_id = daemon.create_task(description="review the parser")
    other_task = daemon.create_task(description="another task")
    worker = daemon.spawn_fake(task_id, "worker", "--sleep", "30")["id"]
    broken = daemon.spawn_fake(task_id, "broken", "--exit", "3")["id"]
    daemon.wait_state(broken)
    daemon.call("agent.progress", agent_id=worker, activity="testing", percent=40,
                message="halfway\x1b[32m all good\nsecond line")
    daemon.call("agent.finding", task_id=task_id, agent_id=worker, type="bug", severity="high",
                message="off-by-one\x1b]52;c;cm0gLXJm\x07 in lexer.py:88")
    ok(daemon.agentctl("kill", worker, "--reason", "enough"))
    ok(daemon.agentctl("task", "close", task_id))

    text = ok(daemon.agentctl("events", "--since", "0", "--task", task_id))
    assert "\x1b" not in text and "\x07" not in text
    lines = text.splitlines()
    assert kinds_of(text)[0] == "task_created" and "P2 review the parser" in lines[0] and task_id in lines[0]
    [progress] = [line for line in lines if " progress " in line]
    assert progress.split()[3] == worker
    assert progress.endswith("40% [testing] halfway\\x1b[32m all good second line")
    [finding] = [line for line in lines if " finding " in line]
    assert finding.endswith("high bug: off-by-one\\x1b]52;c;cm0gLXJm\\x07 in lexer.py:88")
    assert any(f"{broken}" in line and "failed: " in line and "3" in line.split("failed: ")[1] for line in lines)
    assert any(worker in line and "killed: enough" in line for line in lines)
    assert any(" cleanup " in line and line.endswith(" ok") for line in lines)
    assert kinds_of(text)[-1] == "task_closed" and "review the parser" in lines[-1]
    assert "another task" not in text
    assert len(lines) == len([line for line in ok(daemon.agentctl("events", "--since", "0", "--json",
                                                                  "--task", task_id)).splitlines()])

    picked = ok(daemon.agentctl("events", "--since", "0", "--kind", "finding", "--kind", "agent_state"))
    assert set(kinds_of(picked)) == {"finding", "agent_state"}
    failed = ok(daemon.agentctl("events", "--since", "0", "--kind", "agent:failed")).splitlines()
    assert len(failed) == 1 and broken in failed[0]
    mine = ok(daemon.agentctl("events", "--since", "0", "--agent", worker))
    assert {line.split()[3] for line in mine.splitlines()} == {worker}
    assert other_task in ok(daemon.agentctl("events", "--since", "0", "--kind", "task_created"))

    refused = daemon.agentctl("events", "--kind", "findings")
    assert refused.returncode == 2 and "unknown event selector 'findings'" in refused.stderr
    assert "agent:<state>" in refused.stderr and "Traceback" not in refused.stderr


def test_json_prints_the_events_unchanged(daemon: DaemonProcess) -> None:
    """--json writes each event as the daemon stored it, one JSON line each, --kind applied."""
    task_id = daemon.create_task()
    daemon.call("agent.finding", task_id=task_id, type="note", severity="low", message="a \x1b note",
                data={"line": 3})
    daemon.call("agent.finding", task_id=task_id, type="bug", severity="high", message="b")
    lines = ok(daemon.agentctl("events", "--since", "0", "--json", "--kind", "finding")).splitlines()
    printed = [json.loads(line) for line in lines]
    with sqlite3.connect(daemon.state_dir / "state.sqlite3") as db:
        stored = [json.loads(data) for (data,) in
                  db.execute("SELECT data FROM events WHERE kind = 'finding' ORDER BY seq")]
    assert printed == stored and len(printed) == 2
    assert printed[0]["data"]["message"] == "a \x1b note"  # JSON is for programs: not escaped, only encoded


def test_follow_prints_live_events_of_the_kinds_asked(daemon: DaemonProcess) -> None:
    """--follow goes on with live events as they are committed, only those of --kind."""
    task_id = daemon.create_task()
    worker = daemon.spawn_fake(task_id, "worker", "--sleep", "30")["id"]
    follower = subprocess.Popen([str(BIN / "agentctl"), "events", "--follow", "--kind", "progress", "--task", task_id],
                                env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert follower.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(follower.stdout, selectors.EVENT_READ)

            def next_line() -> str:
                assert sel.select(20), "no line within 20 s"
                return follower.stdout.readline()  # type: ignore[union-attr]

            daemon.call("agent.progress", agent_id=worker, percent=10, message="started")
            assert next_line().rstrip().endswith("10% started")
            # Subscribed by now (its first line came): what follows arrives live.
            daemon.call("agent.finding", task_id=task_id, type="note", severity="info", message="not this")
            daemon.call("agent.progress", agent_id=worker, percent=70, message="nearly")
            line = next_line()
        assert " progress " in line and worker in line and line.rstrip().endswith("70% nearly")
    finally:
        follower.kill()
        follower.wait()
        assert follower.stdout is not None
        follower.stdout.close()
        ok(daemon.agentctl("kill", worker))
