"""Agents in cgroups (v2): the kernel says which agent a process belongs to, ends all of
an agent at once, and tells when nothing of it is left.

Agents run under the operator's uid, so the uid tells them apart from nothing, and a
process group or a session is left with one ``setsid``. A cgroup is not: every process
an agent starts is born in the agent's cgroup, whatever it does with its group, its
session, its pipes or its parent. So, on Linux with a writable cgroup2 hierarchy:

- each agent runs in ``<base>/agents/<agent id>``; the runner moves itself in, starts
  the agent (which is born there), and moves itself back out, so the runner survives
  ``cgroup.kill`` to write the agent's record (see :mod:`.runner`);
- a connection's peer pid maps to the agent it runs in (:meth:`Cgroups.agent_of`): a
  request from inside an agent is that agent's, whatever it sends or omits;
- stop and cleanup end the whole cgroup (``cgroup.kill``), and "nothing left" means
  ``cgroup.events`` says ``populated 0``;
- where the controllers are delegated to us, ``memory.max``, ``pids.max`` and
  ``cpu.max`` bound each agent, and ``cpu.stat`` / ``memory.peak`` say what it used.

``<base>`` is the daemon's own cgroup when it was delegated one (systemd ``Delegate=yes``;
the daemon then moves itself into ``<base>/daemon``, because a cgroup with processes
cannot hand controllers to its children), else a folder it creates beside its own
cgroup, or the configured ``cgroup_root``. Where none is writable, :func:`setup`
says why, and the daemon falls back to the runner's ancestry (:mod:`.procs`).

The hierarchy is found in ``/proc/self/mountinfo`` (on a hybrid layout cgroup2 is not
at ``/sys/fs/cgroup``). All methods are small reads and writes of kernel files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from pathlib import Path
from typing import Final

from msgspec import Struct

from . import procs
from .model import Resources

CONTROLLERS: Final = ("memory", "pids", "cpu")  # the ones agents' resources use
_CPU_PERIOD_US: Final = 100_000


class Usage(Struct, frozen=True, kw_only=True, omit_defaults=True):
    cpu_seconds: float | None = None
    memory_peak_kb: int | None = None


def find_mount(mountinfo: str) -> tuple[Path, str] | None:
    """The cgroup2 mount point and the root it shows, from ``/proc/self/mountinfo``."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split(" ", 1)[0] == "cgroup2" and len(fields) >= 5:
            return Path(_unescape(fields[4])), _unescape(fields[3])
    return None


