"""``agents-mcp``: the supervisor's tools for MCP clients (orchestrators and agents).

A stdio MCP server built on the official SDK (``mcp`` 2.x, ``MCPServer``), run under
trio. It holds no state: every tool is one request to the daemon over its Unix socket
(a fresh connection per call through the blocking client, in a worker thread, which
keeps the shim tiny and makes a daemon restart invisible to it). Inside an agent the
shim finds the agent's identity in its environment (``SUPERVISORD_AGENTS_TOKEN``), and
the daemon enforces that an agent reports only for itself and spawns only its own
children. Errors from the daemon come back as MCP tool errors with the daemon's message.

Nothing but the protocol is written to stdout; logs go to stderr.

Old orchestrator tool -> this shim:

==============================  ======================================================
``create_real_task``            ``create_task``
``deploy_opus_agent`` etc.      ``spawn_agent`` (provider and model choose the CLI)
``spawn_*_child_agent``         ``spawn_child_agent`` (parent and task from identity)
``get_real_task_status``        ``get_task_status``
``get_agent_output``            ``get_agent_output``
``update_agent_progress``       ``report_progress`` (returns peers' progress too)
``report_agent_finding``        ``report_finding``
``get_task_findings``           ``list_findings`` (``since`` cursor)
``kill_real_agent``             ``kill_agent``
``get_health_status``           ``get_health``
``trigger_health_scan``         ``repair`` (dry run by default)
(none)                          ``wait_for_agents``, ``list_tasks``, ``list_agents``, ``close_task``
==============================  ======================================================
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
from typing import Annotated, Any, Final, Literal

import anyio
import anyio.to_thread
import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from outcome import acapture
from pydantic import Field

from supervisord_agents import __version__
from supervisord_agents.errors import SupervisorError
from supervisord_agents.model import (
    TERMINAL_STATES,
    Agent,
    AgentState,
    ApprovalState,
    Priority,
    Severity,
    TaskContext,
    TaskState,
)
from supervisord_agents.protocol import (
    AGENT_FINDING,
    AGENT_KILL,
    AGENT_LIST,
    AGENT_OUTPUT,
    AGENT_PROGRESS,
    AGENT_SPAWN,
    AGENT_WAIT,
    APPROVAL_ANSWER,
    APPROVAL_LIST,
    APPROVAL_REQUEST,
    DAEMON_HEALTH,
    DAEMON_RECONCILE,
    FINDINGS_LIST,
    TASK_CLOSE,
    TASK_CREATE,
    TASK_GET,
    TASK_LIST,
    LimitsGiven,
    Method,
    OutputFormat,
    P,
    R,
)

from .client import Client
from .render import how_it_stands, outcome

log = logging.getLogger("agents-mcp")

INSTRUCTIONS = """\
supervisord-agents runs headless coding agents (Claude Code, Codex, Gemini CLI, any command) in
sessions it supervises. As an orchestrator: create_task, then spawn_agent for each piece of work,
then wait_for_agents (or poll get_task_status), read what they found with list_findings and what
they printed with get_agent_output, and kill_agent what is no longer needed. As an agent: report
what you are doing with report_progress and what you discover with report_finding; your identity
is known, so you need no ids. Limits per task (concurrent, total, depth, one live agent per type)
are enforced; a refused spawn says which limit and which agent holds it."""

server: MCPServer[Any] = MCPServer(name="supervisord-agents", version=__version__, instructions=INSTRUCTIONS)

TERMINAL: Final = TERMINAL_STATES
PROGRESS_EVERY: Final = 1.0  # seconds between progress notifications while waiting
#: How long wait_for_agents waits by default: under the 60 s after which TypeScript MCP
#: clients give up on a call, whatever its progress notifications say.
WAIT_DEFAULT: Final = 50.0


def _blocking_call(method: Method[P, R], params: dict[str, Any]) -> R:
    with Client(client="agents-mcp", timeout=None) as client:
        return client.call(method, **params)


async def call(method: Method[P, R], **params: Any) -> R:
    """One request to the daemon, its result typed; a daemon error becomes a tool error
    the model can read. Params that are None are left out."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(_blocking_call, method, params))
    except SupervisorError as e:
        raise ToolError(f"{e.code.value}: {e.message}") from None
    except OSError as e:
        raise ToolError(f"cannot reach the supervisor daemon: {e}") from None


def plain(value: Any) -> Any:
    """A result as the plain values the SDK sends: Structs become dicts, enums strings."""
    return msgspec.to_builtins(value)


