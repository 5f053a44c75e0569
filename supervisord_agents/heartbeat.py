"""The daemon's heartbeat: a small file in the state directory saying when it was last alive.

While it runs, the daemon rewrites ``heartbeat`` every :data:`INTERVAL` seconds with the
wall time, its pid, and, once it stops on request, ``stopped``. A daemon that starts and
finds a heartbeat knows it was down from that time until now, and whether its
predecessor stopped or died (killed, crashed, the machine went down); the daemon records
that as a ``daemon_downtime`` event. After a death the time is late by at most one
interval.

Each write replaces the file (write, rename: a reader sees the old beat or the new, never
half of one) without fsync: a beat is a few dozen bytes written every few seconds, and
after a power loss it can only be older than the truth, so the downtime recorded can only
be longer than it was, by the time the disk held the old beat. A file that cannot be read
or parsed counts as no heartbeat.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec
import structlog
import trio

log = structlog.get_logger()

INTERVAL: Final = 5.0  # seconds between beats: the error of a downtime after a death
FILE: Final = "heartbeat"


class Beat(msgspec.Struct, frozen=True, kw_only=True):
    at: float  # wall time (seconds since the epoch)
    pid: int
    stopped: bool = False  # the daemon stopped on request (this was its last beat)


class Heartbeat:
    """The heartbeat file of one state directory."""

    def __init__(self, state_dir: Path, *, interval: float = INTERVAL, clock: Callable[[], float] = time.time) -> None:
        self.path = state_dir / FILE
        self.interval = interval
        self.clock = clock  # wall time: a beat is read by the next daemon, against its own clock
        self._failing = False  # a full disk is said once, not every interval

    def last(self) -> Beat | None:
        """The beat the previous daemon left, or None (none, or unreadable)."""
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Beat)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as e:
            log.warning("heartbeat_unreadable", path=str(self.path), error=str(e))
            return None

    def beat(self, *, stopped: bool = False) -> None:
        """Write a beat now. Never raises for the disk: a missed beat only makes a later
        downtime look longer."""
        tmp = self.path.with_name(FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(Beat(at=self.clock(), pid=os.getpid(), stopped=stopped)))
            os.replace(tmp, self.path)
        except OSError as e:
            if not self._failing:
                log.warning("heartbeat_not_written", path=str(self.path), error=str(e))
            self._failing = True
        else:
            if self._failing:
                log.info("heartbeat_written", path=str(self.path))
            self._failing = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat now, then every ``interval`` seconds, until cancelled."""
        self.beat()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            self.beat()

