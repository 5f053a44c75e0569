"""The real agent CLIs, end to end, with the default provider profiles, against a local mock
of each one's model API on 127.0.0.1 (``tests/mock_*.py``; never a real endpoint).

The daemon is given the mock's base URL and a fake key in its environment, as an operator
would export a key; agents get it from there. In the scripted conversation the model calls
the supervisor's ``report_progress`` and ``report_finding`` tools over MCP, runs
``agentctl progress ...`` in its shell, and answers. Scripted failures (429, 500, a bad
key) must each end the agent ``failed`` with the right class and a reason (a rate limit when
the task's policy says ``on_rate_limit = "fail"``; by default it sleeps, see
``test_agent_clis_lifecycle.py``).

The CLIs are the versions pinned in ``tests/agent_clis/package.json``, installed by
``.ci/run`` into ``.cache/agent-clis``; without them these tests skip and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_clis import CACHE, PROVIDERS, cli_dir, mock_for
from tests.harness import DaemonProcess

#: A stand-in for a CLI, first on the daemon's PATH: it notes its argv (one JSON line) and
#: execs the real CLI in its place.
_RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


class Run:
    """One daemon whose environment points ``provider``'s CLI at a mock in ``scenario``.
    With ``record_argv``, every run of the CLI notes its argv first (see :meth:`argvs`)."""

    def __init__(self, provider: str, scenario: str, tmp_path: Path, *, record_argv: bool = False,
                 base: Path | None = None) -> None:
        binary, self.model = PROVIDERS[provider]
        folder = cli_dir(binary)
        if folder is None:
            pytest.skip(f"{binary} is not installed (.ci/run installs it into {CACHE})")
        self.provider = provider
        self.bin_path = str(folder)
        self.argv_log = tmp_path / "argv.jsonl"
        if record_argv:
            recorders = tmp_path / "recorders"
            recorders.mkdir()
            recorder = recorders / binary
            recorder.write_text(_RECORDER.format(python=sys.executable, log=str(self.argv_log),
                                                 real=str(folder / binary)))
            recorder.chmod(0o755)
            self.bin_path = f"{recorders}:{folder}"
        self.mock = mock_for(provider, scenario)
        # Outside /tmp: codex refuses to make its helpers in a CODEX_HOME under the temp
        # folder (and then every sandboxed command fails, silently).
        self.home = Path(tempfile.mkdtemp(prefix="sa-e2e-home-", dir="/var/tmp"))
        self.work = tmp_path / "work"  # not a git repository, never trusted before
        self.work.mkdir()
        self.daemon = DaemonProcess(base)

    def __enter__(self) -> Run:
        self.mock.__enter__()
        self.daemon.extra_env = {
            **self.mock.env(), "HOME": str(self.home),
            "PATH": f"{self.bin_path}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        self.daemon.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.close()
        self.mock.__exit__(*exc)
        shutil.rmtree(self.home, ignore_errors=True)

    def argvs(self) -> list[list[str]]:
        """The argv (without the program) of each run of the CLI so far, oldest first."""
        try:
            lines = self.argv_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines]

    def spawn(self, prompt: str = "Report progress, a finding, then run agentctl in your shell.", *,
              policy: dict[str, Any] | None = None, codex_retries: dict[str, int] | None = None,
              cwd: Path | None = None) -> dict[str, Any]:
        """Create a task (with ``policy``, if given; in ``cwd``, else the run's work folder) and
        spawn one agent of the provider in it. ``codex_retries`` bounds codex's own retries (its
        provider's ``request_max_retries``, ``stream_max_retries``), which no environment variable sets."""
        task = self.daemon.create_task(cwd=str(cwd or self.work), **({"policy": policy} if policy is not None else {}))
        params: dict[str, Any] = {"task_id": task, "type": "e2e", "provider": self.provider, "prompt": prompt}
        if self.model:
            params["model"] = self.model
        point = getattr(self.mock, "codex_config", None)
        if point is not None:  # codex reads no base URL from its environment: a provider of the mock
            params["argv"] = point(**(codex_retries or {}))
        agent: dict[str, Any] = self.daemon.call("agent.spawn", **params)
        return agent


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reporting(provider: str, tmp_path: Path) -> Iterator[Run]:
    with Run(provider, "report", tmp_path) as run:
        yield run


def test_a_real_agent_reports_and_completes_with_its_answer(reporting: Run) -> None:
    d = reporting.daemon
    agent = reporting.spawn()
    ended = d.wait_state(agent["id"], timeout=120)
    log = d.agentctl("logs", agent["id"], "--format", "summary").stdout
    assert ended["state"] == "completed", (ended, log)
    exit = ended["exit"]
    assert "ANSWER: all done" in exit["answer"] and not exit.get("reason")
    assert exit["session_id"] and exit["output_tokens"]
    if reporting.provider == "claude":  # the only CLI that reports cost and turns
        assert exit["cost_usd"] is not None and exit["turns"]
    findings = d.list("findings.list", task_id=agent["task_id"])
    assert [(f["agent_id"], f["message"], f["severity"]) for f in findings] == [(agent["id"], "mock finding", "high")]
    progress = _progress_messages(d, agent["id"])
    assert "mock started" in progress and "shell works" in progress, progress
    waited = json.loads(d.agentctl("--json", "wait", agent["id"]).stdout)["agents"][0]
    assert "ANSWER: all done" in waited["exit"]["answer"]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)")
