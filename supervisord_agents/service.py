"""Service-manager integration: socket activation (systemd, launchd) and sd_notify.

No dependency is needed: each protocol is a few lines. ``activated_sockets`` returns
the listening sockets handed over by the service manager, if any, and removes the
systemd variables from the environment so that tmux and the agents never inherit them.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from typing import Any, Final

SD_LISTEN_FDS_START: Final = 3
LAUNCHD_SOCKET_NAME: Final = "Listeners"  # the key under Sockets in our LaunchAgent plist


def activated_sockets() -> list[socket.socket]:
    """The listening sockets the service manager handed over; [] when not activated."""
    sockets = systemd_sockets()
    if not sockets and sys.platform == "darwin":  # pragma: no cover - macOS only
        sockets = launchd_sockets(LAUNCHD_SOCKET_NAME)
    return sockets


def launchd_sockets(name: str, lib: Any = None) -> list[socket.socket]:
    """Sockets that launchd made for this job's ``Sockets`` entry ``name``.

    ``launch_activate_socket(name, &fds, &count)`` (libSystem, macOS 10.9+) returns 0 and
    a malloc'ed array of descriptors, or an errno (ESRCH: not started by launchd; ENOENT:
    no such entry). ``lib`` is the seam for tests; by default the C library of this process."""
    lib = ctypes.CDLL(None, use_errno=True) if lib is None else lib
    fds = ctypes.POINTER(ctypes.c_int)()
    count = ctypes.c_size_t(0)
    if lib.launch_activate_socket(name.encode(), ctypes.byref(fds), ctypes.byref(count)) != 0:
        return []
    try:
        return [socket.socket(fileno=fds[i]) for i in range(count.value)]
    finally:
        lib.free(fds)


def systemd_sockets() -> list[socket.socket]:
    """Sockets passed by systemd (``LISTEN_FDS``) for this process; [] when not activated."""
    pid = os.environ.get("LISTEN_PID")
    count = os.environ.get("LISTEN_FDS")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    if pid != str(os.getpid()) or not count:
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def notify(state: str) -> bool:
    """Send one sd_notify datagram (``READY=1``, ``STOPPING=1``); False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True
