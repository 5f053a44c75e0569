"""The runner's tee: what it keeps of the agent's output, as it copies it to the pane.

The log file (rotated past its size cap, offsets kept across rotations: :class:`LogFile`),
the last line the agent wrote to stderr (:class:`LastLine`) and, for providers that print
JSON events, the first and the last events, clipped (:class:`EventScanner`). Part of the
runner, so the standard library only, and nothing imported that the agent's start would
wait for (``json`` only once an event arrives).
"""

from __future__ import annotations

import os

try:  # the C module: collections' own imports would cost every pane's start milliseconds
    from _collections import deque  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # not CPython
    from collections import deque  # type: ignore[assignment,unused-ignore]


class EventScanner:
    """Keeps what the daemon needs to tell how the run ended from the agent's JSON event
    stream on stdout: the first event (the session's start) and the last ``KEEP`` events,
    with long strings clipped, so the record stays small whatever the agent printed.
    Which event means what is the daemon's business (:mod:`supervisord_agents.results`)."""

    KEEP = 64
    CLIP = 4000

    def __init__(self) -> None:
        self._partial = b""
        self.first: dict[str, object] | None = None
        self.last: deque[dict[str, object]] = deque(maxlen=self.KEEP)
        self.seen = 0

    def feed(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > (16 << 20):
            self._partial = b""  # a runaway line is not an event we need
        for line in lines:
            self._line(line)

    def close(self) -> None:
        self._line(self._partial)
        self._partial = b""

    def events(self) -> list[dict[str, object]]:
        kept = list(self.last)
        if self.first is not None and self.seen > len(kept):
            kept.insert(0, self.first)
        return kept

    def _line(self, line: bytes) -> None:
        if not line.lstrip().startswith(b"{"):
            return
        import json  # once the agent runs (see json_bytes)

        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        event = _clip(event, self.CLIP)
        assert isinstance(event, dict)
        if self.first is None:
            self.first = event
        self.last.append(event)
        self.seen += 1


def _clip(value: object, limit: int, depth: int = 0) -> object:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "\u2026"
    if depth > 6:
        return None
    if isinstance(value, dict):
        return {k: _clip(v, limit, depth + 1) for k, v in list(value.items())[:64]}
    if isinstance(value, list):
        return [_clip(v, limit, depth + 1) for v in value[:64]]
    return value


class LastLine:
    """The last non-empty line the agent wrote to stderr: often the one that says why."""

    LIMIT = 500

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> None:
        self._tail = (self._tail + data)[-8192:]

    def text(self) -> str:
        for raw in reversed(self._tail.splitlines()):
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                return line[: self.LIMIT]
        return ""


class LogFile:
    """The agent's log, kept under ``max_bytes`` (0: unbounded) by rotation.

    Past ``max_bytes`` the file is renamed ``<log>.<offset>``, where offset is the
    position of its first byte in everything the agent has written, and a new file is
    started; the rotated file before it is removed. So a runaway agent holds at most
    about twice ``max_bytes`` of disk, and a reader can still address output by its
    offset since the agent started (see :meth:`AgentFiles.log_segments`).
    """

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fd = self._open()
        self.start = 0  # offset of the current file's first byte
        self.size = os.fstat(self.fd).st_size
        self.rotated: str | None = None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, data: bytes) -> None:
        if self.max_bytes and self.size and self.size + len(data) > self.max_bytes:
            self._rotate()
        _write_all(self.fd, data)
        self.size += len(data)

    def _rotate(self) -> None:
        rotated = f"{self.path}.{self.start}"
        os.replace(self.path, rotated)
        if self.rotated is not None:
            try:
                os.unlink(self.rotated)
            except FileNotFoundError:
                pass
        self.rotated = rotated
        os.close(self.fd)
        self.start += self.size
        self.size = 0
        self.fd = self._open()

    def close(self) -> None:
        os.close(self.fd)


class Tee:
    """Copies what the agent writes to the pane (our stdout) and the log file."""

    def __init__(self, log: LogFile | None, scanner: EventScanner | None) -> None:
        self.log = log
        self.scanner = scanner
        self.stderr = LastLine()
        self.pane_ok = True

    def write(self, data: bytes, *, from_stdout: bool) -> None:
        if self.log is not None:
            try:
                self.log.write(data)
            except OSError:
                self.log = None  # disk trouble must not kill the agent
        if self.pane_ok:
            try:
                _write_all(1, data)
            except OSError:
                self.pane_ok = False  # the pane is gone (EIO/EPIPE): keep logging
        if not from_stdout:
            self.stderr.feed(data)
        elif self.scanner is not None:
            self.scanner.feed(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except InterruptedError:
            continue
