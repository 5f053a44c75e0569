"""The real agent CLIs across attempts, end to end against the local mocks (see
``test_agent_clis.py`` for the set-up): an agent whose API rate-limits it sleeps, and its
next attempt resumes the provider's conversation, woken by the operator or by its timer;
a transient failure is retried under an on-failure policy until the agent gives up; a
kill of a sleeping agent is final.

The mock decides, request by request, what answers (``override``): here the script fails
from one of its steps on, until the supervisor has resumed the conversation (a resumed
attempt's requests carry :data:`~supervisord_agents.launch.RESUME_PROMPT`). Each run of
the CLI notes its argv on the way (``Run(record_argv=True)``), so a test sees what the
daemon ran, not what it meant to run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisord_agents.errors import IllegalTransition
from supervisord_agents.launch import RESUME_PROMPT
from tests.agent_clis import PROVIDERS
from tests.harness import eventually
from tests.test_agent_clis import Run, _progress_messages

#: How a resumed attempt's requests are told apart from the first attempt's.
RESUMED = RESUME_PROMPT[:60]

#: Each mock's rate limit whose reset is far off or not said (the timer stays out of the way
#: while the operator wakes the agent): gemini's per-day quota gives a reset hours away, and
#: its CLI gives up at once; claude's and codex's say none (the policy's back-off applies).
#: (Every mock's ``rate_limit`` is one whose reset is a couple of seconds off: gemini's CLI
#: says so, claude's and codex's say nothing.)
FAR_RATE_LIMIT = {"claude": "rate_limit", "codex": "rate_limit", "gemini": "daily_quota"}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def resumed(body: dict[str, Any]) -> bool:
    """True if a model request belongs to an attempt that resumed the conversation."""
    return RESUMED in json.dumps(body)


def fails_until_resumed(scenario: str, step: int) -> Callable[[dict[str, Any], int], str | None]:
    """A mock override: ``scenario`` answers from ``step`` of the script on, until resumed."""
    return lambda body, at: scenario if at >= step and not resumed(body) else None


def resume_args(provider: str, session: str) -> list[str]:
    """What the default provider profile adds to an argv to continue ``session``."""
    return ["resume", session, "-"] if provider == "codex" else ["--resume", session]


def holds(argv: list[str], part: list[str]) -> bool:
    """True if ``part`` is in ``argv``, in order and together."""
    return any(argv[i:i + len(part)] == part for i in range(len(argv)))


def wait_sleeping(run: Run, agent_id: str, timeout: float = 120) -> dict[str, Any]:
    """The agent's row once it sleeps between attempts; fails if it ends first."""
    def asleep() -> dict[str, Any] | None:
        agent: dict[str, Any] = run.daemon.call("agent.get", agent_id=agent_id)
        assert agent["state"] not in ("completed", "failed", "killed", "lost"), agent
        return agent if agent["state"] == "sleeping" else None
    return eventually(asleep, timeout, f"agent {agent_id} sleeping")


def assert_resumed(run: Run, ended: dict[str, Any]) -> None:
    """The agent completed in its second attempt, which continued the first one's conversation."""
    d = run.daemon
    log = d.agentctl("logs", ended["id"], "--format", "summary").stdout
    assert ended["state"] == "completed", (ended, log)
    assert ended["attempt"] == 2 and len(ended["attempts"]) == 1, ended
    first = ended["attempts"][0]
    assert first["n"] == 1 and first["exit"]["error_class"] == "rate_limit", first
    session = first["exit"]["session_id"]
    assert session and ended["exit"]["session_id"] == session, ended  # the same conversation, continued
    assert "ANSWER: all done" in ended["exit"]["answer"], ended["exit"]
    # What ran: the spawn's argv, then the provider's resume of that conversation.
    runs = run.argvs()
    assert len(runs) == 2, runs
    assert not holds(runs[0], resume_args(run.provider, session)), runs[0]
    assert holds(runs[1], resume_args(run.provider, session)), runs[1]
    # What the model saw: the resumed attempt's first request holds the conversation so far (the
    # progress call of the first attempt) and the supervisor's word to go on.
    again = [b for b in run.mock.requests if resumed(b)]
    assert again, "no request of the resumed attempt reached the mock"
    assert "mock started" in json.dumps(again[0]), again[0]
    # It went on from there: the progress step was not done twice, the rest was done once.
    progress = _progress_messages(d, ended["id"])
    assert progress.count("mock started") == 1 and "shell works" in progress, progress
    findings = d.list("findings.list", task_id=ended["task_id"])
    assert [f["message"] for f in findings] == ["mock finding"], findings


