"""agentctl, the real CLI as a subprocess against a real daemon: every verb, --json,
and the stable exit codes."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import BIN, FAKE_AGENT, DaemonProcess, eventually, short_tmpdir


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def js(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def test_not_running_is_one_clear_line_and_exit_3() -> None:
    base = short_tmpdir()
    try:
        env = {**os.environ, "SUPERVISORD_AGENTS_SOCKET": str(base / "nope.sock")}
        result = subprocess.run([str(BIN / "agentctl"), "status"], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 3
        assert result.stderr.count("\n") == 1 and "not running" in result.stderr
        assert "supervisord-agents" in result.stderr  # says how to start it
        assert "Traceback" not in result.stderr
    finally:
        base.rmdir()


def test_agentctl_imports_neither_trio_nor_mcp_nor_libtmux() -> None:
    """agentctl starts fast: none of its modules pulls in trio, mcp or libtmux."""
    probe = ("import sys, supervisord_agents.clients.agentctl; "
             "print(sorted(m for m in ('trio', 'mcp', 'libtmux', 'anyio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert ok(result).strip() == "[]"


def test_runs_as_a_module() -> None:
    """`python -m supervisord_agents.clients.agentctl` is agentctl."""
    result = subprocess.run([sys.executable, "-m", "supervisord_agents.clients.agentctl", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert "task" in ok(result) and "peek" in result.stdout


def test_socket_flag_picks_the_daemon(daemon: DaemonProcess) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISORD_AGENTS_")}
    result = subprocess.run([str(BIN / "agentctl"), "--socket", str(daemon.socket), "health", "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert js(result)["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_task_verbs(daemon: DaemonProcess) -> None:
    created = js(daemon.agentctl("task", "create", "review the parser", "--priority", "P1", "--cwd", str(daemon.base),
                                 "--max-concurrent", "3", "--deliverable", "a report", "--json"))
    task_id = created["id"]
    assert created["limits"]["max_concurrent"] == 3
    assert created["context"]["deliverables"] == ["a report"]
    assert ok(daemon.agentctl("task", "create", "plain", "--cwd", str(daemon.base))).strip().startswith("TASK-")
    listed = js(daemon.agentctl("tasks", "--json"))
    assert task_id in [t["task"]["id"] for t in listed]
    assert task_id in ok(daemon.agentctl("tasks"))
    shown = js(daemon.agentctl("task", "show", task_id, "--json"))
    assert shown["task"]["id"] == task_id and shown["counts"]["spawned"] == 0
    assert "review the parser" in ok(daemon.agentctl("status"))
    ok(daemon.agentctl("task", "close", task_id))
    assert js(daemon.agentctl("task", "show", task_id, "--json"))["task"]["state"] == "closed"


def test_task_create_leaves_limits_not_given_to_the_config() -> None:
    """`--max-cost` alone sets the budget and nothing else: the other limits are the
    daemon's configured [limits] (a configured max_depth of 3 stays 3, not a built-in 5)."""
    d = DaemonProcess()
    (d.base / "config.toml").write_text("[limits]\nmax_depth = 3\n")
    try:
        d.start()
        task = js(d.agentctl("task", "create", "x", "--max-cost", "5", "--json"))
        assert task["limits"]["max_depth"] == 3
        assert task["limits"]["max_cost_usd"] == 5
        assert task["limits"]["max_concurrent"] == 20  # not configured: the daemon's built-in value
        given = js(d.agentctl("task", "create", "y", "--max-depth", "2", "--json"))
        assert given["limits"]["max_depth"] == 2 and given["limits"]["max_cost_usd"] is None
    finally:
        d.close()


