"""The tmux seam: ``TmuxBackend`` and the values that cross it.

Everything the daemon asks of tmux goes through :class:`TmuxBackend`. The real
implementation (:mod:`.tmux_control`) drives a private tmux server through one
control-mode client; unit tests of what sits above use a small fake at this seam.

Sessions are always targeted by their exact tmux ids (``$N``, ``@N``, ``%N``), never by
name: ``-t agent-1`` would also match ``agent-10``. Every session we create carries
user options ``@sa_agent`` and ``@sa_task`` (the markers) so that reconciliation only
ever acts on sessions that are provably ours.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from msgspec import Struct

from .model import TmuxIds

AGENT_MARKER: Final = "@sa_agent"
TASK_MARKER: Final = "@sa_task"
#: The session that keeps the private server alive and the daemon's control client attached.
KEEPER_SESSION: Final = "__ctl"


class SessionSpec(Struct, frozen=True, kw_only=True):
    """What to start: one detached session running ``argv`` (never a shell string)."""

    name: str  # built from a validated agent id, so free of tmux target syntax
    argv: list[str]
    cwd: str
    env: dict[str, str]
    agent_id: str
    task_id: str


class PaneInfo(Struct, frozen=True, kw_only=True):
    """One row of a listing of the server: a session's first pane and its markers."""

    session_id: str
    session_name: str
    window_id: str
    pane_id: str
    pane_pid: int
    pane_dead: bool
    agent_id: str | None  # our marker, or None for a session that is not an agent's
    task_id: str | None


class TmuxBackend(Protocol):
    """The seam between the daemon and tmux."""

    async def run(self, *, task_status: Any = ...) -> None:
        """Keep the connection to tmux until cancelled (``nursery.start`` it: it is started
        once the first attempt to connect has succeeded or failed; see :attr:`healthy`)."""
        ...

    @property
    def healthy(self) -> bool:
        """True while the server and the control client answer commands."""
        ...

    async def start_session(self, spec: SessionSpec) -> TmuxIds:
        """Create a detached session with markers; return its exact ids. Raises TmuxError."""
        ...

    async def kill_session(self, session_id: str) -> bool:
        """Kill a session by exact id; False if it no longer existed. Raises TmuxError."""
        ...

    async def list_panes(self) -> list[PaneInfo]:
        """One listing of every pane of every session on the server (the keeper's too).
        Raises TmuxError."""
        ...

    async def kill_pane(self, pane_id: str) -> bool:
        """Kill one pane by exact id; False if it no longer existed. Raises TmuxError."""
        ...

    async def enforce_config(self) -> list[str]:
        """Restore the server's global options and hooks as the daemon set them; return
        what had been changed. Raises TmuxError."""
        ...

    async def capture_pane(self, pane_id: str, lines: int) -> str:
        """The visible screen (plus up to ``lines`` of history) of a pane. Raises TmuxError."""
        ...

    async def wait_changed(self) -> None:
        """Return once something may have changed since the last call (a hint, coalesced)."""
        ...
