"""The launch of an agent: what its start needs that the registry does not keep.

A spawn mints an identity token and composes the prompt. Both are secrets (the token
is the agent's identity; the prompt may carry the user's code), so they never enter the
registry, the database or the event log. :class:`Launcher` alone carries them from the
spawn request to the agent's session, by one path for every agent, queued or not:

1. ``prepare`` (by ``agent.spawn``, before the agent is submitted for admission): the
   launch is written, 0600, to ``launch.json`` in the agent's folder. It is on disk
   before the actor can decide, so the start of an agent admitted a moment later, or
   of a queued agent promoted after a daemon restart, always finds it.
2. ``hand_over`` (by the effect that starts the session, at each attempt): the prompt and
   MCP config are written where the runner and the agent read them, and the token comes
   back for the session's environment. ``launch.json`` stays until the agent has ended
   (a later attempt needs it), and is removed with the rest by its cleanup.
3. ``withdraw`` (a spawn that was refused, or cancelled before the actor took it): the
   agent's folder is removed, shielded from cancellation, so nothing is left behind.
   Cleanup after an agent ended removes what is left of it (:meth:`AgentFiles.remove_secrets`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

import msgspec
import trio
from msgspec import Struct

from .config import McpStyle
from .errors import StorageError
from .files import AgentFiles
from .model import Agent, EventFormat, Sandbox
from .protocol import ENV_AGENT_ID, ENV_SOCKET, ENV_TASK_ID, ENV_TOKEN
from .providers import USER_SETTINGS, cli_home, mcp_file_content


class Launch(Struct, frozen=True, kw_only=True):
    """The secret half of a spawn."""

    token: str  # empty where the kernel tells agents apart (their identity is not a secret to keep)
    prompt: str
    events: EventFormat = EventFormat.NONE
    mcp: McpStyle = McpStyle.NONE
    mcp_shim: str | None = None  # write an MCP config naming this shim (providers that take one)
    env: dict[str, str] = {}  # the provider's and the spawn's variables (may hold keys)

    def identity_env(self, agent: Agent, socket_path: Path) -> dict[str, str]:
        """How the agent finds the daemon, and what it is told of itself. Who it is, the
        daemon learns from the kernel; the token is there only where the kernel cannot tell."""
        env = {ENV_AGENT_ID: agent.id, ENV_TASK_ID: agent.task_id, ENV_SOCKET: str(socket_path)}
        if self.token:
            env[ENV_TOKEN] = self.token
        return env


#: What an attempt that resumes its conversation receives on stdin.
RESUME_PROMPT: Final = (
    "Your previous run was interrupted (a rate limit or a failure), and the supervisor has resumed this"
    " conversation. Continue the task where you left off, report progress as before, and exit when done.\n"
)

_encode: Final = msgspec.json.Encoder().encode
_decode: Final = msgspec.json.Decoder(Launch).decode


def tools_dir() -> str:
    """Where this installation's scripts are (agentctl, the MCP shim): first on every
    agent's PATH."""
    return str(Path(sys.executable).parent)


def mcp_shim() -> str | None:
    """The installed MCP shim beside this Python, if the ``mcp`` extra is installed."""
    shim = Path(tools_dir()) / "agents-mcp"
    return str(shim) if shim.exists() else None


class Launcher:
    """Owns every launch from the spawn request to the session (see the module doc)."""

    def __init__(self, state_dir: Path, socket_path: Path) -> None:
        self.state_dir = state_dir
        self.socket_path = socket_path

    def files(self, agent: Agent) -> AgentFiles:
        return AgentFiles(self.state_dir, agent.task_id, agent.id)

    def prepare(self, agent: Agent, launch: Launch) -> None:
        """Persist the launch of an agent about to be submitted. Raises StorageError.

        In the caller's thread: a few folders and one small file in the page cache cost
        less than the hand-off to a worker thread, on every spawn's path."""
        try:
            self.files(agent).save_launch(_encode(launch))
        except OSError as e:
            raise StorageError(f"cannot write the launch of agent {agent.id}: {e.strerror or e}") from e

    async def withdraw(self, agent: Agent) -> None:
        """Remove what ``prepare`` wrote for an agent that was never admitted."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.files(agent).forget)

    def hand_over(self, agent: Agent, socket_path: Path) -> Launch | None:
        """Write the agent's prompt (and MCP config, naming ``socket_path``, where the
        agent reaches the daemon) and take its launch record; None if there is none (its
        folder was lost). Raises OSError.

        In the caller's thread, as ``prepare``: small files in the page cache cost less
        than two thread switches on every spawn's path."""
        files = self.files(agent)
        try:
            launch = _decode(files.launch.read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            return None
        identity = launch.identity_env(agent, socket_path)
        mcp = None if launch.mcp_shim is None else mcp_file_content(launch.mcp, launch.mcp_shim, identity)
        # A later attempt that resumes the conversation is told to go on; a fresh one gets the prompt again.
        resumes = agent.attempt > 1 and agent.conversation is not None and bool(agent.resume_argv)
        files.create(RESUME_PROMPT if resumes else launch.prompt, mcp)
        home = cli_home(launch.mcp, files.home, launch.mcp_shim, identity, _user_settings(launch.mcp),
                        sandboxed=agent.sandbox is Sandbox.BWRAP)
        if home is not None:
            files.create_home(home.files, {rel: Path.home() / rel for rel in home.links})
            launch = msgspec.structs.replace(launch, env={**launch.env, **home.env})
        return launch


def _user_settings(style: McpStyle) -> dict[str, Any]:
    """The user's own settings of the CLI an agent home is made for (what to carry over)."""
    rel = USER_SETTINGS.get(style)
    if rel is None:
        return {}
    try:
        settings = json.loads((Path.home() / rel).read_bytes())
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}