def test_agent_verbs_and_exit_codes(daemon: DaemonProcess) -> None:
    task_id = daemon.create_task()
    good = ok(daemon.agentctl("spawn", "--task", task_id, "--type", "worker", "--prompt", "hi", "--",
                              sys.executable, FAKE_AGENT, "--report", "--sleep", "0.2", "--stderr", "to stderr"))
    agent_id = good.strip()
    assert daemon.agentctl("wait", agent_id, "--timeout", "60").returncode == 0  # completed
    bad = ok(daemon.agentctl("spawn", "--task", task_id, "--type", "failer", "--", sys.executable, FAKE_AGENT,
                             "--exit", "3")).strip()
    waited = daemon.agentctl("wait", bad, "--timeout", "60", "--json")
    assert waited.returncode == 6  # agent failed
    assert json.loads(waited.stdout)["agents"][0]["exit"]["code"] == 3

    agents = js(daemon.agentctl("agents", "--task", task_id, "--json"))
    assert {a["id"] for a in agents} == {agent_id, bad}
    assert [a["id"] for a in js(daemon.agentctl("agents", "--state", "failed", "--json"))] == [bad]
    assert agent_id in ok(daemon.agentctl("agents"))
    shown = js(daemon.agentctl("show", agent_id, "--json"))
    assert shown["state"] == "completed" and shown["exit"]["decided_by"] == "exit_status"
    assert "completed" in ok(daemon.agentctl("show", agent_id))

    # What the agent reported through agentctl from inside (identity from its environment).
    findings = js(daemon.agentctl("findings", "--task", task_id, "--json"))
    assert [f["agent_id"] for f in findings] == [agent_id]
    assert js(daemon.agentctl("findings", "--since", str(findings[-1]["seq"]), "--json")) == []
    logs = ok(daemon.agentctl("logs", agent_id))
    assert "to stderr" in logs
    assert ok(daemon.agentctl("logs", agent_id, "--format", "summary"))

    sleeper = ok(daemon.agentctl("spawn", "--task", task_id, "--type", "sleeper", "--", sys.executable, FAKE_AGENT,
                                 "--sleep", "60")).strip()
    assert daemon.agentctl("wait", sleeper, "--timeout", "0.2").returncode == 7  # timeout
    killed = ok(daemon.agentctl("kill", sleeper, "--reason", "enough"))
    assert "killed" in killed
    assert js(daemon.agentctl("show", sleeper, "--json"))["kill_reason"] == "enough"


