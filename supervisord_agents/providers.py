"""Providers: how each kind of agent is started, and the prompt it receives.

A provider turns a spawn request into an argv list (never a shell string) from the
configured executable and default flags. The prompt an agent receives is the caller's
prompt plus the agent's identity, how to report back, and the task's context.
"""

from __future__ import annotations

from .config import Provider
from .errors import InvalidParams
from .model import Agent, Task


def build_argv(name: str, provider: Provider, *, model: str | None, extra: list[str],
               mcp_config: str | None = None) -> list[str]:
    """The agent's argv. ``extra`` is the whole argv for ``command``, extra flags otherwise."""
    argv = [*provider.argv]
    if model is not None:
        if not provider.model_flag:
            raise InvalidParams(f"provider {name!r} takes no model")
        argv += [*provider.model_flag, model]
    if mcp_config is not None and provider.mcp_config_flag:
        argv += [*provider.mcp_config_flag, mcp_config]
    argv += extra
    if not argv:
        raise InvalidParams(f"provider {name!r} needs an argv (pass the command to run)")
    return argv


def compose_prompt(prompt: str, agent: Agent, task: Task) -> str:
    """The caller's prompt plus identity, reporting instructions and task context."""
    parts = [prompt.rstrip("\n"), "", "---", "## Your identity", ""]
    parts += [
        f"- agent id: {agent.id}",
        f"- type: {agent.type}",
        f"- task: {task.id} ({task.description})",
        f"- parent: {agent.parent or 'orchestrator'}; depth {agent.depth} of at most {task.limits.max_depth}",
        "",
        "## Reporting",
        "",
        "Your identity is in your environment, so these commands need no ids:",
        "",
        '- progress: `agentctl progress "what you are doing" --percent 40 [--activity working]`',
        '- a finding: `agentctl finding "what you found" --type issue --severity high`',
        "- or the MCP tools `report_progress` and `report_finding` where the supervisor's MCP server is configured.",
        "",
        "Report when you start, every few minutes, and when you finish. Exit when your work is done:",
        "your exit status is how the supervisor knows you completed.",
    ]
    ctx = task.context
    sections = [
        ("Background", [ctx.background] if ctx.background else []),
        ("Deliverables", ctx.deliverables),
        ("Success criteria", ctx.success_criteria),
        ("Constraints", ctx.constraints),
        ("Relevant files", ctx.relevant_files),
    ]
    if any(items for _, items in sections):
        parts += ["", "## Task context"]
        for title, items in sections:
            if items:
                parts += ["", f"### {title}", ""] + [f"- {item}" for item in items]
    return "\n".join(parts) + "\n"
