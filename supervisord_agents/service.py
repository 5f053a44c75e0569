"""Service-manager integration: socket activation (systemd, launchd) and sd_notify.

No dependency is needed: each protocol is a few lines. ``activated_sockets`` returns
the listening sockets handed over by the service manager, if any, and removes the
systemd variables from the environment so that tmux and the agents never inherit them.
"""

from __future__ import annotations

import os
import socket
from typing import Final

SD_LISTEN_FDS_START: Final = 3


def activated_sockets() -> list[socket.socket]:
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
