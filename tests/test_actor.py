"""The actor: group commit, acknowledgement after commit, rollback on storage failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from supervisord_agents.actor import Actor, Hub, Mailbox
from supervisord_agents.commands import Effect
from supervisord_agents.errors import StorageError, UnknownTask
from supervisord_agents.model import Severity, Task
from supervisord_agents.registry import CreateTask, Registry, ReportFinding
from supervisord_agents.store import Batch, Store

TASK = Task(id="TASK-20260101-000000-0123abcd", description="t", created_at=0)


class FlakyStore(Store):
    """A real store whose commits can be made to fail (the disk-full seam)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail = False
        self.batches: list[int] = []

    def commit(self, batch: Batch) -> None:
        if self.fail:
            raise StorageError("disk full (simulated)")
        self.batches.append(len(batch.events))
        super().commit(batch)


def no_effects(effects: list[Effect]) -> None:
    """The effect runner of these tests: the commands here have no effects."""
    assert effects == []


def finding(message: str) -> ReportFinding:
    return ReportFinding(task_id=TASK.id, agent_id=None, type="note", severity=Severity.INFO, message=message)


async def start_actor(nursery: trio.Nursery, path: Path) -> tuple[Actor, FlakyStore]:
    store = FlakyStore(path / "db.sqlite3")
    store.open()
    actor = Actor(Registry(), store, Hub(), Mailbox(), no_effects)
    await nursery.start(actor.run)
    return actor, store


async def test_a_reply_means_the_change_is_on_disk(tmp_path: Path, nursery: trio.Nursery) -> None:
    """When submit returns, a fresh connection to the database already sees the change."""
    actor, _ = await start_actor(nursery, tmp_path)
    await actor.mailbox.submit(CreateTask(TASK))
    result = await actor.mailbox.submit(finding("hello"))
    fresh = Store(tmp_path / "db.sqlite3")
    fresh.open()
    stored = fresh.findings(task_id=TASK.id)
    assert [f.message for f in stored] == ["hello"] and stored[0].seq == result.seq
    assert fresh.load().findings == {TASK.id: (1, len("hello"))}
    fresh.close()


async def test_concurrent_commands_are_group_committed(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Commands that arrive while a commit runs share the next transaction."""
    actor, store = await start_actor(nursery, tmp_path)
    await actor.mailbox.submit(CreateTask(TASK))
    async with trio.open_nursery() as n:
        for i in range(200):
            n.start_soon(actor.mailbox.submit, finding(f"m{i}"))
    assert sum(store.batches[1:]) == 200
    assert len(store.batches) - 1 < 200  # fewer transactions than commands
    assert actor.registry.findings_use(TASK.id)[0] == len(store.findings(limit=1000)) == 200


async def test_a_refused_command_does_not_disturb_its_batch(tmp_path: Path, nursery: trio.Nursery) -> None:
    """One bad command in a batch fails alone; the others in the same batch commit."""
    actor, _ = await start_actor(nursery, tmp_path)
    await actor.mailbox.submit(CreateTask(TASK))
    results: dict[str, object] = {}

    async def submit(name: str, command: ReportFinding) -> None:
        try:
            results[name] = await actor.mailbox.submit(command)
        except UnknownTask as e:
            results[name] = e

    bad = ReportFinding(task_id="TASK-20260101-000000-ffffffff", agent_id=None, type="note",
                        severity=Severity.INFO, message="x")
    async with trio.open_nursery() as n:
        n.start_soon(submit, "good1", finding("a"))
        n.start_soon(submit, "bad", bad)
        n.start_soon(submit, "good2", finding("b"))
    assert isinstance(results["bad"], UnknownTask)
    assert sorted(f.message for f in actor.store.findings()) == ["a", "b"]


async def test_storage_failure_rolls_back_memory(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A failed commit fails its callers and leaves memory as on disk; writing resumes afterwards."""
    actor, store = await start_actor(nursery, tmp_path)
    await actor.mailbox.submit(CreateTask(TASK))
    seq_before = actor.registry.last_seq
    store.fail = True
    with pytest.raises(StorageError):
        await actor.mailbox.submit(finding("lost"))
    assert actor.registry.findings_use(TASK.id) == (0, 0) and actor.registry.last_seq == seq_before
    store.fail = False
    done = await actor.mailbox.submit(finding("kept"))
    assert done.seq == seq_before + 1
    assert [f.message for f in store.findings()] == ["kept"]


async def test_subscribers_see_only_committed_events(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Events reach subscribers after their commit, never for a batch that failed."""
    actor, store = await start_actor(nursery, tmp_path)
    with actor.hub.subscribe() as sub:
        await actor.mailbox.submit(CreateTask(TASK))
        store.fail = True
        with pytest.raises(StorageError):
            await actor.mailbox.submit(finding("lost"))
        store.fail = False
        await actor.mailbox.submit(finding("kept"))
        kinds = [(await sub.receive.receive()).kind for _ in range(2)]
    assert [k.value for k in kinds] == ["task_created", "finding"]


async def test_a_slow_subscriber_is_cut_off_not_buffered(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A subscriber that never reads is disconnected once its bounded buffer fills."""
    actor, _ = await start_actor(nursery, tmp_path)
    sub = actor.hub.subscribe(size=5)
    await actor.mailbox.submit(CreateTask(TASK))
    for i in range(10):
        await actor.mailbox.submit(finding(f"m{i}"))
    assert sub.overflowed and actor.hub.subscribers == 0


async def test_a_subscriber_takes_what_waits_at_once_then_the_rest_as_it_comes(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    """``ready`` takes the events already delivered without waiting (the server sends them in
    one write); an overflowed subscription hands over what it holds, then ends."""
    actor, _ = await start_actor(nursery, tmp_path)
    with actor.hub.subscribe() as sub:
        assert sub.ready() == []
        await actor.mailbox.submit(CreateTask(TASK))
        for i in range(3):
            await actor.mailbox.submit(finding(f"m{i}"))
        first = await sub.receive.receive()
        assert [first.kind.value, *(e.kind.value for e in sub.ready())] == ["task_created", *["finding"] * 3]
        assert sub.ready() == []
    small = actor.hub.subscribe(size=2)
    for i in range(3):
        await actor.mailbox.submit(finding(f"n{i}"))
    assert small.overflowed and [e.kind.value for e in small.ready()] == ["finding", "finding"]


async def test_close_drains_the_mailbox(tmp_path: Path) -> None:
    """After close, queued commands still commit and run returns."""
    store = FlakyStore(tmp_path / "db.sqlite3")
    store.open()
    actor = Actor(Registry(), store, Hub(), Mailbox(), no_effects)
    async with trio.open_nursery() as n:
        await n.start(actor.run)
        await actor.mailbox.submit(CreateTask(TASK))
        n.start_soon(actor.mailbox.submit, finding("queued"))
        await trio.testing.wait_all_tasks_blocked()  # the submit has reached the mailbox
        actor.mailbox.close()
    assert [f.message for f in store.findings()] == ["queued"]
