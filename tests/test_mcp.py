"""The MCP shim, driven over stdio by the official SDK's client against a real daemon,
real tmux and the fake agent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import supervisord_agents
from supervisord_agents.model import AgentState, Priority, Severity, TaskState
from supervisord_agents.protocol import OutputFormat
from tests.harness import BIN, FAKE_AGENT, DaemonProcess, short_tmpdir

mcp = pytest.importorskip("mcp")
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

TOOLS = {
    "create_task", "spawn_agent", "spawn_child_agent", "get_task_status", "list_tasks", "list_agents",
    "get_agent_output", "wait_for_agents", "kill_agent", "report_progress", "report_finding", "list_findings",
    "get_health", "repair", "close_task", "approve_tool_use", "list_approvals", "answer_approval",
}


@asynccontextmanager
async def shim(daemon: DaemonProcess, **env: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=str(BIN / "agents-mcp"), env={**daemon.env, **env})
    with open(daemon.base / "shim.stderr", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def tool(session: ClientSession, name: str, **arguments: Any) -> Any:
    """Call a tool that must succeed; return its structured result."""
    result = await session.call_tool(name, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def tool_error(session: ClientSession, name: str, **arguments: Any) -> str:
    """Call a tool that must fail; return the error text the model would read."""
    result = await session.call_tool(name, arguments)
    assert result.is_error, result.structured_content
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


def fake(*args: str) -> list[str]:
    return [sys.executable, FAKE_AGENT, *args]


async def test_every_tool_is_listed_with_a_description(daemon: DaemonProcess) -> None:
    async with shim(daemon) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for t in tools.values():
        assert t.description and len(t.description) > 40, t.name


def allowed(schema: dict[str, Any], parameter: str) -> list[str]:
    """The values a tool's input schema allows for one parameter (through $ref and anyOf)."""
    prop = schema["properties"][parameter]
    for option in [prop, *prop.get("anyOf", [])]:
        if "$ref" in option:
            option = schema["$defs"][option["$ref"].rsplit("/", 1)[1]]
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"{parameter}: no enum in {prop}")


async def test_enum_parameters_show_their_values(daemon: DaemonProcess) -> None:
    """States, severities, priorities and formats are offered as the model's enums' values."""
    async with shim(daemon) as session:
        schemas = {t.name: t.input_schema for t in (await session.list_tools()).tools}
    expected = [
        ("create_task", "priority", Priority), ("list_tasks", "state", TaskState),
        ("list_agents", "state", AgentState), ("get_agent_output", "format", OutputFormat),
        ("report_finding", "severity", Severity), ("list_findings", "severity", Severity),
    ]
    for name, parameter, enum in expected:
        assert allowed(schemas[name], parameter) == [m.value for m in enum], (name, parameter)


@pytest.fixture
def configured() -> Iterator[DaemonProcess]:
    """A daemon whose config file sets one limit: max_depth = 3."""
    d = DaemonProcess()
    (d.base / "config.toml").write_text("[limits]\nmax_depth = 3\n")
    try:
        yield d.start()
    finally:
        d.close()


async def test_create_task_leaves_limits_not_given_to_the_config(configured: DaemonProcess) -> None:
    """A budget alone sets only the budget: max_depth stays the configured 3."""
    async with shim(configured) as session:
        task = await tool(session, "create_task", description="t", working_directory=str(configured.base),
                          max_cost_usd=2.5)
    assert task["limits"]["max_depth"] == 3 and task["limits"]["max_cost_usd"] == 2.5
    assert task["limits"]["max_concurrent"] == 20