def own_cgroup(proc_cgroup: str) -> str | None:
    """The cgroup2 path of a process, from its ``/proc/PID/cgroup`` (the ``0::`` line)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


class Cgroups:
    """The daemon's cgroup subtree: ``<base>/agents/<agent id>``, one per agent."""

    def __init__(self, mount: Path, base: Path, controllers: frozenset[str]) -> None:
        self.mount = mount
        self.base = base
        self.agents = base / "agents"
        self.controllers = controllers
        # Paths in /proc/PID/cgroup are relative to the hierarchy's root.
        self._agents_prefix = "/" + str(self.agents.relative_to(mount)) + "/"

    @property
    def missing_controllers(self) -> list[str]:
        return [c for c in CONTROLLERS if c not in self.controllers]

    def agent_dir(self, agent_id: str) -> Path:
        # Agent ids are validated at decode time: a cgroup name never holds "/" or "..".
        return self.agents / agent_id

    def create(self, agent_id: str, resources: Resources) -> Path:
        """The agent's cgroup, made with its bounds (where the controllers allow). Raises OSError."""
        path = self.agent_dir(agent_id)
        path.mkdir(exist_ok=True)
        if resources.memory_max_mb is not None and "memory" in self.controllers:
            _write(path / "memory.max", str(resources.memory_max_mb << 20))
            with contextlib.suppress(OSError):
                _write(path / "memory.swap.max", "0")  # a bound that swap does not undo
        if resources.pids_max is not None and "pids" in self.controllers:
            _write(path / "pids.max", str(resources.pids_max))
        if resources.cpu_max is not None and "cpu" in self.controllers:
            _write(path / "cpu.max", f"{max(1000, int(resources.cpu_max * _CPU_PERIOD_US))} {_CPU_PERIOD_US}")
        return path

    def agent_of(self, pid: int) -> str | None:
        """The agent whose cgroup ``pid`` runs in; None for a process in no agent's (or gone)."""
        try:
            fd = os.open(f"/proc/{pid}/cgroup", os.O_RDONLY)
        except OSError:
            return None
        try:
            data = os.read(fd, 4096).decode(errors="replace")
        finally:
            os.close(fd)
        path = own_cgroup(data)
        if path is None or not path.startswith(self._agents_prefix):
            return None
        return path[len(self._agents_prefix):].split("/", 1)[0] or None

    def pids(self, agent_id: str) -> list[int]:
        try:
            text = (self.agent_dir(agent_id) / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def populated(self, agent_id: str) -> bool:
        """True while any process runs in the agent's cgroup (False once it is gone)."""
        try:
            events = (self.agent_dir(agent_id) / "cgroup.events").read_text()
        except OSError:
            return False
        return "populated 1" in events

    def signal(self, agent_id: str, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to every process of the agent (a polite stop before ``kill``)."""
        procs.signal_all(self.pids(agent_id), sig)

    def kill(self, agent_id: str) -> None:
        """SIGKILL every process in the agent's cgroup, at once (``cgroup.kill``)."""
        with contextlib.suppress(FileNotFoundError):
            _write(self.agent_dir(agent_id) / "cgroup.kill", "1")

    def usage(self, agent_id: str) -> Usage:
        """What the agent used, as far as its cgroup says (CPU time; peak memory with the controller)."""
        path = self.agent_dir(agent_id)
        cpu = peak = None
        try:
            for line in (path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    cpu = int(value) / 1e6
        except (OSError, ValueError):
            pass
        try:
            peak = int((path / "memory.peak").read_text()) // 1024
        except (OSError, ValueError):
            pass
        return Usage(cpu_seconds=cpu, memory_peak_kb=peak)

    def remove(self, agent_id: str) -> None:
        """Remove an empty agent cgroup. Raises OSError (EBUSY while processes remain)."""
        with contextlib.suppress(FileNotFoundError):
            self.agent_dir(agent_id).rmdir()


def setup(configured: str, instance: str) -> tuple[Cgroups | None, str]:
    """The daemon's subtree, created if needed, or None and why not.

    ``configured``: ``"off"``, a path, or ``""`` for automatic. ``instance`` names the
    folder made beside our own cgroup when we were not delegated one (a daemon's state
    directory, so that a restarted daemon finds its agents' cgroups again)."""
    if configured == "off":
        return None, "cgroups are turned off in the config (cgroup_root = \"off\")"
    try:
        mount = find_mount(Path("/proc/self/mountinfo").read_text())
        own = own_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError as e:
        return None, f"cannot read /proc: {e.strerror}"
    if mount is None or own is None:
        return None, "no cgroup v2 hierarchy is mounted"
    mount_point, mount_root = mount
    if not own.startswith(mount_root):
        return None, f"our cgroup {own} is outside the mounted hierarchy"
    own_dir = mount_point / own[len(mount_root):].lstrip("/")
    delegated = own_dir != mount_point and os.access(own_dir / "cgroup.procs", os.W_OK)
    if configured:
        base = Path(configured)
    elif delegated:
        base = own_dir
    else:
        digest = hashlib.sha256(instance.encode()).hexdigest()[:12]
        base = own_dir / f"supervisord-agents-{os.getuid()}-{digest}"
    try:
        base.mkdir(exist_ok=True)
        if base == own_dir:  # we are in it: move to a leaf, so the subtree can take controllers
            (base / "daemon").mkdir(exist_ok=True)
            _write(base / "daemon" / "cgroup.procs", "0")
        (base / "agents").mkdir(exist_ok=True)
        if not (base / "agents" / "cgroup.kill").exists():
            return None, "the kernel has no cgroup.kill (Linux 5.14 or newer is needed)"
    except OSError as e:
        return None, f"cannot use {base}: {e.strerror or e}"
    try:
        available = set((base / "cgroup.controllers").read_text().split())
    except OSError:
        available = set()
    enabled = set()
    for controller in CONTROLLERS:
        if controller not in available:
            continue
        try:
            _write(base / "cgroup.subtree_control", f"+{controller}")
            _write(base / "agents" / "cgroup.subtree_control", f"+{controller}")
            enabled.add(controller)
        except OSError:
            continue
    return Cgroups(mount_point, base, frozenset(enabled)), ""


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # as a shell's ">" does; kernfs takes it
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)

