"""How agents end, and why: each provider's events read into one report (results.py), the
runner's record of them, reasons in every view, and the environment each agent gets.

Real parts: the runner as a subprocess, a real daemon and tmux server, agentctl as a
subprocess. The provider formats are checked against events the real CLIs printed
(``tests/fixtures/<provider>/``, recorded against the local mock model servers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisord_agents.errors import InvalidParams
from supervisord_agents.model import DecidedBy, ErrorClass, EventFormat
from supervisord_agents.results import Report, classify, conclude, read_events, retry_after
from supervisord_agents.runner import pack_exec, unpack_exec
from tests.harness import FAKE_AGENT, DaemonProcess, eventually

FIXTURES = Path(__file__).parent / "fixtures"


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


# -- reading each provider's events ----------------------------------------------------------


def test_claude_success_keeps_answer_cost_tokens_turns_and_session() -> None:
    events = [
        {"type": "system", "subtype": "init", "session_id": "s-1", "model": "m"},
        {"type": "result", "subtype": "success", "is_error": False, "result": "  the answer  ", "num_turns": 4,
         "total_cost_usd": 0.25, "session_id": "s-1",
         "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}},
    ]
    report = read_events(EventFormat.CLAUDE, events)
    assert report == Report(ok=True, answer="the answer", cost_usd=0.25, input_tokens=15, output_tokens=7, turns=4,
                            session_id="s-1")


@pytest.mark.parametrize(
    ("result", "error_class"),
    [
        ("API Error: 429 {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}", ErrorClass.RATE_LIMIT),
        ("Invalid API key · Please run /login", ErrorClass.AUTH),
        ("API Error: 500 {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}", ErrorClass.API_ERROR),
        ("API Error: 529 Overloaded", ErrorClass.API_ERROR),
        ("something else went wrong", ErrorClass.AGENT_ERROR),
    ],
)
def test_claude_errors_are_classified(result: str, error_class: ErrorClass) -> None:
    event = {"type": "result", "subtype": "success", "is_error": True, "result": result, "session_id": "s"}
    report = read_events(EventFormat.CLAUDE, [event])
    assert report.ok is False and report.error_class is error_class and report.error


def test_claude_max_turns_and_permission_denials() -> None:
    turns = read_events(EventFormat.CLAUDE, [{"type": "result", "subtype": "error_max_turns", "num_turns": 3}])
    assert turns.ok is False and turns.error_class is ErrorClass.MAX_TURNS and turns.turns == 3
    denied = read_events(EventFormat.CLAUDE, [{"type": "result", "subtype": "error_during_execution", "is_error": True,
                                               "permission_denials": [{"tool_name": "Bash"}]}])
    assert denied.error_class is ErrorClass.PERMISSION_DENIED and "Bash" in denied.error


def test_codex_events() -> None:
    ok = [
        {"type": "thread.started", "thread_id": "th-1"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "i0", "type": "agent_message", "text": "first"}},
        {"type": "item.completed", "item": {"id": "i1", "type": "agent_message", "text": "final answer"}},
        {"type": "turn.completed", "usage": {"input_tokens": 100, "cached_input_tokens": 20, "output_tokens": 9}},
    ]
    report = read_events(EventFormat.CODEX, ok)
    assert report == Report(ok=True, answer="final answer", input_tokens=100, output_tokens=9, turns=1,
                            session_id="th-1")
    failed = [ok[0], {"type": "error", "message": "Reconnecting... 1/5"},
              {"type": "turn.failed", "error": {"message": "exceeded retry limit, last status: 429 Too Many Requests"}}]
    report = read_events(EventFormat.CODEX, failed)
    assert report.ok is False and report.error_class is ErrorClass.RATE_LIMIT and report.session_id == "th-1"
    only_error = read_events(EventFormat.CODEX, [ok[0], {"type": "error", "message": "unexpected status 401"}])
    assert only_error.ok is False and only_error.error_class is ErrorClass.AUTH


def test_gemini_events() -> None:
    base = [
        {"type": "init", "session_id": "g-1", "model": "gemini-x"},
        {"type": "message", "role": "user", "content": "do it"},
        {"type": "message", "role": "assistant", "content": "thinking", "delta": True},
        {"type": "tool_use", "tool_name": "run_shell_command", "tool_id": "t1", "parameters": {"command": "ls"}},
        {"type": "tool_result", "tool_id": "t1", "status": "success", "output": "a"},
        {"type": "message", "role": "assistant", "content": "all ", "delta": True},
        {"type": "message", "role": "assistant", "content": "done", "delta": True},
    ]
    ok = read_events(EventFormat.GEMINI, [*base, {"type": "result", "status": "success",
                                                  "stats": {"input_tokens": 50, "output_tokens": 6}}])
    assert ok.ok is True and ok.answer == "all done" and ok.session_id == "g-1"
    assert (ok.input_tokens, ok.output_tokens) == (50, 6)
    error = read_events(EventFormat.GEMINI, [*base, {"type": "result", "status": "error",
                                                     "error": {"type": "FatalAuthenticationError",
                                                               "message": "API key not valid"}}])
    assert error.ok is False and error.error_class is ErrorClass.AUTH and "API key not valid" in error.error


def test_error_classes_and_retry_times_from_text() -> None:
    assert classify("429 Too Many Requests") is ErrorClass.RATE_LIMIT
    assert classify("RESOURCE_EXHAUSTED: quota") is ErrorClass.RATE_LIMIT
    assert classify("HTTP 401 Unauthorized") is ErrorClass.AUTH
    assert classify("503 Service Unavailable") is ErrorClass.API_ERROR
    assert classify("all good") is None
    assert retry_after("Please try again in 20s.") == 20
    assert retry_after("retry after 1.5 minutes") == 90
    assert retry_after("try again in 250ms") == 0.25
    assert retry_after("no hint") is None


def test_a_report_of_error_fails_whatever_the_exit_code() -> None:
    """Gemini and claude may exit 0 after reporting an error: the report decides."""
    report = Report(ok=False, error_class=ErrorClass.RATE_LIMIT, error="429: try again in 30s", retry_after=30)
    exit = conclude(report, code=0, signal_number=None, ended_at=1000.0)
    assert exit.is_error is True and exit.error_class is ErrorClass.RATE_LIMIT
    assert exit.reason == "rate_limit: 429: try again in 30s" and exit.retry_at == 1030.0
    assert exit.decided_by is DecidedBy.EXIT_STATUS


def test_an_exit_without_a_report_says_how_the_process_ended() -> None:
    crashed = conclude(Report(), code=3, signal_number=None, stderr="Error: no such model")
    assert crashed.reason == "exited with code 3: Error: no such model" and crashed.error_class is ErrorClass.CRASHED
    signalled = conclude(Report(), code=None, signal_number=9)
    assert signalled.reason == "killed by SIGKILL" and signalled.error_class is ErrorClass.CRASHED
    auth = conclude(Report(), code=1, signal_number=None, stderr="401 Unauthorized")
    assert auth.error_class is ErrorClass.AUTH
    not_started = conclude(Report(), code=127, signal_number=None, runner_error="cannot start 'nope': not found")
    assert not_started.error_class is ErrorClass.START_FAILED
    ok = conclude(Report(ok=True, answer="42"), code=0, signal_number=None)
    assert ok.reason == "" and ok.error_class is None and ok.answer == "42" and ok.is_error is False


@pytest.mark.parametrize("provider", ["claude", "codex", "gemini"])
def test_recorded_runs_of_the_real_clis(provider: str) -> None:
    """The events each real CLI printed against the mock model: the scripted conversation
    succeeds with its answer, and each scripted failure fails with its class."""
    folder = FIXTURES / provider
    if not folder.is_dir():
        pytest.skip(f"no recorded {provider} runs")
    fmt = EventFormat(provider)
    expected = {"rate_limit": ErrorClass.RATE_LIMIT, "server_error": ErrorClass.API_ERROR, "bad_key": ErrorClass.AUTH}
    checked = 0
    for path in sorted(folder.glob("*.jsonl")):
        report = read_events(fmt, events_of(path))
        if path.stem == "report":
            assert report.ok is True and "ANSWER" in report.answer, (path, report)
            assert report.session_id and not report.warning, report
            checked += 1
        elif path.stem == "mcp_server_failed":  # claude's shim would not start: it "succeeds", silently
            exit = conclude(report, code=0, signal_number=None)
            assert report.ok is True and exit.error_class is None, (path, exit)
            assert exit.reason == "MCP server did not start in the agent: supervisord-agents (failed)", exit
            checked += 1
        elif path.stem in expected:
            stderr = path.with_suffix(".stderr")
            exit = conclude(report, code=1, signal_number=None,
                            stderr=stderr.read_text().strip().splitlines()[-1] if stderr.exists() else "")
            assert exit.error_class is expected[path.stem], (path, exit)
            checked += 1
    assert checked


def test_only_a_failed_mcp_server_is_a_warning_and_odd_init_events_are_none() -> None:
    result = {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s"}

    def warning(servers: object) -> str:
        init = {"type": "system", "subtype": "init", "session_id": "s", "mcp_servers": servers}
        return read_events(EventFormat.CLAUDE, [init, result]).warning

    assert warning([{"name": "supervisord-agents", "status": "pending"}]) == ""  # still starting
    assert warning([{"name": "a", "status": "connected"}, {"name": "b", "status": "failed"}]) == \
        "MCP server did not start in the agent: b (failed)"
    assert warning(7) == warning("failed") == warning([None, "x"]) == ""


# -- the runner -------------------------------------------------------------------------


def run_runner(tmp_path: Path, *argv: str, env: dict[str, str] | None = None, events: str = "") -> dict[str, Any]:
    status = tmp_path / "status.json"
    args = [sys.executable, "-m", "supervisord_agents.runner", "--status", str(status), "--log", str(tmp_path / "log")]
    if events:
        args += ["--events", events]
    if env is not None:
        exec_file = tmp_path / "exec"
        exec_file.write_bytes(pack_exec(list(argv), env))
        args += ["--exec", str(exec_file)]
    else:
        args += ["--", *argv]
    subprocess.run(args, check=False, capture_output=True, timeout=60,
                   env={"PATH": "/usr/bin:/bin", "RUNNER_OWN": "1"})
    result: dict[str, Any] = json.loads(status.read_text())
    return result


def test_the_runner_gives_the_agent_exactly_the_argv_and_environment_of_its_exec_file(tmp_path: Path) -> None:
    dump = tmp_path / "env-seen.json"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "ONLY": "this"}
    run_runner(tmp_path, Path(sys.executable).name, FAKE_AGENT, "--dump-env", str(dump), env=env)
    seen = json.loads(dump.read_text())
    assert seen["ONLY"] == "this" and "RUNNER_OWN" not in seen
    assert not (tmp_path / "exec").exists()  # read once, then gone: it may hold keys


def test_the_runner_keeps_first_and_last_events_clipped_and_the_last_stderr_line(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "print(json.dumps({'type': 'init', 'session_id': 'first'}))\n"
        "for i in range(200): print(json.dumps({'type': 'message', 'role': 'assistant', 'content': 'x' * 9000}))\n"
        "print('not json')\n"
        "print(json.dumps({'type': 'result', 'status': 'error', 'error': {'message': '429 slow down'}}))\n"
        "sys.stderr.write('warming up\\nfatal: it broke\\n\\n')\n"
        "sys.exit(0)\n"
    )
    status = run_runner(tmp_path, sys.executable, "-c", script, events="gemini")
    events = status["events"]
    assert events[0] == {"type": "init", "session_id": "first"} and events[-1]["type"] == "result"
    assert len(events) <= 65 and all(len(e.get("content", "")) <= 4001 for e in events)
    assert status["stderr"] == "fatal: it broke" and status["format"] == "gemini"


def test_the_exec_file_carries_any_argv_and_environment_exactly() -> None:
    argv = ["agent", "line one\nline two", "", "a=b", "caf\u00e9", "raw \udcff byte"]
    env = {"PATH": "/usr/bin", "EMPTY": "", "EQ": "x=y=z", "NL": "a\nb"}
    assert unpack_exec(pack_exec(argv, env)) == (argv, env)
    assert unpack_exec(pack_exec([], {})) == ([], {})
    for bad_argv, bad_env in ((["a\0b"], {}), ([], {"K": "v\0"}), ([], {"K=J": "v"}), ([], {"": "v"})):
        with pytest.raises(ValueError):
            pack_exec(bad_argv, bad_env)
    for broken in (b"", b"other 1\0" + b"1\0a\0", pack_exec(["a", "b"], {})[:-3], pack_exec(["a"], {"K": "v"})[:-1]):
        with pytest.raises(ValueError):
            unpack_exec(broken)


def test_a_broken_exec_file_fails_the_start_with_the_reason(tmp_path: Path) -> None:
    exec_file = tmp_path / "exec"
    exec_file.write_bytes(pack_exec(["true"], {"A": "1"})[:-2])  # cut short
    status = tmp_path / "status.json"
    subprocess.run([sys.executable, "-m", "supervisord_agents.runner", "--status", str(status), "--exec",
                    str(exec_file)], check=False, capture_output=True, timeout=60)
    record = json.loads(status.read_text())
    assert record["code"] == 127 and "a truncated exec file" in record["error"]


# -- reasons everywhere, and each agent's environment, through a real daemon ------------------


def test_reasons_and_answers_in_wait_show_and_status(daemon: DaemonProcess) -> None:
    task = daemon.create_task()
    failed = daemon.spawn_fake(task, "failer", "--exit", "3", "--stderr", "model not found: opus-9")
    done = daemon.spawn_fake(task, "doer")
    waited = daemon.agentctl("wait", failed["id"], done["id"])
    assert waited.returncode == 6
    assert f"{failed['id']} failed: exited with code 3: model not found: opus-9" in waited.stdout
    assert f"{done['id']} completed: ok" in waited.stdout
    record = json.loads(daemon.agentctl("--json", "wait", failed["id"]).stdout)["agents"][0]
    assert record["exit"]["reason"] == "exited with code 3: model not found: opus-9"
    assert record["exit"]["error_class"] == "crashed"
    shown = daemon.agentctl("show", failed["id"]).stdout
    assert "outcome      exited with code 3: model not found: opus-9" in shown
    status = daemon.agentctl("agents", "--task", task).stdout
    assert "OUTCOME" in status and "exited with code 3" in status


def test_an_error_result_with_exit_0_fails_with_its_reason(daemon: DaemonProcess) -> None:
    (daemon.base / "config.toml").write_text(
        f'[providers.fake]\nargv = ["{sys.executable}", "{FAKE_AGENT}", "--result", "error"]\nevents = "claude"\n')
    assert daemon.proc is not None
    daemon.proc.send_signal(1)  # SIGHUP: reload
    task = daemon.create_task()

    def spawn() -> dict[str, Any]:
        agent: dict[str, Any] = daemon.call("agent.spawn", task_id=task, type="r", provider="fake")
        return agent

    agent = eventually(lambda: _try(spawn), timeout=10)
    ended = daemon.wait_state(agent["id"])
    assert ended["state"] == "failed" and ended["exit"]["code"] == 0
    assert ended["exit"]["error_class"] == "agent_error" and ended["exit"]["reason"].startswith("agent_error: done")


def _try(fn: Any) -> Any:
    try:
        return fn()
    except InvalidParams:
        return None  # the reload has not landed yet


def test_each_agent_gets_the_daemons_current_environment(tmp_path: Path) -> None:
    """Not the tmux server's from when the first daemon started it: a key exported before a
    restart reaches new agents; a nested agent CLI's markers never do; --env adds."""
    d = DaemonProcess()
    d.extra_env = {"MY_API_KEY": "old", "CLAUDECODE": "1", "HOME": str(tmp_path)}
    try:
        d.start()
        task = d.create_task()
        first = tmp_path / "first.json"
        d.spawn_fake(task, "first", "--dump-env", str(first), "--sleep", "30")
        d.stop()
        d.extra_env = {"MY_API_KEY": "new", "CLAUDECODE": "1", "HOME": str(tmp_path / "home2")}
        d.start()
        second = tmp_path / "second.json"
        agent = d.spawn_fake(task, "second", "--dump-env", str(second), env={"EXTRA": "given"})
        d.wait_state(agent["id"])
        seen = json.loads(second.read_text())
        assert seen["MY_API_KEY"] == "new" and seen["HOME"] == str(tmp_path / "home2")
        assert seen["EXTRA"] == "given" and "CLAUDECODE" not in seen and "TMUX" not in seen
        assert seen["SUPERVISORD_AGENTS_AGENT_ID"] == agent["id"]
        assert json.loads(first.read_text())["MY_API_KEY"] == "old"
        with pytest.raises(InvalidParams, match="SUPERVISORD_AGENTS_AGENT_ID"):
            d.spawn_fake(task, "third", env={"SUPERVISORD_AGENTS_AGENT_ID": "someone-else"})
    finally:
        d.close()


def test_a_multi_line_script_is_a_legal_argument(daemon: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "out"
    task = daemon.create_task()
    agent = daemon.call("agent.spawn", task_id=task, type="sh",
                        argv=["sh", "-c", f"echo one >{out}\n\techo two >>{out}"])
    assert daemon.wait_state(agent["id"])["state"] == "completed"
    assert out.read_text() == "one\ntwo\n"
    with pytest.raises(InvalidParams):
        daemon.call("agent.spawn", task_id=task, type="esc", argv=["echo", "\x1b[2J"])
