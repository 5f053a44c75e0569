"""The waker and the lives of sleeping agents, in trio's mock clock.

The waker is tested at its seam (a mailbox that records when each ``Wake`` arrived) for
timing: every timer fires at its ``wake_at`` to the mock clock's tick, a hundred due at
one instant all at once, an earlier timer cuts a long sleep short, a refused wake is
dropped and a failed one retried. Then with the real registry, store and actor: a
failing agent sleeps its back-off and is woken by its timer, a timer made stale by an
early wake changes nothing, and a schedule survives a restart (a registry reloaded from
the store, a new waker): the agent wakes at the time it was given before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from supervisord_agents.actor import Actor, Hub, Mailbox
from supervisord_agents.commands import Effect, EndAttempt, Exited, SpawnAgent, Started, Wake
from supervisord_agents.errors import IllegalTransition, StorageError
from supervisord_agents.model import (
    Agent,
    AgentState,
    DecidedBy,
    ErrorClass,
    Exit,
    OnRateLimit,
    Policy,
    Restart,
    Task,
)
from supervisord_agents.registry import CreateTask, Registry
from supervisord_agents.store import Store
from supervisord_agents.waker import Waker
from tests.test_registry import tmux_ids

T0 = 1_800_000_000.0  # wall time at the mock clock's zero
S = AgentState


def wall() -> float:
    return T0 + trio.current_time()


def sleeper(n: int, wake_at: float, attempt: int = 2) -> Agent:
    return Agent(id=f"sleeper-000000-{n:06x}", task_id="TASK-20270115-000000-0000abcd", type="sleeper",
                 state=S.SLEEPING, attempt=attempt, wake_at=wake_at, created_at=T0, updated_at=T0)


class Recorder(Mailbox):
    """A mailbox that records each command with the wall time it arrived, and answers as told."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[float, Wake]] = []
        self.answer: dict[str, BaseException] = {}

    async def submit(self, command: Any) -> Any:
        assert isinstance(command, Wake)
        self.got.append((wall(), command))
        if (error := self.answer.pop(command.agent_id, None)) is not None:
            raise error
        return None


async def test_each_timer_fires_at_its_time_and_those_due_together_at_once(
        autojump_clock: trio.abc.Clock, nursery: trio.Nursery) -> None:
    box = Recorder()
    waker = Waker(box, clock=wall)
    await nursery.start(waker.run)
    herd = [sleeper(i, T0 + 60) for i in range(100)]
    for agent in [sleeper(500, T0 + 3600), *herd, sleeper(501, T0 + 5.5)]:
        waker.schedule(agent)
    await trio.sleep(61)
    assert [(at, w.agent_id) for at, w in box.got[:1]] == [(T0 + 5.5, "sleeper-000000-0001f5")]
    assert sorted(w.agent_id for _, w in box.got[1:]) == sorted(a.id for a in herd)
    assert {at for at, _ in box.got[1:]} == {T0 + 60}  # all of them at the instant, none late
    assert all(w.attempt == 2 and not w.early for _, w in box.got)
    assert waker.pending == 1
    # A timer earlier than the one the waker sleeps for cuts its sleep short.
    waker.schedule(sleeper(502, T0 + 70))
    await trio.sleep(10)
    assert box.got[-1] == (T0 + 70, Wake(agent_id="sleeper-000000-0001f6", attempt=2))


async def test_a_refused_wake_is_dropped_and_a_failed_one_tried_again(
        autojump_clock: trio.abc.Clock, nursery: trio.Nursery) -> None:
    box = Recorder()
    waker = Waker(box, clock=wall)
    await nursery.start(waker.run)
    stale, unlucky = sleeper(1, T0 + 1), sleeper(2, T0 + 1)
    box.answer = {stale.id: IllegalTransition("woken early"), unlucky.id: StorageError("disk full")}
    waker.schedule(stale)
    waker.schedule(unlucky)
    await trio.sleep(5)
    assert [(at, w.agent_id) for at, w in box.got] in (
        [(T0 + 1, stale.id), (T0 + 1, unlucky.id), (T0 + 2, unlucky.id)],
        [(T0 + 1, unlucky.id), (T0 + 1, stale.id), (T0 + 2, unlucky.id)],
    )
    assert waker.pending == 0