def record(value: msgspec.Struct) -> dict[str, Any]:
    """One Struct as the dict a tool returns."""
    result: dict[str, Any] = plain(value)
    return result


# -- tasks -----------------------------------------------------------------------------


@server.tool()
async def create_task(
    description: Annotated[str, Field(description="What the task is about, in a sentence or two.")],
    priority: Priority = Priority.P2,
    working_directory: Annotated[str | None, Field(description="Absolute path the agents work in.")] = None,
    background: str | None = None,
    deliverables: list[str] | None = None,
    success_criteria: list[str] | None = None,
    constraints: list[str] | None = None,
    relevant_files: list[str] | None = None,
    max_concurrent: Annotated[int | None, Field(description="Live agents at once (default: the supervisor's "
                                                            "configured limit, 20 unless set).")] = None,
    max_total: Annotated[int | None, Field(description="Agents ever spawned (default: the supervisor's "
                                                       "configured limit, 45 unless set).")] = None,
    max_depth: Annotated[int | None, Field(description="Spawn depth (default: the supervisor's configured "
                                                       "limit, 5 unless set).")] = None,
    max_cost_usd: Annotated[float | None, Field(description="A budget in USD: no more spawns once the task's "
                                                            "ended agents have cost this much.")] = None,
) -> dict[str, Any]:
    """Create a task: the unit that groups agents, their limits and the context every agent's
    prompt receives. Use it once per piece of work, before spawning agents. Returns the task
    (its `id` is what spawn_agent needs) with its limits."""
    context = TaskContext(background=background or "", deliverables=deliverables or [],
                          success_criteria=success_criteria or [], constraints=constraints or [],
                          relevant_files=relevant_files or [])
    # Only the limits given: the daemon takes the others from its configured [limits].
    given: dict[str, Any] = {"max_concurrent": max_concurrent, "max_total": max_total, "max_depth": max_depth,
             "max_cost_usd": max_cost_usd}
    limits = LimitsGiven(**{k: v for k, v in given.items() if v is not None})
    task = await call(TASK_CREATE, description=description, priority=priority, cwd=working_directory,
                      context=context, limits=limits)
    return record(task)


@server.tool()
async def get_task_status(
    task_id: str,
    detail: Annotated[bool, Field(description="Every agent's whole record (argv, times, exit, tmux ids) "
                                              "instead of one compact line each.")] = False,
) -> dict[str, Any]:
    """Where a task stands: counts (active, queued, completed, failed, killed, lost, spawned),
    each agent's state, activity, progress and last message (and, once ended, why it failed or
    the start of its answer), the latest findings, and the headroom left under the task's limits
    (and what its agents cost, against its budget). Answered from the supervisor's memory: cheap
    to call."""
    status = await call(TASK_GET, task_id=task_id)
    result = record(status)
    if not detail:
        result["agents"] = [_brief(a) for a in status.agents]
    return result


def _brief(agent: Agent) -> dict[str, Any]:
    """One agent in a few fields: what a model needs to decide what to do next."""
    brief: dict[str, Any] = {"id": agent.id, "type": agent.type, "state": agent.state.value}
    if agent.state.live:
        brief.update(activity=agent.activity, progress=agent.progress, message=agent.message[:200])
        if standing := how_it_stands(agent, 300):  # sleeping until when and why, stalled, a later attempt
            brief["standing"] = standing
    elif agent.exit is not None:
        brief["outcome"] = outcome(agent.state, agent.exit, 300)
        if agent.exit.cost_usd is not None:
            brief["cost_usd"] = agent.exit.cost_usd
    return brief


@server.tool()
async def close_task(task_id: str) -> dict[str, Any]:
    """Close a task: no new agents may be spawned in it (those still running go on). Do it
    when the work is done; returns the task."""
    task = await call(TASK_CLOSE, task_id=task_id)
    return record(task)


#: Items in one page of a list tool: a page must fit comfortably in a model's context.
PAGE: Final = 20
_CURSOR: Final = "The `next` of your previous call, to continue where it stopped."


@server.tool()
async def list_tasks(
    state: TaskState | None = None,
    cursor: Annotated[str | None, Field(description=_CURSOR)] = None,
    limit: Annotated[int, Field(ge=1, le=100)] = PAGE,
) -> dict[str, Any]:
    """Tasks (all, or only open or closed ones) with their counts, oldest first, a page at a
    time; `next` is null on the last page."""
    page = await call(TASK_LIST, state=state, cursor=cursor, limit=limit)
    return {"tasks": plain(page.items), "next": page.next}


# -- agents ----------------------------------------------------------------------------


