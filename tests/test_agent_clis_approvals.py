"""The approval bridge with the real ``claude`` CLI, end to end against the local mock model
(see ``test_agent_clis.py`` for the set-up).

With ``[providers.claude] approvals = true`` the default profile hands claude's permission
questions to the shim's ``approve_tool_use`` (``--permission-prompt-tool``). The mock's
``needs_approval`` script has the model run one Bash command that the profile's
``--allowedTools`` do not allow (``touch approved-marker``), then answer ``ANSWER: ran`` or
``ANSWER: denied`` as the command's result was or was not an error. Three agents ask at
once, each in a folder of its own: the operator allows one and denies one with
``agentctl``, and the third is answered by its task's policy at the timeout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness import eventually
from tests.mock_anthropic import APPROVAL_COMMAND, APPROVAL_DENIED, APPROVAL_MARKER, APPROVAL_RAN
from tests.test_agent_clis import Run

#: Long enough for the operator's two answers to come first on a slow machine.
TIMEOUT_S = 20


def test_claude_asks_the_operator_through_the_supervisor_approved_denied_and_timed_out(tmp_path: Path) -> None:
    run = Run("claude", "needs_approval", tmp_path)
    (run.daemon.base / "config.toml").write_text("[providers.claude]\napprovals = true\n")
    folders = {name: tmp_path / name for name in ("allowed", "denied", "timed_out")}
    for folder in folders.values():
        folder.mkdir()
    with run:
        d = run.daemon
        agents = {name: run.spawn("Leave a marker file.", cwd=folder,
                                  policy={"approval_timeout": TIMEOUT_S} if name == "timed_out" else None)
                  for name, folder in folders.items()}
        by_agent = {agent["id"]: name for name, agent in agents.items()}

        def all_asking() -> dict[str, dict[str, Any]] | None:
            waiting = json.loads(d.agentctl("--json", "approvals").stdout)
            return {by_agent[a["agent_id"]]: a for a in waiting} if len(waiting) == 3 else None
        asked = eventually(all_asking, 120, "three permission requests")
        for name, request in asked.items():
            assert (request["tool"], request["input"]["command"]) == ("Bash", APPROVAL_COMMAND), request
            shown = d.call("agent.get", agent_id=agents[name]["id"])
            assert shown["state"] == "running" and [a["id"] for a in shown["approvals"]] == [request["id"]]
        assert "awaiting approval" in d.agentctl("show", agents["allowed"]["id"]).stdout

        assert d.agentctl("approve", asked["allowed"]["id"]).returncode == 0
        assert d.agentctl("deny", asked["denied"]["id"], "--message", "not in this folder").returncode == 0
        ended = {name: d.wait_state(agent["id"], timeout=120) for name, agent in agents.items()}

    for name, agent in ended.items():
        assert agent["state"] == "completed", (name, agent, d.log()[-3000:])
        assert agent["approvals"] == []
    assert ended["allowed"]["exit"]["answer"] == APPROVAL_RAN
    assert (folders["allowed"] / APPROVAL_MARKER).exists()
    for name in ("denied", "timed_out"):
        assert ended[name]["exit"]["answer"] == APPROVAL_DENIED, ended[name]["exit"]
        assert not (folders[name] / APPROVAL_MARKER).exists()
    # The model was told why: the operator's message, or the policy's timeout.
    results = json.dumps(run.mock.requests)
    assert "not in this folder" in results and f"timeout after {TIMEOUT_S} s (deny)" in results
