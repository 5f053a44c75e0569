"""Durable storage: SQLite (stdlib) in WAL mode with ``synchronous=FULL``.

Tables hold the current rows (tasks, agents, findings) and an append-only ``events``
log whose ``seq`` is the registry's sequence number. The actor hands over one
:class:`Batch` per group commit; :meth:`Store.commit` writes it in a single
transaction, so a batch is on disk entirely or not at all, and a crash at any moment
leaves the database as of the last committed batch (SQLite's journal does the rest).

Rows are stored as msgpack blobs of the model Structs, plus the columns queries filter,
order and count on. Events are stored as JSON so a replay can pass them to clients
unchanged.

The store is also where history is read (DESIGN section 11): settled agents, closed
tasks, findings and events are not in the registry's memory, and every list is read in
pages ordered by a key the caller continues after (keyset paging: a page costs the same
at the millionth row as at the first). :meth:`Store.load` reads only what the registry
holds, plus tallies computed by covering indexes.

Writes run in one worker thread at a time. Reads may run in any thread: each thread gets
its own read connection (WAL readers see the last committed batch and never block the
writer).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
from msgspec import Struct

from .commands import Event
from .errors import StorageError
from .model import TERMINAL_STATES, Agent, AgentState, Finding, Task
from .tables import Image, finding_size, settled

SCHEMA_VERSION: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (state) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    settled INTEGER NOT NULL,
    cost REAL,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agents_task ON agents (task_id, created);
CREATE INDEX IF NOT EXISTS agents_created ON agents (created);
CREATE INDEX IF NOT EXISTS agents_state ON agents (state, created);
CREATE INDEX IF NOT EXISTS agents_tally ON agents (task_id, settled, state, cost);
CREATE INDEX IF NOT EXISTS agents_held ON agents (settled) WHERE settled = 0;
CREATE TABLE IF NOT EXISTS findings (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    agent_id TEXT,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_task ON findings (task_id, seq, size);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT NOT NULL,
    agent_id TEXT,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_agent ON events (agent_id, seq);
CREATE INDEX IF NOT EXISTS events_task ON events (task_id, seq);
"""

#: A key to continue a list after: (created, id) for tasks and agents.
After = tuple[float, str]


class Batch(Struct):
    """Everything one group commit writes: new events, the rows they touched, and the
    tasks whose history is deleted."""

    events: list[Event]
    tasks: list[Task]
    agents: list[Agent]
    findings: list[Finding]
    purged: list[str] = []


class Tally(Struct):
    """A task's agents by state, and what its ended agents cost, as stored."""

    states: dict[AgentState, int]
    costs: list[float]


_msgpack: Final = msgspec.msgpack.Encoder()
_json: Final = msgspec.json.Encoder()
_task_dec: Final = msgspec.msgpack.Decoder(Task)
_agent_dec: Final = msgspec.msgpack.Decoder(Agent)
_finding_dec: Final = msgspec.msgpack.Decoder(Finding)
_T = TypeVar("_T")


def _task_row(t: Task) -> tuple[object, ...]:
    return (t.id, t.state.value, t.created_at, _msgpack.encode(t))


def _agent_row(a: Agent) -> tuple[object, ...]:
    cost = a.exit.cost_usd if a.exit is not None else None
    return (a.id, a.task_id, a.state.value, a.created_at, settled(a), cost, _msgpack.encode(a))