TypeField = Annotated[str, Field(description="The agent's role, e.g. 'reviewer' (lowercase, digits, - and _). "
                                             "One live agent per type per task.")]
PromptField = Annotated[str, Field(description="The instructions; the supervisor appends identity, how to "
                                               "report, and the task's context.")]
ProviderField = Annotated[str, Field(description="claude, codex, gemini, or command (then give argv).")]
ModelField = Annotated[str | None, Field(description="The model, for the provider's --model flag.")]
CwdField = Annotated[str | None, Field(description="Absolute path the agent works in (default: the task's).")]
ArgvField = Annotated[list[str] | None, Field(description="For provider 'command': the program and its arguments "
                                                          "(no shell); for the others, extra flags.")]
TimeoutField = Annotated[float | None, Field(description="Kill the agent after this many seconds (default: the "
                                                         "provider's wall-time limit).")]
QueueField = Annotated[bool, Field(description="If the task (or the supervisor) is at its concurrency limit, "
                                               "wait as `queued` and start when a slot frees, instead of failing.")]
EnvField = Annotated[dict[str, str] | None, Field(description="Variables to set in the agent's environment.")]


@server.tool()
async def spawn_agent(
    task_id: str,
    type: TypeField,
    prompt: PromptField,
    provider: ProviderField = "claude",
    model: ModelField = None,
    parent: Annotated[str | None, Field(description="The parent agent's id, for a child agent.")] = None,
    working_directory: CwdField = None,
    argv: ArgvField = None,
    timeout_seconds: TimeoutField = None,
    queue: QueueField = False,
    env: EnvField = None,
) -> dict[str, Any]:
    """Start an agent in its own supervised session and return it once it runs (state
    `running`, with its `id`), or at once in state `queued` when `queue` is set and no slot is
    free (it starts by itself later; `wait_for_agents` follows it). Fails with a clear message
    when a limit refuses it (naming the agent that holds its type, or the limit reached) or
    when it could not start."""
    agent = await call(
        AGENT_SPAWN, task_id=task_id, type=type, prompt=prompt, provider=provider, model=model, parent=parent,
        cwd=working_directory, argv=argv, timeout=timeout_seconds, queue=queue, env=env or {},
    )
    return record(agent)


@server.tool()
async def spawn_child_agent(
    type: TypeField,
    prompt: PromptField,
    provider: ProviderField = "claude",
    model: ModelField = None,
    working_directory: CwdField = None,
    argv: ArgvField = None,
    timeout_seconds: TimeoutField = None,
    queue: QueueField = False,
    env: EnvField = None,
) -> dict[str, Any]:
    """From inside an agent: start a child agent in your own task, with you as its parent (both
    taken from your identity). Depth and the task's limits apply; with `queue`, a child over the
    concurrency limit waits as `queued` instead of failing. Returns the child."""
    agent = await call(
        AGENT_SPAWN, type=type, prompt=prompt, provider=provider, model=model, cwd=working_directory, argv=argv,
        timeout=timeout_seconds, queue=queue, env=env or {},
    )
    return record(agent)


@server.tool()
async def list_agents(
    task_id: str | None = None,
    state: AgentState | None = None,
    cursor: Annotated[str | None, Field(description=_CURSOR)] = None,
    limit: Annotated[int, Field(ge=1, le=100)] = PAGE,
) -> dict[str, Any]:
    """Agents, filtered by task and/or state (queued, starting, running, stopping, completed,
    failed, killed, lost), oldest first, a page at a time; `next` is null on the last page."""
    page = await call(AGENT_LIST, task_id=task_id, state=state, cursor=cursor, limit=limit)
    return {"agents": plain(page.items), "next": page.next}


@server.tool()
async def get_agent_output(
    agent_id: str,
    format: Annotated[OutputFormat, Field(
        description="summary: one line per event (tool calls, results, errors); text: raw; jsonl: JSON lines "
                    "only.")] = OutputFormat.SUMMARY,
    tail: Annotated[int | None, Field(description="Only the last N lines.")] = None,
    regex: Annotated[str | None, Field(description="Only lines matching this regex.")] = None,
    offset: Annotated[int | None, Field(description="Start at this byte offset (from a previous call's "
                                                    "`offset`) to read only what is new.")] = None,
    max_bytes: Annotated[int, Field(description="Size bound for the reply.")] = 16_000,
) -> dict[str, Any]:
    """What an agent printed (stdout and stderr), live or after it ended, bounded in size for a
    model's context, with a note when it was cut. Returns `output`, `offset` (for the next call)
    and `note`."""
    output = await call(AGENT_OUTPUT, agent_id=agent_id, format=format, tail=tail, regex=regex, offset=offset,
                        max_bytes=max_bytes)
    return record(output)


