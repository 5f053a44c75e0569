"""Durable storage: SQLite (stdlib) in WAL mode with ``synchronous=FULL``.

Tables hold the current rows (tasks, agents, findings) and an append-only ``events``
log whose ``seq`` is the registry's sequence number. The actor hands over one
:class:`Batch` per group commit; :meth:`Store.commit` writes it in a single
transaction, so a batch is on disk entirely or not at all, and a crash at any moment
leaves the database as of the last committed batch (SQLite's journal does the rest).

Rows are stored as msgpack blobs of the model Structs, plus the few columns queries
filter on. Events are stored as JSON so a replay can pass them to clients unchanged.

All methods are blocking and meant to run in a worker thread (``trio.to_thread``), one
at a time for writes; reads of the event log use their own connection.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec
from msgspec import Struct

from .commands import Event
from .errors import StorageError
from .model import Agent, Finding, Task

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS findings (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT NOT NULL,
    agent_id TEXT,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_agent ON events (agent_id, seq);
"""


class Batch(Struct):
    """Everything one group commit writes: new events and the rows they touched."""

    events: list[Event]
    tasks: list[Task]
    agents: list[Agent]
    findings: list[Finding]


class Loaded(Struct):
    tasks: list[Task]
    agents: list[Agent]
    findings: list[Finding]
    last_seq: int


_msgpack: Final = msgspec.msgpack.Encoder()
_json: Final = msgspec.json.Encoder()
_task_dec: Final = msgspec.msgpack.Decoder(Task)
_agent_dec: Final = msgspec.msgpack.Decoder(Agent)
_finding_dec: Final = msgspec.msgpack.Decoder(Finding)


class Store:
    """The SQLite database of one daemon. Not thread-safe: one writer thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

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
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._reader = self._connect()
        except (sqlite3.Error, OSError) as e:
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

    def close(self) -> None:
        for conn in (self._reader, self._db):
            if conn is not None:
                conn.close()
        self._db = self._reader = None

    def load(self) -> Loaded:
        """Read every current row, and the last sequence number."""
        db = self.db
        try:
            tasks = [_task_dec.decode(r[0]) for r in db.execute("SELECT data FROM tasks")]
            agents = [_agent_dec.decode(r[0]) for r in db.execute("SELECT data FROM agents")]
            findings = [_finding_dec.decode(r[0]) for r in db.execute("SELECT data FROM findings ORDER BY seq")]
            last_seq = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        except (sqlite3.Error, msgspec.DecodeError) as e:
            raise StorageError(f"cannot load {self.path}: {e}") from e
        return Loaded(tasks=tasks, agents=agents, findings=findings, last_seq=last_seq)

    def commit(self, batch: Batch) -> None:
        """Write one batch in one transaction. Raises StorageError; then nothing was written."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if batch.tasks:
                    db.executemany(
                        "INSERT OR REPLACE INTO tasks (id, data) VALUES (?, ?)",
                        [(t.id, _msgpack.encode(t)) for t in batch.tasks],
                    )
                if batch.agents:
                    db.executemany(
                        "INSERT OR REPLACE INTO agents (id, task_id, state, data) VALUES (?, ?, ?, ?)",
                        [(a.id, a.task_id, a.state.value, _msgpack.encode(a)) for a in batch.agents],
                    )
                if batch.findings:
                    db.executemany(
                        "INSERT INTO findings (seq, task_id, data) VALUES (?, ?, ?)",
                        [(f.seq, f.task_id, _msgpack.encode(f)) for f in batch.findings],
                    )
                db.executemany(
                    "INSERT INTO events (seq, at, kind, task_id, agent_id, data) VALUES (?, ?, ?, ?, ?, ?)",
                    [(e.seq, e.at, e.kind.value, e.task_id, e.agent_id, _json.encode(e)) for e in batch.events],
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StorageError(f"commit failed: {e}") from e

    def read_events(
        self, after: int, *, upto: int | None = None, agent_ids: Iterable[str] = (), task_id: str | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, bytes]]:
        """Raw JSON events with ``after < seq <= upto``, oldest first (for replay)."""
        if self._reader is None:
            raise StorageError("the store is not open")
        sql = "SELECT seq, data FROM events WHERE seq > ?"
        args: list[object] = [after]
        if upto is not None:
            sql += " AND seq <= ?"
            args.append(upto)
        ids = list(agent_ids)
        if ids:
            sql += f" AND agent_id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        if task_id is not None:
            sql += " AND task_id = ?"
            args.append(task_id)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        try:
            return [(seq, bytes(data)) for seq, data in self._reader.execute(sql, args)]
        except sqlite3.Error as e:
            raise StorageError(f"cannot read events: {e}") from e