def test_a_rate_limited_agent_sleeps_and_the_operator_wakes_it_into_its_conversation(
        provider: str, tmp_path: Path) -> None:
    """A 429 in the middle of a conversation puts the agent to sleep with a wake-up time, its
    first attempt recorded; agent.wake starts the next attempt at once, which resumes the
    provider's conversation (its argv and its first request show it) and completes."""
    with Run(provider, "report", tmp_path, record_argv=True) as run:
        run.mock.override = fails_until_resumed(FAR_RATE_LIMIT[provider], step=1)
        agent = run.spawn(policy={"rate_limit_backoff": 3600})
        asleep = wait_sleeping(run, agent["id"])
        assert asleep["attempt"] == 2 and len(asleep["attempts"]) == 1, asleep
        first = asleep["attempts"][0]
        assert first["exit"]["error_class"] == "rate_limit" and first["exit"]["session_id"], first
        assert asleep["wake_at"] > first["ended_at"] and asleep["sleep_reason"], asleep
        assert asleep["exit"] is None and asleep["tmux"] is None, asleep  # nothing runs, nothing has ended
        assert len(run.argvs()) == 1 and not any(resumed(b) for b in run.mock.requests)
        woken = run.daemon.call("agent.wake", agent_id=agent["id"])
        assert woken["state"] in ("starting", "running") and woken["wake_at"] is None, woken
        assert_resumed(run, run.daemon.wait_state(agent["id"], timeout=120))


def test_a_rate_limited_agent_is_woken_by_its_timer_into_its_conversation(provider: str, tmp_path: Path) -> None:
    """Nobody wakes it: at the provider's reset (gemini says when; claude's last retry says how long
    the server asked it to wait) or after the policy's back-off (codex's final error drops the
    server's wait), the next attempt starts and resumes the conversation."""
    with Run(provider, "report", tmp_path, record_argv=True) as run:
        run.mock.override = fails_until_resumed("rate_limit", step=1)
        agent = run.spawn(policy={"rate_limit_backoff": 1})
        ended = run.daemon.wait_state(agent["id"], timeout=150)
        assert_resumed(run, ended)
        reset_said = ended["attempts"][0]["exit"].get("retry_at") is not None
        assert reset_said == (provider != "codex"), ended["attempts"][0]


def test_a_rate_limit_on_the_first_request_resumes_only_a_conversation_that_was_answered(
        provider: str, tmp_path: Path) -> None:
    """Rate-limited before its first answer, the agent sleeps; woken, its next attempt resumes the
    conversation only if the model had answered in it (the attempt's output tokens were not 0), else
    starts afresh with the original prompt: Gemini CLI (0.61) keeps no session until a turn has
    succeeded, and ``--resume <id>`` of it exits 42, "No previous sessions found"."""
    with Run(provider, "report", tmp_path, record_argv=True) as run:
        run.mock.override = fails_until_resumed(FAR_RATE_LIMIT[provider], step=0)
        agent = run.spawn(policy={"rate_limit_backoff": 3600})
        asleep = wait_sleeping(run, agent["id"])
        first = asleep["attempts"][0]["exit"]
        assert first["session_id"], first
        run.mock.override = None  # the limit has passed
        sent = len(run.mock.requests)
        run.daemon.call("agent.wake", agent_id=agent["id"])
        ended = run.daemon.wait_state(agent["id"], timeout=120)
        assert ended["state"] == "completed" and ended["attempt"] == 2, ended
        runs = run.argvs()
        assert len(runs) == 2, runs
        resumes = holds(runs[1], resume_args(provider, first["session_id"]))
        assert resumes == (first.get("output_tokens") != 0), (first, runs[1])
        if provider == "gemini":
            assert not resumes, runs[1]
        later = run.mock.requests[sent:]
        assert later and "Report progress, a finding" in json.dumps(later[0]), later[:1]


