"""agentctl's verbs: one ``cmd_*`` function per verb, each given the parsed arguments and a
connected :class:`Client`.

A verb calls the daemon through the protocol's method declarations, so it works with
the typed results (``Task``, ``list[Agent]``, ``Health``) and the model's enums. It
writes its output (one JSON line with ``--json``, text otherwise) and returns; an
outcome that is not success is raised as a :class:`SupervisorError`, which the entry
point turns into an exit code in one place (``agentctl.exit_code_for``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec

from supervisord_agents.digest import how_it_stands, selects
from supervisord_agents.errors import Conflict, InvalidParams, NotFound, StorageError, SupervisorError, Timeout
from supervisord_agents.model import AgentState, Approval, Policy, TaskContext, TaskState, launch_argv
from supervisord_agents.protocol import (
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
    DAEMON_DOCTOR,
    DAEMON_HEALTH,
    DAEMON_RECONCILE,
    DAEMON_STOP,
    FINDINGS_LIST,
    MAX_PAGE,
    TASK_CLOSE,
    TASK_CREATE,
    TASK_GET,
    TASK_LIST,
    TASK_PURGE,
    Boundary,
    Headroom,
    Health,
    LimitsGiven,
)

from .client import Client, database_path
from .render import (
    AGENT_HEADERS,
    agent_rows,
    ago,
    clock,
    counts_cell,
    emit_json,
    emit_json_items,
    event_line,
    indent,
    log_view,
    outcome,
    stream_table,
    table,
    to_json,
    visible,
)

#: A verb that talks to the daemon.
Verb = Callable[[argparse.Namespace, Client], None]

#: The states in which an agent has a tmux session one can attach to.
ATTACHABLE: Final = frozenset({AgentState.RUNNING, AgentState.STOPPING})


class AgentFailed(SupervisorError):
    """An agent that ``agentctl wait`` waited on ended other than completed."""


class ProvidersBroken(SupervisorError):
    """``agentctl doctor`` found a provider that cannot work (exit status 1)."""


def out(text: str) -> None:
    """Write text for people: anything that would drive the terminal shown escaped."""
    sys.stdout.write(visible(text))


# --- tasks ------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, c: Client) -> None:
    statuses = [c.call(TASK_GET, task_id=t.task.id) for t in c.pages(TASK_LIST, state=TaskState.OPEN)]
    health = c.call(DAEMON_HEALTH)
    if args.json:
        emit_json({"tasks": statuses, "health": health})
        return
    out(f"daemon pid {health.pid}  up {ago(time.time() - health.uptime)}  "
        f"tmux {'ok' if health.tmux_healthy else 'DOWN'}  agents: {counts_cell(health.counts)}\n\n")
    if not statuses:
        out("no open tasks\n")
    for s in statuses:
        t = s.task
        out(f"{t.id}  {t.priority}  {counts_cell(s.counts)}\n  {t.description[:100]}\n")
        if s.agents:
            out(indent(table(agent_rows(s.agents), AGENT_HEADERS)))
        out("\n")


def cmd_tasks(args: argparse.Namespace, c: Client) -> None:
    tasks = c.pages(TASK_LIST, state=args.state)
    if args.json:
        emit_json_items(tasks)
        return
    rows = ([s.task.id, s.task.state, s.task.priority, counts_cell(s.counts), s.task.description[:60]]
            for s in tasks)
    stream_table(rows, ["TASK", "STATE", "PRI", "AGENTS", "DESCRIPTION"])


def cmd_task_create(args: argparse.Namespace, c: Client) -> None:
    # Only the limits given go to the daemon, which takes the others from its configured
    # [limits]: filling in defaults here would silently override the operator's config.
    given = {"max_concurrent": args.max_concurrent, "max_total": args.max_total, "max_depth": args.max_depth,
             "max_cost_usd": args.max_cost, "agent_max_turns": args.agent_max_turns,
             "agent_max_cost_usd": args.agent_max_cost, "max_wall_seconds": args.max_wall, "warn_at": args.warn_at}
    limits = LimitsGiven(**{k: v for k, v in given.items() if v is not None})
    context = TaskContext(background=args.background or "", deliverables=args.deliverable or [],
                          success_criteria=args.criterion or [], constraints=args.constraint or [],
                          relevant_files=args.file or [])
    chosen = {"on_rate_limit": args.on_rate_limit, "restart": args.restart, "max_attempts": args.max_attempts,
              "backoff": args.backoff, "stall_after": args.stall_after, "on_stall": args.on_stall}
    policy = Policy(**{k: v for k, v in chosen.items() if v is not None})
    task = c.call(TASK_CREATE, description=args.description, priority=args.priority,
                  cwd=str(Path(args.cwd).resolve()), context=context, limits=limits, policy=policy)
    emit_json(task) if args.json else out(f"{task.id}\n")


def _cost_line(h: Headroom) -> str:
    if h.cost_left_usd is not None:
        return f"; spent ${h.cost_usd:.4f}, ${h.cost_left_usd:.4f} of the budget left"
    return f"; spent ${h.cost_usd:.4f}" if h.cost_usd else ""


def cmd_task_show(args: argparse.Namespace, c: Client) -> None:
    status = c.call(TASK_GET, task_id=args.task)
    if args.json:
        emit_json(status)
        return
    t, h = status.task, status.headroom
    out(f"{t.id}  {t.state}  {t.priority}\n{t.description}\n"
        f"agents: {counts_cell(status.counts)}; room for {h.concurrent_left} more concurrent, "
        f"{h.total_left} more in total; max depth {h.max_depth}{_cost_line(h)}\n\n")
    out(table(agent_rows(status.agents), AGENT_HEADERS))
    for f in status.latest_findings:
        out(f"finding #{f.seq} [{f.severity}] {f.type}: {f.message[:100]}\n")


def cmd_task_close(args: argparse.Namespace, c: Client) -> None:
    task = c.call(TASK_CLOSE, task_id=args.task)
    emit_json(task) if args.json else out(f"{task.id} closed\n")


# --- agents -----------------------------------------------------------------------------


def cmd_agents(args: argparse.Namespace, c: Client) -> None:
    agents = c.pages(AGENT_LIST, task_id=args.task, state=args.state)
    if args.json:
        emit_json_items(agents)
        return
    stream_table((row for a in agents for row in agent_rows([a])), AGENT_HEADERS)


def cmd_show(args: argparse.Namespace, c: Client) -> None:
    agent = c.call(AGENT_GET, agent_id=args.agent)
    if args.json:
        emit_json(agent)
        return
    for key in ("id", "task_id", "type", "parent", "depth", "provider", "model", "state", "activity",
                "progress", "message", "kill_reason", "conversation"):
        if (value := getattr(agent, key)) not in (None, ""):
            out(f"{key:<12} {value}\n")
    if standing := how_it_stands(agent):
        out(f"{'standing':<12} {standing}\n")
    out(f"{'argv':<12} {' '.join(launch_argv(agent))}\n")
    out(f"{'policy':<12} {to_json(agent.policy)}\n")
    for attempt in agent.attempts:
        took = f"{attempt.ended_at - attempt.started_at:.1f} s" if attempt.started_at else "never started"
        cost = f", ${attempt.exit.cost_usd:.4f}" if attempt.exit.cost_usd is not None else ""
        out(f"{'attempt ' + str(attempt.n):<12} {clock(attempt.ended_at)} ({took}{cost}) "
            f"{outcome(AgentState.FAILED, attempt.exit)} -> {attempt.then}\n")
    for key in ("created_at", "started_at", "ended_at", "updated_at"):
        if ts := getattr(agent, key):
            out(f"{key:<12} {clock(ts)}\n")
    if agent.exit is not None:
        out(f"{'outcome':<12} {outcome(agent.state, agent.exit)}\n")
    for key in ("exit", "tmux", "cleanup"):
        if (record := getattr(agent, key)) is not None:
            out(f"{key:<12} {to_json(record)}\n")


def read_prompt(source: str) -> str:
    """A prompt file's text (``-``: standard input) exactly as its bytes say: no newline is
    translated. Raises InvalidParams if it cannot be read or is not UTF-8."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise InvalidParams(f"cannot read the prompt file {source}: {e.strerror or e}") from None
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise InvalidParams(f"the prompt file {source} is not UTF-8 text (byte {e.start} is {data[e.start]:#04x})") \
            from None


