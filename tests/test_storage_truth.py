"""Storage truth: a database that went back in time or has damaged pages is refused at
start, the high-water mark never raises a false alarm, and ``agentctl backup`` makes a
consistent, checked copy while the daemon writes."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing

from supervisord_agents.clients.client import Client
from supervisord_agents.errors import StorageError, SupervisorError
from supervisord_agents.watermark import Watermark, check_integrity
from tests.harness import DaemonProcess

# -- the mark itself ------------------------------------------------------------------


def test_the_mark_reads_back_the_last_seq_advanced(tmp_path: Path) -> None:
    """After open and advances, the file beside the database holds the last seq, for a fresh reader too."""
    mark = Watermark(tmp_path / "state.sqlite3")
    assert mark.path == tmp_path / "state.sqlite3.mark" and mark.read() is None
    mark.open(0)
    for seq in (3, 9, 12):
        mark.advance(seq)
    assert Watermark(tmp_path / "state.sqlite3").read() == 12
    assert stat.S_IMODE(mark.path.stat().st_mode) == 0o600
    mark.close()


def test_a_database_behind_its_mark_is_refused_and_the_mark_kept(tmp_path: Path) -> None:
    """open() with a last seq below the mark raises StorageError saying how far behind and
    how to proceed, and leaves the mark as it was."""
    mark = Watermark(tmp_path / "state.sqlite3")
    mark.open(0)
    mark.advance(210)
    mark.close()
    with pytest.raises(StorageError) as refused:
        Watermark(tmp_path / "state.sqlite3").open(10)
    message = refused.value.message
    assert "is 200 events behind" in message and "-wal" in message and "--accept-rollback" in message
    assert Watermark(tmp_path / "state.sqlite3").read() == 210


def test_an_accepted_rollback_resets_the_mark(tmp_path: Path) -> None:
    """With accept_rollback, a database behind the mark is taken as it is and the mark follows it."""
    Watermark(tmp_path / "db").open(50)
    mark = Watermark(tmp_path / "db")
    mark.open(20, accept_rollback=True)
    assert mark.read() == 20
    mark.close()
    Watermark(tmp_path / "db").open(20)  # and the next start is a normal one


def test_a_database_ahead_of_its_mark_is_accepted(tmp_path: Path) -> None:
    """A mark behind the database (a power loss, a mark write that failed) is no alarm; the mark catches up."""
    Watermark(tmp_path / "db").open(5)
    mark = Watermark(tmp_path / "db")
    mark.open(9)
    assert mark.read() == 9
    mark.close()


@pytest.mark.parametrize("damage", ["empty", "short", "checksum", "magic"])
def test_a_mark_that_cannot_be_trusted_reads_as_none_and_is_rewritten(tmp_path: Path, damage: str) -> None:
    """An empty, short or garbled record (a torn write) is no mark: start proceeds and writes a good one."""
    Watermark(tmp_path / "db").open(77)
    path = tmp_path / "db.mark"
    data = bytearray(path.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "short":
        data = data[:10]
    elif damage == "checksum":
        data[8] ^= 0x01  # the sequence number, not the checksum: 77 became 76
    else:
        data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    mark = Watermark(tmp_path / "db")
    assert mark.read() is None
    mark.open(3)
    assert mark.read() == 3
    mark.close()


def test_advance_never_raises(tmp_path: Path) -> None:
    """A mark write that fails (a full disk) is logged once, not raised: the commit it follows stands."""
    mark = Watermark(tmp_path / "db")
    mark.open(1)
    assert mark._fd is not None
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, mark._fd)  # every write to the mark now fails with ENOSPC
    os.close(full)
    with structlog.testing.capture_logs() as logs:
        mark.advance(2)
        mark.advance(3)
    assert [entry["event"] for entry in logs] == ["watermark_not_written"]
    mark.close()
    assert mark.read() == 1


# -- the integrity check ----------------------------------------------------------------


def make_database(path: Path, rows: int = 4000) -> None:
    """A database with a rowid table and a WITHOUT ROWID one, whose first and last rows carry markers."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
        db.executemany("INSERT INTO tasks VALUES (?, ?)", [(f"T{i:05d}", b"t" * 200) for i in range(200)])
        db.executemany("INSERT INTO events VALUES (?, ?)",
                       [(i, (b"OLDEST-ROW" if i == 1 else b"NEWEST-ROW" if i == rows else b"") + b"e" * 300)
                        for i in range(1, rows + 1)])
    db.close()


