"""The waker: the timers of sleeping agents.

A sleeping agent's ``wake_at`` is in its row, so the schedule survives any restart: the
daemon hands every sleeper to :meth:`Waker.schedule` when it starts, and the effect that
ends an attempt hands each new one. One task sleeps until the earliest timer and submits a
``Wake`` for each that is due, all at once, so wake-ups due together commit together (the
actor's group commit). A timer is only a hint: a ``Wake`` for an agent that was woken
early, killed or put back to sleep for a later attempt is refused by the registry and
dropped here, so nothing needs cancelling.

``clock`` is wall time (``wake_at`` is wall time); tests give one on trio's mock clock.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Final

import structlog
import trio

from .actor import Mailbox
from .commands import Wake
from .errors import IllegalTransition, SupervisorError, UnknownAgent
from .model import Agent

log = structlog.get_logger()

RECHECK: Final = 60.0  # seconds: the longest the waker sleeps without looking at the wall clock


class Waker:
    """Timers of sleeping agents (see the module doc)."""

    def __init__(self, mailbox: Mailbox, *, clock: Callable[[], float] = time.time) -> None:
        self.mailbox = mailbox
        self.clock = clock
        self._timers: list[tuple[float, str, int]] = []  # (wake_at, agent id, attempt): a heap
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def pending(self) -> int:
        """Timers set and not yet fired (some may be stale)."""
        return len(self._timers)

    def schedule(self, agent: Agent) -> None:
        """Wake ``agent`` at its ``wake_at`` for its next attempt."""
        if agent.wake_at is None:
            return
        heapq.heappush(self._timers, (agent.wake_at, agent.id, agent.attempt))
        if self._timers[0][1] == agent.id:
            self._changed.set()  # the earliest timer moved: the sleep below starts over

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                now = self.clock()
                while self._timers and self._timers[0][0] <= now:
                    _, agent_id, attempt = heapq.heappop(self._timers)
                    nursery.start_soon(self._wake, agent_id, attempt)
                # Looked at again at least every minute: a wall clock stepped (or a machine
                # suspended) meanwhile does not leave a timer sleeping past its time for long.
                delay = min(self._timers[0][0] - now, RECHECK) if self._timers else RECHECK
                self._changed = trio.Event()
                with trio.move_on_after(delay):
                    await self._changed.wait()

    async def _wake(self, agent_id: str, attempt: int) -> None:
        try:
            await self.mailbox.submit(Wake(agent_id=agent_id, attempt=attempt))
        except (IllegalTransition, UnknownAgent):
            pass  # woken early, killed, or asleep for a later attempt: a stale timer
        except SupervisorError as e:
            # Not committed (a full disk, a shutdown): try again shortly, the agent still sleeps.
            log.warning("wake_failed", agent_id=agent_id, error=e.message)
            heapq.heappush(self._timers, (self.clock() + 1.0, agent_id, attempt))
            self._changed.set()
