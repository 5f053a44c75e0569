"""Lives of agents across attempts, with the real daemon, tmux and CLI: rate limits sleep until
the reset and resume the conversation, transient failures are retried with back-off and given up
on, a stop is sticky, one live agent holds a conversation, a sleeper keeps its schedule across a
SIGKILL of the daemon, and stalls are flagged, killed or restarted.

The agent is ``tests/fake_agent.py`` configured as a provider (``fake``) that reports claude's
stream-json and resumes with ``--resume {session_id}``: it fails as rate-limited unless resumed,
or fails its first runs on purpose, and records each run's argv and prompt.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisord_agents.launch import RESUME_PROMPT
from tests.harness import FAKE_AGENT, DaemonProcess, eventually


@pytest.fixture
def d() -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(kill_grace=1, reconcile_interval=0.5)
    (daemon.base / "config.toml").write_text(
        "[providers.fake]\n"
        f"argv = {json.dumps([sys.executable, FAKE_AGENT])}\n"
        'events = "claude"\n'
        'resume = ["--resume", "{session_id}"]\n'
        "model_flag = []\n"
    )
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


def runs(record: Path) -> list[dict[str, Any]]:
    """What the fake agent recorded: one entry per run (its argv and the prompt it read)."""
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def spawn(d: DaemonProcess, task: str, type: str, record: Path, *args: str, **params: Any) -> dict[str, Any]:
    agent: dict[str, Any] = d.call("agent.spawn", task_id=task, type=type, provider="fake", prompt=f"job of {type}",
                                   argv=["--record", str(record), "--result", "ok", *args], **params)
    return agent


def until_state(d: DaemonProcess, agent_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    def now() -> dict[str, Any] | None:
        agent: dict[str, Any] = d.call("agent.get", agent_id=agent_id)
        return agent if agent["state"] == state else None
    return eventually(now, timeout, f"agent {agent_id} {state}")


def test_a_rate_limited_agent_sleeps_until_the_reset_then_resumes_its_conversation(
        d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task()
    record = tmp_path / "limited.jsonl"
    agent = spawn(d, task, "limited", record, "--rate-limit", "2", "--session", "conv-7f3a")
    asleep = until_state(d, agent["id"], "sleeping")
    first = asleep["attempts"][0]
    assert first["exit"]["error_class"] == "rate_limit" and first["exit"]["session_id"] == "conv-7f3a"
    assert asleep["conversation"] == "conv-7f3a" and asleep["attempt"] == 2
    # The reset counts from the process's end, which the registry records a moment later as the attempt's end.
    reset = first["exit"]["retry_at"]
    assert 1.0 <= reset - first["ended_at"] <= 2.0
    assert 0.0 <= asleep["wake_at"] - reset <= 0.6  # the reset the provider gave, with its spread
    assert "rate limited" in asleep["sleep_reason"]
    # Meanwhile a new agent of the same provider queues rather than run into the same limit.
    other = spawn(d, task, "other", tmp_path / "other.jsonl")
    assert other["state"] == "queued"
    shown = d.agentctl("show", agent["id"]).stdout
    assert "attempt 1" in shown and "rate_limit" in shown and "conv-7f3a" in shown, shown
    assert "1 sleeping" in d.agentctl("status").stdout

    done = d.wait_state(agent["id"], timeout=60)
    assert done["state"] == "completed" and done["attempt"] == 2, done
    assert done["exit"]["answer"] == "done (resumed)" and done["started_at"] >= asleep["wake_at"]
    assert done["exit"]["cost_usd"] == pytest.approx(0.001 + 0.0123)  # both attempts
    first_run, resumed = runs(record)
    assert "--resume" not in first_run["argv"] and first_run["prompt"].startswith("job of limited")
    assert resumed["argv"][-2:] == ["--resume", "conv-7f3a"] and resumed["prompt"] == RESUME_PROMPT
    assert d.wait_state(other["id"], timeout=60)["state"] == "completed"
    kinds = [(e["kind"], e.get("state")) for e in map(json.loads, d.agentctl(
        "--json", "events", "--agent", agent["id"]).stdout.splitlines())]
    assert [s for k, s in kinds if k == "agent_state"] == ["starting", "running", "sleeping", "starting", "running",
                                                           "completed"]


def test_transient_failures_are_retried_with_back_off_then_given_up(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task(policy={"restart": "on-failure", "max_attempts": 3, "backoff": 0.2})
    once, always = tmp_path / "once.jsonl", tmp_path / "always.jsonl"
    recovers = spawn(d, task, "recovers", once, "--fail-first", "1")
    hopeless = spawn(d, task, "hopeless", always, "--fail-first", "9")
    recovered = d.wait_state(recovers["id"], timeout=60)
    assert recovered["state"] == "completed" and recovered["attempt"] == 2, recovered
    assert [a["exit"]["error_class"] for a in recovered["attempts"]] == ["crashed"]
    gave_up = d.wait_state(hopeless["id"], timeout=60)
    assert gave_up["state"] == "failed", gave_up
    assert gave_up["exit"]["reason"] == "gave up after 3 attempts: exited with code 3", gave_up["exit"]
    assert len(runs(always)) == 3 and [a["n"] for a in gave_up["attempts"]] == [1, 2]
    # No conversation was reported: each attempt started afresh, with the prompt.
    assert all("--resume" not in r["argv"] and r["prompt"].startswith("job of hopeless") for r in runs(always))
    second, third = gave_up["attempts"][1], gave_up["exit"]
    assert second["started_at"] - gave_up["attempts"][0]["ended_at"] >= 0.2
    shown = d.agentctl("show", hopeless["id"]).stdout
    assert shown.count("exited with code 3") >= 3 and "attempt 2" in shown, shown
    assert third["decided_by"] == "exit_status"


def test_a_stop_is_sticky_whatever_the_policy(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task(policy={"restart": "on-failure", "max_attempts": 5, "backoff": 600})
    sleeper = spawn(d, task, "sleeper", tmp_path / "s.jsonl", "--fail-first", "9")
    until_state(d, sleeper["id"], "sleeping")
    killed = json.loads(d.agentctl("--json", "kill", sleeper["id"]).stdout)
    assert killed["state"] == "killed" and killed["exit"]["decided_by"] == "kill"
    runner = spawn(d, task, "runner", tmp_path / "r.jsonl", "--sleep", "30")
    eventually(lambda: runs(tmp_path / "r.jsonl"), 30, "the runner running")
    assert d.call("agent.kill", agent_id=runner["id"])["state"] == "killed"  # SIGTERM'd: not a crash to retry
    with pytest.raises(Exception, match="only a sleeping agent can be woken"):
        d.call("agent.wake", agent_id=sleeper["id"])
    time.sleep(1.5)
    assert len(runs(tmp_path / "s.jsonl")) == 1 and len(runs(tmp_path / "r.jsonl")) == 1
    files = d.state_dir / "tasks" / task / "agents" / sleeper["id"]
    eventually(lambda: not (files / "launch.json").exists(), 30, "the sleeper's files cleaned up")


def test_one_live_agent_per_conversation(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task()
    holder = spawn(d, task, "holder", tmp_path / "h.jsonl", "--rate-limit", "600", "--session", "conv-held")
    until_state(d, holder["id"], "sleeping")
    with pytest.raises(Exception, match=f"conversation conv-held is held by agent {holder['id']}"):
        spawn(d, task, "twin", tmp_path / "t.jsonl", resume="conv-held")
    with pytest.raises(Exception, match="cannot resume"):
        d.call("agent.spawn", task_id=task, type="plain", argv=["true"], resume="conv-other")
    for bad in ("--dangerously-skip-permissions", "a b", "x;rm"):
        with pytest.raises(Exception, match="resume"):
            spawn(d, task, "bad", tmp_path / "b.jsonl", resume=bad)
    # Woken early by the operator, it resumes the conversation it holds.
    woke = d.agentctl("wake", holder["id"])
    assert woke.returncode == 0 and "(attempt 2)" in woke.stdout, woke
    assert d.wait_state(holder["id"], timeout=60)["state"] == "completed"
    assert runs(tmp_path / "h.jsonl")[-1]["argv"][-2:] == ["--resume", "conv-held"]
    # Once it has ended, the conversation is free to continue in a new agent.
    later = spawn(d, task, "later", tmp_path / "l.jsonl", resume="conv-held")
    assert d.wait_state(later["id"], timeout=60)["exit"]["answer"] == "done (resumed)"
    assert runs(tmp_path / "l.jsonl")[0]["prompt"].startswith("job of later")  # a spawn's own prompt


def test_a_sleeper_keeps_its_schedule_across_a_daemon_sigkill(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task(policy={"restart": "on-failure", "max_attempts": 2, "backoff": 3})
    record = tmp_path / "r.jsonl"
    agent = spawn(d, task, "survivor", record, "--fail-first", "1")
    asleep = until_state(d, agent["id"], "sleeping")
    d.kill()
    d.start()
    assert d.call("agent.get", agent_id=agent["id"])["state"] in ("sleeping", "starting", "running", "completed")
    done = d.wait_state(agent["id"], timeout=60)
    assert done["state"] == "completed" and done["attempt"] == 2
    assert done["started_at"] >= asleep["wake_at"] and len(runs(record)) == 2


@pytest.mark.parametrize("then", ["nothing", "kill", "restart"])
def test_a_stall_is_flagged_then_killed_or_restarted_as_the_task_says(
        d: DaemonProcess, tmp_path: Path, then: str) -> None:
    task = d.create_task(policy={"stall_after": 1.5, "on_stall": then, "max_attempts": 2})
    record = tmp_path / "r.jsonl"
    agent = spawn(d, task, "quiet", record, "--sleep", "60")
    if then == "nothing":
        stalled = eventually(lambda: (a := d.call("agent.get", agent_id=agent["id"]))["stalled_since"] and a, 30,
                             "the agent flagged stalled")
        assert stalled["state"] == "running"
        events = d.agentctl("events", "--agent", agent["id"], "--kind", "stalled").stdout
        assert "no output or progress for" in events, events
        d.call("agent.progress", agent_id=agent["id"], message="still here")
        assert d.call("agent.get", agent_id=agent["id"])["stalled_since"] is None  # progress clears it
        return
    ended = d.wait_state(agent["id"], timeout=60)
    assert ended["exit"]["reason"].startswith("stalled: no output or progress for" if then == "kill"
                                              else "gave up after 2 attempts: stalled"), ended["exit"]
    assert ended["state"] == ("killed" if then == "kill" else "failed")
    assert len(runs(record)) == (1 if then == "kill" else 2)


def test_output_clears_a_stall(d: DaemonProcess) -> None:
    task = d.create_task(policy={"stall_after": 1.0})
    agent = d.call("agent.spawn", task_id=task, type="late", argv=["sh", "-c", "sleep 2.5; echo awake; sleep 60"])
    eventually(lambda: d.call("agent.get", agent_id=agent["id"])["stalled_since"], 30, "the stall flag")
    eventually(lambda: d.call("agent.get", agent_id=agent["id"])["stalled_since"] is None, 30, "the flag cleared")


def test_the_supervisor_stops_an_agent_at_its_turn_limit_counted_as_it_runs(d: DaemonProcess, tmp_path: Path) -> None:
    """Turns are counted from the agent's stream as it runs (no final result needed): a warning event near
    the limit, a stop at it with the reason; the running figures show meanwhile."""
    task = d.create_task(limits={"agent_max_turns": 4, "warn_at": 0.5})
    agent = spawn(d, task, "chatty", tmp_path / "c.jsonl", "--turns", "40")
    seen = eventually(lambda: (a := d.call("agent.get", agent_id=agent["id"]))["usage"].get("turns") and a, 30,
                      "running figures")
    assert seen["usage"]["input_tokens"] >= 100
    ended = d.wait_state(agent["id"], timeout=60)
    assert ended["state"] == "killed" and ended["exit"]["reason"] == "limit reached: turns, 4 of 4", ended["exit"]
    limits = [json.loads(line)["data"] for line in d.agentctl("--json", "events", "--agent", agent["id"],
                                                               "--kind", "limit").stdout.splitlines()]
    assert [(x["limit"], x["stopped"]) for x in limits] == [("agent_max_turns", False), ("agent_max_turns", True)]


def test_a_task_past_its_wall_time_has_its_agents_stopped(d: DaemonProcess, tmp_path: Path) -> None:
    task = d.create_task(limits={"max_wall_seconds": 2})
    agent = spawn(d, task, "slow", tmp_path / "s.jsonl", "--sleep", "60")
    ended = d.wait_state(agent["id"], timeout=60)
    assert ended["state"] == "killed" and ended["exit"]["reason"] == "limit reached: its task's wall time, 2 s"


def test_a_default_provider_named_in_the_config_keeps_what_it_does_not_say(tmp_path: Path) -> None:
    """``[providers.claude] approvals = true`` changes that field only: claude keeps its argv, events and
    environment; with the shim, its argv names the permission tool and its agents wait for it."""
    from supervisord_agents.config import load_config
    from supervisord_agents.providers import build_argv, provider_env

    config = tmp_path / "config.toml"
    config.write_text("[providers.claude]\napprovals = true\n\n[providers.mine]\nargv = [\"my-agent\"]\n")
    providers = load_config(config).providers
    claude = providers["claude"]
    assert claude.approvals and claude.argv[:2] == ["claude", "-p"] and claude.resume == ["--resume", "{session_id}"]
    argv = build_argv("claude", claude, model=None, extra=[], mcp_file=tmp_path / "mcp.json", shim="/bin/shim")
    assert argv[-2:] == ["--permission-prompt-tool", "mcp__supervisord-agents__approve_tool_use"]
    env = provider_env(claude, {})
    assert all(int(env[wait]) > 7 * 86400 * 1000 for wait in ("MCP_TOOL_TIMEOUT", "CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT"))
    assert providers["mine"].argv == ["my-agent"] and not providers["mine"].approvals
