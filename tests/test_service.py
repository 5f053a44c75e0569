"""Running as a service: socket activation, sd_notify, one instance, the unit files,
the LaunchAgent, ``agentctl service``, and agents surviving a daemon restart."""

from __future__ import annotations

import configparser
import ctypes
import json
import os
import plistlib
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisord_agents import service
from supervisord_agents.clients import service_files
from supervisord_agents.files import AgentFiles, read_start
from tests.harness import BIN, ROOT, DaemonProcess, alive, eventually

EXECUTABLE = str(BIN / "supervisord-agents")


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


class ActivatedDaemon(DaemonProcess):
    """A daemon started the way systemd starts it: the listening socket inherited as
    fd 3, and LISTEN_PID / LISTEN_FDS naming the daemon's own pid."""

    def start(self, *, wait: bool = True) -> ActivatedDaemon:
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.base / "config.toml").touch()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket))
        os.chmod(self.socket, 0o600)
        listener.listen(64)
        self.socket_inode = self.socket.stat().st_ino
        fd = listener.fileno()
        # The wrapper's pid is the daemon's pid after exec, so LISTEN_PID is exactly right.
        wrapper = (
            "import os, sys; fd = int(sys.argv[1]); fd != 3 and (os.dup2(fd, 3), os.close(fd)); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='control'); "
            "os.execv(sys.executable, [sys.executable, '-m', 'supervisord_agents.daemon'])"
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", wrapper, str(fd)],
                env=self.env, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, pass_fds=(fd,),
            )
        listener.close()
        if wait:
            self.wait_ready()
        return self


@pytest.fixture
def activated() -> Any:
    d = ActivatedDaemon().start()
    try:
        yield d
    finally:
        d.close()


def test_socket_activation_serves_on_the_inherited_socket(activated: ActivatedDaemon) -> None:
    """The daemon serves on the socket it inherited (it did not bind a new one), and
    neither its tmux server nor its agents inherit the activation variables."""
    assert activated.socket.stat().st_ino == activated.socket_inode
    assert activated.call("daemon.health")["ok"] is True
    task = activated.create_task()
    agent = activated.spawn_fake(task, "worker", "--sleep", "30")
    files = AgentFiles(activated.state_dir, task, agent["id"])
    start = eventually(lambda: read_start(files))
    tmux_pid = int(subprocess.run(["tmux", "-S", str(activated.tmux_socket), "display-message", "-p", "#{pid}"],
                                  capture_output=True, text=True, check=True).stdout)
    for pid in (start.child_pid, start.runner_pid, tmux_pid):
        env = environ_of(pid)
        leaked = {k for k in env if k.startswith("LISTEN_") or k == "NOTIFY_SOCKET"}
        assert not leaked, f"pid {pid} inherited {leaked}"
    assert environ_of(start.child_pid)["SUPERVISORD_AGENTS_AGENT_ID"] == agent["id"]
    activated.call("agent.kill", agent_id=agent["id"], reason="done")


