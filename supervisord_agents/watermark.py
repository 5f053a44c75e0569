"""What the daemon checks before it trusts its database: that it has not gone back in
time, and that its pages are sound.

A database cannot tell on its own that it lost committed transactions. After a SIGKILL
and a lost ``-wal`` file, or after a restore from an old backup, SQLite opens what is
left without complaint, and a daemon that started on it would hand out again the
sequence numbers of events it had already acknowledged. So the daemon keeps a
high-water mark outside the database: a :class:`Watermark` file beside it that records
the last event sequence number it committed. At start the database's last event is
compared with the mark; a database behind it is refused, unless the operator says the
rollback is intended (``supervisord-agents --accept-rollback``, after restoring a backup).

The mark is written *after* each commit and never before, and without ``fsync``: a
SIGKILL leaves it in the page cache, which the kernel writes out anyway; a power loss
can only leave it older than the database (whose commits are synced), and a mark behind
the database is never a false alarm. So a commit costs one ``pwrite`` of a fixed-size
record into a file kept open. A record is written whole by one call at offset 0, in
one disk sector, and carries a checksum: one that was torn anyway reads as no mark.

:func:`check_integrity` runs SQLite's ``PRAGMA quick_check`` before the database is
loaded, within a bounded time (see there), and refuses a damaged database with a
message that says what to do, rather than serving it.

Blocking; run in a worker thread, except :meth:`Watermark.advance`, which is one
``pwrite`` into the page cache.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
import zlib
from pathlib import Path
from typing import Final

import structlog

from .errors import StorageError

log = structlog.get_logger()

_MAGIC: Final = b"SAMARK\x00\x01"  # the format's name and version
_RECORD: Final = struct.Struct("<8sQI4x")  # magic, sequence number, crc32 of both; 24 bytes

#: Up to this size the whole database is checked at start. ``PRAGMA quick_check`` reads
#: every page: measured on a 1.4 GB database of 2 million events, 0.9-1.2 s with the file
#: in the page cache and 22 s without (as after a reboot, on a disk that reads 65 MB/s),
#: against a start-up goal of 1 s with 1 GB of history. 64 MiB costs ~50 ms cached and
#: ~1 s from such a disk.
FULL_CHECK_MAX_BYTES: Final = 64 << 20

#: Above it, the newest rows of each table are read (and the schema checked): where a
#: crash or a lost write leaves damage, since the pages written last sit at the right
#: edge of each b-tree. ~40 ms on that database. Older history is checked whole by
#: ``agentctl backup``, which runs ``quick_check`` on every copy it makes.
RECENT_ROWS: Final = 1000


class Watermark:
    """The highest event sequence number committed to one database, in the file beside it
    (``<database>.mark``).

    :meth:`open` at start, once the database is loaded; :meth:`advance` after every
    commit; :meth:`read` to look without opening. Only the daemon that holds the state
    directory's instance lock writes it."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".mark")
        self._fd: int | None = None
        self._failing = False

    def read(self) -> int | None:
        """The recorded sequence number, or None if there is none to trust: no file (a
        first start, or a database from before marks), or a record that is short or
        fails its checksum (a write torn by a power loss; the database, whose commits
        are synced, is then at least as new). Raises OSError if the file cannot be read."""
        try:
            with self.path.open("rb") as f:
                data = f.read(_RECORD.size)
        except FileNotFoundError:
            return None
        if len(data) < _RECORD.size:
            return None
        magic, seq, crc = _RECORD.unpack(data)
        if magic != _MAGIC or crc != zlib.crc32(data[:16]):
            return None
        return int(seq)

    def open(self, last_seq: int, *, accept_rollback: bool = False) -> None:
        """Compare the loaded database, whose last event is ``last_seq``, with the mark,
        then keep the mark open, at ``last_seq``.

        Raises StorageError if the database is behind the mark (it lost events that were
        acknowledged), unless ``accept_rollback``: then the database is taken as it is,
        with a warning. Also raises StorageError if the mark cannot be read or written."""
        try:
            marked = self.read()
            if marked is None and self.path.exists():
                log.warning("watermark_unreadable", path=str(self.path))
            if marked is not None and marked > last_seq:
                if not accept_rollback:
                    raise StorageError(self._behind(marked, last_seq))
                log.warning("rollback_accepted", database=str(self.database), behind=marked - last_seq,
                            last_seq=last_seq, acknowledged=marked)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.pwrite(self._fd, _record(last_seq), 0)
        except OSError as e:
            self.close()
            raise StorageError(f"cannot use the high-water mark {self.path}: {e}") from e

    def _behind(self, marked: int, last_seq: int) -> str:
        return (
            f"the database {self.database} is {marked - last_seq} events behind what this daemon acknowledged: "
            f"its last event is #{last_seq}, but events up to #{marked} were committed and acknowledged "
            f"(as {self.path} records). It went back in time: most likely its -wal file was lost after a crash, "
            f"or it was restored from a backup. Refusing to start, which would give new events the numbers of "
            f"acknowledged ones. If {self.database.name}-wal was moved away, put it back; if you restored the "
            f"database from a backup on purpose, start once with `supervisord-agents --accept-rollback` to accept "
            f"it as it is."
        )

    def advance(self, seq: int) -> None:
        """Record that the events up to ``seq`` are committed. Call it after the commit,
        never before: a mark ahead of the database would be a false alarm at the next start.

        One ``pwrite`` of 24 bytes into the page cache, no ``fsync``: cheap enough for the
        actor's loop. Never raises: the commit it follows stands; a mark that could not be
        written stays behind the database, which costs protection, not correctness (the
        failure is logged once, and its end)."""
        if self._fd is None:
            return
        try:
            os.pwrite(self._fd, _record(seq), 0)
        except OSError as e:
            if not self._failing:
                self._failing = True
                log.warning("watermark_not_written", path=str(self.path), seq=seq, error=str(e))
            return
        if self._failing:
            self._failing = False
            log.info("watermark_written_again", path=str(self.path), seq=seq)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _record(seq: int) -> bytes:
    head = _MAGIC + seq.to_bytes(8, "little")
    return _RECORD.pack(_MAGIC, seq, zlib.crc32(head))


