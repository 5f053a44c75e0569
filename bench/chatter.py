"""An agent for ``bench/attention.py``: reports progress ``RATE`` times a second, through its
own identity (the environment the daemon gave it), until it is stopped.

    chatter.py RATE
"""

from __future__ import annotations

import sys
import time

from supervisord_agents.clients.client import Client
from supervisord_agents.protocol import AGENT_PROGRESS


def main() -> None:
    every = 1.0 / float(sys.argv[1])
    with Client(client="bench-chatter") as c:
        due, i = time.monotonic(), 0
        while True:
            c.call(AGENT_PROGRESS, activity="chatting", percent=i % 101, message=f"step {i}")
            i += 1
            due += every
            time.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    main()