# --- with the real registry, store and actor --------------------------------------------------


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Mock time that jumps only after half a second of real idleness: the actor's commits run in
    a thread, and a jump while one runs would fire a timer before the test's next step."""
    return trio.testing.MockClock(autojump_threshold=0.5)


class World:
    """A registry, store and actor in one process; effects handled as the daemon's would for
    what matters here (an attempt's end sets its timer); the waker on the same clock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.effects: list[Effect] = []
        self.waker: Waker | None = None

    def run_effects(self, effects: list[Effect]) -> None:
        self.effects += effects
        for effect in effects:
            if isinstance(effect, EndAttempt) and self.waker is not None:
                self.waker.schedule(effect.agent)

    async def start(self, nursery: trio.Nursery) -> Actor:
        store = Store(self.path / "db.sqlite3")
        store.open()
        registry = Registry()
        registry.load(store.load())
        mailbox = Mailbox()
        actor = Actor(registry, store, Hub(), mailbox, self.run_effects, clock=wall)
        self.waker = Waker(mailbox, clock=wall)
        await nursery.start(actor.run)
        await nursery.start(self.waker.run)
        for agent in registry.agents_in([S.SLEEPING]):  # what the daemon does at start
            self.waker.schedule(agent)
        return actor


TASK = Task(id="TASK-20270115-000000-0000abcd", description="t", created_at=0.0,
            policy=Policy(restart=Restart.ON_FAILURE, max_attempts=3, backoff=30.0, on_rate_limit=OnRateLimit.SLEEP))
CRASH = Exit(decided_by=DecidedBy.EXIT_STATUS, code=3)


async def run_agent(actor: Actor, n: int = 1) -> Agent:
    agent = Agent(id=f"worker-000000-{n:06x}", task_id=TASK.id, type=f"worker{n}", created_at=0.0, updated_at=0.0,
                  policy=TASK.policy.over(Policy()).over(Policy(backoff_max=600.0, max_rate_limit_waits=3,
                                                                rate_limit_backoff=60.0)))
    await actor.mailbox.submit(SpawnAgent(agent))
    running: Agent = await actor.mailbox.submit(Started(agent.id, tmux_ids(n)))
    return running


async def until_state(actor: Actor, agent_id: str, state: AgentState) -> Agent:
    while (agent := actor.registry.agents[agent_id]).state is not state:
        await actor.hub.wait_changed([agent_id])
    return agent


async def test_a_failed_attempt_sleeps_its_back_off_and_its_timer_starts_the_next(
        clock: trio.abc.Clock, tmp_path: Path) -> None:
    world = World(tmp_path)
    async with trio.open_nursery() as nursery:
        actor = await world.start(nursery)
        await actor.mailbox.submit(CreateTask(TASK))
        agent = await run_agent(actor)
        slept: Agent = await actor.mailbox.submit(Exited(agent.id, CRASH))
        assert slept.state is S.SLEEPING and slept.attempt == 2 and slept.tmux is None
        assert slept.attempts[0].exit.error_class is ErrorClass.CRASHED
        assert slept.wake_at is not None and 30.0 <= slept.wake_at - wall() < 37.5  # back-off, with its spread
        woke = await until_state(actor, agent.id, S.STARTING)
        assert woke.updated_at >= slept.wake_at and woke.wake_at is None
        # Ended again, the next back-off doubles; a third failure gives up.
        await actor.mailbox.submit(Started(agent.id, tmux_ids(7)))
        second: Agent = await actor.mailbox.submit(Exited(agent.id, CRASH))
        assert second.wake_at is not None and 60.0 <= second.wake_at - wall() < 75.0
        await until_state(actor, agent.id, S.STARTING)
        await actor.mailbox.submit(Started(agent.id, tmux_ids(8)))
        ended: Agent = await actor.mailbox.submit(Exited(agent.id, CRASH))
        assert ended.state is S.FAILED and ended.exit is not None
        assert ended.exit.reason == "gave up after 3 attempts: exited with code 3"
        assert [a.n for a in ended.attempts] == [1, 2]
        nursery.cancel_scope.cancel()


async def test_an_early_wake_makes_the_timer_stale_and_a_restart_keeps_the_schedule(
        clock: trio.abc.Clock, tmp_path: Path) -> None:
    world = World(tmp_path)
    async with trio.open_nursery() as nursery:
        actor = await world.start(nursery)
        await actor.mailbox.submit(CreateTask(TASK))
        early, kept = await run_agent(actor, 1), await run_agent(actor, 2)
        await actor.mailbox.submit(Exited(early.id, CRASH))
        asleep: Agent = await actor.mailbox.submit(Exited(kept.id, CRASH))
        woken: Agent = await actor.mailbox.submit(Wake(agent_id=early.id, attempt=2, early=True))
        assert woken.state is S.STARTING
        await actor.mailbox.submit(Started(early.id, tmux_ids(5)))
        await trio.sleep(40)  # both timers have fired: the stale one changed nothing
        assert actor.registry.agents[early.id].state is S.RUNNING
        assert actor.registry.agents[kept.id].state is S.STARTING
        # Put ``kept`` to sleep again, then "restart": a new registry from the store, a new waker.
        await actor.mailbox.submit(Started(kept.id, tmux_ids(6)))
        again: Agent = await actor.mailbox.submit(Exited(kept.id, CRASH))
        assert again.wake_at is not None and asleep.wake_at is not None and again.wake_at > asleep.wake_at
        actor.mailbox.close()
        nursery.cancel_scope.cancel()
    world = World(tmp_path)
    async with trio.open_nursery() as nursery:
        actor = await world.start(nursery)
        assert actor.registry.agents[kept.id].state is S.SLEEPING
        assert actor.registry.agents[kept.id].wake_at == again.wake_at
        woke = await until_state(actor, kept.id, S.STARTING)
        assert woke.updated_at >= again.wake_at and woke.attempt == 3
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("reset", [True, False])
async def test_a_rate_limited_provider_queues_new_agents_until_its_sleepers_wake(
        clock: trio.abc.Clock, tmp_path: Path, reset: bool) -> None:
    """A rate-limited agent sleeps until the provider's reset (or a back-off); a new agent of that
    provider queues meanwhile, and starts when the sleeper wakes, right after it."""
    world = World(tmp_path)
    async with trio.open_nursery() as nursery:
        actor = await world.start(nursery)
        await actor.mailbox.submit(CreateTask(TASK))
        agent = await run_agent(actor)
        limited = Exit(decided_by=DecidedBy.RESULT_EVENT, is_error=True, error_class=ErrorClass.RATE_LIMIT,
                       retry_at=wall() + 120 if reset else None, session_id="7f0c2d3e-conversation")
        slept: Agent = await actor.mailbox.submit(Exited(agent.id, limited))
        assert slept.state is S.SLEEPING and slept.conversation == "7f0c2d3e-conversation"
        assert slept.wake_at is not None and (120 if reset else 60) <= slept.wake_at - wall() <= 150
        other = Agent(id="worker-000000-0000ff", task_id=TASK.id, type="other", created_at=0.0, updated_at=0.0)
        queued: Agent = await actor.mailbox.submit(SpawnAgent(other))
        assert queued.state is S.QUEUED
        woke = await until_state(actor, agent.id, S.STARTING)
        assert actor.registry.agents[other.id].state is S.STARTING
        assert woke.conversation == "7f0c2d3e-conversation" and woke.attempt == 2
        nursery.cancel_scope.cancel()