def _finding_row(f: Finding) -> tuple[object, ...]:
    return (f.seq, f.task_id, f.agent_id, f.type, f.severity.value, finding_size(f.message, f.data),
            _msgpack.encode(f))


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Store:
    """The SQLite database of one daemon: one writer thread at a time, reads from any."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open (creating or migrating) the database. Raises StorageError."""
        try:
            # SQLite gives its -wal and -shm files the database file's mode: make it private first.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = self._connect()
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} has schema version {version}; this daemon knows up to {SCHEMA_VERSION}"
                )
            if version < SCHEMA_VERSION:
                with _transaction(self._db):  # all of it, or (after a crash) none of it
                    if version == 1:
                        _migrate_from_1(self._db)
                    _create(self._db)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError, msgspec.DecodeError) as e:
            raise StorageError(f"cannot open {self.path}: {e}") from e

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA busy_timeout = 5000")
        return db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the store is not open")
        return self._db

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        if self._db is None:
            raise StorageError("the store is not open")
        reader: sqlite3.Connection | None = getattr(self._local, "db", None)
        if reader is None:
            reader = self._local.db = self._connect()
            with self._lock:
                self._readers.append(reader)
        return reader

    def close(self) -> None:
        with self._lock:
            readers, self._readers = self._readers, []
        for conn in (*readers, self._db):
            if conn is not None:
                conn.close()
        self._db = None
        self._local = threading.local()

    # -- the registry's image and the writes ---------------------------------------

    def load(self) -> Image:
        """What the registry holds (live work) and the tallies of the rest."""
        db = self.db
        try:
            agents = {a.id: a for a in self._agents(db, "SELECT data FROM agents WHERE settled = 0")}
            parents = {a.parent for a in agents.values() if a.parent is not None} - agents.keys()
            while parents:  # settled ancestors of held agents are held too
                found = self._agents(db, f"SELECT data FROM agents WHERE id IN ({_marks(len(parents))})", parents)
                agents.update((a.id, a) for a in found)
                parents = {a.parent for a in found if a.parent is not None} - agents.keys()
            tasks = {t.id: t for t in self._tasks(db, "SELECT data FROM tasks WHERE state = 'open'")}
            others = {a.task_id for a in agents.values()} - tasks.keys()
            tasks.update((t.id, t) for t in self._tasks(db, f"SELECT data FROM tasks WHERE id IN "
                                                              f"({_marks(len(others))})", others))
            settled_rows: list[tuple[str, AgentState, float | None]] = []
            findings: dict[str, tuple[int, int]] = {}
            for task_id in tasks:
                rows = db.execute("SELECT id, state, cost FROM agents WHERE task_id = ? AND settled = 1", (task_id,))
                settled_rows.extend((task_id, AgentState(s), c) for i, s, c in rows if i not in agents)
                n, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM findings WHERE task_id = ?",
                                     (task_id,)).fetchone()
                if n:
                    findings[task_id] = (n, size)
            totals = dict.fromkeys(TERMINAL_STATES, 0)
            for state, n in db.execute("SELECT state, count(*) FROM agents GROUP BY state"):
                if AgentState(state) in totals:
                    totals[AgentState(state)] += n
            for agent in agents.values():
                if agent.state.terminal:
                    totals[agent.state] -= 1
            last_seq = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        except (sqlite3.Error, msgspec.DecodeError, ValueError) as e:
            raise StorageError(f"cannot load {self.path}: {e}") from e
        return Image(tasks=list(tasks.values()), agents=list(agents.values()), settled=settled_rows,
                     totals=totals, findings=findings, last_seq=last_seq)

    def commit(self, batch: Batch) -> None:
        """Write one batch in one transaction. Raises StorageError; then nothing was written."""
        db = self.db
        try:
            with _transaction(db):
                for task_id in batch.purged:  # before the batch's events: its own purge event stays
                    for table in ("agents", "findings", "events", "tasks"):
                        db.execute(f"DELETE FROM {table} WHERE {'id' if table == 'tasks' else 'task_id'} = ?",
                                   (task_id,))
                if batch.tasks:
                    db.executemany("INSERT OR REPLACE INTO tasks (id, state, created, data) VALUES (?, ?, ?, ?)",
                                   [_task_row(t) for t in batch.tasks])
                if batch.agents:
                    db.executemany(
                        "INSERT OR REPLACE INTO agents (id, task_id, state, created, settled, cost, data)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", [_agent_row(a) for a in batch.agents])
                if batch.findings:
                    db.executemany(
                        "INSERT INTO findings (seq, task_id, agent_id, type, severity, size, data)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", [_finding_row(f) for f in batch.findings])
                db.executemany(
                    "INSERT INTO events (seq, at, kind, task_id, agent_id, data) VALUES (?, ?, ?, ?, ?, ?)",
                    [(e.seq, e.at, e.kind.value, e.task_id, e.agent_id, _json.encode(e)) for e in batch.events],
                )
        except sqlite3.Error as e:
            raise StorageError(f"commit failed: {e}") from e

    # -- reads of history (any thread) ---------------------------------------------

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        try:
            return self._reader().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StorageError(f"cannot read {self.path}: {e}") from e

    def _decode(self, decoder: msgspec.msgpack.Decoder[_T], sql: str, args: Sequence[object] = ()) -> list[_T]:
        try:
            return [decoder.decode(r[0]) for r in self._read(sql, args)]
        except msgspec.DecodeError as e:
            raise StorageError(f"a stored row does not decode: {e}") from e

    @staticmethod
    def _agents(db: sqlite3.Connection, sql: str, args: Iterable[object] = ()) -> list[Agent]:
        return [_agent_dec.decode(r[0]) for r in db.execute(sql, list(args))]

    @staticmethod
    def _tasks(db: sqlite3.Connection, sql: str, args: Iterable[object] = ()) -> list[Task]:
        return [_task_dec.decode(r[0]) for r in db.execute(sql, list(args))]

    def agent(self, agent_id: str) -> Agent | None:
        rows = self._decode(_agent_dec, "SELECT data FROM agents WHERE id = ?", (agent_id,))
        return rows[0] if rows else None

    def task(self, task_id: str) -> Task | None:
        rows = self._decode(_task_dec, "SELECT data FROM tasks WHERE id = ?", (task_id,))
        return rows[0] if rows else None

    def has_agent(self, agent_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM agents WHERE id = ?", (agent_id,)))

    def has_task(self, task_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM tasks WHERE id = ?", (task_id,)))

    def tasks(self, *, state: str | None, after: After | None, limit: int) -> list[Task]:
        """Tasks oldest first, after ``after`` (created, id)."""
        where, args = _after(after)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        return self._decode(_task_dec, f"SELECT data FROM tasks {_where(where)} ORDER BY created, id LIMIT ?",
                            [*args, limit])

    def agents(
        self, *, task_id: str | None, states: Iterable[AgentState] | None, after: After | None, limit: int,
        newest_first: bool = False,
    ) -> list[Agent]:
        """Agents oldest (or newest) first, after ``after`` (created, id), filtered."""
        where, args = _after(after, newest_first)
        if task_id is not None:
            where.append("task_id = ?")
            args.append(task_id)
        if states is not None:
            values = [s.value for s in states]
            where.append(f"state IN ({_marks(len(values))})")
            args.extend(values)
        order = "created DESC, id DESC" if newest_first else "created, id"
        return self._decode(_agent_dec, f"SELECT data FROM agents {_where(where)} ORDER BY {order} LIMIT ?",
                            [*args, limit])

    def findings(
        self, *, task_id: str | None = None, agent_id: str | None = None, type: str | None = None,
        severity: str | None = None, since: int = 0, limit: int = 100, newest_first: bool = False,
    ) -> list[Finding]:
        """Findings with ``seq > since`` (oldest first) or the newest ones, filtered."""
        where: list[str] = [] if newest_first else ["seq > ?"]
        args: list[object] = [] if newest_first else [since]
        for column, value in (("task_id", task_id), ("agent_id", agent_id), ("type", type), ("severity", severity)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        order = "seq DESC" if newest_first else "seq"
        rows = self._decode(_finding_dec, f"SELECT data FROM findings {_where(where)} ORDER BY {order} LIMIT ?",
                            [*args, limit])
        return rows[::-1] if newest_first else rows

    def closed_before(self, when: float) -> list[str]:
        """Closed tasks that closed before ``when``."""
        tasks = self._decode(_task_dec, "SELECT data FROM tasks WHERE state = 'closed'")
        return [t.id for t in tasks if t.closed_at is not None and t.closed_at < when]

    def findings_count(self, task_id: str) -> int:
        return int(self._read("SELECT count(*) FROM findings WHERE task_id = ?", (task_id,))[0][0])

    def tallies(self, task_ids: Sequence[str]) -> dict[str, Tally]:
        """Each task's agents by state and its ended agents' costs, from the tally index."""
        out = {t: Tally(states={}, costs=[]) for t in task_ids}
        marks = _marks(len(task_ids))
        sql = f"SELECT task_id, state, cost FROM agents INDEXED BY agents_tally WHERE task_id IN ({marks})"
        for task_id, state, cost in self._read(sql, list(task_ids)):
            tally = out[task_id]
            tally.states[AgentState(state)] = tally.states.get(AgentState(state), 0) + 1
            if cost is not None:
                tally.costs.append(cost)
        return out

    def read_events(
        self, after: int, *, upto: int | None = None, agent_ids: Iterable[str] = (), task_id: str | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, bytes]]:
        """Raw JSON events with ``after < seq <= upto``, oldest first (for replay)."""
        sql = "SELECT seq, data FROM events WHERE seq > ?"
        args: list[object] = [after]
        if upto is not None:
            sql += " AND seq <= ?"
            args.append(upto)
        ids = list(agent_ids)
        if ids:
            sql += f" AND agent_id IN ({_marks(len(ids))})"
            args.extend(ids)
        if task_id is not None:
            sql += " AND task_id = ?"
            args.append(task_id)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [(seq, bytes(data)) for seq, data in self._read(sql, args)]


def _after(after: After | None, descending: bool = False) -> tuple[list[str], list[object]]:
    if after is None:
        return [], []
    op = "<" if descending else ">"
    return [f"(created, id) {op} (?, ?)"], [after[0], after[1]]


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _create(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        db.execute(statement)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk, say)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 had no columns to order, count or filter by: rebuild the three row tables."""
    for table in ("tasks", "agents", "findings"):
        db.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
    _create(db)
    tasks = [_task_dec.decode(r[0]) for r in db.execute("SELECT data FROM tasks_v1")]
    db.executemany("INSERT INTO tasks (id, state, created, data) VALUES (?, ?, ?, ?)", map(_task_row, tasks))
    agents = [_agent_dec.decode(r[0]) for r in db.execute("SELECT data FROM agents_v1")]
    db.executemany("INSERT INTO agents (id, task_id, state, created, settled, cost, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   map(_agent_row, agents))
    findings = [_finding_dec.decode(r[0]) for r in db.execute("SELECT data FROM findings_v1")]
    db.executemany("INSERT INTO findings (seq, task_id, agent_id, type, severity, size, data)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", map(_finding_row, findings))
    for table in ("tasks", "agents", "findings"):
        db.execute(f"DROP TABLE {table}_v1")