async def test_an_orchestration_end_to_end(daemon: DaemonProcess) -> None:
    async with shim(daemon) as session:
        task = await tool(session, "create_task", description="review the parser", working_directory=str(daemon.base),
                          deliverables=["a list of bugs"], max_concurrent=5)
        assert task["limits"]["max_concurrent"] == 5 and task["limits"]["max_total"] == 45
        agents = []
        for i, pause in enumerate(("1.5", "2", "2.5")):
            agent = await tool(session, "spawn_agent", task_id=task["id"], type=f"worker{i}", prompt="look",
                               provider="command", argv=fake("--report", "--sleep", pause, "--result", "ok"))
            assert agent["state"] == "running"
            agents.append(agent["id"])
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        result = await session.call_tool("wait_for_agents", {"agent_ids": agents, "timeout_seconds": 60},
                                         progress_callback=on_progress)
        waited = result.structured_content
        assert waited is not None and waited["done"] is True
        assert [a["state"] for a in waited["agents"]] == ["completed"] * 3
        assert all(a["exit"]["code"] == 0 for a in waited["agents"])
        assert progress and progress[-1][1] == 3

        status = await tool(session, "get_task_status", task_id=task["id"])
        assert status["counts"]["completed"] == 3
        assert [set(a) for a in status["agents"]] == [{"id", "type", "state", "outcome"}] * 3  # compact
        assert all(a["outcome"].startswith("ok") for a in status["agents"])
        detail = await tool(session, "get_task_status", task_id=task["id"], detail=True)
        assert {a["message"] for a in detail["agents"]} == {"halfway there"}
        assert len(json.dumps(status)) < len(json.dumps(detail)) / 2
        findings = await tool(session, "list_findings", task_id=task["id"])
        assert sorted(f["agent_id"] for f in findings["findings"]) == sorted(agents)
        again = await tool(session, "list_findings", task_id=task["id"], since=findings["next_since"])
        assert again["findings"] == [] and again["next_since"] == findings["next_since"]

        summary = await tool(session, "get_agent_output", agent_id=agents[0])
        assert "[TOOL] Bash" in summary["output"]
        text = await tool(session, "get_agent_output", agent_id=agents[0], format="text", tail=2)
        assert text["output"].count("\n") == 2
        jsonl = await tool(session, "get_agent_output", agent_id=agents[0], format="jsonl", regex='"type": "result"')
        assert [json.loads(line)["type"] for line in jsonl["output"].splitlines()] == ["result"]

        sleeper = await tool(session, "spawn_agent", task_id=task["id"], type="sleeper", prompt="wait",
                             provider="command", argv=fake("--sleep", "60"))
        killed = await tool(session, "kill_agent", agent_id=sleeper["id"], reason="not needed")
        assert killed["state"] == "killed" and killed["kill_reason"] == "not needed"
        health = await tool(session, "get_health")
        assert health["ok"] and health["tmux_healthy"]
        repair = await tool(session, "repair")
        assert repair["dry_run"] is True


async def test_a_spawn_over_the_limit_can_queue(daemon: DaemonProcess) -> None:
    async with shim(daemon) as session:
        task = await tool(session, "create_task", description="t", working_directory=str(daemon.base),
                          max_concurrent=1)
        busy = await tool(session, "spawn_agent", task_id=task["id"], type="busy", prompt="x", provider="command",
                          argv=fake("--sleep", "60"))
        queued = await tool(session, "spawn_agent", task_id=task["id"], type="next", prompt="x", provider="command",
                            argv=fake(), queue=True)
        assert queued["state"] == "queued"
        await tool(session, "kill_agent", agent_id=busy["id"])
        waited = await tool(session, "wait_for_agents", agent_ids=[queued["id"]], timeout_seconds=30)
        assert waited["done"] and waited["agents"][0]["state"] == "completed"


async def test_errors_are_tool_errors_and_the_shim_keeps_serving(daemon: DaemonProcess) -> None:
    async with shim(daemon) as session:
        task = await tool(session, "create_task", description="t", working_directory=str(daemon.base))
        assert "invalid_params" in await tool_error(session, "spawn_agent", task_id=task["id"], type="a/b",
                                                    prompt="x", provider="command", argv=fake())
        assert "not_found" in await tool_error(session, "kill_agent", agent_id="nobody-000000-000000")
        assert "invalid_params" in await tool_error(session, "create_task", description="t", max_concurrent=-1)
        first = await tool(session, "spawn_agent", task_id=task["id"], type="dup", prompt="x", provider="command",
                           argv=fake("--sleep", "60"))
        refused = await tool_error(session, "spawn_agent", task_id=task["id"], type="dup", prompt="x",
                                   provider="command", argv=fake())
        assert first["id"] in refused
        await tool(session, "kill_agent", agent_id=first["id"])
        daemon.stop()
        assert "not running" in await tool_error(session, "get_health")
        daemon.start()
        assert (await tool(session, "get_health"))["ok"]