def damage_page_with(path: Path, marker: bytes) -> None:
    """Scribble over the b-tree header of every page that holds ``marker``."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    pages, offset = set(), data.find(marker)
    while offset >= 0:
        pages.add(offset // page_size)
        offset = data.find(marker, offset + 1)
    assert pages and 0 not in pages, "never page 1: that is the schema"
    for page in pages:
        data[page * page_size: page * page_size + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def test_a_damaged_page_anywhere_fails_the_full_check(tmp_path: Path) -> None:
    """Up to the size limit every page is checked: a damaged page of the oldest rows is found."""
    db = tmp_path / "db"
    make_database(db)
    check_integrity(db)
    damage_page_with(db, b"OLDEST-ROW")
    with pytest.raises(StorageError) as refused:
        check_integrity(db)
    assert "is damaged" in refused.value.message and "refusing to serve it" in refused.value.message


def test_the_bounded_check_reads_the_newest_rows(tmp_path: Path) -> None:
    """Above the size limit the newest rows are read: a damaged page among them is found."""
    db = tmp_path / "db"
    make_database(db)
    check_integrity(db, full_check_max_bytes=0)
    damage_page_with(db, b"NEWEST-ROW")
    with pytest.raises(StorageError, match="is damaged"):
        check_integrity(db, full_check_max_bytes=0)


def test_the_bounded_check_leaves_old_history_to_the_backup(tmp_path: Path) -> None:
    """Its bound is real: a damaged page deep in history passes the start-up check above the size
    limit, and ``agentctl backup``, which checks every page of its copy, refuses it and writes nothing."""
    db = tmp_path / "db"
    make_database(db)
    damage_page_with(db, b"OLDEST-ROW")
    check_integrity(db, full_check_max_bytes=0)
    dest = tmp_path / "copy.sqlite3"
    result = agentctl("backup", "--database", str(db), str(dest))
    assert result.returncode == 1 and "is damaged, no backup written" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


# -- the real daemon ----------------------------------------------------------------


def agentctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisord_agents.clients.agentctl", *args],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def daemon() -> Iterator[DaemonProcess]:
    d = DaemonProcess().start()
    try:
        yield d
    finally:
        d.close()


def db_path(daemon: DaemonProcess) -> Path:
    return daemon.state_dir / "state.sqlite3"


def last_seq_on_disk(path: Path) -> int:
    """The database file's last event, read as a fresh process would (through its -wal, if any)."""
    with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as db:
        seq: int = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    db.close()
    return seq


def report(daemon: DaemonProcess, task_id: str, message: str) -> int:
    finding: dict[str, int] = daemon.call("agent.finding", task_id=task_id, type="note", message=message)
    return finding["seq"]


def full_log(daemon: DaemonProcess, since: int = 0) -> str:
    return daemon.log_path.read_bytes()[since:].decode(errors="replace")


