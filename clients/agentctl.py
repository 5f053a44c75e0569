"""agentctl: the command-line client of the supervisord-agents daemon.

Every verb takes ``--json`` for machine-readable output. ``--socket`` (or
``$SUPERVISORD_AGENTS_SOCKET``) picks the daemon. Inside an agent, ``progress`` and
``finding`` need nothing but the message: the agent's identity comes from its
environment.

Exit codes are stable: 0 ok, 1 other error, 2 bad input, 3 daemon not running,
4 not found, 5 refused by a limit, 6 an agent waited on did not complete, 7 timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from supervisord_agents.config import socket_path_from_env
from supervisord_agents.errors import (
    BadRequest,
    InvalidParams,
    LimitExceeded,
    NotFound,
    SupervisorError,
    Timeout,
    UnknownMethod,
)

from . import service_files
from .client import Client, DaemonNotRunning
from .render import AGENT_HEADERS, agent_rows, ago, counts_cell, emit_json, indent, table

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_NOT_RUNNING: Final = 3
EXIT_NOT_FOUND: Final = 4
EXIT_LIMIT: Final = 5
EXIT_AGENT_FAILED: Final = 6
EXIT_TIMEOUT: Final = 7

_json = msgspec.json.Encoder()


def exit_code_for(error: SupervisorError) -> int:
    if isinstance(error, DaemonNotRunning):
        return EXIT_NOT_RUNNING
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, LimitExceeded):
        return EXIT_LIMIT
    if isinstance(error, InvalidParams | BadRequest | UnknownMethod):
        return EXIT_BAD_INPUT
    if isinstance(error, Timeout):
        return EXIT_TIMEOUT
    return EXIT_ERROR


# --- verbs ----------------------------------------------------------------------------

Verb = Callable[[argparse.Namespace, Client], int]


def cmd_status(args: argparse.Namespace, c: Client) -> int:
    tasks = c.call("task.list", state="open")
    statuses = [c.call("task.get", task_id=t["task"]["id"]) for t in tasks]
    if args.json:
        emit_json({"tasks": statuses, "health": c.call("daemon.health")})
        return EXIT_OK
    health = c.call("daemon.health")
    g = health["counts"]
    sys.stdout.write(f"daemon pid {health['pid']}  up {ago(time.time() - health['uptime'])}  "
                     f"tmux {'ok' if health.get('tmux_healthy') else 'DOWN'}  agents: {counts_cell(g)}\n\n")
    if not statuses:
        sys.stdout.write("no open tasks\n")
    for s in statuses:
        t = s["task"]
        line = f"{t['id']}  {t.get('priority', 'P2')}  {counts_cell(s['counts'])}"
        sys.stdout.write(f"{line}\n  {t['description'][:100]}\n")
        if s["agents"]:
            sys.stdout.write(indent(table(agent_rows(s["agents"]), AGENT_HEADERS)))
        sys.stdout.write("\n")
    return EXIT_OK


def cmd_tasks(args: argparse.Namespace, c: Client) -> int:
    tasks = c.call("task.list", state=args.state)
    if args.json:
        emit_json(tasks)
    else:
        rows = [[t["task"]["id"], t["task"]["state"], t["task"].get("priority", "P2"), counts_cell(t["counts"]),
                 t["task"]["description"][:60]] for t in tasks]
        sys.stdout.write(table(rows, ["TASK", "STATE", "PRI", "AGENTS", "DESCRIPTION"]))
    return EXIT_OK


def cmd_task_create(args: argparse.Namespace, c: Client) -> int:
    limits = {k: v for k, v in (("max_concurrent", args.max_concurrent), ("max_total", args.max_total),
                                ("max_depth", args.max_depth), ("max_cost_usd", args.max_cost)) if v is not None}
    context = {k: v for k, v in (("background", args.background), ("deliverables", args.deliverable),
                                 ("success_criteria", args.criterion), ("constraints", args.constraint),
                                 ("relevant_files", args.file)) if v}
    task = c.call("task.create", description=args.description, priority=args.priority,
                  cwd=str(Path(args.cwd).resolve()), context=context or None,
                  limits={**{"max_concurrent": 20, "max_total": 45, "max_depth": 5}, **limits} if limits else None)
    if args.json:
        emit_json(task)
    else:
        sys.stdout.write(f"{task['id']}\n")
    return EXIT_OK


def _cost_line(headroom: dict[str, Any]) -> str:
    if headroom.get("cost_left_usd") is not None:
        return f"; spent ${headroom['cost_usd']:.4f}, ${headroom['cost_left_usd']:.4f} of the budget left"
    return f"; spent ${headroom['cost_usd']:.4f}" if headroom.get("cost_usd") else ""


def cmd_task_show(args: argparse.Namespace, c: Client) -> int:
    status = c.call("task.get", task_id=args.task)
    if args.json:
        emit_json(status)
        return EXIT_OK
    t, h = status["task"], status["headroom"]
    sys.stdout.write(f"{t['id']}  {t['state']}  {t.get('priority', 'P2')}\n{t['description']}\n"
                     f"agents: {counts_cell(status['counts'])}; room for {h['concurrent_left']} more concurrent, "
                     f"{h['total_left']} more in total; max depth {h['max_depth']}"
                     f"{_cost_line(h)}\n\n")
    sys.stdout.write(table(agent_rows(status["agents"]), AGENT_HEADERS))
    for f in status["latest_findings"]:
        sys.stdout.write(f"finding #{f['seq']} [{f['severity']}] {f['type']}: {f['message'][:100]}\n")
    return EXIT_OK


def cmd_task_close(args: argparse.Namespace, c: Client) -> int:
    task = c.call("task.close", task_id=args.task)
    emit_json(task) if args.json else sys.stdout.write(f"{task['id']} closed\n")
    return EXIT_OK


def cmd_agents(args: argparse.Namespace, c: Client) -> int:
    agents = c.call("agent.list", task_id=args.task, state=args.state)
    if args.json:
        emit_json(agents)
    else:
        sys.stdout.write(table(agent_rows(agents), AGENT_HEADERS))
    return EXIT_OK


def cmd_show(args: argparse.Namespace, c: Client) -> int:
    agent = c.call("agent.get", agent_id=args.agent)
    if args.json:
        emit_json(agent)
        return EXIT_OK
    for key in ("id", "task_id", "type", "parent", "depth", "provider", "model", "state", "activity",
                "progress", "message", "kill_reason"):
        if agent.get(key) not in (None, ""):
            sys.stdout.write(f"{key:<12} {agent[key]}\n")
    sys.stdout.write(f"{'argv':<12} {' '.join(agent.get('argv', []))}\n")
    for key in ("created_at", "started_at", "ended_at", "updated_at"):
        if agent.get(key):
            sys.stdout.write(f"{key:<12} {datetime.fromtimestamp(agent[key]).isoformat(timespec='seconds')}\n")
    for key in ("exit", "tmux", "cleanup"):
        if agent.get(key):
            sys.stdout.write(f"{key:<12} {_json.encode(agent[key]).decode()}\n")
    return EXIT_OK


def cmd_progress(args: argparse.Namespace, c: Client) -> int:
    agent = c.call("agent.progress", agent_id=args.agent, message=args.message, percent=args.percent,
                   activity=args.activity)
    emit_json(agent) if args.json else None
    return EXIT_OK


def cmd_finding(args: argparse.Namespace, c: Client) -> int:
    data = msgspec.json.decode(args.data) if args.data else None
    finding = c.call("agent.finding", agent_id=args.agent, task_id=args.task, type=args.type,
                     severity=args.severity, message=args.message, data=data)
    emit_json(finding) if args.json else sys.stdout.write(f"finding #{finding['seq']}\n")
    return EXIT_OK


def cmd_findings(args: argparse.Namespace, c: Client) -> int:
    findings = c.call("findings.list", task_id=args.task, agent_id=args.agent, type=args.type,
                      severity=args.severity, since=args.since, limit=args.limit)
    if args.json:
        emit_json(findings)
    else:
        rows = [[f["seq"], f["severity"], f["type"], f.get("agent_id") or "", f["message"][:80]] for f in findings]
        sys.stdout.write(table(rows, ["SEQ", "SEVERITY", "TYPE", "AGENT", "MESSAGE"]))
    return EXIT_OK


def cmd_events(args: argparse.Namespace, c: Client) -> int:
    since = args.since if args.since is not None else 0
    if not args.follow:
        last = c.call("daemon.health")["last_seq"]
        if last <= since:
            return EXIT_OK
    for event in c.events(since=since, task_id=args.task, agent_id=args.agent):
        if args.json:
            emit_json(event)
        else:
            stamp = datetime.fromtimestamp(event["at"]).strftime("%H:%M:%S")
            what = event.get("state") or ""
            data = event.get("data") or {}
            detail = data.get("message") if isinstance(data, dict) else ""
            who = event.get("agent_id") or event["task_id"]
            sys.stdout.write(f"{event['seq']:>6} {stamp} {event['kind']:<12} {who} "
                             f"{what} {detail or ''}".rstrip() + "\n")
        sys.stdout.flush()
        if not args.follow and event["seq"] >= last:
            return EXIT_OK
    return EXIT_OK


def cmd_health(args: argparse.Namespace, c: Client) -> int:
    health = c.call("daemon.health")
    report = c.call("daemon.reconcile", dry_run=True)
    if args.json:
        emit_json({"daemon": health, "reconcile": report})
        return EXIT_OK
    g = health["counts"]
    sys.stdout.write(
        f"daemon    pid {health['pid']}, version {health['version']}, up {health['uptime']:.0f}s\n"
        f"state     {health['state_dir']} (events up to #{health['last_seq']}, {health['actor']['commits']} commits)\n"
        f"socket    {health['socket']} ({health.get('connections', '?')} connections)\n"
        f"tmux      {'healthy' if report['tmux_healthy'] else 'UNHEALTHY: ' + report['error']}, "
        f"{report['sessions']} sessions\n"
        f"registry  {g['active']} live agents, {g['completed']} completed, {g['failed']} failed, "
        f"{g['killed']} killed, {g['lost']} lost\n"
        f"drift     {len(report['ended'])} live without a session, {len(report['adopted'])} to adopt, "
        f"{len(report['orphans'])} orphan sessions, {len(report['killed_again'])} sessions of ended agents\n")
    return EXIT_OK


def cmd_repair(args: argparse.Namespace, c: Client) -> int:
    report = c.call("daemon.reconcile", dry_run=args.dry_run, kill_orphans=args.kill_orphans)
    if args.json:
        emit_json(report)
        return EXIT_OK
    verb = "would" if args.dry_run else "did"
    lines = [f"tmux: {'healthy' if report['tmux_healthy'] else 'UNHEALTHY: ' + report['error']}"]
    for key, label in (("ended", "mark ended (zombie: live without a session)"), ("adopted", "adopt session"),
                       ("killed_again", "kill session of an ended agent"), ("orphans", "orphan session (no record)"),
                       ("orphans_killed", "kill orphan session"), ("cleanups_retried", "retry cleanup")):
        for item in report[key]:
            lines.append(f"{verb} {label}: {item}" if key != "orphans" else f"{label}: {item}")
    if report["orphans"] and not args.kill_orphans:
        lines.append("(orphans are kept; pass --kill-orphans to kill them)")
    if len(lines) == 1:
        lines.append("nothing to repair")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace, c: Client) -> int:
    result = c.call("daemon.stop")
    emit_json(result) if args.json else sys.stdout.write("daemon stopping\n")
    return EXIT_OK


def cmd_spawn(args: argparse.Namespace, c: Client) -> int:
    prompt = args.prompt or ""
    if args.prompt_file:
        prompt = sys.stdin.read() if args.prompt_file == "-" else Path(args.prompt_file).read_text()
    argv = list(args.argv or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    agent = c.call("agent.spawn", task_id=args.task, type=args.type, provider=args.provider, model=args.model,
                   prompt=prompt, parent=args.parent, cwd=str(Path(args.cwd).resolve()) if args.cwd else None,
                   argv=argv, timeout=args.timeout, queue=args.queue)
    if args.json:
        emit_json(agent)
    else:
        sys.stdout.write(f"{agent['id']}\n" if agent["state"] != "queued" else f"{agent['id']} queued\n")
    return EXIT_OK


def cmd_kill(args: argparse.Namespace, c: Client) -> int:
    agent = c.call("agent.kill", agent_id=args.agent, reason=args.reason, tree=args.tree)
    emit_json(agent) if args.json else sys.stdout.write(f"{agent['id']} {agent['state']}\n")
    return EXIT_OK


def cmd_wait(args: argparse.Namespace, c: Client) -> int:
    result = c.call("agent.wait", agent_ids=args.agents, any=args.any, timeout=args.timeout)
    if args.json:
        emit_json(result)
    else:
        for a in result["agents"]:
            exit = a.get("exit") or {}
            sys.stdout.write(f"{a['agent_id']} {a['state']} code={exit.get('code')} signal={exit.get('signal')}\n")
    if not result["done"]:
        return EXIT_TIMEOUT
    ended = [a for a in result["agents"] if a["state"] not in ("queued", "starting", "running", "stopping")]
    relevant = ended if args.any else result["agents"]
    return EXIT_OK if relevant and all(a["state"] == "completed" for a in relevant) else EXIT_AGENT_FAILED


def cmd_logs(args: argparse.Namespace, c: Client) -> int:
    result = c.call("agent.output", agent_id=args.agent, tail=args.tail, format=args.format, regex=args.regex,
                    max_bytes=args.max_bytes)
    if args.json and not args.follow:
        emit_json(result)
        return EXIT_OK
    sys.stdout.write(result["output"])
    if result.get("note"):
        sys.stderr.write(f"({result['note']})\n")
    offset = result["offset"]
    while args.follow:
        agent = c.call("agent.get", agent_id=args.agent)
        chunk = c.call("agent.output", agent_id=args.agent, offset=offset, format=args.format)
        sys.stdout.write(chunk["output"])
        sys.stdout.flush()
        offset = chunk["offset"]
        if agent["state"] not in ("queued", "starting", "running", "stopping") and not chunk["output"]:
            break
        if not chunk["output"]:
            c.call("agent.wait", agent_ids=[args.agent], timeout=0.5)
    return EXIT_OK


def _tmux_socket(c: Client) -> str:
    return str(Path(c.call("daemon.health")["socket"]).with_name("tmux.sock"))


def cmd_peek(args: argparse.Namespace, c: Client) -> int:
    """The agent's pane as it is on screen, read straight from tmux with libtmux."""
    import libtmux  # only this verb needs it; synchronous code is natural here

    agent = c.call("agent.get", agent_id=args.agent)
    if not agent.get("tmux") or agent["state"] not in ("running", "stopping"):
        raise InvalidParams(f"agent {args.agent} has no live session ({agent['state']})")
    server = libtmux.Server(socket_path=_tmux_socket(c))
    pane = server.panes.get(pane_id=agent["tmux"]["pane_id"], default=None)
    if pane is None:
        raise NotFound(f"agent {args.agent}'s pane {agent['tmux']['pane_id']} is gone")
    lines = pane.capture_pane(start=-args.lines if args.lines else None)
    text = "\n".join(lines) + "\n"
    emit_json({"agent_id": args.agent, "screen": text}) if args.json else sys.stdout.write(text)
    return EXIT_OK