async def test_an_agent_reports_through_the_shim_only_for_itself(daemon: DaemonProcess, tmp_path: Path) -> None:
    """From inside an agent (its MCP client starts the shim with the agent's environment), the tools
    report for that agent, return its peers, spawn its children, and refuse to act for another."""
    task = daemon.create_task()
    bob = daemon.spawn_fake(task, "bob", "--sleep", "60")
    out = tmp_path / "mcp.json"
    calls = [
        ["report_progress", {"message": "reading the lexer", "percent": 20, "activity": "reading"}],
        ["report_progress", {"message": "x", "agent_id": bob["id"]}],
        ["report_finding", {"message": "off by one", "type": "bug", "severity": "high"}],
        ["spawn_child_agent", {"type": "helper", "prompt": "help", "provider": "command",
                               "argv": fake("--sleep", "60")}],
        ["kill_agent", {"agent_id": bob["id"]}],
    ]
    alice = daemon.call("agent.spawn", task_id=task, type="alice",
                        argv=[sys.executable, str(Path(__file__).with_name("mcp_probe.py")), str(out),
                              json.dumps(calls)])
    with trio.fail_after(60):
        while not out.exists():
            await trio.sleep(0.05)
    mine, for_bob, finding, child, kill_bob = json.loads(out.read_text())
    assert mine["ok"]["agent"]["id"] == alice["id"] and mine["ok"]["agent"]["progress"] == 20
    assert [p["id"] for p in mine["ok"]["peers"]] == [bob["id"]]
    assert "forbidden" in for_bob["error"] and "forbidden" in kill_bob["error"]
    assert finding["ok"]["agent_id"] == alice["id"]
    assert child["ok"]["parent"] == alice["id"] and child["ok"]["depth"] == 2
    assert daemon.call("agent.get", agent_id=bob["id"])["state"] == "running"
    daemon.call("agent.kill", agent_id=alice["id"], tree=True)
    daemon.call("agent.kill", agent_id=bob["id"])



async def test_the_shim_says_its_version_and_describes_every_spawn_parameter(daemon: DaemonProcess) -> None:
    params = StdioServerParameters(command=str(BIN / "agents-mcp"), env=daemon.env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert init.server_info.version == supervisord_agents.__version__
    for name in ("spawn_agent", "spawn_child_agent"):
        props = tools[name].input_schema["properties"]
        undescribed = [p for p, schema in props.items() if p != "task_id" and not schema.get("description")]
        assert undescribed == [], name


async def test_close_task_and_a_wait_that_returns_before_clients_give_up(daemon: DaemonProcess) -> None:
    async with shim(daemon) as session:
        task = await tool(session, "create_task", description="t", working_directory=str(daemon.base))
        agent = await tool(session, "spawn_agent", task_id=task["id"], type="slow", prompt="p", provider="command",
                           argv=fake("--sleep", "60"))
        waited = await tool(session, "wait_for_agents", agent_ids=[agent["id"]], timeout_seconds=1.5)
        assert waited["done"] is False and waited["still_running"] == [agent["id"]]
        closed = await tool(session, "close_task", task_id=task["id"])
        assert closed["state"] == "closed"
        error = await tool_error(session, "spawn_agent", task_id=task["id"], type="late", prompt="p",
                                 provider="command", argv=fake())
        assert "closed" in error
        await tool(session, "kill_agent", agent_id=agent["id"])


@pytest.fixture
def xdg_daemon(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A daemon that chose its socket as a login session's would: from XDG_RUNTIME_DIR."""
    home, xdg = tmp_path / "home", short_tmpdir()
    home.mkdir()
    xdg.chmod(0o700)
    d = DaemonProcess()
    (d.base / "config.toml").write_text("")
    env = {k: v for k, v in d.env.items() if k not in ("SUPERVISORD_AGENTS_RUNTIME_DIR", "SUPERVISORD_AGENTS_SOCKET")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(xdg))
    with open(d.log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "supervisord_agents.daemon"], env=env, stdout=log, stderr=log)
    try:
        socket = xdg / "supervisord-agents" / "control.sock"
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert proc.poll() is None and time.monotonic() < deadline, d.log()
            time.sleep(0.05)
        yield home, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)
        d.close()


async def test_the_shim_finds_the_daemon_with_nothing_but_home(xdg_daemon: tuple[Path, int]) -> None:
    """MCP clients start stdio servers with a minimal environment: no XDG_RUNTIME_DIR, none of
    ours. A daemon that chose its socket from XDG_RUNTIME_DIR is still found."""
    home, pid = xdg_daemon
    bare = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    params = StdioServerParameters(command=str(BIN / "agents-mcp"), env=bare)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        health = await tool(session, "get_health")
    assert health["pid"] == pid


def test_the_shim_exits_at_once_on_sigint(daemon: DaemonProcess) -> None:
    """Not at the client's next line: the SDK reads stdin in a thread a cancel cannot reach."""
    with subprocess.Popen([str(BIN / "agents-mcp")], env=daemon.env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        try:
            time.sleep(1.0)  # let it start reading
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 128 + signal.SIGINT
        finally:
            proc.kill()