def cmd_spawn(args: argparse.Namespace, c: Client) -> None:
    prompt = args.prompt or ""
    if args.prompt_file:
        prompt = read_prompt(args.prompt_file)
    argv = list(args.argv or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    agent = c.call(AGENT_SPAWN, task_id=args.task, type=args.type, provider=args.provider, model=args.model,
                   prompt=prompt, parent=args.parent, cwd=str(Path(args.cwd).resolve()) if args.cwd else None,
                   argv=argv, timeout=args.timeout, queue=args.queue, env=dict(args.env), resume=args.resume)
    if args.json:
        emit_json(agent)
    else:
        out(f"{agent.id} queued\n" if agent.state is AgentState.QUEUED else f"{agent.id}\n")


def cmd_approvals(args: argparse.Namespace, c: Client) -> None:
    pending = c.call(APPROVAL_LIST, task_id=args.task)
    if args.json:
        emit_json(pending)
        return
    rows = ([a.id, a.agent_id, a.tool, ago(a.at), to_json(a.input)[:80]] for a in pending)
    stream_table(rows, ["APPROVAL", "AGENT", "TOOL", "ASKED", "INPUT"])


def cmd_approve(args: argparse.Namespace, c: Client) -> None:
    _answered(args, c.call(APPROVAL_ANSWER, approval_id=args.approval, allow=True,
                           always_for_tool=args.always_for_tool))


def cmd_deny(args: argparse.Namespace, c: Client) -> None:
    _answered(args, c.call(APPROVAL_ANSWER, approval_id=args.approval, allow=False, message=args.message))


def _answered(args: argparse.Namespace, a: Approval) -> None:
    emit_json(a) if args.json else out(f"{a.id} {a.state} ({a.agent_id}: {a.tool})\n")


def cmd_wake(args: argparse.Namespace, c: Client) -> None:
    agent = c.call(AGENT_WAKE, agent_id=args.agent)
    emit_json(agent) if args.json else out(f"{agent.id} {agent.state} (attempt {agent.attempt})\n")


def cmd_kill(args: argparse.Namespace, c: Client) -> None:
    agent = c.call(AGENT_KILL, agent_id=args.agent, reason=args.reason, tree=args.tree)
    emit_json(agent) if args.json else out(f"{agent.id} {agent.state}\n")


def cmd_wait(args: argparse.Namespace, c: Client) -> None:
    """Wait; succeed only if every agent (with ``--any``: every one that ended) completed."""
    result = c.call(AGENT_WAIT, agent_ids=args.agents, any=args.any, timeout=args.timeout)
    if args.json:
        emit_json(result)
    else:
        for a in result.agents:
            line = outcome(a.state, a.exit, 200)
            out(f"{a.agent_id} {a.state}{': ' + line if line else ''}\n")
    if not result.done:
        live = [a.agent_id for a in result.agents if a.state.live]
        raise Timeout(f"still live after {args.timeout} s: {' '.join(live)}")
    relevant = [a for a in result.agents if a.state.terminal] if args.any else result.agents
    failed = [f"{a.agent_id} {a.state}" for a in relevant if a.state is not AgentState.COMPLETED]
    if failed or not relevant:
        raise AgentFailed(f"did not complete: {', '.join(failed)}")


def cmd_progress(args: argparse.Namespace, c: Client) -> None:
    agent = c.call(AGENT_PROGRESS, agent_id=args.agent, message=args.message, percent=args.percent,
                   activity=args.activity)
    if args.json:
        emit_json(agent)


def cmd_logs(args: argparse.Namespace, c: Client) -> None:
    result = c.call(AGENT_OUTPUT, agent_id=args.agent, tail=args.tail, format=args.format, regex=args.regex,
                    max_bytes=args.max_bytes)
    if args.json and not args.follow:
        emit_json(result)
        return
    if args.raw:
        write = sys.stdout.write
    elif sys.stdout.isatty():  # colours kept; cursor, title and clipboard sequences removed
        def write(text: str) -> None:
            sys.stdout.write(log_view(text))
    else:
        write = out
    write(result.output)
    if result.note:
        sys.stderr.write(f"({result.note})\n")
    offset = result.offset
    while args.follow:
        agent = c.call(AGENT_GET, agent_id=args.agent)
        chunk = c.call(AGENT_OUTPUT, agent_id=args.agent, offset=offset, format=args.format)
        write(chunk.output)
        sys.stdout.flush()
        offset = chunk.offset
        if agent.state.terminal and not chunk.output:
            break
        if not chunk.output:
            c.call(AGENT_WAIT, agent_ids=[args.agent], timeout=0.5)


def cmd_peek(args: argparse.Namespace, c: Client) -> None:
    """The agent's pane as it is on screen, as the daemon captures it."""
    screen = c.call(AGENT_PEEK, agent_id=args.agent, lines=args.lines)
    # tmux pads the screen with blank lines to the pane's height: show only what is written.
    emit_json(screen) if args.json else out(screen.screen.rstrip("\n") + "\n")


def cmd_attach(args: argparse.Namespace, c: Client) -> None:
    agent = c.call(AGENT_GET, agent_id=args.agent)
    if agent.tmux is None or agent.state not in ATTACHABLE:
        raise InvalidParams(f"agent {args.agent} has no live session ({agent.state})")
    # The daemon's private tmux server listens beside its control socket.
    tmux_socket = str(Path(c.call(DAEMON_HEALTH).socket).with_name("tmux.sock"))
    argv = ["tmux", "-S", tmux_socket, "attach-session", "-t", agent.tmux.session_id]
    os.execvp("tmux", argv)  # noqa: S606 - agentctl becomes tmux; an argv, no shell


# --- findings and events ----------------------------------------------------------------


def cmd_finding(args: argparse.Namespace, c: Client) -> None:
    data: Any = msgspec.json.decode(args.data) if args.data else None
    finding = c.call(AGENT_FINDING, agent_id=args.agent, task_id=args.task, type=args.type,
                     severity=args.severity, message=args.message, data=data)
    emit_json(finding) if args.json else out(f"finding #{finding.seq}\n")


def cmd_findings(args: argparse.Namespace, c: Client) -> None:
    page = min(args.limit, MAX_PAGE) if args.limit is not None else MAX_PAGE
    findings = itertools.islice(c.pages(FINDINGS_LIST, task_id=args.task, agent_id=args.agent, type=args.type,
                                        severity=args.severity, since=args.since, limit=page), args.limit)
    if args.json:
        emit_json_items(findings)
        return
    rows = ([f.seq, f.severity, f.type, f.agent_id or "", f.message[:80]] for f in findings)
    stream_table(rows, ["SEQ", "SEVERITY", "TYPE", "AGENT", "MESSAGE"])


def cmd_task_purge(args: argparse.Namespace, c: Client) -> None:
    purged = c.call(TASK_PURGE, task_id=args.task)
    emit_json(purged) if args.json else out(
        f"{purged.task_id} purged: {purged.agents} agents and {purged.findings} findings deleted, with their"
        " events, logs and archives\n")


def cmd_events(args: argparse.Namespace, c: Client) -> None:
    """Replay the event log after ``--since`` (then, with ``--follow``, live events): one
    line a person can read per event, or the events as JSON lines with ``--json``. Without
    ``--follow``, stop at the last event there was when the command started.

    ``--kind`` is applied here, to what arrives: the daemon's subscription has no kind filter,
    and here it takes the same selectors as hooks (``agent:failed``). ``--task`` and ``--agent``
    are applied by the daemon when following; without ``--follow`` here too, because the
    command must see the last event to know it has got there, and a replay the daemon
    filtered has no end the client could see."""
    since = args.since if args.since is not None else 0
    kinds: list[str] = args.kind or []
    last = 0
    if not args.follow:
        last = c.call(DAEMON_HEALTH).last_seq
        if last <= since:
            return
    task_id, agent_id = (args.task, args.agent) if args.follow else (None, None)
    for event in c.events(since=since, task_id=task_id, agent_id=agent_id):
        if ((args.task is None or event.task_id == args.task) and (args.agent is None or event.agent_id == args.agent)
                and (not kinds or selects(kinds, event))):
            if args.json:
                emit_json(event)
            else:
                out(event_line(event) + "\n")
            sys.stdout.flush()
        if not args.follow and event.seq >= last:
            return


# --- the daemon -------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace, c: Client) -> None:
    """Each provider as the daemon sees it; fail if one that is installed (or named) cannot work."""
    report = c.call(DAEMON_DOCTOR, providers=args.providers)
    if args.json:
        emit_json(report)
    else:
        for p in report.providers:
            state = "ok" if p.ok else ("not installed" if not p.installed else "PROBLEM")
            out(f"{p.name:<10} {state}\n")
            for label, value in (("binary", f"{p.binary} {p.version}".strip()), ("flags", " ".join(p.flags)),
                                 ("credential", p.credentials), ("reporting", p.reporting)):
                if value:
                    out(f"  {label:<11} {value}\n")
            if not p.installed:  # a note, not a failure, unless it was asked for
                out("".join(f"  install     {problem.fix}\n" for problem in p.problems))
                continue
            for problem in p.problems:
                out(f"  problem     {problem.what}\n  fix         {problem.fix}\n")
    if not report.ok:
        broken = [p.name for p in report.providers if not p.ok and p.installed]
        raise ProvidersBroken(f"cannot work: {', '.join(broken) or 'see above'}")


def cmd_health(args: argparse.Namespace, c: Client) -> None:
    health = c.call(DAEMON_HEALTH)
    report = c.call(DAEMON_RECONCILE, dry_run=True)
    if args.json:
        emit_json({"daemon": health, "reconcile": report})
        return
    g = health.counts
    tmux = "healthy" if report.tmux_healthy else f"UNHEALTHY: {report.error}"
    out(f"daemon    pid {health.pid}, version {health.version}, up {health.uptime:.0f}s\n"
        f"state     {health.state_dir} (events up to #{health.last_seq}, {health.actor.commits} commits)\n"
        f"socket    {health.socket} ({health.connections} connections)\n"
        f"tmux      {tmux}, {report.sessions} sessions\n"
        f"registry  {g.active} live agents, {g.completed} completed, {g.failed} failed, "
        f"{g.killed} killed, {g.lost} lost\n"
        f"drift     {len(report.ended)} live without a session, {len(report.adopted)} to adopt, "
        f"{len(report.orphans)} orphan sessions, {len(report.killed_again)} sessions of ended agents, "
        f"{len(report.foreign)} foreign\n"
        f"agents    told apart by {_boundary(health)}\n"
        f"hooks     {health.hooks.ran} ran, {health.hooks.failed} failed, {health.hooks.dropped} dropped, "
        f"{health.hooks.running} running\n")


def _boundary(health: Health) -> str:
    if health.boundary is Boundary.CGROUP:
        missing = f"; no {', '.join(health.missing_controllers)} bounds here" if health.missing_controllers else ""
        return f"their cgroups under {health.cgroup_root}{missing}"
    weaker = "process ancestry" if health.boundary is Boundary.ANCESTRY else "tokens"
    return f"{weaker} (WEAKER: {health.boundary_note})"


#: What ``repair`` says for each list of a ReconcileReport.
REPAIRS: Final = (
    ("ended", "mark ended (zombie: live without a session)"),
    ("adopted", "adopt session"),
    ("killed_again", "kill session of an ended agent"),
    ("orphans", "orphan session (no record)"),
    ("orphans_killed", "kill orphan session"),
    ("foreign", "end foreign session or pane"),
    ("restored", "restore tmux server setting"),
    ("cleanups_retried", "retry cleanup"),
)


def cmd_repair(args: argparse.Namespace, c: Client) -> None:
    report = c.call(DAEMON_RECONCILE, dry_run=args.dry_run, kill_orphans=args.kill_orphans)
    if args.json:
        emit_json(report)
        return
    verb = "would" if args.dry_run else "did"
    lines = [f"tmux: {'healthy' if report.tmux_healthy else 'UNHEALTHY: ' + report.error}"]
    for key, label in REPAIRS:
        items: list[str] = getattr(report, key)
        # Orphans are only reported: what is done to them is in orphans_killed.
        lines.extend(f"{label}: {item}" if key == "orphans" else f"{verb} {label}: {item}" for item in items)
    if report.orphans and not args.kill_orphans:
        lines.append("(orphans are kept; pass --kill-orphans to kill them)")
    if len(lines) == 1:
        lines.append("nothing to repair")
    out("\n".join(lines) + "\n")


def cmd_stop(args: argparse.Namespace, c: Client) -> None:
    result = c.call(DAEMON_STOP)
    emit_json(result) if args.json else out("daemon stopping\n")


class BackupReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``agentctl backup --json`` prints."""

    source: str
    path: str
    bytes: int
    last_seq: int  # the copy holds every event up to this one


def cmd_backup(args: argparse.Namespace) -> None:
    """Copy the daemon's database to ``args.path``, consistent, while the daemon runs (or not).

    A local verb: SQLite's backup API reads one snapshot of the database (every batch
    committed when it began) from a read-only connection, which WAL allows while the
    daemon writes. The copy goes to a temporary file beside PATH, is checked with ``PRAGMA
    quick_check`` (so every backup also checks the whole history, which the daemon's
    start-up check does not), then takes PATH's name, mode 0600. Raises Conflict if PATH
    exists (without ``--force``), InvalidParams if PATH is a folder or the database itself,
    NotFound if there is no database, StorageError if the copy fails or is damaged."""
    import sqlite3  # here: only this verb needs them, and agentctl starts on every call
    import tempfile
    from contextlib import closing

    source = Path(args.database) if args.database else database_path()
    dest = Path(args.path).absolute()
    if not source.is_file():
        raise NotFound(f"no database at {source}")
    if dest.is_dir():
        raise InvalidParams(f"{dest} is a folder: name the file to write")
    if dest.exists() and dest.samefile(source):
        raise InvalidParams(f"{dest} is the database itself")
    if dest.exists() and not args.force:
        raise Conflict(f"{dest} exists (pass --force to replace it)")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)  # mode 0600
    os.close(fd)
    try:
        try:
            with closing(sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)) as db, \
                    closing(sqlite3.connect(tmp)) as copy:
                db.backup(copy)  # in one step: one read transaction, one snapshot
                copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal to keep beside it
                try:
                    problems = [row[0] for row in copy.execute("PRAGMA quick_check") if row[0] != "ok"]
                except sqlite3.DatabaseError as e:  # some damage stops the check itself
                    problems = [str(e)]
                if problems:
                    raise StorageError(f"{source} is damaged, no backup written: {'; '.join(problems[:5])}")
                last_seq = copy.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        except sqlite3.Error as e:
            raise StorageError(f"cannot back up {source}: {e}") from e
        size = os.path.getsize(tmp)
        _publish(tmp, dest, force=args.force)
    finally:
        try:
            os.unlink(tmp)  # left only if the copy failed (or was linked into place)
        except FileNotFoundError:
            pass
    report = BackupReport(source=str(source), path=str(dest), bytes=size, last_seq=last_seq)
    if args.json:
        emit_json(report)
    else:
        out(f"backed up {source} to {dest}: {size:,} bytes, events up to #{last_seq}\n")


def _publish(tmp: str, dest: Path, *, force: bool) -> None:
    """Give the finished copy its name (replacing a file there only with ``force``), durably."""
    if force:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails if a file appeared there meanwhile: never replaces one
        except FileExistsError:
            raise Conflict(f"{dest} exists (pass --force to replace it)") from None
        except OSError:  # a file system without hard links: check, then rename
            if dest.exists():
                raise Conflict(f"{dest} exists (pass --force to replace it)") from None
            os.replace(tmp, dest)
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the name, like the copy (which SQLite synced), survives a power loss
    finally:
        os.close(folder)