@server.tool()
async def wait_for_agents(
    agent_ids: list[str],
    ctx: Context[Any, Any],
    mode: Literal["all", "any"] = "all",
    timeout_seconds: Annotated[float, Field(
        description="How long to wait. The default returns before the 60 s after which many MCP clients give "
                    "up on a call; if `done` is false, call again with the agents in `still_running`. Ask "
                    "for longer only if your client allows it.", gt=0, le=86400)] = WAIT_DEFAULT,
) -> dict[str, Any]:
    """Block until all (or any) of the given agents have ended, or the timeout passes; sends
    progress notifications while waiting. Returns `done`, `still_running` (the ids to wait for
    again) and, for each agent, its state and, once ended, its `exit`: why it failed
    (`reason`, `error_class`) or its final `answer` (bounded: get_agent_output has all of it),
    with code, cost, tokens and turns."""
    deadline = anyio.current_time() + timeout_seconds
    while True:
        left = deadline - anyio.current_time()
        result = await call(AGENT_WAIT, agent_ids=agent_ids, any=mode == "any",
                            timeout=max(0.0, min(PROGRESS_EVERY, left)))
        ended = sum(a.state in TERMINAL for a in result.agents)
        if result.done or left <= PROGRESS_EVERY:
            answer = record(result)
            answer["still_running"] = [a.agent_id for a in result.agents if a.state not in TERMINAL]
            return answer
        await ctx.report_progress(ended, len(agent_ids), f"{ended} of {len(agent_ids)} agents ended")


@server.tool()
async def kill_agent(agent_id: str, reason: str = "killed by the orchestrator", tree: bool = False) -> dict[str, Any]:
    """Stop an agent: SIGTERM to its process group, SIGKILL after the grace period, session
    removed, nothing of it left running. `tree` also stops its descendants. Returns the agent
    in its final state."""
    agent = await call(AGENT_KILL, agent_id=agent_id, reason=reason, tree=tree)
    return record(agent)


# -- reporting -------------------------------------------------------------------------


@server.tool()
async def report_progress(
    message: str,
    percent: Annotated[int | None, Field(ge=0, le=100)] = None,
    activity: Annotated[str | None, Field(description="One word, e.g. reading, testing, writing.")] = None,
    agent_id: Annotated[str | None, Field(description="Defaults to you (inside an agent).")] = None,
) -> dict[str, Any]:
    """Report what you are doing. Call it when you start, every few minutes, and when you
    finish. Returns your record and what your peers in the task are doing (their latest
    progress) and the task's latest findings, so you can coordinate."""
    agent = await call(AGENT_PROGRESS, agent_id=agent_id, message=message, percent=percent, activity=activity)
    return {"agent": record(agent), **await _peers(agent)}


@server.tool()
async def report_finding(
    message: str,
    type: Annotated[str, Field(description="e.g. bug, issue, note, decision (lowercase).")] = "note",
    severity: Severity = Severity.INFO,
    data: dict[str, Any] | None = None,
    agent_id: Annotated[str | None, Field(description="Defaults to you (inside an agent).")] = None,
    task_id: Annotated[str | None, Field(description="Needed only outside an agent without agent_id.")] = None,
) -> dict[str, Any]:
    """Record something you found (a bug, a risk, a decision) for the orchestrator and your
    peers. Stored durably with a sequence number (`seq`)."""
    finding = await call(AGENT_FINDING, agent_id=agent_id, task_id=task_id, type=type, severity=severity,
                         message=message, data=data)
    return record(finding)