def test_ready_is_notified_after_the_socket_accepts() -> None:
    """READY=1 arrives on NOTIFY_SOCKET only once a client can be served; STOPPING=1 on SIGTERM."""
    d = DaemonProcess()
    notify_path = d.base / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        env = {**d.env, "NOTIFY_SOCKET": str(notify_path)}
        (d.base / "config.toml").touch()
        with d.log_path.open("ab") as log:
            d.proc = subprocess.Popen([sys.executable, "-m", "supervisord_agents.daemon"], env=env, cwd=ROOT,
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            assert notify.recv(4096) == b"READY=1"
            # No retrying here: at READY the socket must already accept and answer.
            assert d.call("daemon.health")["ok"] is True
            d.proc.send_signal(signal.SIGTERM)
            assert notify.recv(4096) == b"STOPPING=1"
            assert d.proc.wait(30) == 0
        finally:
            d.close()


def test_two_daemons_started_at_once_exactly_one_serves() -> None:
    d = DaemonProcess()
    (d.base / "config.toml").touch()
    procs = [subprocess.Popen([sys.executable, "-m", "supervisord_agents.daemon"], env=d.env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        loser = eventually(lambda: next((p for p in procs if p.poll() is not None), None))
        winner = procs[1 - procs.index(loser)]
        assert loser.returncode == 75
        assert loser.stderr is not None and b"already running" in loser.stderr.read()
        d.proc = winner  # type: ignore[assignment]
        d.wait_ready()
        assert d.call("daemon.health")["pid"] == winner.pid
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
            if p.stderr:
                p.stderr.close()
        d.close()


def test_a_daemon_restart_keeps_agents_running(daemon: DaemonProcess) -> None:
    """A graceful stop (what `systemctl restart` does with KillMode=process) leaves the
    agents and their tmux server running; the next daemon re-adopts them and sees them end."""
    task = daemon.create_task()
    agents = [daemon.spawn_fake(task, f"worker{i}", "--sleep", "4") for i in range(3)]
    starts = [eventually(lambda a=a: read_start(AgentFiles(daemon.state_dir, task, a["id"]))) for a in agents]
    assert daemon.stop() == 0
    assert all(alive(s.child_pid) for s in starts)
    daemon.start()
    for agent in agents:
        now = daemon.call("agent.get", agent_id=agent["id"])
        assert now["state"] == "running"
        assert now["tmux"]["session_id"] == agent["tmux"]["session_id"]
    for agent in agents:
        ended = daemon.wait_state(agent["id"])
        assert ended["state"] == "completed", ended


# -- the files ---------------------------------------------------------------------------


def test_repository_unit_files_are_renderings_of_agentctl_service() -> None:
    assert (ROOT / "systemd/supervisord-agents.service").read_text() == service_files.systemd_service(
        "%h/.local/bin/supervisord-agents")
    assert (ROOT / "systemd/supervisord-agents.socket").read_text() == service_files.systemd_socket()
    plist = plistlib.loads((ROOT / "launchd/io.github.supervisord-agents.plist").read_bytes())
    assert plist["Label"] == service_files.LABEL


def test_systemd_units(tmp_path: Path) -> None:
    """The units parse and say what matters; `systemd-analyze verify` accepts them where it exists."""
    service_unit = tmp_path / "supervisord-agents.service"
    socket_unit = tmp_path / "supervisord-agents.socket"
    service_unit.write_text(service_files.systemd_service(EXECUTABLE))
    socket_unit.write_text(service_files.systemd_socket())
    units = {}
    for path in (service_unit, socket_unit):
        parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(path)
        units[path.suffix] = parser
    svc, sock = units[".service"]["Service"], units[".socket"]["Socket"]
    assert svc["Type"] == "notify"
    assert svc["KillMode"] == "process"
    assert svc["Restart"] == "on-failure"
    assert svc["ExecStart"] == EXECUTABLE
    assert svc["RestartPreventExitStatus"] == "75"
    assert sock["ListenStream"] == "%t/supervisord-agents/control.sock"
    assert sock["SocketMode"] == "0600"
    assert sock["DirectoryMode"] == "0700"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed: parsed only")
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(["systemd-analyze", "--user", "verify", str(socket_unit), str(service_unit)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    if result.returncode != 0 and "Failed to initialize manager" in result.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr


def test_launchd_plist() -> None:
    content = service_files.launchd_plist("/opt/sa/bin/supervisord-agents", socket_path="/tmp/sa-1/control.sock",
                                          log_dir="/Users/u/Library/Logs/supervisord-agents", path_env="/usr/bin")
    plist = plistlib.loads(content)
    assert plist["ProgramArguments"] == ["/opt/sa/bin/supervisord-agents"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["AbandonProcessGroup"] is True
    assert plist["StandardErrorPath"].startswith("/Users/u/Library/Logs/")
    listeners = plist["Sockets"][service.LAUNCHD_SOCKET_NAME]
    assert listeners == {"SockPathName": "/tmp/sa-1/control.sock", "SockPathMode": 0o600, "SockType": "stream"}
    assert plist["EnvironmentVariables"]["SUPERVISORD_AGENTS_RUNTIME_DIR"] == "/tmp/sa-1"


class FakeLaunchd:
    """The seam of ``launchd_sockets``: answers ``launch_activate_socket`` like libSystem."""

    def __init__(self, fds: list[int], error: int = 0) -> None:
        self.fds = fds
        self.error = error
        self.names: list[bytes] = []
        self.freed = 0
        self._array: Any = None

    def launch_activate_socket(self, name: bytes, fds_ref: Any, count_ref: Any) -> int:
        self.names.append(name)
        if self.error:
            return self.error
        self._array = (ctypes.c_int * len(self.fds))(*self.fds)
        fds_ref._obj.contents = ctypes.c_int.from_buffer(self._array)  # point at the array's first element
        count_ref._obj.value = len(self.fds)
        return 0

    def free(self, _ptr: Any) -> None:
        self.freed += 1


def test_launchd_activation_through_its_seam() -> None:
    a, b = socket.socketpair()
    lib = FakeLaunchd([os.dup(a.fileno())])
    try:
        sockets = service.launchd_sockets("Listeners", lib)
        assert lib.names == [b"Listeners"] and lib.freed == 1
        assert len(sockets) == 1
        sockets[0].sendall(b"x")
        assert b.recv(1) == b"x"
        sockets[0].close()
        assert service.launchd_sockets("Listeners", FakeLaunchd([], error=3)) == []  # ESRCH: not under launchd
    finally:
        a.close()
        b.close()


def test_systemd_activation_ignores_variables_for_another_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert service.systemd_sockets() == []
    assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ


# -- agentctl service ----------------------------------------------------------------------


def agentctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "SUPERVISORD_AGENTS_SOCKET": str(home / "run/control.sock")}
    return subprocess.run([str(BIN / "agentctl"), "service", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_agentctl_service_install_status_uninstall(tmp_path: Path) -> None:
    unit_dir = tmp_path / ".config/systemd/user"
    dry = agentctl(tmp_path, "install", "--dry-run", "--platform", "linux")
    assert dry.returncode == 0, dry.stderr
    assert "KillMode=process" in dry.stdout and "systemctl --user enable --now" in dry.stdout
    assert not unit_dir.exists()
    assert agentctl(tmp_path, "status", "--platform", "linux").returncode == 4  # not installed

    done = agentctl(tmp_path, "install", "--platform", "linux")
    assert done.returncode == 0, done.stderr
    assert "loginctl enable-linger" in done.stdout
    assert (unit_dir / "supervisord-agents.service").read_text() == service_files.systemd_service(EXECUTABLE)
    assert (unit_dir / "supervisord-agents.socket").read_text() == service_files.systemd_socket()
    status = agentctl(tmp_path, "status", "--platform", "linux", "--json")
    assert status.returncode == 0
    assert [f["state"] for f in json.loads(status.stdout)["files"]] == ["installed", "installed"]

    gone = agentctl(tmp_path, "uninstall", "--platform", "linux")
    assert gone.returncode == 0 and "systemctl --user disable --now" in gone.stdout
    assert list(unit_dir.iterdir()) == []


def test_agentctl_service_for_launchd(tmp_path: Path) -> None:
    done = agentctl(tmp_path, "install", "--platform", "darwin")
    assert done.returncode == 0, done.stderr
    assert "launchctl bootstrap gui/" in done.stdout
    plist = plistlib.loads((tmp_path / "Library/LaunchAgents/io.github.supervisord-agents.plist").read_bytes())
    assert plist["Sockets"]["Listeners"]["SockPathName"] == str(tmp_path / "run/control.sock")
    assert plist["ProgramArguments"] == [EXECUTABLE]