def refused(daemon: DaemonProcess, *args: str) -> str:
    """Start the daemon, expect it to exit 1 at once; return what it logged."""
    since = daemon.log_path.stat().st_size
    daemon.start(*args, wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(60) == 1, full_log(daemon, since)
    return full_log(daemon, since)


def test_a_lost_wal_after_sigkill_is_refused_until_accepted(daemon: DaemonProcess) -> None:
    """SIGKILL after acknowledged writes, then the -wal file deleted: the daemon refuses to start,
    saying how many acknowledged events are missing and what to do; with --accept-rollback it
    starts on the database as it is, and later restarts (clean or killed) are normal."""
    db = db_path(daemon)
    task_id = daemon.create_task(description="rollback target")
    for i in range(5):
        report(daemon, task_id, f"kept-{i}")
    daemon.stop()  # checkpointed into the database file
    daemon.start()
    acked = max(report(daemon, task_id, f"lost-{i}") for i in range(7))
    daemon.kill()
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 0, "the acknowledged writes are in the -wal file"
    wal.unlink()
    on_disk = last_seq_on_disk(db)
    assert on_disk < acked and Watermark(db).read() == acked

    log = refused(daemon)
    assert f"supervisord-agents: the database {db} is {acked - on_disk} events behind" in log
    assert "--accept-rollback" in log and "-wal" in log
    assert "serving" not in log
    assert log.count(f"is {acked - on_disk} events behind") == 2  # the log line, and stderr
    log = refused(daemon)  # a refusal changes nothing: the next start refuses the same way
    assert f"is {acked - on_disk} events behind" in log

    since = daemon.log_path.stat().st_size
    daemon.start("--accept-rollback")
    assert "rollback_accepted" in full_log(daemon, since)
    downtime = on_disk + 1  # the start records the downtime since the kill, numbered on from the database
    assert daemon.call("daemon.health")["last_seq"] == downtime
    assert Watermark(db).read() == downtime
    after = report(daemon, task_id, "after the restore")
    assert after == downtime + 1  # numbering goes on from the database as it is
    daemon.stop()
    daemon.start()  # without the flag: a normal start
    report(daemon, task_id, "normal again")
    daemon.kill()
    daemon.start()
    assert daemon.call("daemon.health")["last_seq"] == after + 3  # a downtime, the report, a downtime


def test_a_damaged_page_is_refused_with_a_clear_message(daemon: DaemonProcess) -> None:
    """A database file with a damaged page: the daemon refuses to start and says it is damaged,
    what SQLite found, and what to do; it serves nothing."""
    db = db_path(daemon)
    task_id = daemon.create_task(description="DAMAGE-ME " * 20)
    for i in range(20):
        report(daemon, task_id, f"finding-{i}")
    daemon.stop()
    assert not db.with_name(db.name + "-wal").exists(), "a clean stop leaves everything in the database file"
    damage_page_with(db, b"DAMAGE-ME")
    log = refused(daemon)
    assert f"supervisord-agents: the database {db} is damaged (" in log
    assert "refusing to serve it" in log and "agentctl backup" in log and "--accept-rollback" in log
    assert "state_loaded" not in log and "serving" not in log


def _writer(daemon: DaemonProcess, task_id: str, name: str, acked: list[int], stop: threading.Event) -> None:
    """Report findings one after another; remember the seq of each one the daemon acknowledged."""
    i = 0
    try:
        with Client(daemon.socket, timeout=10) as c:
            while not stop.is_set():
                finding = c.request("agent.finding", task_id=task_id, type="note", message=f"{name}-{i}")
                acked.append(finding["seq"])
                i += 1
    except (SupervisorError, OSError):
        return  # the daemon died under us


def writers(daemon: DaemonProcess, task_id: str, n: int = 3) -> tuple[list[list[int]], threading.Event,
                                                                         list[threading.Thread]]:
    acked: list[list[int]] = [[] for _ in range(n)]
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(daemon, task_id, f"w{k}", acked[k], stop)) for k in range(n)]
    for t in threads:
        t.start()
    return acked, stop, threads


