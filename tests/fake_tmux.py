"""A fake at the ``TmuxBackend`` seam, for unit tests of what sits above it (the API,
effects and the reconciler) in-process, without a tmux server.

No process runs: a "session" is a row in ``sessions``. Tests end an agent by writing
its status record and calling :meth:`FakeTmux.end`. Pane pids are chosen above the
kernel's pid limit so that nothing can ever signal a real process through them.
"""

from __future__ import annotations

import trio

from supervisord_agents.errors import TmuxError
from supervisord_agents.model import TmuxIds
from supervisord_agents.tmux import PaneInfo, SessionSpec

NO_SUCH_PID = 1 << 23  # above pid_max (at most 2**22 on Linux)


class FakeTmux:
    def __init__(self) -> None:
        self.healthy = True
        self.refuse: str | None = None  # the next starts raise TmuxError with this message
        self.specs: list[SessionSpec] = []
        self.sessions: dict[str, PaneInfo] = {}
        self.killed: list[str] = []
        self._n = 0
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def start_session(self, spec: SessionSpec) -> TmuxIds:
        if self.refuse is not None:
            raise TmuxError(self.refuse)
        self._n += 1
        n = self._n
        ids = TmuxIds(session_id=f"${n}", window_id=f"@{n}", pane_id=f"%{n}", pane_pid=NO_SUCH_PID + n)
        self.specs.append(spec)
        self.sessions[ids.session_id] = PaneInfo(
            session_id=ids.session_id, session_name=spec.name, window_id=ids.window_id, pane_id=ids.pane_id,
            pane_pid=ids.pane_pid, pane_dead=False, agent_id=spec.agent_id, task_id=spec.task_id,
        )
        return ids

    async def kill_session(self, session_id: str) -> bool:
        self.killed.append(session_id)
        existed = self.sessions.pop(session_id, None) is not None
        if existed:
            self._changed.set()
        return existed

    async def list_panes(self) -> list[PaneInfo]:
        if not self.healthy:
            raise TmuxError("tmux is not available")
        return list(self.sessions.values())

    async def kill_pane(self, pane_id: str) -> bool:
        for sid, pane in list(self.sessions.items()):
            if pane.pane_id == pane_id:
                del self.sessions[sid]
                self._changed.set()
                return True
        return False

    async def enforce_config(self) -> list[str]:
        return []

    async def capture_pane(self, pane_id: str, lines: int) -> str:
        return f"screen of {pane_id}\n"

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed = trio.Event()

    def end(self, agent_id: str) -> None:
        """The agent's session goes away (its program exited)."""
        for sid, pane in list(self.sessions.items()):
            if pane.agent_id == agent_id:
                del self.sessions[sid]
        self._changed.set()
