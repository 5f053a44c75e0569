"""The actor: the only writer of the registry.

Every mutation is a command sent to one mailbox (a bounded trio memory channel). The
actor takes whatever is waiting (at least one command), applies each to the registry
in order, and commits the resulting events and touched rows to SQLite in one
transaction on a worker thread. Commands that arrive while that commit runs wait in
the mailbox and form the next batch: group commit without a timer. Only after the
commit does a caller's :meth:`Actor.submit` return (or raise); only then are the
batch's events published to subscribers and its side effects started. A client is
never told of a change that is not on disk.

If a commit fails (disk full, read-only), every command of the batch fails with
StorageError and the registry is reloaded from the database, which still holds the
state before the batch: nothing is half-applied, in memory or on disk.

The actor never awaits tmux: it hands each committed batch's effects to the effect
runner (``run_effects``, given at construction), which carries them out in its own
nursery and reports back by submitting commands like any client.

The :class:`Mailbox` is the actor's address, made first and given to everything that
changes state (the API, the effect runner, the reconciler); the actor is made last,
with the registry, the store, the hub and the effect runner it drives. So no part is
wired after it is built, and none can exist half-wired.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, Final, Protocol

import outcome
import structlog
import trio

from .commands import Applied, Command, Effect, Event, EventKind
from .errors import ShuttingDown, StorageError, SupervisorError
from .registry import Registry
from .store import Batch, Store
from .watermark import Watermark

log = structlog.get_logger()

MAILBOX_SIZE: Final = 4096
MAX_BATCH: Final = 1024

#: Set by a caller that may let its next request go once this one's command is in the
#: mailbox (pipelined reports, see the server): :meth:`Mailbox.submit` sets the Event then.
ON_QUEUED: ContextVar[trio.Event | None] = ContextVar("on_queued", default=None)


class _Pending:
    """A command waiting in the mailbox, and the slot its outcome lands in."""

    __slots__ = ("command", "done", "result")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = trio.Event()
        self.result: outcome.Outcome[Any] | None = None

    def resolve(self, result: outcome.Outcome[Any]) -> None:
        self.result = result
        self.done.set()


class Hub:
    """Fan-out of committed events: subscriptions, and per-agent change signals."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._agent_waiters: dict[str, set[trio.Event]] = {}

    def subscribe(
        self, *, agent_ids: Iterable[str] = (), task_id: str | None = None, size: int = 1024
    ) -> Subscription:
        """A subscription to future events; close it (or use ``with``) when done."""
        sub = Subscription(self, frozenset(agent_ids), task_id, size)
        self._subs.add(sub)
        return sub

    async def wait_changed(self, agent_ids: Iterable[str]) -> None:
        """Return the next time any of these agents has a committed event. A wait that
        ends otherwise (it timed out, its client went away) leaves nothing behind."""
        event, ids = trio.Event(), list(agent_ids)
        for agent_id in ids:
            self._agent_waiters.setdefault(agent_id, set()).add(event)
        try:
            await event.wait()
        finally:
            if not event.is_set():
                for agent_id in ids:
                    waiters = self._agent_waiters.get(agent_id)
                    if waiters is not None:
                        waiters.discard(event)
                        if not waiters:
                            del self._agent_waiters[agent_id]

    @property
    def waiters(self) -> int:
        """Waits in progress on agents' changes (each counted once per agent it waits on)."""
        return sum(len(waiters) for waiters in self._agent_waiters.values())

    def publish(self, events: list[Event]) -> None:
        for event in events:
            if event.agent_id is not None:
                for waiter in self._agent_waiters.pop(event.agent_id, ()):
                    waiter.set()
        for sub in list(self._subs):
            sub._offer(events)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _remove(self, sub: Subscription) -> None:
        self._subs.discard(sub)


