"""A blocking client for the daemon's socket, for ``agentctl``, benchmarks and tests.

It imports neither trio nor mcp (``import trio`` alone costs ~200 ms; a CLI should
answer in tens of ms). Errors come back as the same SupervisorError subclasses the
daemon raised, rebuilt from their stable codes.

Inside an agent, the identity token in the environment is sent in ``hello``, so the
connection acts as that agent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from supervisord_agents.config import socket_path_from_env
from supervisord_agents.errors import SupervisorError, Unavailable, from_code
from supervisord_agents.protocol import PROTOCOL_VERSION, LineBuffer

ENV_TOKEN = "SUPERVISORD_AGENTS_TOKEN"


class DaemonNotRunning(Unavailable):
    """Nothing listens on the socket (the daemon is not running)."""


class ProtocolError(SupervisorError):
    """The daemon sent something this client cannot understand, or hung up."""


class _Message(msgspec.Struct):
    id: int | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    seq: int | None = None
    event: Any = None


class Client:
    """One connection to the daemon. Use as a context manager."""

    def __init__(
        self, socket_path: str | Path | None = None, *, token: str | None = None,
        timeout: float | None = None, client: str = "python", hello: bool = True,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path else socket_path_from_env()
        self.token = token if token is not None else os.environ.get(ENV_TOKEN) or None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            self._sock.close()
            raise DaemonNotRunning(
                f"the daemon is not running (no socket at {self.socket_path}); start it with: supervisord-agents"
            ) from e
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_Message)
        self._buffer = LineBuffer(64 << 20)
        self._lines: list[bytes] = []
        self._next_id = 0
        self.agent_id: str | None = None
        if hello:
            try:
                reply = self.call("hello", protocol=PROTOCOL_VERSION, client=client, token=self.token)
            except BaseException:
                self._sock.close()
                raise
            self.agent_id = reply.get("agent_id")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send(self, method: str, params: dict[str, Any]) -> int:
        """Send one request without waiting; return its id."""
        self._next_id += 1
        clean = {k: v for k, v in params.items() if v is not None}
        line = self._encoder.encode({"id": self._next_id, "method": method, "params": clean}) + b"\n"
        self._sock.sendall(line)
        return self._next_id

    def call(self, method: str, **params: Any) -> Any:
        """Call a method and return its result. Raises the daemon's error as a SupervisorError."""
        request_id = self.send(method, params)
        while True:
            message = self._receive()
            if message.id == request_id or (message.id is None and message.error is not None):
                return self._result(message)

    def _result(self, message: _Message) -> Any:
        if message.error is not None:
            err = message.error
            raise from_code(str(err.get("code")), str(err.get("message")), err.get("data"))
        return message.result

    def events(self, *, since: int | None = None, task_id: str | None = None,
               agent_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Subscribe; yield each event (replayed after ``since``, then live) as a dict."""
        request_id = self.send("events.subscribe", {"since": since, "task_id": task_id, "agent_id": agent_id})
        while True:
            message = self._receive()
            if message.seq is not None:
                yield message.event
            elif message.id == request_id or message.id is None:
                self._result(message)  # the acknowledgement, or an error that ends the stream

    def _receive(self) -> _Message:
        while not self._lines:
            data = self._sock.recv(1 << 16)
            if not data:
                raise ProtocolError("the daemon closed the connection")
            self._lines.extend(self._buffer.feed(data))
        line = self._lines.pop(0)
        try:
            return self._decoder.decode(line)
        except msgspec.DecodeError as e:
            raise ProtocolError(f"unreadable reply: {e}") from None
