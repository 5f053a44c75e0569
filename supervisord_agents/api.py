"""The daemon's methods: one handler per protocol method.

Reads are answered from the in-memory registry (consistent: trio runs one task at a
time, and the actor replaces rows whole). Mutations become commands for the actor and
return once committed. Every handler takes the decoded params and the :class:`Caller`
and returns a value for the reply, or raises a SupervisorError that ``server`` turns
into an error reply.

Identity: a connection whose ``hello`` carried an agent's token acts as that agent. It
may report only for itself, spawn only its own children (into its own task), and kill
only its descendants.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import trio
from msgspec import structs

from . import __version__
from .actor import Actor, Hub
from .commands import CloseTask, CreateTask, ReportFinding, ReportProgress, RequestKill, SpawnAgent
from .config import Config
from .effects import Effects, Launch
from .errors import Forbidden, InvalidParams, SpawnFailed, Timeout, UnknownAgent
from .files import AgentFiles
from .model import Agent, AgentState, Task, TaskState
from .output import read_output
from .protocol import (
    PROTOCOL_VERSION,
    AgentExit,
    AgentListParams,
    AgentRef,
    FindingParams,
    FindingsListParams,
    Headroom,
    HelloParams,
    HelloResult,
    KillParams,
    NoParams,
    OutputParams,
    OutputResult,
    Params,
    PeekParams,
    ProgressParams,
    ReconcileParams,
    SpawnParams,
    TaskCreateParams,
    TaskListParams,
    TaskRef,
    TaskStatus,
    TaskSummary,
    WaitParams,
    WaitResult,
)
from .providers import build_argv, compose_prompt
from .reconciler import Reconciler

LATEST_FINDINGS: Final = 5


class Caller:
    """Who is on the other end of one connection."""

    def __init__(self, *, pid: int | None = None, uid: int | None = None) -> None:
        self.pid = pid
        self.uid = uid
        self.agent_id: str | None = None
        self.client = ""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Api:
    """Method handlers over one registry, actor and effect runner."""

    def __init__(self, actor: Actor, effects: Effects, config: Config, *, stop: Callable[[], None]) -> None:
        self.actor = actor
        self.registry = actor.registry
        self.hub: Hub = actor.hub
        self.effects = effects
        self.config = config
        self.stop_daemon = stop
        self.started_at = time.time()
        self.extra_health: Callable[[], dict[str, Any]] = dict
        self._minting: set[str] = set()
        self.reconciler: Reconciler | None = None
        self.handlers: dict[str, Callable[[Any, Caller], Any]] = {
            "hello": self.hello,
            "task.create": self.task_create,
            "task.get": self.task_get,
            "task.list": self.task_list,
            "task.close": self.task_close,
            "agent.spawn": self.agent_spawn,
            "agent.get": self.agent_get,
            "agent.list": self.agent_list,
            "agent.progress": self.agent_progress,
            "agent.finding": self.agent_finding,
            "agent.kill": self.agent_kill,
            "agent.wait": self.agent_wait,
            "agent.output": self.agent_output,
            "agent.peek": self.agent_peek,
            "findings.list": self.findings_list,
            "daemon.reconcile": self.daemon_reconcile,
            "daemon.health": self.health,
            "daemon.stop": self.daemon_stop,
        }

    async def call(self, method: str, params: Params, caller: Caller) -> Any:
        handler = self.handlers[method]
        result = handler(params, caller)
        if hasattr(result, "__await__"):
            result = await result
        return result

    # -- session -------------------------------------------------------------------

    def hello(self, params: HelloParams, caller: Caller) -> HelloResult:
        if params.protocol != PROTOCOL_VERSION:
            raise InvalidParams(
                f"protocol version {params.protocol} is not supported (daemon speaks {PROTOCOL_VERSION})",
                data={"protocol": PROTOCOL_VERSION},
            )
        caller.client = params.client
        if params.token is not None:
            agent = self.registry.agent_for_token(hash_token(params.token))
            if agent is None:
                raise Forbidden("unknown identity token")
            if agent.state.terminal:
                raise Forbidden(f"agent {agent.id} has ended ({agent.state}); its token is no longer valid")
            caller.agent_id = agent.id
        return HelloResult(protocol=PROTOCOL_VERSION, version=__version__, pid=os.getpid(), agent_id=caller.agent_id)

    def _as_agent(self, caller: Caller) -> Agent | None:
        """The calling agent, re-checked on every call: a finished agent's token stops working."""
        if caller.agent_id is None:
            return None
        agent = self.registry.agent(caller.agent_id)
        if agent.state.terminal:
            raise Forbidden(f"agent {agent.id} has ended ({agent.state}); its token is no longer valid")
        return agent

    # -- tasks ---------------------------------------------------------------------

    async def task_create(self, params: TaskCreateParams, caller: Caller) -> Task:
        now = time.time()
        task_id = self._mint(lambda: f"TASK-{_stamp(now, '%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}", self.registry.tasks)
        task = Task(
            id=task_id, description=params.description, priority=params.priority, cwd=params.cwd,
            context=params.context, limits=params.limits or self.config.limits, created_at=now,
        )
        try:
            result: Task = await self.actor.submit(CreateTask(task))
        finally:
            self._minting.discard(task_id)
        return result

    def task_get(self, params: TaskRef, caller: Caller) -> TaskStatus:
        return self.task_status(params.task_id)

    def task_status(self, task_id: str) -> TaskStatus:
        """Status of one task from memory, in time independent of stored progress and findings."""
        task = self.registry.task(task_id)
        counts = self.registry.counts(task_id)
        limits = task.limits
        spent = self.registry.cost(task_id)
        return TaskStatus(
            task=task,
            counts=counts,
            headroom=Headroom(
                concurrent_left=max(0, limits.max_concurrent - counts.active),
                total_left=max(0, limits.max_total - counts.spawned),
                max_depth=limits.max_depth,
                cost_usd=spent,
                cost_left_usd=None if limits.max_cost_usd is None else max(0.0, limits.max_cost_usd - spent),
            ),
            agents=list(self.registry.agents_of(task_id)),
            latest_findings=self.registry.findings_of(task_id)[-LATEST_FINDINGS:],
        )

    def task_list(self, params: TaskListParams, caller: Caller) -> list[TaskSummary]:
        return [
            TaskSummary(task=t, counts=self.registry.counts(t.id))
            for t in self.registry.tasks.values()
            if params.state is None or t.state is params.state
        ]

    async def task_close(self, params: TaskRef, caller: Caller) -> Task:
        result: Task = await self.actor.submit(CloseTask(params.task_id))
        return result

    # -- agents --------------------------------------------------------------------

    async def agent_spawn(self, params: SpawnParams, caller: Caller) -> Agent:
        """Admit, persist ``starting``, create the session; return once it runs (or at
        once, as ``queued``, when ``queue`` was asked for and no slot is free).
        Raises LimitExceeded/DuplicateAgent (refused), SpawnFailed (admitted, did not start)."""
        me = self._as_agent(caller)
        task_id, parent = params.task_id, params.parent
        if me is not None:
            if task_id not in (None, me.task_id):
                raise Forbidden(f"agent {me.id} may spawn only into its own task {me.task_id}")
            if parent not in (None, me.id):
                raise Forbidden(f"agent {me.id} may spawn only its own children")
            task_id, parent = me.task_id, me.id
        if task_id is None:
            raise InvalidParams("task_id is required")
        task = self.registry.task(task_id)
        if task.state is not TaskState.OPEN:
            raise InvalidParams(f"task {task.id} is closed")
        provider = self.config.provider(params.provider)
        if params.provider == "command" and not params.argv:
            raise InvalidParams("the command provider needs an argv")
        cwd = params.cwd or task.cwd
        if cwd is not None and not os.path.isdir(cwd):  # noqa: ASYNC240 - one stat, not worth a thread
            raise InvalidParams(f"working directory {cwd} does not exist")
        depth = 1 if parent is None else self.registry.agent(parent).depth + 1
        now = time.time()
        stamp = _stamp(now, "%H%M%S")
        agent_id = self._mint(lambda: f"{params.type}-{stamp}-{secrets.token_hex(3)}", self.registry.agents)
        try:
            shim = mcp_shim() if provider.mcp_config_flag else None
            mcp_path = None if shim is None else str(AgentFiles(self.config.state_dir, task.id, agent_id).mcp_config)
            argv = build_argv(params.provider, provider, model=params.model, extra=list(params.argv),
                              mcp_config=mcp_path)
            token = secrets.token_urlsafe(32)
            agent = Agent(
                id=agent_id, task_id=task.id, type=params.type, parent=parent, provider=params.provider,
                model=params.model, argv=argv, cwd=cwd, token_hash=hash_token(token), timeout=params.timeout,
                created_at=now, updated_at=now,
            )
            prompt = compose_prompt(params.prompt, _with_depth(agent, depth), task)
            self.effects.stash(agent_id, Launch(token=token, prompt=prompt, stream_json=provider.stream_json,
                                                mcp_shim=shim))
            files = AgentFiles(self.config.state_dir, task.id, agent_id)
            try:
                if params.queue:  # it may wait in the queue longer than this daemon lives
                    await trio.to_thread.run_sync(self.effects.keep_launch, agent_id, files)
                admitted: Agent = await self.actor.submit(SpawnAgent(agent, queue=params.queue))
            except BaseException:
                self.effects.discard(agent_id)
                if params.queue:
                    await trio.to_thread.run_sync(files.forget)
                raise
        finally:
            self._minting.discard(agent_id)
        if admitted.state is AgentState.QUEUED:
            return admitted
        current = await self._wait_for(admitted.id, lambda a: a.state is not AgentState.STARTING)
        if current.state is AgentState.FAILED and current.exit is not None and current.exit.decided_by == "spawn_error":
            raise SpawnFailed(
                f"agent {current.id} did not start: {current.exit.reason}", data={"agent_id": current.id}
            )
        return current

    def agent_get(self, params: AgentRef, caller: Caller) -> Agent:
        return self.registry.agent(params.agent_id)

    def agent_list(self, params: AgentListParams, caller: Caller) -> list[Agent]:
        if params.task_id is not None:
            self.registry.task(params.task_id)
            agents = self.registry.agents_of(params.task_id)
        elif params.state is not None:
            agents = self.registry.agents_in([params.state])
        else:
            agents = iter(self.registry.agents.values())
        return [
            a for a in agents
            if (params.state is None or a.state is params.state)
            and (params.live is None or a.state.live == params.live)
        ]

    async def agent_progress(self, params: ProgressParams, caller: Caller) -> Agent:
        agent_id = self._reporter(params.agent_id, caller)
        assert agent_id is not None  # required=True
        command = ReportProgress(agent_id=agent_id, activity=params.activity, message=params.message,
                                 percent=params.percent)
        result: Agent = await self.actor.submit(command)
        return result

    async def agent_finding(self, params: FindingParams, caller: Caller) -> Any:
        agent_id = self._reporter(params.agent_id, caller, required=False)
        task_id = params.task_id
        if agent_id is not None:
            agent_task = self.registry.agent(agent_id).task_id
            if task_id not in (None, agent_task):
                raise InvalidParams(f"agent {agent_id} belongs to task {agent_task}, not {task_id}")
            task_id = agent_task
        if task_id is None:
            raise InvalidParams("a finding needs a task_id or an agent_id")
        command = ReportFinding(task_id=task_id, agent_id=agent_id, type=params.type, severity=params.severity,
                                message=params.message, data=params.data)
        return await self.actor.submit(command)

    def _reporter(self, agent_id: str | None, caller: Caller, *, required: bool = True) -> str | None:
        """Whom a report is for: the caller's own identity; an agent may report only for itself."""
        me = self._as_agent(caller)
        if me is not None:
            if agent_id not in (None, me.id):
                raise Forbidden(f"agent {me.id} may report only for itself, not for {agent_id}")
            return me.id
        if agent_id is None and required:
            raise InvalidParams("agent_id is required (or call with an agent's identity token)")
        return agent_id

    async def agent_kill(self, params: KillParams, caller: Caller) -> Agent:
        me = self._as_agent(caller)
        target = self.registry.agent(params.agent_id)
        if me is not None and not self._is_descendant(target.id, me.id):
            raise Forbidden(f"agent {me.id} may kill only its own descendants")
        await self.actor.submit(RequestKill(agent_id=target.id, reason=params.reason, tree=params.tree))
        if params.tree:
            for child in self._live_descendants(target.id):
                try:
                    await self.actor.submit(RequestKill(agent_id=child, reason=f"parent {target.id} killed", tree=True))
                except UnknownAgent:
                    pass
        deadline = self.config.daemon.kill_grace + 15.0
        with trio.move_on_after(deadline):
            return await self._wait_for(target.id, lambda a: a.state.terminal)
        raise Timeout(f"agent {target.id} did not stop within {deadline:.0f} s", data={"agent_id": target.id})

    def _is_descendant(self, agent_id: str, ancestor: str) -> bool:
        current: str | None = agent_id
        while current is not None:
            current = self.registry.agent(current).parent
            if current == ancestor:
                return True
        return False

    def _live_descendants(self, agent_id: str) -> list[str]:
        out, stack = [], self.registry.children(agent_id)
        while stack:
            child = stack.pop()
            if self.registry.agent(child).state.live:
                out.append(child)
            stack.extend(self.registry.children(child))
        return out

    async def agent_wait(self, params: WaitParams, caller: Caller) -> WaitResult:
        """Block until all (or any) of the agents are terminal, or the timeout passes.
        Event-driven: it sleeps on the hub until one of them has a committed change."""
        ids = list(dict.fromkeys(params.agent_ids))
        for agent_id in ids:
            self.registry.agent(agent_id)
        with trio.move_on_after(params.timeout if params.timeout is not None else float("inf")):
            while True:
                agents = [self.registry.agent(a) for a in ids]
                ended = [a for a in agents if a.state.terminal]
                if (params.any and ended) or len(ended) == len(agents):
                    return WaitResult(done=True, agents=[_exit_of(a) for a in agents])
                await self.hub.changed(a.id for a in agents if a.state.live).wait()
        return WaitResult(done=False, agents=[_exit_of(self.registry.agent(a)) for a in ids])

    async def _wait_for(self, agent_id: str, predicate: Callable[[Agent], bool]) -> Agent:
        while not predicate(agent := self.registry.agent(agent_id)):
            await self.hub.changed([agent_id]).wait()
        return agent

    async def agent_output(self, params: OutputParams, caller: Caller) -> OutputResult:
        agent = self.registry.agent(params.agent_id)
        files = self.effects.files(agent)
        return await trio.to_thread.run_sync(read_output, files, params)

    async def agent_peek(self, params: PeekParams, caller: Caller) -> dict[str, Any]:
        """The agent's pane as it is on screen now (plus ``lines`` of history)."""
        agent = self.registry.agent(params.agent_id)
        if agent.tmux is None or agent.state.terminal:
            raise InvalidParams(f"agent {agent.id} has no session ({agent.state})")
        screen = await self.effects.backend.capture_pane(agent.tmux.pane_id, params.lines)
        return {"agent_id": agent.id, "screen": screen}

    async def daemon_reconcile(self, params: ReconcileParams, caller: Caller) -> Any:
        if self.reconciler is None:
            raise InvalidParams("reconciliation is not available")
        return await self.reconciler.reconcile(dry_run=params.dry_run, kill_orphans=params.kill_orphans)

    def findings_list(self, params: FindingsListParams, caller: Caller) -> Any:
        if params.task_id is not None:
            self.registry.task(params.task_id)
        return self.registry.query_findings(
            task_id=params.task_id, agent_id=params.agent_id, type=params.type, severity=params.severity,
            since=params.since, limit=params.limit,
        )

    # -- daemon --------------------------------------------------------------------

    def health(self, params: NoParams, caller: Caller) -> dict[str, Any]:
        actor = self.actor
        return {
            "ok": True,
            "pid": os.getpid(),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "uptime": round(time.time() - self.started_at, 3),
            "state_dir": str(self.config.state_dir),
            "socket": str(self.config.socket_path),
            "tasks": len(self.registry.tasks),
            "counts": self.registry.counts(),
            "last_seq": self.registry.last_seq,
            "actor": {"queued": actor.queued, "commands": actor.commands, "commits": actor.commits,
                      "storage_failures": actor.storage_failures},
            "subscribers": self.hub.subscribers,
            **self.extra_health(),
        }

    def daemon_stop(self, params: NoParams, caller: Caller) -> dict[str, bool]:
        if caller.agent_id is not None:
            raise Forbidden("an agent may not stop the daemon")
        self.stop_daemon()
        return {"stopping": True}

    def _mint(self, make: Callable[[], str], existing: dict[str, Any]) -> str:
        """A fresh id, unique among stored ids and ids still on their way to the actor."""
        while True:
            candidate = make()
            if candidate not in existing and candidate not in self._minting:
                self._minting.add(candidate)
                return candidate


def mcp_shim() -> str | None:
    """The installed MCP shim beside this Python, if the ``mcp`` extra is installed."""
    shim = Path(sys.executable).parent / "agents-mcp"
    return str(shim) if shim.exists() else None


def _stamp(now: float, fmt: str) -> str:
    return datetime.fromtimestamp(now, UTC).strftime(fmt)


def _with_depth(agent: Agent, depth: int) -> Agent:
    return structs.replace(agent, depth=depth)


def _exit_of(agent: Agent) -> AgentExit:
    return AgentExit(agent_id=agent.id, state=agent.state, exit=agent.exit)