def test_the_mark_raises_no_false_alarm(daemon: DaemonProcess) -> None:
    """Across clean restarts and SIGKILLs at random moments under streaming writers (no tampering),
    the daemon always starts, and the mark lies between the last acknowledged event and the
    database's last event: written after each commit and before its acknowledgement."""
    db = db_path(daemon)
    rng = random.Random(14)
    total = 0
    for i in range(6):
        task_id = daemon.create_task(description="no false alarm")  # a fresh one: no task reaches its limits
        acked, stop, threads = writers(daemon, task_id)
        time.sleep(rng.uniform(0.05, 0.4))
        if i % 2:
            daemon.stop()
        else:
            daemon.kill()
        stop.set()
        for t in threads:
            t.join(30)
        last_acked = max((seq for per in acked for seq in per), default=0)
        total += sum(map(len, acked))
        mark = Watermark(db).read()
        assert mark is not None and last_acked <= mark <= last_seq_on_disk(db)
        daemon.start()  # raises if the daemon refused
    assert total > 0 and "events behind" not in full_log(daemon)


def test_a_backup_during_writes_holds_every_event_up_to_its_seq(daemon: DaemonProcess) -> None:
    """agentctl backup while writers stream: the copy opens, passes integrity_check, is 0600, and holds
    every event up to the seq it reports (every acknowledged one among them), with no gap."""
    task_id = daemon.create_task(description="backup target")
    acked, stop, threads = writers(daemon, task_id)
    dest = daemon.base / "backups" / "copy.sqlite3"
    dest.parent.mkdir()
    try:
        deadline = time.monotonic() + 30
        while sum(map(len, acked)) < 200:
            assert time.monotonic() < deadline, "the writers made no progress"
            time.sleep(0.01)
        result = daemon.agentctl("backup", "--json", str(dest))
        time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)
    last_seq = reported["last_seq"]
    assert reported["path"] == str(dest) and reported["bytes"] == dest.stat().st_size
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.sqlite3"]  # no temporary file left
    seqs = sorted(seq for per in acked for seq in per)
    assert seqs[0] <= last_seq < seqs[-1], "the backup was taken while acknowledged writes went on"
    with sqlite3.connect(dest) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = [seq for (seq,) in copy.execute("SELECT seq FROM events ORDER BY seq")]
    copy.close()
    assert stored == list(range(1, last_seq + 1))
    assert set(s for s in seqs if s <= last_seq) <= set(stored)


def test_backup_refuses_to_replace_a_file_unless_forced(daemon: DaemonProcess) -> None:
    """An existing PATH is kept (exit 1, said why) unless --force; the text output says what was copied."""
    task_id = daemon.create_task(description="backup target")
    last = report(daemon, task_id, "one")
    dest = daemon.base / "copy.sqlite3"
    dest.write_bytes(b"precious")
    result = daemon.agentctl("backup", str(dest))
    assert result.returncode == 1 and "exists (pass --force" in result.stderr
    assert dest.read_bytes() == b"precious"
    result = daemon.agentctl("backup", "--force", str(dest))
    assert result.returncode == 0, result.stderr
    assert f"to {dest}: " in result.stdout and f"events up to #{last}" in result.stdout
    assert last_seq_on_disk(dest) == last
    result = daemon.agentctl("backup", str(db_path(daemon)), "--force")
    assert result.returncode == 2 and "is the database itself" in result.stderr


def test_backup_works_with_the_daemon_stopped(daemon: DaemonProcess) -> None:
    """A local verb: with no daemon running, the copy is made from the database file (and its -wal)."""
    task_id = daemon.create_task(description="backup target")
    last = report(daemon, task_id, "one")
    daemon.kill()
    dest = daemon.base / "copy.sqlite3"
    result = daemon.agentctl("backup", "--json", str(dest))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["last_seq"] == last == last_seq_on_disk(dest)


def test_agentctl_does_not_import_sqlite_to_start() -> None:
    """The backup verb's imports are its own: other verbs do not pay for sqlite3."""
    probe = "import sys, supervisord_agents.clients.agentctl; print('sqlite3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
