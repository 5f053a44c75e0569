"""The unit tier above the tmux seam: the API, the actor, effects and the reconciler
wired as in the daemon, in-process, with :class:`tests.fake_tmux.FakeTmux` for tmux."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from supervisord_agents import api as api_module
from supervisord_agents.config import Settings, load_config
from supervisord_agents.daemon import Daemon
from supervisord_agents.errors import DuplicateAgent, LimitExceeded, SpawnFailed, StorageError
from supervisord_agents.files import AgentFiles
from supervisord_agents.handlers import Caller
from supervisord_agents.protocol import METHODS
from supervisord_agents.runner import unpack_exec
from supervisord_agents.server import bind_socket
from tests.fake_tmux import FakeTmux
from tests.harness import short_tmpdir


class InProcess:
    def __init__(self, daemon: Daemon, fake: FakeTmux) -> None:
        self.daemon = daemon
        self.fake = fake
        self.caller = Caller(pid=os.getpid(), uid=os.getuid())

    async def call(self, method: str, **params: Any) -> Any:
        decoded = msgspec.convert(params, METHODS[method].params)
        result = await self.daemon.api.call(METHODS[method], decoded, self.caller)
        return msgspec.to_builtins(result)

    async def list(self, method: str, **params: Any) -> list[Any]:
        """Every item of a list method, following its pages."""
        items: list[Any] = []
        while True:
            page = await self.call(method, **params)
            items.extend(page["items"])
            if page.get("next") is None:
                return items
            params["cursor"] = page["next"]

    def files(self, agent: dict[str, Any]) -> AgentFiles:
        return AgentFiles(self.daemon.settings.current.state_dir, agent["task_id"], agent["id"])

    async def eventually(self, agent_id: str, state: str) -> dict[str, Any]:
        with trio.fail_after(30):
            while (agent := await self.call("agent.get", agent_id=agent_id))["state"] != state:
                await trio.sleep(0.01)
        return dict(agent)

    async def task(self, **params: Any) -> str:
        params.setdefault("description", "t")
        params.setdefault("cwd", str(self.daemon.settings.current.state_dir.parent))
        return str((await self.call("task.create", **params))["id"])

    async def spawn(self, task_id: str, type: str = "worker", **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("agent.spawn", task_id=task_id, type=type, argv=["true", "x"],
                                                 prompt=params.pop("prompt", "do it"), **params)
        return result


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery) -> AsyncIterator[InProcess]:
    base = short_tmpdir()
    (base / "config.toml").write_text("")
    env = {"SUPERVISORD_AGENTS_CONFIG": str(base / "config.toml"), "SUPERVISORD_AGENTS_STATE_DIR": str(base / "s"),
           "SUPERVISORD_AGENTS_RUNTIME_DIR": str(base / "r"), "SUPERVISORD_AGENTS_RECONCILE_INTERVAL": "0.2",
           "SUPERVISORD_AGENTS_KILL_GRACE": "0", "SUPERVISORD_AGENTS_GLOBAL_MAX_CONCURRENT": "5000",
           "SUPERVISORD_AGENTS_CGROUP_ROOT": "off"}
    config = load_config(None, environ=env)
    config.state_dir.mkdir(mode=0o700)
    fake = FakeTmux()
    daemon = Daemon(Settings(config), backend=fake)
    sock = bind_socket(config.socket_path)
    done = trio.Event()

    async def run() -> None:
        try:
            await daemon.run([sock])
        finally:
            done.set()

    nursery.start_soon(run)
    with trio.fail_after(30):
        while daemon.server.stats.accepted == 0 and not daemon.reconciler.passes:
            await trio.sleep(0.005)
    try:
        yield InProcess(daemon, fake)
    finally:
        daemon.stopping.set()
        with trio.fail_after(30):
            await done.wait()
        shutil.rmtree(base, ignore_errors=True)


async def test_spawn_goes_through_the_seam(rig: InProcess) -> None:
    task_id = await rig.task(context={"background": "the codebase is large"})
    agent = await rig.spawn(task_id, prompt="review it")
    assert agent["state"] == "running" and agent["tmux"]["session_id"] == "$1"
    (spec,) = rig.fake.specs
    assert spec.name == f"sa-{agent['id']}" and spec.agent_id == agent["id"]
    # The pane runs the runner; the agent's argv and environment wait for it in exec.json.
    assert "from supervisord_agents.runner import main" in spec.argv[4] and "true" not in spec.argv
    exec_file = rig.files(agent).exec
    if exec_file.exists():  # the fake backend runs no runner to take it
        argv, env = unpack_exec(exec_file.read_bytes())
        assert argv == ["true", "x"] and env["SUPERVISORD_AGENTS_AGENT_ID"] == agent["id"]
        assert exec_file.stat().st_mode & 0o777 == 0o600
    assert spec.env["SUPERVISORD_AGENTS_AGENT_ID"] == agent["id"]
    assert "SUPERVISORD_AGENTS_TOKEN" not in spec.env  # the kernel tells agents apart: no secret to steal
    prompt = rig.files(agent).prompt.read_text()
    assert prompt.startswith("review it\n") and agent["id"] in prompt and "the codebase is large" in prompt


async def test_a_session_that_does_not_start_fails_the_agent_and_the_call(rig: InProcess) -> None:
    task_id = await rig.task()
    rig.fake.refuse = "create window failed: fork failed"
    with pytest.raises(SpawnFailed, match="fork failed") as info:
        await rig.spawn(task_id)
    agent = await rig.call("agent.get", agent_id=info.value.data["agent_id"])
    assert agent["state"] == "failed"
    assert agent["exit"]["decided_by"] == "spawn_error" and "fork failed" in agent["exit"]["reason"]
    failed = await rig.eventually(agent["id"], "failed")
    with trio.fail_after(30):
        while not (failed := await rig.call("agent.get", agent_id=agent["id"]))["cleanup"]:
            await trio.sleep(0.01)
    assert failed["cleanup"]["ok"] and not rig.files(failed).prompt.exists()
    status = await rig.call("task.get", task_id=task_id)
    assert status["counts"]["failed"] == 1 and status["counts"]["active"] == 0


async def test_exit_is_read_from_the_status_record(rig: InProcess) -> None:
    task_id = await rig.task()
    ok = await rig.spawn(task_id, "ok")
    bad = await rig.spawn(task_id, "bad")
    gone = await rig.spawn(task_id, "gone")
    for agent, record in ((ok, {"code": 0}), (bad, {"code": None, "signal": 9})):
        files = rig.files(agent)
        files.status.write_text(json.dumps(record))
        files.log.write_text("output\n")
    for agent in (ok, bad, gone):
        rig.fake.end(agent["id"])
    ended_ok = await rig.eventually(ok["id"], "completed")
    ended_bad = await rig.eventually(bad["id"], "failed")
    ended_gone = await rig.eventually(gone["id"], "lost")
    assert ended_ok["exit"] == {"decided_by": "exit_status", "code": 0}
    assert ended_bad["exit"]["signal"] == 9
    assert ended_gone["exit"]["decided_by"] == "session_vanished"
    with trio.fail_after(30):
        while not (after := await rig.call("agent.get", agent_id=ok["id"]))["cleanup"]:
            await trio.sleep(0.01)
    assert after["cleanup"]["ok"] and Path(after["cleanup"]["archive"]).exists()


async def test_slow_reads_cannot_take_the_worker_threads_the_daemon_needs(
        rig: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads that clients ask for run on a few worker threads of their own: 60 stuck at once
    (a huge log, a slow regex) leave the daemon's own work in threads (a cleanup) untouched."""
    release = threading.Event()
    real = api_module.read_output

    def stuck(*args: Any) -> Any:
        release.wait(60)
        return real(*args)

    monkeypatch.setattr(api_module, "read_output", stuck)
    task_id = await rig.task()
    reader, done = await rig.spawn(task_id, "reader"), await rig.spawn(task_id, "done")
    answered = 0

    async def read() -> None:
        nonlocal answered
        await rig.call("agent.output", agent_id=reader["id"])
        answered += 1

    async with trio.open_nursery() as nursery:
        for _ in range(60):
            nursery.start_soon(read)
        await trio.sleep(0.1)
        rig.fake.end(done["id"])
        with trio.fail_after(30):
            while not (await rig.call("agent.get", agent_id=done["id"]))["cleanup"]:
                await trio.sleep(0.01)
        assert answered == 0  # the reads were still stuck while the cleanup ran
        release.set()
    assert answered == 60