def test_a_sandboxed_real_agent_reports_from_its_shell_too(provider: str, tmp_path: Path) -> None:
    """Under ``sandbox = "bwrap"`` the user's home is read-only: claude and codex get a config
    folder of the agent's own (codex did not start; claude's shell lost its PATH, and with it
    agentctl), gemini its own home as always; each reports over MCP and from its shell."""
    # The daemon's state outside /tmp: codex makes no helpers in a CODEX_HOME under it.
    base = Path(tempfile.mkdtemp(prefix="sa-", dir="/var/tmp"))
    try:
        with Run(provider, "report", tmp_path, base=base) as run:
            d = run.daemon
            task = d.create_task(cwd=str(run.work), sandbox="bwrap")
            params: dict[str, Any] = {"task_id": task, "type": "boxed", "provider": provider,
                                      "prompt": "Report progress, a finding, then run agentctl in your shell."}
            if run.model:
                params["model"] = run.model
            point = getattr(run.mock, "codex_config", None)
            if point is not None:
                params["argv"] = point()
            agent = d.call("agent.spawn", **params)
            ended = d.wait_state(agent["id"], timeout=120)
            log = d.agentctl("logs", agent["id"], "--format", "summary").stdout
            assert ended["state"] == "completed" and ended["sandbox"] == "bwrap", (ended, log)
            assert _progress_messages(d, agent["id"]) == ["mock started", "shell works"], log
            assert not list(run.home.iterdir()), "the user's home was written"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _progress_messages(d: DaemonProcess, agent_id: str) -> list[str]:
    result = d.agentctl("--json", "events", "--since", "0")
    messages = []
    for line in result.stdout.splitlines():
        event = json.loads(line)
        if event.get("kind") == "progress" and event.get("agent_id") == agent_id:
            messages.append(event["data"]["message"])
    return messages


@pytest.mark.parametrize(("scenario", "error_class"),
                         [("bad_key", "auth"), ("rate_limit", "rate_limit"), ("server_error", "api_error")])
def test_a_real_agent_whose_api_fails_ends_failed_with_the_class_and_reason(
        provider: str, scenario: str, error_class: str, tmp_path: Path) -> None:
    # A rate limit would put the agent to sleep until the reset (the default policy); "fail"
    # ends it as any other error (test_agent_clis_lifecycle.py has the sleep and the resume).
    policy = {"on_rate_limit": "fail"} if scenario == "rate_limit" else None
    with Run(provider, scenario, tmp_path) as run:
        agent = run.spawn(prompt="hi", policy=policy)
        ended = run.daemon.wait_state(agent["id"], timeout=180)
        assert ended["state"] == "failed", ended
        assert ended["exit"]["error_class"] == error_class, ended["exit"]
        assert ended["exit"]["reason"].startswith(f"{error_class}: "), ended["exit"]
        assert ended["attempts"] == [], ended["attempts"]  # one attempt, nothing retried
        assert len(run.mock.requests) >= 1


def test_the_doctor_finds_the_installed_clis(tmp_path: Path) -> None:
    with Run("gemini", "report", tmp_path) as run:
        run.daemon.extra_env["PATH"] = ":".join(
            [*(str(d) for b, _ in PROVIDERS.values() if (d := cli_dir(b))), os.environ.get("PATH", "")])
        run.daemon.stop()
        run.daemon.start()
        report = json.loads(run.daemon.agentctl("--json", "doctor").stdout)
    checks = {p["name"]: p for p in report["providers"]}
    for name, (binary, _) in PROVIDERS.items():
        if cli_dir(binary) is None:
            continue
        assert checks[name].get("installed", True) and checks[name]["version"], checks[name]
        missing = [p["what"] for p in checks[name].get("problems", []) if "--help" in p["what"]]
        assert missing == [], missing  # every flag of the default profile is one the pinned CLI knows
