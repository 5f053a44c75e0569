"""agentctl: the command-line client of the supervisord-agents daemon.

Every verb takes ``--json`` for machine-readable output. ``--socket`` (or
``$SUPERVISORD_AGENTS_SOCKET``) picks the daemon. Inside an agent, ``progress`` and
``finding`` need nothing but the message: the agent's identity comes from its
environment.

Exit codes are stable: 0 ok, 1 other error, 2 bad input, 3 daemon not running,
4 not found, 5 refused by a limit, 6 an agent waited on did not complete, 7 timeout.

This module is the entry point: it parses the command line (:mod:`.cli_parser`),
connects, runs the verb (:mod:`.verbs`, which render with :mod:`.render`; ``service``
is local, :mod:`.service_verb`) and turns what the verb raised into the exit code, here
and nowhere else. It imports neither trio nor mcp nor libtmux, so it answers in tens of
milliseconds.
"""

from __future__ import annotations

import sys
import time
from typing import Final

import msgspec

from supervisord_agents.errors import (
    BadRequest,
    InvalidParams,
    LimitExceeded,
    NotFound,
    SupervisorError,
    Timeout,
    TooLarge,
    UnknownMethod,
)

from .cli_parser import build_parser
from .client import Client, DaemonNotRunning
from .render import visible
from .verbs import AgentFailed

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_NOT_RUNNING: Final = 3
EXIT_NOT_FOUND: Final = 4
EXIT_LIMIT: Final = 5
EXIT_AGENT_FAILED: Final = 6
EXIT_TIMEOUT: Final = 7
EXIT_INTERRUPTED: Final = 130  # what a shell reports for SIGINT


def exit_code_for(error: SupervisorError) -> int:
    """The exit status for an error a verb raised (or the daemon replied)."""
    if isinstance(error, DaemonNotRunning):
        return EXIT_NOT_RUNNING
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, LimitExceeded):
        return EXIT_LIMIT
    if isinstance(error, InvalidParams | BadRequest | UnknownMethod | TooLarge):
        return EXIT_BAD_INPUT
    if isinstance(error, AgentFailed):
        return EXIT_AGENT_FAILED
    if isinstance(error, Timeout):
        return EXIT_TIMEOUT
    return EXIT_ERROR


def connect(socket_path: str | None, wait: float) -> Client:
    """Connect, retrying for up to ``wait`` seconds while the daemon starts. Raises
    DaemonNotRunning once the time is up."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return Client(socket_path, client="agentctl")
        except DaemonNotRunning:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """Run one agentctl command; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "local", None) is not None:
            args.local(args)
        else:
            with connect(args.socket, args.wait) as client:
                args.func(args, client)
    except SupervisorError as e:
        sys.stderr.write(f"agentctl: {visible(e.message)}\n")  # it may quote an agent
        return exit_code_for(e)
    except (OSError, msgspec.DecodeError) as e:
        sys.stderr.write(f"agentctl: {e}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
