"""The runner: what an agent's tmux pane runs, around the agent itself.

    python -m supervisord_agents.runner --status S --record R --log L [--log-max BYTES] --prompt P
                                        [--cgroup DIR --cgroup-mount MOUNT] [--events FORMAT]
                                        (--exec FILE | -- argv...)

It starts the agent in a process group of its own with the prompt file on stdin (else
``/dev/null``: never a terminal). With ``--exec``, the agent's argv and exactly its
environment come from that file (the daemon's environment, composed at this spawn: not
the tmux server's; and an argv may hold newlines, which a tmux command line may not); the
file is removed once read, as it may hold keys. It copies
the agent's stdout and stderr both to the pane and to the log file (rotated past
``--log-max`` bytes, see :class:`.tee.LogFile`), forwards SIGTERM,
SIGINT and SIGHUP to the group, and when the agent exits writes the status record
atomically (write, fsync, rename): exit code or signal, start and end times, rusage, the
last line of stderr and, for providers that print JSON events (``--events``), the first
and the last events (see :class:`.tee.EventScanner`). tmux's "pane dead" is only the
daemon's trigger to read that record; on tmux 3.3a the pane's own exit status is often
lost.

With ``--cgroup`` (Linux, cgroup v2) the agent is born in its own cgroup: the runner
moves itself in, starts the agent, and moves itself back out, so that ending the cgroup
(``cgroup.kill``) ends every process of the agent and never the runner, which must
live to write the record. When the agent exits, whatever it left running is ended, by
its cgroup where it has one, else by process group and parentage (the runner is the
agent's subreaper), whether or not it closed its output first.

Standard library only, and imports kept few, so that it starts fast. It never raises:
whatever goes wrong is written into the status record (code 127 if the agent could not
be started at all).
"""

from __future__ import annotations

import errno
import os
import resource
import select
import sys
import time

from .tee import EventScanner, LogFile, Tee

# The C module under ``signal``: its Python wrapper imports enum and functools, which alone
# would double the runner's imports (one runner starts per pane; see also the tee's deque).
try:
    import _signal as signal  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # not CPython
    import signal  # type: ignore[no-redef,unused-ignore]

EXEC_FAILED = 127
_DROP_ENV = ("TMUX", "TMUX_PANE")  # the agent must not drive the supervisor's tmux server by accident
_CHUNK = 1 << 16


class Args:
    def __init__(self, argv: list[str]) -> None:
        self.status = self.record = self.log = self.prompt = self.cgroup = self.cgroup_mount = ""
        self.exec = self.events = ""
        self.log_max = 0
        self.command: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--":
                self.command = argv[i + 1 :]
                break
            if arg in ("--status", "--record", "--log", "--prompt", "--cgroup", "--cgroup-mount", "--exec",
                       "--events") and i + 1 < len(argv):
                setattr(self, arg[2:].replace("-", "_"), argv[i + 1])
                i += 1
            elif arg == "--log-max" and i + 1 < len(argv) and argv[i + 1].isdigit():
                self.log_max = int(argv[i + 1])
                i += 1
            else:
                raise SystemExit(f"runner: unexpected argument {arg!r}")
            i += 1
        if not (self.status and (self.command or self.exec)):
            raise SystemExit("usage: runner --status FILE [--record F] [--log F] [--log-max BYTES] [--prompt F]"
                             " [--cgroup DIR --cgroup-mount MOUNT] [--events FORMAT] (--exec F | -- argv)")


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def json_bytes(data: dict[str, object]) -> bytes:
    import json  # not at the top: the agent starts without it (see numbers_json), and it costs ms

    return json.dumps(data, separators=(",", ":")).encode()


def numbers_json(**fields: int | float) -> bytes:
    """A JSON object of finite numbers, without the json module (the start record)."""
    return ("{" + ",".join(f'"{key}":{value!r}' for key, value in fields.items()) + "}").encode()


#: The ``--exec`` file: NUL-terminated strings (file-system encoding), this tag first, then
#: the number of argv items, the argv, and one ``KEY=VALUE`` per variable. Exact, as no
#: string of an argv or an environment can hold a NUL, and read without a JSON parser.
EXEC_TAG = "supervisord-agents exec 1"


def pack_exec(argv: list[str], env: dict[str, str]) -> bytes:
    """The ``--exec`` file's bytes. Raises ValueError for what an exec could not carry."""
    items = [EXEC_TAG, str(len(argv)), *argv, *(f"{key}={value}" for key, value in env.items())]
    if any("\0" in item for item in items) or any(not key or "=" in key for key in env):
        raise ValueError("an argv item or a variable holds a NUL, or a variable's name is empty or holds '='")
    return b"".join(os.fsencode(item) + b"\0" for item in items)


def unpack_exec(data: bytes) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) from an ``--exec`` file's bytes. Raises ValueError."""
    *items, rest = [os.fsdecode(item) for item in data.split(b"\0")]
    if not data.startswith(os.fsencode(EXEC_TAG) + b"\0"):
        raise ValueError("not an exec file of this version")
    count = int(items[1]) if len(items) > 1 and items[1].isdigit() else -1
    argv, variables = items[2 : 2 + count], items[2 + count :]
    if rest or len(argv) != count or not all("=" in item[1:] for item in variables):
        raise ValueError("a truncated exec file")
    return argv, dict(item.split("=", 1) for item in variables)


