"""The approval bridge with the real daemon, shim and CLI: an agent asks permission through the
shim's ``approve_tool_use`` (as Claude Code's ``--permission-prompt-tool`` does, here by
``tests/mcp_probe.py`` with the official MCP client), waits, and gets the operator's answer in
Claude Code's format; the operator sees and answers with ``agentctl``; a timeout answers as the
task's policy says; agents cannot answer; a request whose agent dies lapses."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DaemonProcess, eventually

PROBE = str(Path(__file__).with_name("mcp_probe.py"))
TOUCH = {"command": "touch approved-marker"}


@pytest.fixture
def d() -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(kill_grace=1).start()
    try:
        yield daemon
    finally:
        daemon.close()


def asking(d: DaemonProcess, task: str, out: Path, calls: list[list[Any]], type: str = "asker") -> dict[str, Any]:
    """An agent that makes these tool calls through the shim, one after another."""
    agent: dict[str, Any] = d.call("agent.spawn", task_id=task, type=type,
                                   argv=[sys.executable, PROBE, str(out), json.dumps(calls)])
    return agent


def pending(d: DaemonProcess, n: int = 1) -> list[dict[str, Any]]:
    def now() -> list[dict[str, Any]] | None:
        waiting: list[dict[str, Any]] = json.loads(d.agentctl("--json", "approvals").stdout)
        return waiting if len(waiting) >= n else None
    return eventually(now, 60, f"{n} waiting approval(s)")


def answers(out: Path) -> list[Any]:
    """What each call returned to the agent: the permission prompt's JSON, or an error."""
    results = json.loads(eventually(lambda: out.exists() and out.read_text(), 60, "the probe's results"))
    return [json.loads(r["ok"]) if "ok" in r else r for r in results]