def test_progress_and_finding_from_the_orchestrator(daemon: DaemonProcess) -> None:
    task_id = daemon.create_task()
    agent = daemon.spawn_fake(task_id, "worker", "--sleep", "30")
    ok(daemon.agentctl("progress", "halfway", "--percent", "50", "--activity", "testing", "--agent", agent["id"]))
    now = js(daemon.agentctl("show", agent["id"], "--json"))
    assert (now["progress"], now["activity"], now["message"]) == (50, "testing", "halfway")
    ok(daemon.agentctl("finding", "a thing", "--type", "bug", "--severity", "high", "--data", '{"line": 3}',
                       "--task", task_id))
    found = js(daemon.agentctl("findings", "--task", task_id, "--severity", "high", "--json"))
    assert [(f["type"], f["data"]) for f in found] == [("bug", {"line": 3})]
    events = ok(daemon.agentctl("events", "--since", "0", "--task", task_id))
    assert "progress" in events and "finding" in events
    ok(daemon.agentctl("kill", agent["id"]))


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["show", "nobody-000000-000000"], 4),  # not found
        (["show", "../etc"], 2),  # bad input
        (["task", "show", "TASK-20200101-000000-00000000"], 4),
        (["progress", "x"], 2),  # no identity and no --agent
        (["finding", "x", "--data", "[1]"], 2),  # data must be an object
    ],
)
def test_exit_codes(daemon: DaemonProcess, args: list[str], code: int) -> None:
    result = daemon.agentctl(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("agentctl: ")


def test_a_limit_refusal_is_exit_5(daemon: DaemonProcess) -> None:
    task_id = js(daemon.agentctl("task", "create", "t", "--cwd", str(daemon.base), "--max-concurrent", "1",
                                 "--json"))["id"]
    first = ok(daemon.agentctl("spawn", "--task", task_id, "--type", "a", "--", sys.executable, FAKE_AGENT,
                               "--sleep", "30")).strip()
    refused = daemon.agentctl("spawn", "--task", task_id, "--type", "b", "--", sys.executable, FAKE_AGENT)
    assert refused.returncode == 5, refused.stderr
    ok(daemon.agentctl("kill", first))


def test_health_repair_and_stop(daemon: DaemonProcess) -> None:
    health = js(daemon.agentctl("health", "--json"))
    assert health["daemon"]["ok"] and health["reconcile"]["tmux_healthy"]
    assert "tmux" in ok(daemon.agentctl("health"))
    dry = js(daemon.agentctl("repair", "--dry-run", "--json"))
    assert dry["dry_run"] is True and dry["orphans"] == []
    ok(daemon.agentctl("repair"))
    ok(daemon.agentctl("stop"))
    assert daemon.proc is not None and daemon.proc.wait(30) == 0


def test_peek_shows_the_pane(daemon: DaemonProcess) -> None:
    task_id = daemon.create_task()
    agent = daemon.spawn_fake(task_id, "painter", "--stderr", "visible on screen", "--sleep", "30")

    def screen() -> str:
        return ok(daemon.agentctl("peek", agent["id"]))

    end = time.monotonic() + 30.0
    while "visible on screen" not in (text := screen()):
        assert time.monotonic() < end, text
        time.sleep(0.05)
    assert js(daemon.agentctl("peek", agent["id"], "--json"))["agent_id"] == agent["id"]
    ok(daemon.agentctl("kill", agent["id"]))


def test_a_prompt_file_arrives_byte_for_byte_and_a_bad_one_is_bad_input(daemon: DaemonProcess,
                                                                        tmp_path: Path) -> None:
    task_id = daemon.create_task()
    source, copy = tmp_path / "prompt.txt", tmp_path / "copy.txt"
    source.write_bytes("line one\r\nline two\r\n\tcafé".encode())
    agent_id = ok(daemon.agentctl("spawn", "--task", task_id, "--type", "crlf", "--prompt-file", str(source), "--",
                                  sys.executable, FAKE_AGENT, "--copy-stdin", str(copy))).strip()
    assert daemon.agentctl("wait", agent_id, "--timeout", "60").returncode == 0
    assert copy.read_bytes().startswith(source.read_bytes())  # no \r\n became \n
    latin1, huge = tmp_path / "latin1.txt", tmp_path / "huge.txt"
    latin1.write_bytes("café".encode("latin-1"))
    huge.write_text("€" * 400_000)  # under the prompt's 512 Ki characters, over the 1 MiB request line
    for path, says in ((latin1, "not UTF-8"), (huge, "exceeds the cap of 1048576 bytes"),
                       (tmp_path / "missing.txt", "cannot read the prompt file")):
        refused = daemon.agentctl("spawn", "--task", task_id, "--type", "bad", "--prompt-file", str(path), "--",
                                  "true", "x")
        assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr, refused
    assert [a["type"] for a in daemon.list("agent.list", task_id=task_id)] == ["crlf"]


def test_what_agents_write_cannot_drive_the_operators_terminal(daemon: DaemonProcess) -> None:
    """Findings, messages, reasons and output come from agents: agentctl shows what would
    drive a terminal (an erase and a colour that turn "real bug" into a green "no bugs found",
    a clipboard write, a bidi override) escaped, in every verb; ``logs --raw`` opts out."""
    task_id = daemon.create_task()
    spoof = "real bug\x1b[2K\r\x1b[32mno bugs found \x1b]52;c;ZXZpbA==\x07 \u202eevil"
    daemon.call("agent.finding", task_id=task_id, type="note", message=spoof)
    agent = daemon.call("agent.spawn", task_id=task_id, type="painter",
                        argv=["sh", "-c", "printf 'ok \\033[31mred\\033[0m\\n'; exec sleep 600"])
    daemon.call("agent.progress", agent_id=agent["id"], message=spoof)
    for verb in (["findings", "--task", task_id], ["status"], ["show", agent["id"]], ["events"], ["agents"],
                 ["task", "show", task_id]):
        shown = ok(daemon.agentctl(*verb))
        assert not set(shown) & set("\x1b\r\x07\u202e"), verb
    assert "real bug\\x1b[2K\\x0d\\x1b[32mno bugs found" in ok(daemon.agentctl("findings", "--task", task_id))
    eventually(lambda: "red" in ok(daemon.agentctl("logs", agent["id"])), 30, "the agent's output logged")
    assert "ok \\x1b[31mred" in ok(daemon.agentctl("logs", agent["id"]))
    assert "ok \x1b[31mred" in ok(daemon.agentctl("logs", agent["id"], "--raw"))
    ok(daemon.agentctl("kill", agent["id"]))


def test_logs_to_a_terminal_keep_colours_and_nothing_else(daemon: DaemonProcess) -> None:
    """On a terminal, `logs` keeps the agent's colours but removes what moves the cursor, erases, sets the
    title or writes the clipboard, and shows a carriage return escaped; piped, everything is escaped."""
    task_id = daemon.create_task()
    script = r"printf 'ok \033[31mred\033[0m real bug\033[2K\r\033[32mno bugs \033]52;c;ZXZp\007\033]0;t\007!\n'"
    agent = daemon.call("agent.spawn", task_id=task_id, type="painter", argv=["sh", "-c", script])
    daemon.wait_state(agent["id"])
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([str(BIN / "agentctl"), "logs", agent["id"]], env=daemon.env, stdout=terminal,
                              stderr=subprocess.PIPE, timeout=60)
        assert done.returncode == 0, done.stderr
        shown = os.read(controller, 65536).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert "ok \x1b[31mred\x1b[0m real bug\\x0d\x1b[32mno bugs !" in shown, repr(shown)
    assert "ok \\x1b[31mred" in ok(daemon.agentctl("logs", agent["id"]))


def test_prompt_file_from_stdin(daemon: DaemonProcess, tmp_path: Path) -> None:
    task_id = daemon.create_task()
    copy = tmp_path / "prompt.txt"
    prompt = "line one\n'quoted' \"double\" $(not run) `nor this`; ünïcødé\n"
    agent_id = ok(daemon.agentctl("spawn", "--task", task_id, "--type", "reader", "--prompt-file", "-", "--",
                                  sys.executable, FAKE_AGENT, "--copy-stdin", str(copy), input=prompt)).strip()
    assert daemon.agentctl("wait", agent_id, "--timeout", "60").returncode == 0
    assert copy.read_text().startswith(prompt)