async def test_kill_while_starting_is_carried_out_once_the_session_exists(rig: InProcess) -> None:
    task_id = await rig.task()
    gate = trio.Event()
    original = rig.fake.start_session

    async def slow_start(spec: Any) -> Any:
        await gate.wait()
        return await original(spec)

    rig.fake.start_session = slow_start  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        spawned: list[dict[str, Any]] = []

        async def spawn() -> None:
            spawned.append(await rig.spawn(task_id))

        nursery.start_soon(spawn)
        with trio.fail_after(30):
            while not (agents := await rig.list("agent.list", task_id=task_id)):
                await trio.sleep(0.005)
        nursery.start_soon(lambda: rig.call("agent.kill", agent_id=agents[0]["id"], reason="changed my mind"))
        await rig.eventually(agents[0]["id"], "stopping")
        gate.set()
    final = await rig.eventually(agents[0]["id"], "killed")
    assert final["kill_reason"] == "changed my mind"
    assert "$1" in rig.fake.killed and not rig.fake.sessions


async def test_limits_are_enforced_atomically(rig: InProcess) -> None:
    task_id = await rig.task(limits={"max_concurrent": 5, "max_total": 45, "max_depth": 5})
    results = await _gather([lambda t=t: rig.spawn(task_id, f"w{t}") for t in range(12)])
    admitted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(admitted) == 5 and len(refused) == 7
    with pytest.raises(DuplicateAgent) as info:
        await rig.spawn(task_id, admitted[0]["type"])
    assert admitted[0]["id"] in info.value.message