def load_exec(args: Args) -> dict[str, str]:
    """The agent's environment (and, from an ``--exec`` file, its argv into ``args``): the
    file the daemon wrote for this spawn, read once, then removed; without one, ours
    without tmux's variables. Raises OSError."""
    if not args.exec:
        return {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    with open(args.exec, "rb") as f:
        data = f.read()
    os.unlink(args.exec)
    try:
        argv, env = unpack_exec(data)
    except ValueError as e:
        raise OSError(errno.EINVAL, f"{args.exec}: {e}") from None
    if argv:
        args.command = argv
    if not args.command:
        raise OSError(errno.EINVAL, "no command to run")
    return env


def spawn(args: Args, env: dict[str, str], out_w: int, err_w: int) -> int:
    """Start the agent in its own process group; return its pid. Raises OSError."""
    stdin_fd = os.open(args.prompt, os.O_RDONLY) if args.prompt else os.open(os.devnull, os.O_RDONLY)
    try:
        return os.posix_spawn(
            _which(args.command[0], env.get("PATH", os.defpath)), args.command, env,
            file_actions=[(os.POSIX_SPAWN_DUP2, stdin_fd, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setpgroup=0,
            setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD),
        )
    finally:
        os.close(stdin_fd)


def _which(name: str, path: str) -> str:
    """``name`` found on the agent's PATH (not ours: the two may differ). Raises OSError."""
    if "/" in name:
        return name
    for folder in path.split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise OSError(errno.ENOENT, f"{name!r} not found on PATH={path}")


def pump(pid: int, out_r: int, err_r: int, tee: Tee, leftovers: Leftovers) -> tuple[int, resource.struct_rusage]:
    """Copy output until the agent has exited and its pipes are drained; reap it."""
    open_fds = {out_r, err_r}
    exited_at: float | None = None
    while open_fds:
        timeout = 0.2 if exited_at is None else 0.05
        try:
            ready, _, _ = select.select(list(open_fds), [], [], timeout)
        except InterruptedError:
            continue
        for fd in ready:
            try:
                data = os.read(fd, _CHUNK)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if data:
                tee.write(data, from_stdout=fd == out_r)
            else:
                open_fds.discard(fd)
                os.close(fd)
        if exited_at is None and _has_exited(pid):
            exited_at = time.monotonic()
            # What the agent left running must not outlive it: a grandchild holding the
            # pipes would otherwise keep us waiting forever, and a leaked one would burn
            # memory and tokens.
            leftovers.end(pid)
        elif exited_at is not None and not ready and time.monotonic() - exited_at > 1.0:
            break
    for fd in open_fds:
        os.close(fd)
    if exited_at is None:
        # The agent closed (or redirected) its output and still runs: wait for its exit,
        # then end what it left, which no longer holds a pipe to keep us here.
        while True:
            try:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
        leftovers.end(pid)
    while True:
        try:
            _, status, rusage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    _reap_orphans()
    return status, rusage


def _leave(home: str) -> bool:
    try:
        _write_file(os.path.join(home, "cgroup.procs"), "0")
    except OSError:
        return False
    return True


def _has_exited(pid: int) -> bool:
    """True once the agent has exited (without reaping it: its pid keeps naming the group)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def become_subreaper() -> bool:
    """Linux: make the agent's orphaned descendants ours instead of init's, so that none
    escapes by double-forking or ``setsid`` (see :func:`_end_leftovers`)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # only here: the import costs a few ms

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


class Leftovers:
    """Ends what an agent left running: its whole cgroup where it has one, else by group
    and parentage (:func:`_end_leftovers`)."""

    def __init__(self, cgroup: str) -> None:
        self.cgroup = cgroup

    def end(self, pgid: int) -> None:
        if not self.cgroup:
            _end_leftovers(pgid)
            return
        try:
            _write_file(os.path.join(self.cgroup, "cgroup.kill"), "1")
        except OSError:
            _end_leftovers(pgid)
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and _populated(self.cgroup):
            time.sleep(0.01)


def _populated(cgroup: str) -> bool:
    try:
        with open(os.path.join(cgroup, "cgroup.events"), "rb") as f:
            return b"populated 1" in f.read()
    except OSError:
        return False


def _write_file(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def enter_cgroup(cgroup: str, mount: str) -> str:
    """Move this process into ``cgroup``; return the cgroup it was in. Raises OSError."""
    with open("/proc/self/cgroup") as f:
        current = next((line[3:].strip() for line in f if line.startswith("0::")), "/")
    _write_file(os.path.join(cgroup, "cgroup.procs"), "0")
    return os.path.join(mount, current.lstrip("/"))


def _end_leftovers(pgid: int) -> None:
    """SIGTERM, then SIGKILL after a second, whatever the agent left running: its process
    group, and every process descended from us (as subreaper, orphans of any group or
    session are re-parented to us)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _leftovers(pgid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass  # gone meanwhile (ESRCH)
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and _leftovers(pgid):
                time.sleep(0.02)


def _leftovers(pgid: int) -> list[int]:
    # Shared in spirit with procs.py, on purpose: importing procs would pull trio and
    # msgspec into every agent's start. Zombies are not left over: they are only waiting
    # to be reaped (the agent itself, until we reap it, among them).
    try:
        names = os.listdir("/proc")
    except OSError:
        return _group_fallback(pgid)
    me = os.getpid()
    parent: dict[int, int] = {}
    in_group: list[int] = []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == b"Z":
            continue
        pid = int(name)
        parent[pid] = int(fields[1])
        if int(fields[2]) == pgid:
            in_group.append(pid)
    ours = set(in_group)
    for pid in parent:
        ancestor, hops = parent[pid], 0
        while ancestor > 1 and ancestor != me and hops < 64:
            ancestor, hops = parent.get(ancestor, 0), hops + 1
        if ancestor == me:
            ours.add(pid)
    return sorted(ours)


def _group_fallback(pgid: int) -> list[int]:
    """Without /proc (macOS): the group, if anything of it answers."""
    try:
        os.killpg(pgid, 0)
    except OSError:
        return []
    return [-pgid]  # os.kill(-pgid, sig) signals the whole group


def _reap_orphans() -> None:
    """Reap adopted orphans that have exited (call only once the agent is reaped)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return


def main(argv: list[str] | None = None) -> int:
    args = Args(sys.argv[1:] if argv is None else argv)
    started = time.time()
    status: dict[str, object] = {"code": None, "signal": None, "started_at": started, "ended_at": None,
                                 "rusage": None, "events": None, "format": args.events, "stderr": "",
                                 "child_pid": None, "pgid": None, "error": ""}
    log = None
    if args.log:
        try:
            log = LogFile(args.log, args.log_max)
        except OSError as e:
            status["error"] = f"cannot open log: {e.strerror}"
    scanner = EventScanner() if args.events else None
    tee = Tee(log, scanner)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = None
    forward: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if pid is not None:
            forward.append(signum)
            try:
                os.killpg(pid, signum)
            except OSError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if not (args.cgroup and os.path.exists(os.path.join(args.cgroup, "cgroup.kill"))):
        become_subreaper()  # else its cgroup holds whatever it leaves, and ctypes is not worth its ms
    try:
        home = enter_cgroup(args.cgroup, args.cgroup_mount) if args.cgroup else ""
    except OSError as e:
        # Outside its cgroup the agent could not be told from the operator: it does not start.
        message = f"cannot enter the agent's cgroup {args.cgroup}: {e.strerror or e}"
        tee.write(f"supervisord-agents runner: {message}\n".encode(), from_stdout=False)
        status.update(code=EXEC_FAILED, ended_at=time.time(), error=message)
        write_atomic(args.status, json_bytes(status))
        return EXEC_FAILED
    try:
        pid = spawn(args, load_exec(args), out_w, err_w)
    except OSError as e:
        if home:
            _leave(home)
        os.close(out_w)
        os.close(err_w)
        what = repr(args.command[0]) if args.command else "the agent"
        message = f"cannot start {what}: {e.strerror or e}"
        tee.write(f"supervisord-agents runner: {message}\n".encode(), from_stdout=False)
        status.update(code=EXEC_FAILED, ended_at=time.time(), error=message)
        write_atomic(args.status, json_bytes(status))
        return EXEC_FAILED
    if home and not _leave(home):
        status["error"] = "could not leave the agent's cgroup: a kill of the agent ends the runner too"
    os.close(out_w)
    os.close(err_w)
    status.update(child_pid=pid, pgid=pid)
    if args.record:
        try:
            write_atomic(args.record, numbers_json(runner_pid=os.getpid(), child_pid=pid, pgid=pid,
                                                   started_at=started))
        except OSError as e:
            status["error"] = f"cannot write start record: {e.strerror}"
    wait_status, rusage = pump(pid, out_r, err_r, tee, Leftovers(args.cgroup))
    if scanner is not None:
        scanner.close()
        status["events"] = scanner.events()
    status["stderr"] = tee.stderr.text()
    code: int
    if os.WIFSIGNALED(wait_status):
        status["signal"] = os.WTERMSIG(wait_status)
        code = 128 + os.WTERMSIG(wait_status)
    else:
        status["code"] = code = os.WEXITSTATUS(wait_status)
    maxrss = rusage.ru_maxrss // 1024 if sys.platform == "darwin" else rusage.ru_maxrss  # bytes on macOS
    status["rusage"] = {"utime": rusage.ru_utime, "stime": rusage.ru_stime, "maxrss_kb": maxrss}
    status["ended_at"] = time.time()
    if tee.log is not None:
        tee.log.close()
    try:
        write_atomic(args.status, json_bytes(status))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
    return code


if __name__ == "__main__":
    sys.exit(main())