def cmd_attach(args: argparse.Namespace, c: Client) -> int:
    agent = c.call("agent.get", agent_id=args.agent)
    if not agent.get("tmux") or agent["state"] not in ("running", "stopping"):
        raise InvalidParams(f"agent {args.agent} has no live session ({agent['state']})")
    argv = ["tmux", "-S", _tmux_socket(c), "attach-session", "-t", agent["tmux"]["session_id"]]
    os.execvp("tmux", argv)  # noqa: S606 - agentctl becomes tmux; an argv, no shell


# --- parser ---------------------------------------------------------------------------


def cmd_service(args: argparse.Namespace) -> int:
    """Write, remove or check the service-manager files (no daemon connection needed)."""
    platform = args.platform or service_files.current_platform()
    socket_path = args.socket or str(socket_path_from_env())
    plan = service_files.plan(platform, home=Path.home(), executable=args.executable or
                              service_files.daemon_executable(), socket_path=socket_path)
    report: dict[str, Any] = {"platform": platform, "action": args.action, "dry_run": args.dry_run, "files": []}
    for f in plan.files:
        current = f.path.read_bytes() if f.path.exists() else None
        state = "missing" if current is None else ("installed" if current == f.content else "differs")
        report["files"].append({"path": str(f.path), "state": state, "content": f.content.decode()})
    if args.action == "install":
        report["next"] = plan.after_install
        if not args.dry_run:
            for f in plan.files:
                f.path.parent.mkdir(parents=True, exist_ok=True)
                f.path.write_bytes(f.content)
    elif args.action == "uninstall":
        report["run_first"] = plan.before_uninstall
        if not args.dry_run:
            for f in plan.files:
                f.path.unlink(missing_ok=True)
    if args.json:
        emit_json(report)
        return EXIT_OK
    out = sys.stdout
    for f in report["files"]:
        if args.action == "install" and args.dry_run:
            out.write(f"# {f['path']}\n{f['content']}\n")
        elif args.action == "install":
            out.write(f"wrote {f['path']}\n")
        elif args.action == "uninstall":
            verb = "would remove" if args.dry_run else "removed"
            out.write(f"{verb} {f['path']}\n" if f["state"] != "missing" else f"not installed: {f['path']}\n")
        else:
            out.write(f"{f['state']:<9} {f['path']}\n")
    if args.action == "install":
        out.write("\nNext, run:\n" + "".join(f"  {cmd}\n" for cmd in plan.after_install))
    elif args.action == "uninstall":
        out.write("\nStop the service first (before the files go), with:\n"
                  + "".join(f"  {cmd}\n" for cmd in plan.before_uninstall))
    elif any(f["state"] != "installed" for f in report["files"]):
        out.write("\nRun `agentctl service install` to write them.\n")
        return EXIT_NOT_FOUND
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted before and after the verb. After it they default
    # to SUPPRESS, so that a verb's parser never overwrites a value given before the verb.
    def global_options(p: argparse.ArgumentParser, after_verb: bool) -> argparse.ArgumentParser:
        def default(value: Any) -> Any:
            return argparse.SUPPRESS if after_verb else value

        p.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
        p.add_argument("--socket", default=default(None),
                       help="the daemon's socket (default: $SUPERVISORD_AGENTS_SOCKET or the runtime dir)")
        p.add_argument("--wait", type=float, default=default(0.0), metavar="SECONDS",
                       help="if the daemon is not up yet, keep trying to connect for this long")
        return p

    common = global_options(argparse.ArgumentParser(add_help=False), after_verb=True)
    parser = global_options(
        argparse.ArgumentParser(prog="agentctl", description="Control the supervisord-agents daemon."),
        after_verb=False,
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Verb, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    verb("status", cmd_status, "open tasks and their agents, with counts")
    p = verb("tasks", cmd_tasks, "list tasks")
    p.add_argument("--state", choices=["open", "closed"])
    task = sub.add_parser("task", help="create, show or close a task", parents=[common])
    task_sub = task.add_subparsers(dest="task_verb", required=True, metavar="ACTION")
    p = task_sub.add_parser("create", help="create a task", parents=[common])
    p.set_defaults(func=cmd_task_create)
    p.add_argument("description")
    p.add_argument("--priority", default="P2", choices=["P0", "P1", "P2", "P3"])
    p.add_argument("--cwd", default=".", help="working directory for the task's agents (default: here)")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--max-total", type=int)
    p.add_argument("--max-depth", type=int)
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="a budget: no more spawns once the task's ended agents cost this much")
    p.add_argument("--background")
    p.add_argument("--deliverable", action="append")
    p.add_argument("--criterion", action="append", help="a success criterion")
    p.add_argument("--constraint", action="append")
    p.add_argument("--file", action="append", help="a relevant file")
    p = task_sub.add_parser("show", help="one task's status", parents=[common])
    p.set_defaults(func=cmd_task_show)
    p.add_argument("task")
    p = task_sub.add_parser("close", help="close a task to new agents", parents=[common])
    p.set_defaults(func=cmd_task_close)
    p.add_argument("task")
    p = verb("agents", cmd_agents, "list agents")
    p.add_argument("--task")
    p.add_argument("--state", choices=["queued", "starting", "running", "stopping", "completed", "failed",
                                       "killed", "lost"])
    p = verb("show", cmd_show, "one agent in detail")
    p.add_argument("agent")
    p = verb("progress", cmd_progress, "report progress (inside an agent: for itself)")
    p.add_argument("message")
    p.add_argument("--percent", type=int)
    p.add_argument("--activity")
    p.add_argument("--agent", help="the agent (default: the calling agent)")
    p = verb("finding", cmd_finding, "report a finding (inside an agent: for itself)")
    p.add_argument("message")
    p.add_argument("--type", default="note")
    p.add_argument("--severity", default="info", choices=["info", "low", "medium", "high", "critical"])
    p.add_argument("--data", help="a JSON object")
    p.add_argument("--agent")
    p.add_argument("--task")
    p = verb("findings", cmd_findings, "list findings")
    p.add_argument("--task")
    p.add_argument("--agent")
    p.add_argument("--type")
    p.add_argument("--severity", choices=["info", "low", "medium", "high", "critical"])
    p.add_argument("--since", type=int, default=0, help="only findings after this sequence number")
    p.add_argument("--limit", type=int, default=100)
    p = verb("events", cmd_events, "the event log (replay, then --follow for live)")
    p.add_argument("--since", type=int)
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--task")
    p.add_argument("--agent")
    verb("health", cmd_health, "daemon health, and the registry against tmux")
    p = verb("repair", cmd_repair, "reconcile the registry with tmux now")
    p.add_argument("--dry-run", action="store_true", help="show what would be done")
    p.add_argument("--kill-orphans", action="store_true", help="also kill sessions that have no agent record")
    verb("stop", cmd_stop, "stop the daemon (agents keep running)")
    p = verb("spawn", cmd_spawn, "start an agent")
    p.add_argument("--task")
    p.add_argument("--type", required=True)
    p.add_argument("--provider", default="command")
    p.add_argument("--model")
    p.add_argument("--parent")
    p.add_argument("--cwd")
    p.add_argument("--timeout", type=float, help="kill the agent after this many seconds (from its start)")
    p.add_argument("--queue", action="store_true",
                   help="over a concurrency limit, wait as 'queued' for a free slot instead of failing")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt")
    group.add_argument("--prompt-file", help="a file with the prompt, or - for stdin")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command to run (provider 'command')")
    p = verb("kill", cmd_kill, "stop an agent")
    p.add_argument("agent")
    p.add_argument("--tree", action="store_true", help="also its descendants")
    p.add_argument("--reason", default="killed with agentctl")
    p = verb("wait", cmd_wait, "wait for agents to end (exit 0 if all completed)")
    p.add_argument("agents", nargs="+")
    p.add_argument("--any", action="store_true")
    p.add_argument("--timeout", type=float)
    p = verb("logs", cmd_logs, "an agent's output")
    p.add_argument("agent")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--tail", type=int)
    p.add_argument("--regex")
    p.add_argument("--format", default="text", choices=["text", "jsonl", "summary"])
    p.add_argument("--max-bytes", type=int, default=1 << 20)
    p = verb("peek", cmd_peek, "the agent's screen")
    p.add_argument("agent")
    p.add_argument("--lines", type=int, default=0)
    p = verb("attach", cmd_attach, "attach your terminal to the agent's tmux session")
    p.add_argument("agent")
    p = sub.add_parser("service", parents=[common], help="install, remove or check the systemd/launchd files",
                       description="Write (install), remove (uninstall) or check (status) the user service files "
                                   "that run the daemon under systemd (Linux) or launchd (macOS).")
    p.set_defaults(local=cmd_service)
    p.add_argument("action", choices=["install", "uninstall", "status"])
    p.add_argument("--dry-run", action="store_true", help="print what would be written or removed")
    p.add_argument("--platform", choices=["linux", "darwin"], help="default: this machine's")
    p.add_argument("--executable", help="the daemon to run (default: the installed supervisord-agents)")
    return parser


def connect(socket_path: str | None, wait: float) -> Client:
    """Connect, retrying for up to ``wait`` seconds while the daemon starts."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return Client(socket_path, client="agentctl")
        except DaemonNotRunning:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "local", None) is not None:
            local: int = args.local(args)
            return local
        with connect(args.socket, args.wait) as client:
            code: int = args.func(args, client)
            return code
    except SupervisorError as e:
        sys.stderr.write(f"agentctl: {e.message}\n")
        return exit_code_for(e)
    except (OSError, msgspec.DecodeError) as e:
        sys.stderr.write(f"agentctl: {e}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
