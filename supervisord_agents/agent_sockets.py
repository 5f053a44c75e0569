"""A socket of its own for each sandboxed agent, served as that agent and nothing else.

A sandboxed agent (``sandbox = "bwrap"``) sees neither the daemon's runtime directory
(its control socket, the tmux socket) nor its state directory. What it needs to report
is one folder, ``<runtime>/agents/<agent id>/``, bound into its sandbox, holding
``control.sock``: every connection there is that agent's, by construction. A folder and
not the socket itself, so that a restarted daemon can bind the socket again where the
sandbox still sees it.

:class:`AgentSockets` opens and closes them (for the effect runner) and hands each new
listener to the server over a channel, so neither has to know the other.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
from pathlib import Path

import trio

from .errors import Unavailable

SOCKET_NAME = "control.sock"


def prepare_runtime_dir(path: Path) -> None:
    """Create a runtime folder 0700, or refuse one that others could enter. Raises Unavailable."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise Unavailable(f"{path} is not a directory owned by uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def listen_unix(path: Path, backlog: int = 512) -> socket.socket:
    """Bind and listen on ``path`` (0600, in a 0700 folder), replacing a stale socket.

    Only for a path this daemon owns (the control socket, under the instance lock; an
    agent's socket): a socket already there is taken to be a dead daemon's."""
    prepare_runtime_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    return sock


class AgentSockets:
    """The per-agent sockets of sandboxed agents."""

    def __init__(self, runtime_dir: Path) -> None:
        self.dir = runtime_dir / "agents"
        send, self.opened = trio.open_memory_channel[tuple[str, socket.socket | None]](math.inf)
        self._send = send

    def folder(self, agent_id: str) -> Path:
        return self.dir / agent_id

    def path(self, agent_id: str) -> Path:
        return self.folder(agent_id) / SOCKET_NAME

    def open(self, agent_id: str) -> Path:
        """Listen on the agent's socket (the server serves it as this agent). Raises OSError."""
        prepare_runtime_dir(self.dir)
        sock = listen_unix(self.path(agent_id), backlog=16)
        self._send.send_nowait((agent_id, sock))
        return self.folder(agent_id)

    def close(self, agent_id: str) -> None:
        """Stop serving the agent's socket and remove it."""
        self._send.send_nowait((agent_id, None))
        with contextlib.suppress(FileNotFoundError):
            self.path(agent_id).unlink()
        with contextlib.suppress(OSError):
            self.folder(agent_id).rmdir()
