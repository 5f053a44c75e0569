"""The daemon's methods: one handler per method of the protocol's table.

Each handler is bound to its :class:`~supervisord_agents.protocol.Method` with
``@handles``; the table of handlers is derived from those bindings, and a test checks
that every declared method has exactly one. A handler takes the decoded params and the
:class:`Caller` and returns the method's result, or raises a SupervisorError that the
server turns into an error reply.

Reads are answered from the in-memory registry (consistent: trio runs one task at a
time, and the actor replaces rows whole). Mutations are commands submitted to the
actor's mailbox; they return once committed.

Identity comes from the kernel: a connection whose peer runs in an agent's cgroup (or,
without cgroups, below an agent's runner) is that agent's, whatever it sends; any other
peer of our uid is the operator. Tokens remain only where the kernel cannot tell (no
``/proc``). Every method's :class:`~supervisord_agents.protocol.Rule` is enforced here,
once, before its handler runs (:class:`~supervisord_agents.access.Access`): an agent is refused with
``forbidden`` naming the rule, or its params are narrowed to what the rule allows.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import trio

from . import __version__, doctor
from .access import Access
from .actor import Actor, Hub, Mailbox, Subscription
from .approvals import ApprovalDesk
from .cgroups import Cgroups
from .commands import (
    CloseTask,
    CreateTask,
    PurgeTask,
    ReportFinding,
    ReportProgress,
    RequestKill,
    SpawnAgent,
    Wake,
)
from .config import ENV_PREFIX, McpStyle, Settings
from .errors import (
    Forbidden,
    IllegalTransition,
    InvalidParams,
    LimitExceeded,
    SpawnFailed,
    Timeout,
    UnknownAgent,
)
from .files import AgentFiles
from .handlers import HANDLERS, Caller, ConnectionStats, Stream, handles, streams
from .history import History
from .hooks import HookRunner
from .launch import Launch, Launcher, mcp_shim
from .model import (
    DEFAULT_POLICY,
    Agent,
    AgentState,
    Approval,
    DecidedBy,
    Finding,
    Task,
    TaskState,
)
from .output import read_output
from .protocol import (
    AGENT_FINDING,
    AGENT_GET,
    AGENT_KILL,
    AGENT_LIST,
    AGENT_OUTPUT,
    AGENT_PEEK,
    AGENT_PROGRESS,
    AGENT_SPAWN,
    AGENT_WAIT,
    AGENT_WAKE,
    APPROVAL_ANSWER,
    APPROVAL_LIST,
    APPROVAL_REQUEST,
    DAEMON_DOCTOR,
    DAEMON_HEALTH,
    DAEMON_RECONCILE,
    DAEMON_STOP,
    EVENTS_SUBSCRIBE,
    FINDINGS_LIST,
    HELLO,
    PROTOCOL_VERSION,
    TASK_CLOSE,
    TASK_CREATE,
    TASK_GET,
    TASK_LIST,
    TASK_PURGE,
    ActorStats,
    AgentExit,
    AgentListParams,
    AgentRef,
    ApprovalAnswerParams,
    ApprovalListParams,
    ApprovalRequestParams,
    Boundary,
    DoctorParams,
    DoctorReport,
    FindingParams,
    FindingsListParams,
    Health,
    HelloParams,
    HelloResult,
    HookStats,
    KillParams,
    Method,
    NoParams,
    Notice,
    OutputParams,
    OutputResult,
    Page,
    PeekParams,
    ProgressParams,
    Purged,
    ReconcileParams,
    ReconcileReport,
    Screen,
    SpawnParams,
    Stopping,
    Subscribed,
    SubscribeParams,
    TaskCreateParams,
    TaskListParams,
    TaskRef,
    TaskStatus,
    TaskSummary,
    WaitParams,
    WaitResult,
)
from .providers import build_argv, compose_prompt, provider_env
from .reconciler import Reconciler
from .store import Store
from .tmux import TmuxBackend

REPLAY_PAGE: Final = 1000
READ_THREADS: Final = 4  # worker threads for reads clients ask for (trio's default pool has 40)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Api:
    """The handlers, over the registry (reads) and the actor's mailbox (changes)."""

    def __init__(
        self, *, actor: Actor, store: Store, launcher: Launcher, backend: TmuxBackend, reconciler: Reconciler,
        settings: Settings, connections: ConnectionStats, stop: Callable[[], None], cgroups: Cgroups | None,
        boundary_note: str = "", hooks: HookRunner | None = None,
    ) -> None:
        self.actor = actor
        self.mailbox: Mailbox = actor.mailbox
        self.registry = actor.registry
        self.hub: Hub = actor.hub
        self.store = store
        self.launcher = launcher
        self.backend = backend
        self.reconciler = reconciler
        self.settings = settings
        self.connections = connections
        self.stop_daemon = stop
        self.boundary_note = boundary_note
        self.hooks = hooks
        self.started_at = time.time()
        self._minting: set[str] = set()
        # Reads that clients ask for (an agent's output, a replay of the event log, a page of
        # history) take at most these worker threads: however many arrive, and however slow each
        # is (a big log, a slow regex), the daemon's own work in threads (cleanups, kills) keeps its own.
        self._reads = trio.CapacityLimiter(READ_THREADS)
        self.history = History(self.registry, store, self._reads)
        self.approvals = ApprovalDesk(self.registry, self.mailbox)
        self.access = Access(self.registry, self.history.agent, cgroups)

    async def call(self, method: Method[Any, Any], params: Any, caller: Caller) -> Any:
        """Answer one request (a ``Stream`` for a streaming method). Raises SupervisorError."""
        me = self._as_agent(caller)
        if me is not None:
            params = self.access.scope(method, params, me)
        return await HANDLERS[method.name](self, params, caller)

    # -- session -------------------------------------------------------------------

    @handles(HELLO)
    async def hello(self, params: HelloParams, caller: Caller) -> HelloResult:
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
            if caller.agent_id not in (None, agent.id):  # the kernel says who this is
                raise Forbidden(f"this connection is agent {caller.agent_id}'s; a token cannot make it another's")
            if agent.state.terminal:
                raise Forbidden(f"agent {agent.id} has ended ({agent.state}); its token is no longer valid")
            caller.agent_id = agent.id
        return HelloResult(protocol=PROTOCOL_VERSION, version=__version__, pid=os.getpid(), agent_id=caller.agent_id)

    def _as_agent(self, caller: Caller) -> Agent | None:
        """The calling agent, re-checked on every call: an agent that has ended can do nothing."""
        if caller.agent_id is None:
            return None
        agent = self.history.agent(caller.agent_id)
        if agent.state.terminal:
            raise Forbidden(f"agent {agent.id} has ended ({agent.state}); it can do nothing more")
        return agent

    # -- tasks ---------------------------------------------------------------------

    @handles(TASK_CREATE)
    async def task_create(self, params: TaskCreateParams, caller: Caller) -> Task:
        now = time.time()
        task_id = self._mint(lambda: f"TASK-{_stamp(now, '%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}",
                             self.history.task_exists)
        task = Task(
            id=task_id, description=params.description, priority=params.priority, cwd=params.cwd,
            context=params.context, limits=params.limits.over(self.settings.current.limits), sandbox=params.sandbox,
            policy=params.policy, created_at=now,
        )
        try:
            result: Task = await self.mailbox.submit(CreateTask(task))
        finally:
            self._minting.discard(task_id)
        return result

    @handles(TASK_GET)
    async def task_get(self, params: TaskRef, caller: Caller) -> TaskStatus:
        """Counts and headroom from memory for a held task; at most a page of agents and findings."""
        return await self.history.task_status(params.task_id)

    @handles(TASK_LIST)
    async def task_list(self, params: TaskListParams, caller: Caller) -> Page[TaskSummary]:
        return await self.history.task_page(params)

    @handles(TASK_CLOSE)
    async def task_close(self, params: TaskRef, caller: Caller) -> Task:
        if params.task_id not in self.registry.tasks:
            task = self.history.task(params.task_id)
            raise IllegalTransition(f"task {task.id} is already closed", data={"task_id": task.id})
        result: Task = await self.mailbox.submit(CloseTask(params.task_id))
        return result

    @handles(TASK_PURGE)
    async def task_purge(self, params: TaskRef, caller: Caller) -> Purged:
        return await self.purge(params.task_id, reason="asked")

    async def purge(self, task_id: str, *, reason: str) -> Purged:
        """Delete a closed task's rows and events, then its files (what a crash between the
        two leaves, the retention sweep removes: a folder of a task the store does not have)."""
        tally = await self.history.closed_tally(task_id)
        findings = await trio.to_thread.run_sync(self.store.findings_count, task_id, limiter=self._reads)
        await self.mailbox.submit(PurgeTask(task_id=task_id, settled=tally.states, reason=reason))
        task_dir = self.launcher.state_dir / "tasks" / task_id  # a validated id: no path separators
        await trio.to_thread.run_sync(functools.partial(shutil.rmtree, task_dir, ignore_errors=True))
        return Purged(task_id=task_id, agents=sum(tally.states.values()), findings=findings)

    # -- agents --------------------------------------------------------------------

    @handles(AGENT_SPAWN)
    async def agent_spawn(self, params: SpawnParams, caller: Caller) -> Agent:
        """Authorize, prepare the launch, submit for admission, wait until it runs.

        Returns at once, ``queued``, when ``queue`` was asked for and no slot is free.
        Raises LimitExceeded/DuplicateAgent (refused: nothing is left of it), SpawnFailed
        (admitted, but its session did not start)."""
        if params.task_id is None:
            raise InvalidParams("task_id is required")
        agent, launch = self._prepare(params, params.task_id, params.parent)
        try:
            self.launcher.prepare(agent, launch)
            admitted: Agent = await self.mailbox.submit(SpawnAgent(agent, queue=params.queue))
        except BaseException:
            # Refused, or cancelled before the actor took it: no agent exists to own the files.
            await self.launcher.withdraw(agent)
            raise
        finally:
            self._minting.discard(agent.id)
        if admitted.state is AgentState.QUEUED:
            return admitted
        current = await self._wait_for(admitted.id, lambda a: a.state is not AgentState.STARTING)
        if current.state is AgentState.FAILED and current.exit is not None \
                and current.exit.decided_by is DecidedBy.SPAWN_ERROR:
            raise SpawnFailed(f"agent {current.id} did not start: {current.exit.reason}", data={"agent_id": current.id})
        return current

    def _prepare(self, params: SpawnParams, task_id: str, parent: str | None) -> tuple[Agent, Launch]:
        """The agent to submit, and its launch (minted token, composed prompt)."""
        task = self.history.task(task_id)
        if task.state is TaskState.CLOSED:
            raise IllegalTransition(f"task {task.id} is closed", data={"task_id": task.id})
        depth = 1
        if parent is not None:
            up = self.history.agent(parent)
            if not up.state.live:
                raise IllegalTransition(f"parent {up.id} is {up.state} and cannot have children",
                                        data={"parent": up.id, "state": up.state.value})
            depth = up.depth + 1
        settings = self.settings.current
        provider = settings.provider(params.provider)
        if params.provider == "command" and not params.argv:
            raise InvalidParams("the command provider needs an argv")
        cwd = params.cwd or task.cwd
        if cwd is not None and not os.path.isdir(cwd):  # noqa: ASYNC240 - one stat, not worth a thread
            raise InvalidParams(f"working directory {cwd} does not exist")
        now = time.time()
        stamp = _stamp(now, "%H%M%S")
        agent_id = self._mint(lambda: f"{params.type}-{stamp}-{secrets.token_hex(3)}", self.history.agent_exists)
        try:
            refused = sorted(k for k in params.env if k.startswith(ENV_PREFIX))
            if refused:
                raise InvalidParams(f"env may not set {', '.join(refused)}: the daemon gives agents their identity")
            shim = mcp_shim() if provider.mcp is not McpStyle.NONE else None
            mcp_file = None if shim is None else AgentFiles(settings.state_dir, task.id, agent_id).mcp_config
            argv = build_argv(params.provider, provider, model=params.model, extra=list(params.argv),
                              mcp_file=mcp_file, shim=shim)
            resume_argv = build_argv(params.provider, provider, model=params.model, extra=list(params.argv),
                                     mcp_file=mcp_file, shim=shim, resume=True)
            if params.resume is not None and not resume_argv:
                raise InvalidParams(f"provider {params.provider!r} cannot resume a conversation (no resume argv)")
        except BaseException:
            self._minting.discard(agent_id)
            raise
        # A token only where the kernel cannot tell agents apart: elsewhere one agent could
        # read another's (its environment, its MCP config) and be taken for it.
        token = secrets.token_urlsafe(32) if self.access.boundary is Boundary.TOKEN else ""
        agent = Agent(
            id=agent_id, task_id=task.id, type=params.type, parent=parent, depth=depth, provider=params.provider,
            model=params.model, argv=argv, cwd=cwd, token_hash=hash_token(token) if token else "",
            timeout=params.timeout or provider.timeout, resources=task.limits.resources.over(provider.resources),
            sandbox=task.sandbox or provider.sandbox, policy=task.policy.over(provider.policy).over(DEFAULT_POLICY),
            resume_argv=resume_argv, conversation=params.resume, created_at=now, updated_at=now,
        )
        launch = Launch(token=token, prompt=compose_prompt(params.prompt, agent, task), events=provider.events,
                        mcp=provider.mcp, mcp_shim=shim, env=provider_env(provider, params.env))
        return agent, launch

    @handles(AGENT_GET)
    async def agent_get(self, params: AgentRef, caller: Caller) -> Agent:
        return self.history.agent(params.agent_id)

    @handles(AGENT_LIST)
    async def agent_list(self, params: AgentListParams, caller: Caller) -> Page[Agent]:
        return await self.history.agent_page(params)

    @handles(AGENT_PROGRESS)
    async def agent_progress(self, params: ProgressParams, caller: Caller) -> Agent:
        if params.agent_id is None:
            raise InvalidParams("agent_id is required (inside an agent it is the agent itself)")
        command = ReportProgress(agent_id=params.agent_id, activity=params.activity, message=params.message,
                                 percent=params.percent)
        result: Agent = await self.mailbox.submit(command)
        return result

    @handles(AGENT_FINDING)
    async def agent_finding(self, params: FindingParams, caller: Caller) -> Finding:
        agent_id, task_id = params.agent_id, params.task_id
        if agent_id is not None:
            agent_task = self.history.agent(agent_id).task_id
            if task_id not in (None, agent_task):
                raise InvalidParams(f"agent {agent_id} belongs to task {agent_task}, not {task_id}")
            task_id = agent_task
        if task_id is None:
            raise InvalidParams("a finding needs a task_id or an agent_id")
        if task_id not in self.registry.tasks and self.history.task_exists(task_id):
            raise IllegalTransition(f"task {task_id} is closed and all its agents have ended",
                                    data={"task_id": task_id})
        command = ReportFinding(task_id=task_id, agent_id=agent_id, type=params.type, severity=params.severity,
                                message=params.message, data=params.data)
        result: Finding = await self.mailbox.submit(command)
        return result

    @handles(AGENT_KILL)
    async def agent_kill(self, params: KillParams, caller: Caller) -> Agent:
        target = self.history.agent(params.agent_id)
        if target.id not in self.registry.agents:
            raise IllegalTransition(f"agent {target.id} is {target.state}: cannot kill",
                                    data={"agent_id": target.id, "state": target.state.value})
        await self.mailbox.submit(RequestKill(agent_id=target.id, reason=params.reason, tree=params.tree))
        if params.tree:
            for child in self._live_descendants(target.id):
                try:
                    await self.mailbox.submit(RequestKill(agent_id=child, reason=f"parent {target.id} killed",
                                                          tree=True))
                except UnknownAgent:
                    pass
        deadline = self.settings.current.daemon.kill_grace + 15.0
        with trio.move_on_after(deadline):
            return await self._wait_for(target.id, lambda a: a.state.terminal)
        raise Timeout(f"agent {target.id} did not stop within {deadline:.0f} s", data={"agent_id": target.id})

    def _live_descendants(self, agent_id: str) -> list[str]:
        out, stack = [], self.registry.children(agent_id)
        while stack:
            child = stack.pop()
            if self.registry.agent(child).state.live:
                out.append(child)
            stack.extend(self.registry.children(child))
        return out

    @handles(AGENT_WAKE)
    async def agent_wake(self, params: AgentRef, caller: Caller) -> Agent:
        """Start a sleeping agent's next attempt now; returns it starting (or queued)."""
        target = self.history.agent(params.agent_id)
        if target.state is not AgentState.SLEEPING:
            raise IllegalTransition(f"agent {target.id} is {target.state}: only a sleeping agent can be woken",
                                    data={"agent_id": target.id, "state": target.state.value})
        result: Agent = await self.mailbox.submit(Wake(agent_id=target.id, attempt=target.attempt, early=True))
        return result

    # -- approvals -----------------------------------------------------------------

    @handles(APPROVAL_REQUEST)
    async def approval_request(self, params: ApprovalRequestParams, caller: Caller) -> Approval:
        if params.agent_id is None:
            raise InvalidParams("agent_id is required (inside an agent it is the agent itself)")
        approval_id = self._mint(lambda: f"AP-{secrets.token_hex(6)}",
                                 lambda i: self.registry.pending_approval(i) is not None)
        try:
            return await self.approvals.ask(params.agent_id, params.tool_name, params.input, approval_id)
        finally:
            self._minting.discard(approval_id)

    @handles(APPROVAL_LIST)
    async def approval_list(self, params: ApprovalListParams, caller: Caller) -> list[Approval]:
        return self.approvals.pending(params.task_id)

    @handles(APPROVAL_ANSWER)
    async def approval_answer(self, params: ApprovalAnswerParams, caller: Caller) -> Approval:
        return await self.approvals.answer(params.approval_id, params.allow, message=params.message,
                                           always=params.always_for_tool)

    @handles(AGENT_WAIT)
    async def agent_wait(self, params: WaitParams, caller: Caller) -> WaitResult:
        """Block until all (or any) of the agents are terminal, or the timeout passes.
        Event-driven: it sleeps on the hub until one of them has a committed change."""
        ids = list(dict.fromkeys(params.agent_ids))
        for agent_id in ids:
            self.history.agent(agent_id)
        with trio.move_on_after(params.timeout if params.timeout is not None else float("inf")):
            while True:
                agents = [self.history.agent(a) for a in ids]
                ended = [a for a in agents if a.state.terminal]
                if (params.any and ended) or len(ended) == len(agents):
                    return WaitResult(done=True, agents=[_exit_of(a) for a in agents])
                await self.hub.wait_changed(a.id for a in agents if a.state.live)
        return WaitResult(done=False, agents=[_exit_of(self.history.agent(a)) for a in ids])

    async def _wait_for(self, agent_id: str, predicate: Callable[[Agent], bool]) -> Agent:
        while not predicate(agent := self.history.agent(agent_id)):
            await self.hub.wait_changed([agent_id])
        return agent

    @handles(AGENT_OUTPUT)
    async def agent_output(self, params: OutputParams, caller: Caller) -> OutputResult:
        agent = self.history.agent(params.agent_id)
        return await trio.to_thread.run_sync(read_output, self.launcher.files(agent), params, limiter=self._reads)

    @handles(AGENT_PEEK)
    async def agent_peek(self, params: PeekParams, caller: Caller) -> Screen:
        """The agent's pane as it is on screen now (plus ``lines`` of history)."""
        agent = self.history.agent(params.agent_id)
        if agent.tmux is None or agent.state.terminal:
            raise InvalidParams(f"agent {agent.id} has no session ({agent.state})")
        return Screen(agent_id=agent.id, screen=await self.backend.capture_pane(agent.tmux.pane_id, params.lines))

    @handles(FINDINGS_LIST)
    async def findings_list(self, params: FindingsListParams, caller: Caller) -> Page[Finding]:
        return await self.history.findings_page(params)

    # -- events --------------------------------------------------------------------

    @streams(EVENTS_SUBSCRIBE)
    async def events_subscribe(self, params: SubscribeParams, caller: Caller) -> Stream:
        """Replay committed events after ``since`` from the store, then stream live ones.

        The live subscription is registered *before* the replay reads the store, and
        events already sent are skipped, so nothing is missed and nothing repeats."""
        agent_ids = [params.agent_id] if params.agent_id else []
        sub = self.hub.subscribe(agent_ids=agent_ids, task_id=params.task_id)
        last_seq = self.registry.last_seq
        ack = Subscribed(subscribed=True, last_seq=last_seq)
        return Stream(ack, self._notices(sub, params, agent_ids, last_seq), sub.close)

    async def _notices(
        self, sub: Subscription, params: SubscribeParams, agent_ids: list[str], last_seq: int,
    ) -> AsyncGenerator[list[Notice], None]:
        """The notices, in batches: a page of the replay, then the live events that arrived
        together (one write each, however many events a commit made)."""
        sent = last_seq
        if params.since is not None:
            sent = params.since
            while True:
                read = functools.partial(self.store.read_events, sent, agent_ids=agent_ids,
                                         task_id=params.task_id, limit=REPLAY_PAGE)
                rows = await trio.to_thread.run_sync(read, limiter=self._reads)
                if rows:
                    yield [Notice(seq=seq, event=msgspec.Raw(raw)) for seq, raw in rows]
                    sent = rows[-1][0]
                if len(rows) < REPLAY_PAGE:
                    break
        async for event in sub.receive:
            batch = [Notice(seq=e.seq, event=e) for e in [event, *sub.ready()] if e.seq > sent]
            if batch:
                yield batch
                sent = batch[-1].seq
        if sub.overflowed:
            raise LimitExceeded("subscriber fell too far behind; resubscribe with since")

    # -- daemon --------------------------------------------------------------------

    @handles(DAEMON_RECONCILE)
    async def daemon_reconcile(self, params: ReconcileParams, caller: Caller) -> ReconcileReport:
        return await self.reconciler.reconcile(dry_run=params.dry_run, kill_orphans=params.kill_orphans)

    @handles(DAEMON_DOCTOR)
    async def daemon_doctor(self, params: DoctorParams, caller: Caller) -> DoctorReport:
        return await doctor.check(self.settings.current, list(params.providers))

    @handles(DAEMON_HEALTH)
    async def health(self, params: NoParams, caller: Caller) -> Health:
        actor, last, cgroups = self.actor, self.reconciler.last, self.access.cgroups
        config = self.settings.current
        return Health(
            ok=True,
            pid=os.getpid(),
            version=__version__,
            protocol=PROTOCOL_VERSION,
            uptime=round(time.time() - self.started_at, 3),
            state_dir=str(config.state_dir),
            socket=str(config.socket_path),
            tasks=len(self.registry.tasks),
            counts=self.registry.counts(),
            agents_held=len(self.registry.agents),
            last_seq=self.registry.last_seq,
            actor=ActorStats(queued=self.mailbox.queued, commands=actor.commands, commits=actor.commits,
                             storage_failures=actor.storage_failures),
            subscribers=self.hub.subscribers,
            waiters=self.hub.waiters,
            connections=self.connections.open,
            connections_refused=self.connections.refused,
            connections_evicted=self.connections.evicted,
            reconcile_passes=self.reconciler.passes,
            tmux_healthy=self.backend.healthy,
            tmux_sessions=None if last is None else last.sessions,
            last_reconcile_error=None if last is None else last.error,
            boundary=self.access.boundary,
            boundary_note=self.boundary_note,
            cgroup_root=None if cgroups is None else str(cgroups.base),
            missing_controllers=[] if cgroups is None else cgroups.missing_controllers,
            hooks=HookStats() if self.hooks is None else self.hooks.stats(),
        )

    @handles(DAEMON_STOP)
    async def daemon_stop(self, params: NoParams, caller: Caller) -> Stopping:
        self.stop_daemon()
        return Stopping(stopping=True)

    def _mint(self, make: Callable[[], str], exists: Callable[[str], bool]) -> str:
        """A fresh id, unique among stored ids and ids still on their way to the actor."""
        while True:
            candidate = make()
            if candidate not in self._minting and not exists(candidate):
                self._minting.add(candidate)
                return candidate


def _stamp(now: float, fmt: str) -> str:
    return datetime.fromtimestamp(now, UTC).strftime(fmt)


def _exit_of(agent: Agent) -> AgentExit:
    return AgentExit(agent_id=agent.id, state=agent.state, exit=agent.exit)
