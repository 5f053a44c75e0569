"""Service-manager files for the daemon: systemd user units and a launchd LaunchAgent.

One source of truth: ``agentctl service`` writes what these functions render, and the
example files in the repository's ``systemd/`` and ``launchd/`` folders are renderings
of them (a test keeps them equal).

Two choices matter for agents:

- ``KillMode=process`` (systemd) and ``AbandonProcessGroup`` (launchd): the daemon forks
  the agents' tmux server, which would otherwise be killed with the daemon on every
  stop or restart. With these, only the daemon stops; the next one re-adopts the agents.
- Socket activation: the service manager owns the control socket, so clients can connect
  while the daemon (re)starts; the daemon takes the socket from ``LISTEN_FDS`` (systemd)
  or ``launch_activate_socket`` (launchd).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from supervisord_agents.protocol import EXIT_ALREADY_RUNNING

UNIT: Final = "supervisord-agents"
LABEL: Final = "io.github.supervisord-agents"


def daemon_executable() -> str:
    """The installed ``supervisord-agents`` next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "supervisord-agents"
    if beside.exists():
        return str(beside)
    return shutil.which("supervisord-agents") or str(beside)


def systemd_service(executable: str) -> str:
    return f"""\
[Unit]
Description=supervisord-agents: supervisor for headless AI coding agents
Requires={UNIT}.socket
After={UNIT}.socket

[Service]
Type=notify
ExecStart={executable}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# A second daemon on the same state exits 75: restarting it would not help.
RestartPreventExitStatus={EXIT_ALREADY_RUNNING}
# The agents' tmux server is forked by the daemon and lives in this unit's cgroup:
# stop only the daemon, so that a stop or restart leaves the agents running and the
# next daemon re-adopts them.
KillMode=process
# The unit's cgroup is the daemon's to divide: each agent runs in a cgroup of its own
# below it, which is how the daemon tells agents' connections from yours and ends all
# of an agent at once.
Delegate=yes
TimeoutStopSec=30

[Install]
WantedBy=default.target
Also={UNIT}.socket
"""


def systemd_socket() -> str:
    return f"""\
[Unit]
Description=supervisord-agents control socket

[Socket]
ListenStream=%t/{UNIT}/control.sock
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def launchd_plist(executable: str, *, socket_path: str, log_dir: str, path_env: str) -> bytes:
    plist = {
        "Label": LABEL,
        "ProgramArguments": [executable],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash, not after a clean stop
        "AbandonProcessGroup": True,  # leave the agents' tmux server running when the daemon stops
        "ProcessType": "Background",
        "StandardOutPath": f"{log_dir}/daemon.out.log",
        "StandardErrorPath": f"{log_dir}/daemon.log",
        # The daemon's runtime dir must be the socket's folder, whatever launchd's TMPDIR is.
        "EnvironmentVariables": {"PATH": path_env, "SUPERVISORD_AGENTS_RUNTIME_DIR": str(Path(socket_path).parent)},
        "Sockets": {"Listeners": {"SockPathName": socket_path, "SockPathMode": 0o600, "SockType": "stream"}},
    }
    return plistlib.dumps(plist, sort_keys=False)


@dataclass(frozen=True)
class ServiceFile:
    path: Path
    content: bytes


@dataclass(frozen=True)
class Plan:
    """What ``agentctl service install`` writes, and what to run afterwards."""

    platform: str
    files: list[ServiceFile]
    after_install: list[str]
    before_uninstall: list[str]


def plan(platform: str, *, home: Path, executable: str, socket_path: str) -> Plan:
    if platform == "linux":
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        unit_dir = config_home / "systemd" / "user"
        return Plan(
            platform,
            [ServiceFile(unit_dir / f"{UNIT}.service", systemd_service(executable).encode()),
             ServiceFile(unit_dir / f"{UNIT}.socket", systemd_socket().encode())],
            after_install=[
                "systemctl --user daemon-reload",
                f"systemctl --user enable --now {UNIT}.socket {UNIT}.service",
                "loginctl enable-linger \"$USER\"   # keep it running when you are not logged in",
            ],
            before_uninstall=[f"systemctl --user disable --now {UNIT}.service {UNIT}.socket"],
        )
    if platform == "darwin":
        agent = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        log_dir = home / "Library" / "Logs" / UNIT
        path_env = ":".join([str(Path(executable).parent), "/opt/homebrew/bin", "/usr/local/bin",
                             "/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        content = launchd_plist(executable, socket_path=socket_path, log_dir=str(log_dir), path_env=path_env)
        return Plan(
            platform,
            [ServiceFile(agent, content)],
            after_install=[f"mkdir -p '{log_dir}'", f"launchctl bootstrap gui/$(id -u) '{agent}'"],
            before_uninstall=[f"launchctl bootout gui/$(id -u)/{LABEL}"],
        )
    raise ValueError(f"no service files for platform {platform!r} (linux or darwin)")


def current_platform() -> str:
    return "darwin" if sys.platform == "darwin" else "linux"
