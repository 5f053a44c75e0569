"""Test harness: a real daemon in a subprocess, on private state and runtime dirs.

Each daemon gets its own runtime directory (so its own control socket and its own
private tmux server). Teardown stops the daemon and kills only that tmux server, by
its socket, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from supervisord_agents.clients.client import Client, DaemonNotRunning

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
FAKE_AGENT = str(Path(__file__).with_name("fake_agent.py"))
BIN = Path(sys.executable).parent


def eventually(check: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, and return that; fail after
    ``timeout`` seconds. A deadline, not a fixed sleep: fast machines finish fast."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.02)
    return result


def alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process, read from /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def short_tmpdir(prefix: str = "sa-") -> Path:
    """A temp dir with a short path: Unix socket paths are limited to ~107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class DaemonProcess:
    """One supervisord-agents daemon under test."""

    def __init__(self, base: Path | None = None, **settings: Any) -> None:
        self.base = base or short_tmpdir()
        self.state_dir = self.base / "state"
        self.runtime_dir = self.base / "run"
        self.socket = self.runtime_dir / "control.sock"
        self.tmux_socket = self.runtime_dir / "tmux.sock"
        self.settings = {"reconcile_interval": "0.5", "kill_grace": "2", **{k: str(v) for k, v in settings.items()}}
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup_root: Path | None = None  # the agents' cgroups, when the daemon has them
        self.log_path = self.base / "daemon.log"
        self.extra_env: dict[str, str] = {}  # more of the daemon's environment (set before start)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISORD_AGENTS_")}
        env.update({
            "SUPERVISORD_AGENTS_STATE_DIR": str(self.state_dir),
            "SUPERVISORD_AGENTS_RUNTIME_DIR": str(self.runtime_dir),
            "SUPERVISORD_AGENTS_SOCKET": str(self.socket),
            "SUPERVISORD_AGENTS_CONFIG": str(self.base / "config.toml"),
            "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        })
        env.update({f"SUPERVISORD_AGENTS_{k.upper()}": v for k, v in self.settings.items()})
        env.update(self.extra_env)
        return env

    def start(self, *args: str, wait: bool = True) -> DaemonProcess:
        config = self.base / "config.toml"
        if not config.exists():
            config.write_text("")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisord_agents.daemon", *args], env=self.env, cwd=ROOT,
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with self.client() as c:
                    health = c.request("daemon.health")
                if health.get("cgroup_root"):
                    self.cgroup_root = Path(health["cgroup_root"])
                return
            except (DaemonNotRunning, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.log()}") from None
                time.sleep(0.02)

    def client(self, **kwargs: Any) -> Client:
        return Client(self.socket, **kwargs)

    def call(self, method: str, **params: Any) -> Any:
        with self.client() as c:
            return c.request(method, **params)

    def list(self, method: str, **params: Any) -> list[Any]:
        """Every item of a list method, following its pages."""
        with self.client() as c:
            return c.request_all(method, **params)

    def agentctl(self, *args: str, input: str | None = None, timeout: float = 60,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "agentctl"), *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
            input=input, timeout=timeout,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the daemon (its tmux server and agents keep running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def kill_tmux(self) -> None:
        """Kill this daemon's private tmux server, by its socket (and, should it linger, by
        the pid it reports through that socket)."""
        if not self.tmux_socket.exists():
            return
        tmux = ["tmux", "-S", str(self.tmux_socket)]
        pid = subprocess.run([*tmux, "display-message", "-p", "#{pid}"], capture_output=True, text=True, check=False)
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
        if pid.returncode == 0 and pid.stdout.strip().isdigit():
            server = int(pid.stdout)
            deadline = time.monotonic() + 5
            while alive(server) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(server):
                os.kill(server, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self.kill_tmux()
        self.remove_cgroups()
        shutil.rmtree(self.base, ignore_errors=True)

    def remove_cgroups(self) -> None:
        """End whatever still runs in this daemon's agents' cgroups, and remove them (the
        daemon keeps them across its own restarts, as it keeps the agents)."""
        root = self.cgroup_root
        if root is None or not root.is_dir():
            return
        for cgroup in sorted(p for p in root.glob("agents/*") if p.is_dir()):
            with contextlib.suppress(OSError):
                (cgroup / "cgroup.kill").write_text("1")
            eventually(lambda c=cgroup: "populated 0" in (c / "cgroup.events").read_text(), 10, "cgroup empty")
            cgroup.rmdir()
        for leaf in (root / "agents", root / "daemon", root):
            with contextlib.suppress(OSError):
                leaf.rmdir()

    # -- helpers for tests -------------------------------------------------------------

    def create_task(self, **params: Any) -> str:
        params.setdefault("description", "test task")
        params.setdefault("cwd", str(self.base))
        task: dict[str, Any] = self.call("task.create", **params)
        return str(task["id"])

    def spawn_fake(self, task_id: str, type: str, *args: str, **params: Any) -> dict[str, Any]:
        agent: dict[str, Any] = self.call(
            "agent.spawn", task_id=task_id, type=type, argv=[sys.executable, FAKE_AGENT, *args], **params
        )
        return agent

    def wait_state(self, agent_id: str, timeout: float = 30) -> dict[str, Any]:
        with self.client() as c:
            result = c.request("agent.wait", agent_ids=[agent_id], timeout=timeout)
        assert result["done"], f"agent {agent_id} still live after {timeout} s: {result}"
        agent: dict[str, Any] = self.call("agent.get", agent_id=agent_id)
        return agent
