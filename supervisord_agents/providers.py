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
from typing import Any, NamedTuple

from .config import MCP_SERVER, REPORT_TOOLS, AgentEnv, McpStyle, Provider
from .errors import InvalidParams
from .model import Agent, Task
from .protocol import ENV_AGENT_ID, ENV_SOCKET, ENV_TASK_ID, ENV_TOKEN

#: The shim's tool that claude asks for permission (``--permission-prompt-tool``).
APPROVAL_TOOL = "approve_tool_use"
#: How long claude waits for that tool (ms): longer than any approval timeout a policy may set (7 days).
APPROVAL_WAIT_MS = 8 * 86400 * 1000
#: claude's timeouts for an MCP tool call: its whole length, and its silence.
CLAUDE_WAITS = ("MCP_TOOL_TIMEOUT", "CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT")

#: What the shim needs of the agent's environment to reach the daemon as that agent.
IDENTITY_VARS = (ENV_SOCKET, ENV_AGENT_ID, ENV_TASK_ID, ENV_TOKEN)
GEMINI_HOME_ENV = "GEMINI_CLI_HOME"


def build_argv(name: str, provider: Provider, *, model: str | None, extra: list[str],
               mcp_file: Path | None = None, shim: str | None = None, resume: bool = False) -> list[str]:
    """The agent's argv. ``extra`` is the whole argv for ``command``, extra flags otherwise.
    With ``shim``, the agent is given the supervisor's MCP server (``mcp_file`` is where
    :func:`mcp_file_content` is written, for claude). With ``resume``, the argv that continues
    a conversation, ``{session_id}`` where its id goes (``[]`` if the provider has none)."""
    if resume and not provider.resume:
        return []
    argv = [*provider.argv]
    if model is not None:
        if not provider.model_flag:
            raise InvalidParams(f"provider {name!r} takes no model")
        argv += [*provider.model_flag, model]
    if shim is not None:
        argv += _mcp_argv(provider.mcp, shim, mcp_file)
        if provider.approvals and provider.mcp is McpStyle.CLAUDE:
            argv += ["--permission-prompt-tool", f"mcp__{MCP_SERVER}__{APPROVAL_TOOL}"]
    argv += [*extra, *(provider.resume if resume else []), *provider.prompt_from_stdin]
    if not argv:
        raise InvalidParams(f"provider {name!r} needs an argv (pass the command to run)")
    return argv


def _mcp_argv(style: McpStyle, shim: str, mcp_file: Path | None) -> list[str]:
    if style is McpStyle.CLAUDE and mcp_file is not None:
        return ["--mcp-config", str(mcp_file)]
    if style is McpStyle.CODEX:
        # Codex starts MCP servers with a few variables of its own; ``env_vars`` names what
        # it passes through from the agent's environment (the identity: no secret in argv).
        # ``required``: the first request waits for the tools; the two report tools are the
        # only ones offered, approved by name (with approval_policy "never", nothing else can).
        server = f"mcp_servers.{MCP_SERVER}"
        argv = ["-c", f"{server}.command={json.dumps(shim)}",
                "-c", f"{server}.env_vars={json.dumps(list(IDENTITY_VARS))}",
                "-c", f"{server}.required=true",
                "-c", f"{server}.enabled_tools={json.dumps(list(REPORT_TOOLS))}"]
        for tool in REPORT_TOOLS:
            argv += ["-c", f'{server}.tools.{tool}.approval_mode="approve"']
        return argv
    return []


def mcp_file_content(style: McpStyle, shim: str, identity: Mapping[str, str]) -> bytes | None:
    """Claude's ``--mcp-config`` file, naming the shim with the agent's identity (a CLI need
    not pass its own environment on to its MCP servers)."""
    if style is not McpStyle.CLAUDE:
        return None
    server = {"type": "stdio", "command": shim, "args": [], "env": dict(identity)}
    return json.dumps({"mcpServers": {MCP_SERVER: server}}).encode()


class CliHome(NamedTuple):
    """A configuration home of the agent's own for its CLI: what to write there, what to
    link from the user's own home (their login), and the variable that points the CLI at it."""

    env: dict[str, str]
    files: dict[str, bytes]  # path relative to the home -> content (written 0600)
    links: list[str]  # paths relative to the user's home, linked at the same place when they exist


