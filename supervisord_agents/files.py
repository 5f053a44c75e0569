"""Where an agent's files live, and reading the runner's records.

Paths are built only from validated ids (see :mod:`.model`), never from free text, so
none can leave the state directory::

    <state>/tasks/<task id>/agents/<agent id>/prompt.txt   the prompt (0600, removed at cleanup)
                                               mcp.json     MCP config naming the shim (removed at cleanup)
                                               launch.json  a queued agent's token and prompt (removed at start)
                                               exec         its argv and environment (0600, the runner removes it)
                                               home/        its CLI's own settings, if any (removed at cleanup)
                                               output.log   stdout+stderr (archived at cleanup)
                                               output.log.N rotated log; N: offset of its first byte
                                               runner.json  the runner's start record
                                               status.json  the runner's exit record (kept)
    <state>/tasks/<task id>/archive/<agent id>.log.gz       compressed log after cleanup
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from .model import AGENT_ID_PATTERN, TASK_ID_PATTERN, EventFormat, Exit
from .results import conclude, read_events
from .runner import pack_exec

_TASK_RE = re.compile(TASK_ID_PATTERN)
_AGENT_RE = re.compile(AGENT_ID_PATTERN)


class AgentFiles:
    """The files of one agent."""

    def __init__(self, state_dir: Path, task_id: str, agent_id: str) -> None:
        # Defence in depth: ids were validated at decode time; refuse anything else here.
        if not _TASK_RE.match(task_id) or not _AGENT_RE.match(agent_id):
            raise ValueError(f"refusing unsafe ids {task_id!r}/{agent_id!r}")
        self.task_dir = state_dir / "tasks" / task_id
        self.dir = self.task_dir / "agents" / agent_id
        self.prompt = self.dir / "prompt.txt"
        self.mcp_config = self.dir / "mcp.json"  # for providers that take one; holds the token
        self.launch = self.dir / "launch.json"  # what a queued agent's start needs; holds the token
        self.home = self.dir / "home"  # a CLI home of its own (gemini: GEMINI_CLI_HOME)
        self.exec = self.dir / "exec"  # the agent's argv and environment, until the runner has read them
        self.log = self.dir / "output.log"
        self.record = self.dir / "runner.json"
        self.status = self.dir / "status.json"
        self.archive = self.task_dir / "archive" / f"{agent_id}.log.gz"

    def create(self, prompt: str, mcp_config: bytes | None = None) -> None:
        """Make the agent's folder and write its prompt file (and MCP config), 0600."""
        self._make_dirs()
        _write_private(self.prompt, prompt.encode())
        if mcp_config is not None:
            _write_private(self.mcp_config, mcp_config)

    def _make_dirs(self) -> None:
        """The agent's folder, 0700 (and its task's, which the task's first spawn makes)."""
        try:
            self.dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            private_dirs(self.task_dir.parent, self.task_dir, self.dir.parent, self.dir)

    def log_segments(self) -> list[tuple[int, Path]]:
        """The live log as (offset of its first byte, path), oldest first: the files the
        runner rotated (``output.log.<offset>``), then ``output.log``. Offsets count
        every byte the agent wrote, so they stay valid across rotations."""
        segments = sorted(
            (int(path.name.rpartition(".")[2]), path)
            for path in self.dir.glob(f"{self.log.name}.*") if path.name.rpartition(".")[2].isdigit()
        )
        if self.log.exists():
            start = 0
            if segments:
                newest_start, newest = segments[-1]
                try:
                    start = newest_start + newest.stat().st_size
                except FileNotFoundError:
                    pass
            segments.append((start, self.log))
        return segments

    def archive_log(self) -> str | None:
        """Compress the live log into the task's archive, once; return the archive's path.

        The gzip member is named ``output.log.<offset>`` after the offset of its first
        byte (non-zero when the log was rotated): see :meth:`archive_start`."""
        segments = self.log_segments()
        if segments and not self.archive.exists():
            private_dirs(self.task_dir.parent, self.task_dir, self.archive.parent)
            tmp = self.archive.with_suffix(".tmp")
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw, gzip.GzipFile(
                filename=f"{self.log.name}.{segments[0][0]}", mode="wb", fileobj=raw, compresslevel=6,
            ) as dst:
                for _, path in segments:
                    with path.open("rb") as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, self.archive)
        for _, path in segments:
            path.unlink(missing_ok=True)  # leftovers of an archive cut short are in it already
        return str(self.archive) if self.archive.exists() else None

    def archive_start(self) -> int:
        """The offset of the archive's first byte, from its gzip header's file name."""
        try:
            with self.archive.open("rb") as f:
                head = f.read(10 + 64)
        except FileNotFoundError:
            return 0
        flags = head[3] if len(head) > 10 and head[:2] == b"\x1f\x8b" else 0
        if not flags & 0x08 or flags & 0x04:  # FNAME present, no FEXTRA before it
            return 0
        digits = head[10:].split(b"\0", 1)[0].rpartition(b".")[2]
        return int(digits) if digits.isdigit() else 0

    def create_home(self, files: dict[str, bytes], links: dict[str, Path]) -> None:
        """The agent's own CLI home: ``files`` written 0600, and each of ``links`` (the user's
        login files) linked in where it exists (a refreshed token reaches the user's, where the
        agent is not sandboxed). The folders are made even where the user has no such file: the
        CLI writes its own there.

        The agent may have written in its home before (an earlier attempt, in a sandbox that
        lets it write nowhere else): nothing it left there is followed. A link in place of a
        folder or of one of these files is removed, not written through."""
        for rel, content in files.items():
            path = self._in_home(rel)
            _unlink_link(path)
            _write_private(path, content)
        for rel, target in links.items():
            link = self._in_home(rel)
            if target.exists():
                link.unlink(missing_ok=True)  # made by an earlier attempt (unlink follows no link)
                link.symlink_to(target)

    def _in_home(self, rel: str) -> Path:
        """``rel`` under the agent's CLI home, its folders made (0700), each a real folder."""
        path = self.home
        _real_dir(path)
        for part in Path(rel).parent.parts:
            path = path / part
            _real_dir(path)
        return path / Path(rel).name

    def write_exec(self, argv: list[str], env: dict[str, str]) -> None:
        """The agent's argv and environment for its runner (0600: they may hold keys).
        Raises ValueError for what an exec could not carry (a NUL)."""
        _write_private(self.exec, pack_exec(argv, env))

    def save_launch(self, data: bytes) -> None:
        """Keep what a queued agent's start needs across a daemon restart (0600)."""
        self._make_dirs()
        _write_private(self.launch, data)

    def forget(self) -> None:
        """Remove what was written for an agent that was never admitted."""
        self.remove_secrets()
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def remove_secrets(self) -> None:
        """Remove the prompt, the MCP config, the launch record and the environment (which carry
        the agent's token and keys)."""
        self.prompt.unlink(missing_ok=True)
        self.mcp_config.unlink(missing_ok=True)
        self.launch.unlink(missing_ok=True)
        self.exec.unlink(missing_ok=True)
        shutil.rmtree(self.home, ignore_errors=True)