def test_the_operator_allows_always_for_the_tool_and_denies_with_a_message(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task()
    out = tmp_path / "out.json"
    calls = [["approve_tool_use", {"tool_name": "Bash", "input": TOUCH, "tool_use_id": "toolu_1"}],
             ["approve_tool_use", {"tool_name": "Bash", "input": {"command": "ls"}}],
             ["approve_tool_use", {"tool_name": "Write", "input": {"file_path": "/etc/passwd"}}]]
    agent = asking(d, task, out, calls)
    (first,) = pending(d)
    assert (first["agent_id"], first["tool"], first["input"]) == (agent["id"], "Bash", TOUCH)
    status = d.call("task.get", task_id=task)
    assert status["counts"]["awaiting_approval"] == 1
    shown = d.agentctl("approvals").stdout
    assert first["id"] in shown and "touch approved-marker" in shown, shown
    approved = d.agentctl("approve", first["id"], "--always-for-tool")
    assert approved.returncode == 0 and "allowed" in approved.stdout, approved
    # The second Bash call is allowed without asking; the Write asks, and is denied.
    (write,) = eventually(lambda: [a for a in pending(d) if a["tool"] == "Write"], 60, "the Write request")
    denied = d.agentctl("deny", write["id"], "--message", "not that file")
    assert denied.returncode == 0 and "denied" in denied.stdout, denied
    assert answers(out) == [{"behavior": "allow", "updatedInput": TOUCH}, {"behavior": "allow",
                            "updatedInput": {"command": "ls"}}, {"behavior": "deny", "message": "not that file"}]
    events = [json.loads(line)["data"] for line in d.agentctl("--json", "events", "--agent", agent["id"], "--kind",
                                                                  "approval").stdout.splitlines()]
    assert [(e["tool"], e.get("state", "pending"), e.get("answered_by")) for e in events] == [
        ("Bash", "pending", None), ("Bash", "allowed", "operator"), ("Bash", "allowed", "always allowed for this tool"),
        ("Write", "pending", None), ("Write", "denied", "operator")]
    assert d.call("task.get", task_id=task)["counts"]["awaiting_approval"] == 0


@pytest.mark.parametrize("then", ["deny", "allow"])
def test_an_unanswered_request_is_answered_by_the_task_policy_at_its_timeout(
        d: DaemonProcess, tmp_path: Path, then: str) -> None:
    task = d.create_task(policy={"approval_timeout": 1, "on_approval_timeout": then})
    out = tmp_path / "out.json"
    asking(d, task, out, [["approve_tool_use", {"tool_name": "Bash", "input": TOUCH}]])
    (answer,) = answers(out)
    if then == "deny":
        assert answer == {"behavior": "deny", "message": "denied by the supervisor (timeout after 1 s (deny))"}
    else:
        assert answer == {"behavior": "allow", "updatedInput": TOUCH}
    assert json.loads(d.agentctl("--json", "approvals").stdout) == []


def test_an_agent_waiting_for_the_operator_is_not_stalled(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task(policy={"stall_after": 1.5, "approval_timeout": 5})
    out = tmp_path / "out.json"
    agent = asking(d, task, out, [["approve_tool_use", {"tool_name": "Bash", "input": TOUCH}]])
    (request,) = pending(d)  # (its start, silent, may have been flagged: asking clears the flag)
    standing = d.agentctl("status").stdout
    assert "awaiting approval since" in standing and f"Bash ({request['id']})" in standing, standing
    time.sleep(3)  # past stall_after, with a reconcile pass every 0.5 s
    waiting = d.call("agent.get", agent_id=agent["id"])
    assert waiting["state"] == "running" and waiting["stalled_since"] is None, waiting
    (answer,) = answers(out)
    assert answer["behavior"] == "deny"
    stalls = [json.loads(line) for line in d.agentctl("--json", "events", "--agent", agent["id"], "--kind",
                                                      "stalled").stdout.splitlines()]
    assert [e for e in stalls if e["at"] >= request["at"]] == []


def test_an_agent_can_answer_no_request_and_a_dead_agents_request_lapses(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task()
    asker = asking(d, task, tmp_path / "asker.json", [["approve_tool_use", {"tool_name": "Bash", "input": TOUCH}]])
    (request,) = pending(d)
    # Another agent (and the asker itself would be the same) tries to answer, through the shim.
    rogue_out = tmp_path / "rogue.json"
    asking(d, task, rogue_out, [["answer_approval", {"approval_id": request["id"], "allow": True}],
                                ["list_approvals", {}]], type="rogue")
    rogue = json.loads(eventually(lambda: rogue_out.exists() and rogue_out.read_text(), 60, "the rogue's results"))
    assert all("forbidden" in r.get("error", "") for r in rogue), rogue
    assert [a["id"] for a in pending(d)] == [request["id"]]  # still waiting for the operator
    d.call("agent.kill", agent_id=asker["id"])
    eventually(lambda: json.loads(d.agentctl("--json", "approvals").stdout) == [], 30, "the request lapsed")
    assert d.agentctl("approve", request["id"]).returncode != 0


async def test_the_permission_tool_answers_in_one_text_block_and_sends_progress_while_it_waits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shim in-process, the daemon call faked at its seam: claude reads the answer only as a
    single text block (no structured content), and a long wait sends progress notifications, so
    that the CLI does not give up on a silent call."""
    import trio
    from mcp import Client
    from mcp.server.mcpserver.exceptions import ToolError

    from clients import mcp_shim
    from supervisord_agents.model import Approval, ApprovalState

    answers = iter([ApprovalState.ALLOWED, ApprovalState.DENIED, None])

    async def daemon(method: Any, **params: Any) -> Approval:
        await trio.sleep(0.3)
        state = next(answers)
        if state is None:
            raise ToolError("not_found: no agent")
        return Approval(id="ap1", task_id="t", agent_id="a", tool=params["tool_name"], input=params["input"], at=0,
                        state=state, answered_by="operator", message="not now" if state is ApprovalState.DENIED else "")

    monkeypatch.setattr(mcp_shim, "call", daemon)
    monkeypatch.setattr(mcp_shim, "APPROVAL_HEARTBEAT", 0.05)
    beats: list[str | None] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        beats.append(message)

    async with Client(mcp_shim.server) as client:
        allowed, denied, failed = [await client.call_tool("approve_tool_use", {"tool_name": "Bash", "input": TOUCH},
                                                          progress_callback=progress) for _ in range(3)]
    assert allowed.structured_content is None and len(allowed.content) == 1
    assert json.loads(allowed.content[0].text) == {"behavior": "allow", "updatedInput": TOUCH}  # type: ignore[union-attr]
    assert json.loads(denied.content[0].text) == {"behavior": "deny", "message": "not now"}  # type: ignore[union-attr]
    assert failed.is_error and "not_found: no agent" in failed.content[0].text  # type: ignore[union-attr]
    assert len(beats) >= 3 and set(beats) == {"waiting for the operator to allow Bash"}