#: A Gemini agent may run these shell commands and no other (its policy engine matches the
#: prefix and refuses chains, substitutions and redirections).
GEMINI_SHELL_POLICY = """\
# Written by supervisord-agents for one agent: the shell commands that report, and no other.
[[rule]]
toolName = "run_shell_command"
commandPrefix = ["agentctl progress", "agentctl finding"]
decision = "allow"
priority = 100
"""
#: The user's own settings file of a CLI that gets a home of the agent's own, relative to
#: the user's home: what :func:`cli_home` carries over from it.
USER_SETTINGS = {McpStyle.GEMINI: ".gemini/settings.json"}
GEMINI_LOGIN = (".gemini/oauth_creds.json", ".gemini/google_accounts.json", ".gemini/gemini-credentials.json",
                ".gemini/.env")


#: In the sandbox, where the user's home is read-only, claude and codex get a config folder of
#: the agent's own, which they can write, and which links these of the user's (the login, and
#: the settings claude's ``--setting-sources user`` reads; read-only inside the sandbox).
SANDBOX_HOMES = {
    McpStyle.CLAUDE: ("CLAUDE_CONFIG_DIR", ".claude", (".credentials.json", "settings.json")),
    McpStyle.CODEX: ("CODEX_HOME", ".codex", ("auth.json", "config.toml")),
}


def cli_home(style: McpStyle, home: Path, shim: str | None, identity: Mapping[str, str],
             user_settings: Mapping[str, Any], *, sandboxed: bool = False) -> CliHome | None:
    """The agent's own CLI home for ``style`` (None: the CLI uses the user's as it is).
    ``user_settings`` is the user's own settings file of that CLI, parsed (or empty).

    Claude and codex get one only in the sandbox (:data:`SANDBOX_HOMES`): without a config
    folder it can write, codex does not start, and claude's Bash tool runs in a login shell
    that resets PATH, so the agent's shell no longer finds ``agentctl``."""
    if sandboxed and style in SANDBOX_HOMES:
        variable, folder, login = SANDBOX_HOMES[style]
        return CliHome(env={variable: str(home / folder)}, files={}, links=[f"{folder}/{name}" for name in login])
    if style is not McpStyle.GEMINI:
        return None
    security = user_settings.get("security")
    auth = security.get("auth") if isinstance(security, dict) else None
    chosen = auth.get("selectedType") if isinstance(auth, dict) else None
    settings: dict[str, Any] = {
        # The user's sign-in method; an API key where none is set (a base URL otherwise makes
        # 0.61 pick an auth type that headless runs refuse, gemini-cli#27550).
        "security": {"auth": {"selectedType": chosen or "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        # Three tries, not ten over four minutes, when its API fails.
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False, "maxAttempts": 3},
    }
    if shim is not None:
        settings["mcpServers"] = {MCP_SERVER: {"command": shim, "args": [], "env": dict(identity), "trust": True,
                                               "includeTools": list(REPORT_TOOLS)}}
    files = {".gemini/settings.json": json.dumps(settings, indent=2).encode(),
             ".gemini/policies/supervisord-agents.toml": GEMINI_SHELL_POLICY.encode()}
    return CliHome(env={GEMINI_HOME_ENV: str(home)}, files=files, links=list(GEMINI_LOGIN))


def provider_env(provider: Provider, spawn_env: Mapping[str, str]) -> dict[str, str]:
    """What a spawn adds to the daemon's environment: the provider's variables, then the spawn's.
    With approvals, claude waits for its permission tool as long as the daemon's timeout allows
    (the daemon answers at the task's ``approval_timeout``): the call's own timeout, and the one
    after which claude gives up on a call that sends nothing (30 minutes for a stdio server)."""
    asks = provider.approvals and provider.mcp is McpStyle.CLAUDE
    waits = dict.fromkeys(CLAUDE_WAITS, str(APPROVAL_WAIT_MS)) if asks else {}
    return {**waits, **provider.env, **spawn_env}


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