@server.tool()
async def list_findings(
    task_id: str | None = None,
    agent_id: str | None = None,
    type: str | None = None,
    severity: Severity | None = None,
    since: Annotated[int, Field(description="Only findings after this sequence number: pass the "
                                            "`next_since` of your previous call to read only what is new.")] = 0,
    limit: Annotated[int, Field(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Findings reported by agents, oldest first, filtered, a page at a time; `next_since` is
    the cursor for the next call (`more` says whether there is more after this page)."""
    page = await call(FINDINGS_LIST, task_id=task_id, agent_id=agent_id, type=type, severity=severity,
                      since=since, limit=limit)
    findings = page.items
    return {"findings": plain(findings), "next_since": findings[-1].seq if findings else since,
            "more": page.next is not None}


async def _peers(me: Agent) -> dict[str, Any]:
    """What the other live agents of ``me``'s task are doing, and the task's latest findings."""
    status = await call(TASK_GET, task_id=me.task_id)
    peers = [{"id": a.id, "type": a.type, "state": a.state, "activity": a.activity, "progress": a.progress,
              "message": a.message}
             for a in status.agents if a.id != me.id and a.state not in TERMINAL]
    return {"peers": plain(peers[:5]), "latest_findings": plain(status.latest_findings[-3:])}


# -- approvals ---------------------------------------------------------------------------


#: Seconds between the progress notifications approve_tool_use sends while it waits, so that
#: the CLI sees the call alive (claude gives up on a stdio tool call silent for 30 minutes).
APPROVAL_HEARTBEAT: Final = 60.0


# claude reads the permission prompt's answer as one text block: no structured content.
@server.tool(structured_output=False)
async def approve_tool_use(
    tool_name: Annotated[str, Field(description="The tool the agent's CLI wants to use.")],
    ctx: Context[Any, Any],
    input: Annotated[dict[str, Any] | None, Field(description="The tool call's arguments.")] = None,
    tool_use_id: str | None = None,
) -> str:
    """Claude Code's permission prompt (``--permission-prompt-tool``): asks the supervisor's
    operator whether this agent may make this tool call, waits for the answer (or the task's
    policy at its timeout), and returns it as Claude Code reads it."""
    approval = await _alive_while(ctx, f"waiting for the operator to allow {tool_name}", APPROVAL_REQUEST,
                                  tool_name=tool_name, input=input or {})
    if approval.state is ApprovalState.ALLOWED:
        return json.dumps({"behavior": "allow", "updatedInput": input or {}})
    why = approval.message or f"denied by the supervisor ({approval.answered_by})"
    return json.dumps({"behavior": "deny", "message": why})


async def _alive_while(ctx: Context[Any, Any], message: str, method: Method[P, R], **params: Any) -> R:
    """:func:`call`, with a progress notification every APPROVAL_HEARTBEAT seconds until
    its answer comes (none if the client asked for no progress)."""
    async def heartbeat() -> None:
        beats = 0  # progress must grow (MCP): the beats so far
        while True:
            await anyio.sleep(APPROVAL_HEARTBEAT)
            beats += 1
            await ctx.report_progress(beats, None, message)

    async with anyio.create_task_group() as beats:
        beats.start_soon(heartbeat)
        # Captured, so that a tool error comes out as itself, not in the task group's ExceptionGroup.
        answer = await acapture(functools.partial(call, method, **params))
        beats.cancel_scope.cancel()
    return answer.unwrap()


@server.tool()
async def list_approvals(task_id: str | None = None) -> list[dict[str, Any]]:
    """Permission requests of agents waiting for an answer: which agent, which tool, its input.
    Answer each with answer_approval."""
    return [plain(a) for a in await call(APPROVAL_LIST, task_id=task_id)]


@server.tool()
async def answer_approval(
    approval_id: str,
    allow: bool,
    always_for_tool: Annotated[bool, Field(description="Allowed: the agent may use this tool from now on.")] = False,
    message: Annotated[str, Field(description="Told to the agent with a denial.")] = "",
) -> dict[str, Any]:
    """Allow or deny a waiting permission request (from list_approvals). Only the operator's
    session may answer: an agent can answer neither its own requests nor another's."""
    answered = await call(APPROVAL_ANSWER, approval_id=approval_id, allow=allow, always_for_tool=always_for_tool,
                          message=message)
    return record(answered)


# -- the daemon ------------------------------------------------------------------------


@server.tool()
async def get_health() -> dict[str, Any]:
    """The supervisor's health: uptime, counts, whether tmux is healthy, and the last
    reconciliation of the registry against tmux."""
    health = await call(DAEMON_HEALTH)
    return record(health)


@server.tool()
async def repair(dry_run: bool = True, kill_orphans: bool = False) -> dict[str, Any]:
    """Reconcile the registry with tmux now: agents whose session is gone are ended, sessions
    of ended agents are killed, orphan sessions are reported (and killed with kill_orphans).
    A dry run (the default) only says what would be done."""
    report = await call(DAEMON_RECONCILE, dry_run=dry_run, kill_orphans=kill_orphans)
    return record(report)


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="agents-mcp: %(levelname)s %(message)s")
    # The SDK reads stdin in a worker thread that a cancel cannot interrupt, so an
    # interrupt would wait for the client's next line. The shim holds no state: go at once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: os._exit(128 + signum))
    anyio.run(server.run_stdio_async, backend="trio")


if __name__ == "__main__":
    main()
