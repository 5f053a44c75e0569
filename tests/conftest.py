from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import DaemonProcess


@pytest.fixture
def daemon() -> Iterator[DaemonProcess]:
    """A running daemon with its own state, socket and tmux server."""
    d = DaemonProcess().start()
    try:
        yield d
    finally:
        d.close()