async def test_ids_never_collide(rig: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when the random part repeats within one second, every id is distinct."""
    tasks = [await rig.task() for _ in range(10)]
    hexes = iter(["aaaaaa"] * 3 + [f"{i:06x}" for i in range(10_000)])
    monkeypatch.setattr(api_module.secrets, "token_hex", lambda n: next(hexes))
    spawns = [lambda t=t, i=i: rig.spawn(t, f"w{i}") for t in tasks for i in range(20)]
    results = await _gather(spawns)
    ids = [r["id"] for r in results if isinstance(r, dict)]
    assert len(ids) == 200 and len(set(ids)) == 200


async def _gather(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            results[i] = await calls[i]()
        except LimitExceeded as e:
            results[i] = e

    async with trio.open_nursery() as nursery:
        for i in range(len(calls)):
            nursery.start_soon(one, i)
    return results


async def test_claude_agents_get_an_mcp_config_naming_the_shim(rig: InProcess) -> None:
    """A provider that takes an MCP config gets one naming the shim with the agent's identity;
    it holds the token, so it is private and removed at cleanup."""
    if api_module.mcp_shim() is None:
        pytest.skip("the mcp extra (agents-mcp) is not installed")
    task_id = await rig.task()
    agent = await rig.call("agent.spawn", task_id=task_id, type="claude-worker", provider="claude", prompt="p")
    files = rig.files(agent)
    flag = agent["argv"].index("--mcp-config")
    assert agent["argv"][0] == "claude" and agent["argv"][flag + 1] == str(files.mcp_config)
    assert files.mcp_config.stat().st_mode & 0o777 == 0o600
    server = json.loads(files.mcp_config.read_text())["mcpServers"]["supervisord-agents"]
    assert server["command"] == api_module.mcp_shim()
    assert server["env"]["SUPERVISORD_AGENTS_AGENT_ID"] == agent["id"]
    assert "SUPERVISORD_AGENTS_TOKEN" not in server["env"]  # nothing in it lets another agent pass for this one
    rig.fake.end(agent["id"])
    await rig.eventually(agent["id"], "lost")
    with trio.fail_after(30):
        while not (await rig.call("agent.get", agent_id=agent["id"]))["cleanup"]:
            await trio.sleep(0.01)
    assert not files.mcp_config.exists() and not files.prompt.exists()


async def test_an_agent_past_its_timeout_is_killed(rig: InProcess) -> None:
    """A wall-clock timeout given at spawn is enforced by the reconciler, and survives as state."""
    task_id = await rig.task()
    agent = await rig.spawn(task_id, "slow", timeout=0.3)
    assert agent["timeout"] == 0.3
    killed = await rig.eventually(agent["id"], "killed")
    assert killed["kill_reason"] == "timed out after 0.3 s (its wall-time limit)"
    assert killed["exit"]["error_class"] == "timeout" and killed["exit"]["reason"] == killed["kill_reason"]
    assert killed["tmux"]["session_id"] in rig.fake.killed


# --- one launch path: a refused or cancelled spawn leaves nothing behind -----------------


def agent_dirs(rig: InProcess, task_id: str) -> list[str]:
    agents = rig.daemon.settings.current.state_dir / "tasks" / task_id / "agents"
    return sorted(p.name for p in agents.iterdir()) if agents.exists() else []


async def test_a_refused_spawn_leaves_no_files(rig: InProcess) -> None:
    """A spawn the registry refuses (a limit) leaves no agent, no folder and no launch record."""
    task_id = await rig.task(limits={"max_total": 1})
    first = await rig.spawn(task_id, "one")
    with pytest.raises(LimitExceeded):
        await rig.spawn(task_id, "two")
    assert agent_dirs(rig, task_id) == [first["id"]]
    assert [a["id"] for a in await rig.list("agent.list", task_id=task_id)] == [first["id"]]
    assert rig.files(first).launch.exists()  # kept while it lives: a later attempt starts from it


async def test_a_spawn_cancelled_before_admission_leaves_nothing(
    rig: InProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled at the mailbox (the one await before the actor decides), a spawn leaves no agent and no files."""
    task_id = await rig.task()
    daemon = rig.daemon
    original = daemon.mailbox.submit
    with trio.CancelScope() as scope:

        async def cancelled_here(command: Any) -> Any:
            if type(command).__name__ == "SpawnAgent":
                scope.cancel()
            return await original(command)

        monkeypatch.setattr(daemon.mailbox, "submit", cancelled_here)
        await rig.spawn(task_id)
    assert scope.cancelled_caught
    monkeypatch.setattr(daemon.mailbox, "submit", original)
    assert await rig.list("agent.list", task_id=task_id) == []
    assert agent_dirs(rig, task_id) == []
    assert daemon.api._minting == set()
    assert not rig.fake.specs


async def test_a_spawn_whose_launch_cannot_be_written_leaves_nothing(
    rig: InProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A launch record that cannot be written (a full disk) fails the spawn with nothing admitted or left."""
    task_id = await rig.task()
    def half_written(files: Any, data: bytes) -> None:
        files.dir.mkdir(parents=True, exist_ok=True)
        files.launch.write_bytes(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(AgentFiles, "save_launch", half_written)
    with pytest.raises(StorageError, match="No space"):
        await rig.spawn(task_id)
    assert await rig.list("agent.list", task_id=task_id) == [] and agent_dirs(rig, task_id) == []


async def test_a_spawn_cancelled_after_admission_still_starts(rig: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled once the actor admitted it, the spawn's caller is gone but the agent starts as decided,
    with its launch handed over (nothing left waiting on disk)."""
    task_id = await rig.task()
    mailbox = rig.daemon.mailbox
    original = mailbox.submit
    with trio.CancelScope() as scope:

        async def cancel_after(command: Any) -> Any:
            result = await original(command)
            if type(command).__name__ == "SpawnAgent":
                scope.cancel()  # the next await (waiting for the start) is cancelled
            return result

        monkeypatch.setattr(mailbox, "submit", cancel_after)
        await rig.spawn(task_id)
    assert scope.cancelled_caught
    (agent,) = await rig.list("agent.list", task_id=task_id)
    running = await rig.eventually(agent["id"], "running")
    assert agent_dirs(rig, task_id) == [running["id"]] and rig.files(running).launch.exists()
    assert rig.files(running).prompt.exists()


async def test_limits_not_given_come_from_the_config(rig: InProcess) -> None:
    """A task created with one limit takes every other from the daemon's configured [limits]."""
    configured = rig.daemon.settings.current.limits
    task = await rig.call("task.create", description="t", limits={"max_cost_usd": 5.0})
    assert task["limits"] == {**msgspec.to_builtins(configured), "max_cost_usd": 5.0}


async def test_an_agent_admitted_during_a_reconcile_pass_is_not_lost(
    rig: InProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass that runs while an admission is being committed (the registry shows the agent
    ``starting``, its start has not begun) leaves that agent alone: it is not "lost"."""
    task_id = await rig.task()
    store = rig.daemon.store
    original = store.commit
    in_commit, gate = threading.Event(), threading.Event()

    def slow_commit(batch: Any) -> None:
        if any(e.state == "starting" for e in batch.events):
            in_commit.set()
            gate.wait(10)
        original(batch)

    monkeypatch.setattr(store, "commit", slow_commit)
    reports = []

    async def reconcile_pass() -> None:
        reports.append(await rig.daemon.reconciler.reconcile())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.spawn, task_id)
        await trio.to_thread.run_sync(in_commit.wait, 10)
        nursery.start_soon(reconcile_pass)
        await trio.sleep(0.2)
        gate.set()
    assert reports[0].ended == []
    (agent,) = await rig.list("agent.list", task_id=task_id)
    assert agent["state"] == "running"
