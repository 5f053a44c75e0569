"""Providers: how each kind of agent is started, and the prompt it receives.

A provider turns a spawn request into an argv list (never a shell string) from the
configured executable and default flags, gives the agent the supervisor's MCP server in a
way of the provider's own (:class:`~.config.McpStyle`, in a file of the agent's own,
never the user's global settings), and composes the agent's environment: the daemon's
*current* environment, filtered, then the provider's and the spawn's variables, then the
agent's identity. The prompt an agent receives is the caller's prompt plus the agent's
identity, how to report back, and the task's context.

Pure: the caller writes the files and starts the process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .config import MCP_SERVER, REPORT_TOOLS, AgentEnv, McpStyle, Provider
from .errors import InvalidParams
from .model import Agent, Task
from .protocol import ENV_AGENT_ID, ENV_SOCKET, ENV_TASK_ID, ENV_TOKEN

#: What the shim needs of the agent's environment to reach the daemon as that agent.
IDENTITY_VARS = (ENV_SOCKET, ENV_AGENT_ID, ENV_TASK_ID, ENV_TOKEN)
GEMINI_SETTINGS_ENV = "GEMINI_CLI_SYSTEM_SETTINGS_PATH"


def build_argv(name: str, provider: Provider, *, model: str | None, extra: list[str],
               mcp_file: Path | None = None, shim: str | None = None) -> list[str]:
    """The agent's argv. ``extra`` is the whole argv for ``command``, extra flags otherwise.
    With ``shim``, the agent is given the supervisor's MCP server (``mcp_file`` is where
    :func:`mcp_file_content` is written, for the styles that read a file)."""
    argv = [*provider.argv]
    if model is not None:
        if not provider.model_flag:
            raise InvalidParams(f"provider {name!r} takes no model")
        argv += [*provider.model_flag, model]
    if shim is not None:
        argv += _mcp_argv(provider.mcp, shim, mcp_file)
    argv += extra
    if not argv:
        raise InvalidParams(f"provider {name!r} needs an argv (pass the command to run)")
    return argv


def _mcp_argv(style: McpStyle, shim: str, mcp_file: Path | None) -> list[str]:
    if style is McpStyle.CLAUDE and mcp_file is not None:
        return ["--mcp-config", str(mcp_file)]
    if style is McpStyle.CODEX:
        # Codex starts MCP servers with a few variables of its own; ``env_vars`` names what
        # it passes through from the agent's environment (the identity: no secret in argv).
        server = f"mcp_servers.{MCP_SERVER}"
        return ["-c", f"{server}.command={json.dumps(shim)}",
                "-c", f"{server}.env_vars={json.dumps(list(IDENTITY_VARS))}",
                "-c", f"{server}.enabled_tools={json.dumps(list(REPORT_TOOLS))}"]
    return []


def mcp_file_content(style: McpStyle, shim: str, identity: Mapping[str, str]) -> bytes | None:
    """The per-agent file that names the shim, for the styles that read one, with the
    agent's identity for the shim (a CLI need not pass its own environment on)."""
    server = {"command": shim, "args": [], "env": dict(identity)}
    if style is McpStyle.CLAUDE:
        return json.dumps({"mcpServers": {MCP_SERVER: {"type": "stdio", **server}}}).encode()
    if style is McpStyle.GEMINI:
        settings = {"mcpServers": {MCP_SERVER: {**server, "trust": True, "includeTools": list(REPORT_TOOLS)}}}
        return json.dumps(settings).encode()
    return None


def provider_env(provider: Provider, spawn_env: Mapping[str, str], mcp_file: Path | None) -> dict[str, str]:
    """What a spawn adds to the daemon's environment: the provider's variables, the
    spawn's, and where a Gemini agent finds its settings."""
    env = {**provider.env, **spawn_env}
    if provider.mcp is McpStyle.GEMINI and mcp_file is not None:
        env[GEMINI_SETTINGS_ENV] = str(mcp_file)
    return env


def agent_environment(environ: Mapping[str, str], agent_env: AgentEnv, added: Mapping[str, str],
                      identity: Mapping[str, str], *, tools_dir: str) -> dict[str, str]:
    """The agent's whole environment, composed at its start (see the module doc)."""
    env = agent_env.filter(environ)
    env.update(added)
    env.update(identity)
    # This installation's scripts (agentctl, the MCP shim) come first on its PATH.
    env["PATH"] = f"{tools_dir}:{env.get('PATH') or '/usr/local/bin:/usr/bin:/bin'}"
    return env


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