def check_integrity(database: Path, *, full_check_max_bytes: int = FULL_CHECK_MAX_BYTES) -> None:
    """Check the database's pages before it is loaded: all of them with ``PRAGMA
    quick_check`` up to ``full_check_max_bytes``; above it (a full check would take
    seconds, see FULL_CHECK_MAX_BYTES), the schema with ``quick_check`` and the newest
    RECENT_ROWS rows of every table, whose pages SQLite validates as it reads them.

    Raises StorageError, saying what is wrong and what to do, if the database is damaged
    or cannot be read."""
    started = time.monotonic()
    problems: list[str] = []
    try:
        db = sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise StorageError(f"cannot check {database}: {e}") from e
    try:
        size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
        full = size <= full_check_max_bytes
        if full:
            problems = _problems(db, "PRAGMA quick_check")
        else:
            problems = _problems(db, "PRAGMA quick_check(sqlite_schema)")
            tables = [name for (name,) in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
            for table in tables:
                db.execute(f"SELECT * FROM {_quote(table)} ORDER BY {_newest_first(db, table)} LIMIT ?",
                           (RECENT_ROWS,)).fetchall()
    except sqlite3.Error as e:  # SQLite validates each page it reads: "database disk image is malformed"
        problems.append(str(e))
    finally:
        db.close()
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise StorageError(
            f"the database {database} is damaged ({shown}): refusing to serve it. Restore it from a backup "
            f"(`agentctl backup` makes them) and start once with `supervisord-agents --accept-rollback`, or move it "
            f"aside with its -wal and -shm files to start with an empty one; `sqlite3 {database} .recover` may "
            f"salvage what is readable."
        )
    log.info("integrity_checked", database=str(database), scope="all" if full else "recent", bytes=size,
             seconds=round(time.monotonic() - started, 3))


def _problems(db: sqlite3.Connection, pragma: str) -> list[str]:
    return [str(row[0]) for row in db.execute(pragma) if row[0] != "ok"]


def _newest_first(db: sqlite3.Connection, table: str) -> str:
    """An ORDER BY that reads the table's b-tree from its right edge: its primary key
    (a WITHOUT ROWID table's b-tree is ordered by it), else the rowid, descending."""
    columns = sorted((pk, name) for _, name, _, _, _, pk in db.execute(f"PRAGMA table_info({_quote(table)})") if pk)
    return ", ".join(f"{_quote(name)} DESC" for _, name in columns) or "rowid DESC"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