def private_dirs(*paths: Path) -> None:
    """Make each folder, in order, 0700 (``mkdir(parents=True)`` would make parents 0755)."""
    for path in paths:
        path.mkdir(mode=0o700, exist_ok=True)


def tighten(root: Path) -> list[str]:
    """Make the state directory private to us, whatever an older version or a hand left
    there: the folder and every folder down to each task's (0700) and the files at its
    top (0600: the database, its WAL, the lock). What lies in a private folder is out of
    others' reach, so the walk stops there and start-up stays quick with a long history.
    Returns what was changed."""
    changed = []
    tasks = root / "tasks"
    levels = [root, *root.glob("*"), *tasks.glob("*"), *tasks.glob("*/agents"), *tasks.glob("*/archive")]
    for path in levels:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            continue
        want = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & want)
            changed.append(str(path))
    return changed


def _real_dir(path: Path) -> None:
    """A folder of ours at ``path`` (0700): a link or a file found there is removed first."""
    try:
        if stat.S_ISDIR(path.lstat().st_mode):
            return
        path.unlink()
    except FileNotFoundError:
        pass
    path.mkdir(mode=0o700)


def _unlink_link(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(path.lstat().st_mode):
            path.unlink()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to the file at ``path``, 0600 if new; never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class Rusage(Struct, frozen=True):
    utime: float = 0.0
    stime: float = 0.0
    maxrss_kb: int = 0


class StatusRecord(Struct, frozen=True):
    """The runner's exit record (see :mod:`.runner` for the writer)."""

    code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    rusage: Rusage | None = None
    format: str = ""  # the EventFormat of ``events``
    events: list[dict[str, Any]] | None = None  # the first and last JSON events the agent printed
    stderr: str = ""  # the last line it wrote to stderr
    child_pid: int | None = None
    pgid: int | None = None
    error: str = ""


class StartRecord(Struct, frozen=True):
    """The runner's start record: which process group to signal."""

    runner_pid: int
    child_pid: int
    pgid: int
    started_at: float


_status_dec = msgspec.json.Decoder(StatusRecord)
_start_dec = msgspec.json.Decoder(StartRecord)


def read_status(files: AgentFiles) -> StatusRecord | None:
    """The exit record, or None if there is none (or it is unreadable)."""
    try:
        return _status_dec.decode(files.status.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None


def read_start(files: AgentFiles) -> StartRecord | None:
    try:
        return _start_dec.decode(files.record.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None


def exit_from_status(record: StatusRecord) -> Exit:
    """The exit the runner's record describes: the agent's own report (its events), how
    the process ended, and its resource usage."""
    try:
        fmt = EventFormat(record.format or EventFormat.NONE)
    except ValueError:
        fmt = EventFormat.NONE
    report = read_events(fmt, record.events or [])
    exit = conclude(report, code=record.code, signal_number=record.signal, runner_error=record.error,
                    stderr=record.stderr, ended_at=record.ended_at)
    if record.rusage is None:
        return exit
    return msgspec.structs.replace(exit, cpu_seconds=round(record.rusage.utime + record.rusage.stime, 3),
                                   memory_peak_kb=record.rusage.maxrss_kb)


def read_exit(files: AgentFiles) -> Exit | None:
    """How the agent ended according to its files: the status record, else None."""
    record = read_status(files)
    return None if record is None else exit_from_status(record)