class Subscription:
    """Committed events for one subscriber, through a bounded channel.

    A subscriber that falls more than ``size`` events behind is cut off (its channel is
    closed and ``overflowed`` set) rather than letting the daemon's memory grow.
    """

    def __init__(self, hub: Hub, agent_ids: frozenset[str], task_id: str | None, size: int) -> None:
        self._hub = hub
        self._agent_ids = agent_ids
        self._task_id = task_id
        self._send, self.receive = trio.open_memory_channel[Event](size)
        self.overflowed = False

    def matches(self, event: Event) -> bool:
        if self._agent_ids and event.agent_id not in self._agent_ids:
            return False
        return self._task_id is None or event.task_id == self._task_id

    def _offer(self, events: list[Event]) -> None:
        for event in events:
            if not self.matches(event):
                continue
            try:
                self._send.send_nowait(event)
            except trio.WouldBlock:
                self.overflowed = True
                self.close()
                return
            except trio.ClosedResourceError:
                return

    def ready(self) -> list[Event]:
        """The events already waiting, taken without waiting for more."""
        events = []
        while True:
            try:
                events.append(self.receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return events

    def close(self) -> None:
        self._hub._remove(self)
        self._send.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Mailbox:
    """The actor's address: a bounded queue of commands, each with the slot its outcome
    lands in. Every change of state is a command submitted here."""

    def __init__(self, size: int = MAILBOX_SIZE) -> None:
        self._send, self.receive = trio.open_memory_channel[_Pending](size)

    @property
    def queued(self) -> int:
        return self.receive.statistics().current_buffer_used

    async def submit(self, command: Command) -> Any:
        """Apply a command; return its result once committed. Raises SupervisorError.

        Atomic under cancellation: a caller cancelled while the mailbox is full has sent
        nothing; once the command is in, the caller gets its outcome (cancellation then
        takes effect at the caller's next checkpoint), so it always knows whether its
        change was made."""
        pending = _Pending(command)
        try:
            await self._send.send(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ShuttingDown("the daemon is shutting down") from None
        queued = ON_QUEUED.get()
        if queued is not None:
            queued.set()
        with trio.CancelScope(shield=True):
            await pending.done.wait()
        assert pending.result is not None
        return pending.result.unwrap()

    def close(self) -> None:
        """Take no more commands; the actor's ``run`` returns once the mailbox is drained."""
        self._send.close()


class EffectRunner(Protocol):
    def __call__(self, effects: list[Effect]) -> None:
        """Start the effects of one committed batch; must not block."""


class Actor:
    """Applies commands to the registry one at a time and commits them in batches."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        hub: Hub,
        mailbox: Mailbox,
        run_effects: EffectRunner,
        *,
        clock: Callable[[], float] = time.time,
        mark: Watermark | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.hub = hub
        self.mailbox = mailbox
        self.run_effects = run_effects
        self.clock = clock
        self.mark = mark  # the high-water mark of committed events, advanced after each commit
        self._commit_limiter = trio.CapacityLimiter(1)
        self.commits = 0
        self.commands = 0
        self.storage_failures = 0
        self._settling: frozenset[str] = frozenset()

    @property
    def settling(self) -> frozenset[str]:
        """Agents changed by the batch being committed now: the registry already shows the
        change, but its effects have not been handed over yet (a reconciliation pass must
        not mistake an agent just admitted for one whose session vanished)."""
        return self._settling

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        receive = self.mailbox.receive
        batch: list[_Pending] = []
        try:
            while True:
                try:
                    batch = [await receive.receive()]
                except trio.EndOfChannel:
                    return
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                # A commit must not be abandoned half-way by a cancellation: the
                # callers are waiting for its outcome, and the store must stay in step.
                with trio.CancelScope(shield=True):
                    await self._step(batch)
        finally:
            # Submitters wait for their outcome without a way out (see Mailbox.submit):
            # whatever ends the actor, nobody may be left waiting.
            left = [pending for pending in batch if not pending.done.is_set()]
            while True:
                try:
                    left.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            receive.close()
            for pending in left:
                pending.resolve(outcome.Error(ShuttingDown("the daemon is shutting down")))

    async def _step(self, batch: list[_Pending]) -> None:
        now = self.clock()
        applied: list[tuple[_Pending, Applied]] = []
        for pending in batch:
            try:
                result = self.registry.apply(pending.command, now)
            except SupervisorError as e:
                pending.resolve(outcome.Error(e))
            else:
                applied.append((pending, result))
        self.commands += len(batch)
        events = [e for _, result in applied for e in result.events]
        if events:
            self._settling = frozenset(e.agent_id for e in events if e.agent_id is not None)
            try:
                await trio.to_thread.run_sync(self.store.commit, self._batch(events), limiter=self._commit_limiter)
            except StorageError as e:
                await self._rollback(e, [p for p, _ in applied])
                return
            finally:
                self._settling = frozenset()
            self.commits += 1
            if self.mark is not None:  # after the commit, before anyone is told: events are numbered in order
                self.mark.advance(events[-1].seq)
        for pending, result in applied:
            pending.resolve(outcome.Value(result.result))
        if events:
            self.hub.publish(events)
        effects = [effect for _, result in applied for effect in result.effects]
        if effects:
            self.run_effects(effects)

    def _batch(self, events: list[Event]) -> Batch:
        tasks, agents, purged = self.registry.take_changes()
        findings = [e.data for e in events if e.kind is EventKind.FINDING]
        return Batch(events=events, tasks=tasks, agents=agents, findings=findings, purged=purged)

    async def _rollback(self, error: StorageError, pendings: list[_Pending]) -> None:
        """The batch did not commit: fail its callers and reload the last committed state."""
        self.storage_failures += 1
        log.error("commit_failed", error=str(error), commands=len(pendings))
        # Restore memory first, so no caller can observe the change that was not saved.
        loaded = await trio.to_thread.run_sync(self.store.load, limiter=self._commit_limiter)
        self.registry.load(loaded)
        for pending in pendings:
            pending.resolve(outcome.Error(StorageError(f"not saved: {error.message}")))