def test_a_failing_api_is_retried_on_failure_until_the_agent_gives_up(provider: str, tmp_path: Path) -> None:
    """Under restart=on-failure with two attempts, an API that keeps failing (500) is tried
    again after the back-off, resuming the conversation, and then the agent ends failed,
    "gave up after 2 attempts", both attempts visible: one in ``attempts``, one in ``exit``."""
    with Run(provider, "report", tmp_path, record_argv=True) as run:
        # From the second step on, every request fails, the resumed attempt's too.
        run.mock.override = lambda body, at: "server_error" if at >= 1 else None
        # Codex reconnects five times by itself (25 s) before it gives up: once is enough here.
        agent = run.spawn(policy={"restart": "on-failure", "max_attempts": 2, "backoff": 0.5},
                          codex_retries={"stream_max_retries": 1, "request_max_retries": 1})
        ended = run.daemon.wait_state(agent["id"], timeout=150)
        assert ended["state"] == "failed", ended
        assert ended["exit"]["reason"].startswith("gave up after 2 attempts: api_error: "), ended["exit"]
        assert ended["exit"]["error_class"] == "api_error", ended["exit"]
        assert ended["attempt"] == 2 and len(ended["attempts"]) == 1, ended
        first = ended["attempts"][0]
        assert first["exit"]["error_class"] == "api_error" and first["then"], first
        session = first["exit"]["session_id"]
        runs = run.argvs()
        assert len(runs) == 2 and holds(runs[1], resume_args(provider, session)), runs
        # The mock saw both: the first attempt's failed requests, then the resumed attempt's.
        failed_first = [b for b in run.mock.requests if not resumed(b) and "mock started" in json.dumps(b)]
        assert failed_first and any(resumed(b) for b in run.mock.requests), len(run.mock.requests)


def test_a_kill_of_a_sleeping_agent_is_final(provider: str, tmp_path: Path) -> None:
    """A sleeping agent that is killed ends ``killed`` at once, and stays so: its timer, due a
    moment later, starts nothing, and it cannot be woken."""
    with Run(provider, "rate_limit", tmp_path, record_argv=True) as run:
        # Due a few seconds after it sleeps (the provider's reset, else the back-off): time
        # enough to kill it first, even on a slow machine.
        if provider == "gemini":
            setattr(run.mock, "retry_delay", 6)  # noqa: B010 - the gemini mock's, not in the Mock protocol
        agent = run.spawn(policy={"rate_limit_backoff": 5})
        asleep = wait_sleeping(run, agent["id"])
        wake_at = asleep["wake_at"]
        sent = len(run.mock.requests)
        killed = run.daemon.call("agent.kill", agent_id=agent["id"], reason="not worth the wait")
        assert killed["state"] == "killed", killed
        assert killed["exit"]["error_class"] == "killed" and killed["exit"]["reason"] == "not worth the wait", killed
        assert killed["attempts"] == asleep["attempts"] and killed["wake_at"] is None, killed
        with pytest.raises(IllegalTransition):
            run.daemon.call("agent.wake", agent_id=agent["id"])
        # Past the time it would have woken (and a margin for a slow machine), nothing started.
        while time.time() < wake_at + 3:
            time.sleep(0.2)
        after = run.daemon.call("agent.get", agent_id=agent["id"])
        assert after["state"] == "killed" and after["attempt"] == asleep["attempt"], after
        assert len(run.argvs()) == 1 and len(run.mock.requests) == sent, run.argvs()
        events = map(json.loads, run.daemon.agentctl("--json", "events", "--since", "0").stdout.splitlines())
        starts = [e for e in events if e.get("agent_id") == agent["id"] and e.get("state") == "starting"]
        assert len(starts) == 1, starts  # the first attempt's, and no other
