"""agentctl's command line: every verb, its arguments and the function that runs it.

A verb that talks to the daemon sets ``func`` (a :data:`.verbs.Verb`); one that works
locally sets ``local``. The choices of states, severities, priorities and formats are
the values of the model's and the protocol's enums, so the CLI accepts exactly what the
daemon does.
"""

from __future__ import annotations

import argparse
from enum import StrEnum
from typing import Any

from supervisord_agents.digest import check_selector
from supervisord_agents.errors import InvalidParams
from supervisord_agents.model import AgentState, OnRateLimit, OnStall, Priority, Restart, Severity, TaskState
from supervisord_agents.protocol import OutputFormat

from . import verbs
from .client import Client
from .service_verb import Action, cmd_service


def env_item(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (for ``--env``)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def selector(text: str) -> str:
    """An event selector (for ``events --kind``): a kind, ``agent:<state>`` or ``*``."""
    try:
        return check_selector(text)
    except InvalidParams as e:
        raise argparse.ArgumentTypeError(e.message) from None


def top(args: argparse.Namespace, c: Client) -> None:
    """``agentctl top``, imported when it runs: its terminal UI library (urwid, the ``top``
    extra) costs the other verbs nothing, and its absence only this one."""
    from .top import cmd_top

    cmd_top(args, c)


def values(enum: type[StrEnum]) -> list[str]:
    """The values of a StrEnum, for argparse's ``choices``."""
    return [member.value for member in enum]


def _global_options(p: argparse.ArgumentParser, *, after_verb: bool) -> argparse.ArgumentParser:
    # The global options are accepted before and after the verb. After it they default
    # to SUPPRESS, so that a verb's parser never overwrites a value given before the verb.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_verb else value

    p.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    p.add_argument("--socket", default=default(None),
                   help="the daemon's socket (default: $SUPERVISORD_AGENTS_SOCKET or the runtime dir)")
    p.add_argument("--wait", type=float, default=default(0.0), metavar="SECONDS",
                   help="if the daemon is not up yet, keep trying to connect for this long")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(argparse.ArgumentParser(add_help=False), after_verb=True)
    parser = _global_options(
        argparse.ArgumentParser(prog="agentctl", description="Control the supervisord-agents daemon."),
        after_verb=False,
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: verbs.Verb, help: str, within: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = within.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    verb("status", verbs.cmd_status, "open tasks and their agents, with counts")
    p = verb("tasks", verbs.cmd_tasks, "list tasks")
    p.add_argument("--state", choices=values(TaskState))

    task = sub.add_parser("task", help="create, show or close a task", parents=[common])
    task_sub = task.add_subparsers(dest="task_verb", required=True, metavar="ACTION")
    p = verb("create", verbs.cmd_task_create, "create a task", task_sub)
    p.add_argument("description")
    p.add_argument("--priority", default=Priority.P2, choices=values(Priority))
    p.add_argument("--cwd", default=".", help="working directory for the task's agents (default: here)")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--max-total", type=int)
    p.add_argument("--max-depth", type=int)
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="a budget: no more spawns once the task's ended agents cost this much")
    p.add_argument("--agent-max-turns", type=int, help="stop an agent at this many turns (over all its attempts)")
    p.add_argument("--agent-max-cost", type=float, metavar="USD", help="stop an agent once it has cost this much")
    p.add_argument("--max-wall", type=float, metavar="SECONDS",
                   help="stop the task's agents this long after it was created")
    p.add_argument("--warn-at", type=float, metavar="FRACTION",
                   help="record a 'limit' warning event at this fraction of a turn or cost limit (default 0.8)")
    p.add_argument("--background")
    p.add_argument("--deliverable", action="append")
    p.add_argument("--criterion", action="append", help="a success criterion")
    p.add_argument("--constraint", action="append")
    p.add_argument("--file", action="append", help="a relevant file")
    p.add_argument("--on-rate-limit", choices=values(OnRateLimit),
                   help="a rate-limited agent sleeps until the provider's reset, then resumes (default), or fails")
    p.add_argument("--restart", choices=values(Restart),
                   help="retry an agent after a transient failure (API error, crash), with back-off (default: never)")
    p.add_argument("--max-attempts", type=int, help="attempts in all, for --restart on-failure (default 3)")
    p.add_argument("--backoff", type=float, metavar="SECONDS", help="before the 2nd attempt, doubling (default 10)")
    p.add_argument("--stall-after", type=float, metavar="SECONDS",
                   help="flag an agent 'stalled' after this long without output or progress (default: never)")
    p.add_argument("--on-stall", choices=values(OnStall), help="then: nothing more (default), kill, or restart it")
    p = verb("show", verbs.cmd_task_show, "one task's status", task_sub)
    p.add_argument("task")
    p = verb("close", verbs.cmd_task_close, "close a task to new agents", task_sub)
    p.add_argument("task")
    p = verb("purge", verbs.cmd_task_purge,
             "delete a closed task's history: its agents, findings, events, logs and archives", task_sub)
    p.add_argument("task")

    p = verb("agents", verbs.cmd_agents, "list agents")
    p.add_argument("--task")
    p.add_argument("--state", choices=values(AgentState))
    p = verb("show", verbs.cmd_show, "one agent in detail")
    p.add_argument("agent")
    p = verb("progress", verbs.cmd_progress, "report progress (inside an agent: for itself)")
    p.add_argument("message")
    p.add_argument("--percent", type=int)
    p.add_argument("--activity")
    p.add_argument("--agent", help="the agent (default: the calling agent)")
    p = verb("finding", verbs.cmd_finding, "report a finding (inside an agent: for itself)")
    p.add_argument("message")
    p.add_argument("--type", default="note")
    p.add_argument("--severity", default=Severity.INFO, choices=values(Severity))
    p.add_argument("--data", help="a JSON object")
    p.add_argument("--agent")
    p.add_argument("--task")
    p = verb("findings", verbs.cmd_findings, "list findings")
    p.add_argument("--task")
    p.add_argument("--agent")
    p.add_argument("--type")
    p.add_argument("--severity", choices=values(Severity))
    p.add_argument("--since", type=int, default=0, help="only findings after this sequence number")
    p.add_argument("--limit", type=int, help="at most this many (default: all, read a page at a time)")
    p = verb("events", verbs.cmd_events, "the event log, one line per event (replay, then --follow for live)")
    p.add_argument("--since", type=int, help="only events after this sequence number (default: all)")
    p.add_argument("--follow", "-f", action="store_true", help="then go on with live events")
    p.add_argument("--task", help="only this task's events")
    p.add_argument("--agent", help="only this agent's events")
    p.add_argument("--kind", action="append", type=selector, metavar="KIND",
                   help="only events of this kind (repeatable): a kind such as finding, agent_state, progress, "
                        "task_closed, daemon_downtime, or agent:<state> such as agent:failed")

    verb("health", verbs.cmd_health, "daemon health, and the registry against tmux")
    p = verb("repair", verbs.cmd_repair, "reconcile the registry with tmux now")
    p.add_argument("--dry-run", action="store_true", help="show what would be done")
    p.add_argument("--kill-orphans", action="store_true", help="also kill sessions that have no agent record")
    verb("stop", verbs.cmd_stop, "stop the daemon (agents keep running)")

    p = verb("spawn", verbs.cmd_spawn, "start an agent")
    p.add_argument("--task")
    p.add_argument("--type", required=True)
    p.add_argument("--provider", default="command")
    p.add_argument("--model")
    p.add_argument("--parent")
    p.add_argument("--cwd")
    p.add_argument("--timeout", type=float,
                   help="kill the agent after this many seconds (default: the provider's, 3600 for the agent CLIs)")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", type=env_item, default=[],
                   help="set a variable in the agent's environment (repeatable)")
    p.add_argument("--queue", action="store_true",
                   help="over a concurrency limit, wait as 'queued' for a free slot instead of failing")
    p.add_argument("--resume", metavar="SESSION_ID",
                   help="continue this provider conversation (an ended agent's session id) instead of a new one")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt")
    group.add_argument("--prompt-file", help="a file with the prompt, or - for stdin")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command to run (provider 'command')")
    p = verb("kill", verbs.cmd_kill, "stop an agent")
    p.add_argument("agent")
    p.add_argument("--tree", action="store_true", help="also its descendants")
    p.add_argument("--reason", default="killed with agentctl")
    p = verb("approvals", verbs.cmd_approvals, "permission requests of agents waiting for your answer")
    p.add_argument("--task")
    p = verb("approve", verbs.cmd_approve, "allow a waiting permission request")
    p.add_argument("approval", help="its id (AP-...), from agentctl approvals")
    p.add_argument("--always-for-tool", action="store_true", help="and allow the agent this tool from now on")
    p = verb("deny", verbs.cmd_deny, "deny a waiting permission request")
    p.add_argument("approval", help="its id (AP-...), from agentctl approvals")
    p.add_argument("--message", default="", help="told to the agent")
    p = verb("wake", verbs.cmd_wake, "start a sleeping agent's next attempt now")
    p.add_argument("agent")
    p = verb("wait", verbs.cmd_wait, "wait for agents to end (exit 0 if all completed)")
    p.add_argument("agents", nargs="+")
    p.add_argument("--any", action="store_true")
    p.add_argument("--timeout", type=float)
    p = verb("logs", verbs.cmd_logs, "an agent's output")
    p.add_argument("agent")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--tail", type=int)
    p.add_argument("--regex")
    p.add_argument("--format", default=OutputFormat.TEXT, choices=values(OutputFormat))
    p.add_argument("--max-bytes", type=int, default=1 << 20)
    p.add_argument("--raw", action="store_true",
                   help="write the output as the agent wrote it, escape sequences and all (they drive your terminal)")
    p = verb("peek", verbs.cmd_peek, "the agent's screen")
    p.add_argument("agent")
    p.add_argument("--lines", type=int, default=0, help="also this many lines of history")
    p = verb("attach", verbs.cmd_attach, "attach your terminal to the agent's tmux session")
    p.add_argument("agent")
    p = verb("top", top, "a live full-screen view of tasks and agents: kill, logs, peek, filter "
                         "(needs the 'top' extra)")
    p.add_argument("--task", help="only this task")

    p = verb("doctor", verbs.cmd_doctor, "check that each provider's agents can run and report")
    p.add_argument("providers", nargs="*", help="only these (default: every configured one)")

    p = sub.add_parser("backup", parents=[common], help="copy the daemon's database, consistently, while it runs",
                       description="Copy the daemon's SQLite database to PATH with SQLite's backup API (a read-only "
                                   "snapshot: the daemon keeps writing), check the copy, and say what it holds.")
    p.set_defaults(local=verbs.cmd_backup)
    p.add_argument("path", help="the file to write")
    p.add_argument("--force", action="store_true", help="replace PATH if it exists")
    p.add_argument("--database", help="the database to copy (default: the one the daemon's config names)")

    p = sub.add_parser("service", parents=[common], help="install, remove or check the systemd/launchd files",
                       description="Write (install), remove (uninstall) or check (status) the user service files "
                                   "that run the daemon under systemd (Linux) or launchd (macOS).")
    p.set_defaults(local=cmd_service)
    p.add_argument("action", choices=values(Action))
    p.add_argument("--dry-run", action="store_true", help="print what would be written or removed")
    p.add_argument("--platform", choices=["linux", "darwin"], help="default: this machine's")
    p.add_argument("--executable", help="the daemon to run (default: the installed supervisord-agents)")
    return parser
