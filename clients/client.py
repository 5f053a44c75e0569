"""A blocking client for the daemon's socket, for ``agentctl``, the MCP shim, benchmarks and tests.

:meth:`Client.call` takes a method's declaration from the protocol's table and returns
its result decoded into the declared type (a ``Task``, a ``list[Agent]``), so clients
work with the same Structs and enums as the daemon. :meth:`Client.request` is the raw
form (a method name, plain JSON values back) for tests and tools that probe the wire.
Errors come back as the same SupervisorError subclasses the daemon raised, rebuilt from
their stable codes.

It imports neither trio nor mcp (``import trio`` alone costs ~200 ms; a CLI should
answer in tens of ms). Inside an agent, the identity token in the environment is sent
in ``hello``, so the connection acts as that agent.
"""

from __future__ import annotations

import os
import socket
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from supervisord_agents.codec import LineBuffer
from supervisord_agents.config import load_config, locator_path, runtime_dir_candidates, socket_path_from_env
from supervisord_agents.errors import Forbidden, InvalidParams, SupervisorError, Unavailable, from_code
from supervisord_agents.model import Event
from supervisord_agents.protocol import (
    ENV_SOCKET,
    ENV_TOKEN,
    HELLO,
    PROTOCOL_VERSION,
    Method,
    P,
    Page,
    R,
    T,
)

MAX_REPLY: Final = 64 << 20  # the longest reply line this client reads


def resolve_socket(explicit: str | Path | None = None) -> Path:
    """The control socket: ``explicit``, else ``$SUPERVISORD_AGENTS_SOCKET`` (set in every
    agent), else where the daemon binds it, resolved as the daemon resolves it (config
    file, then environment, then the platform's runtime directory)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_SOCKET):
        return Path(os.environ[ENV_SOCKET])
    try:
        config = load_config()
    except InvalidParams:
        return socket_path_from_env()  # a broken config file is the daemon's to report
    if config.paths.runtime_dir or _answers(config.socket_path):
        return config.socket_path
    # Started with less environment than the daemon had (MCP clients start their servers
    # with almost none): ask where the daemon said it is, then look where it would be.
    try:
        located = Path(locator_path().read_text().strip())
    except OSError:
        located = None
    candidates = [located] if located is not None and located.is_absolute() else []
    candidates += [folder / "control.sock" for folder in runtime_dir_candidates()]
    return next((c for c in candidates if _answers(c)), config.socket_path)


def database_path() -> Path:
    """The daemon's database, where its config puts it (the config file, then the
    environment, as the daemon reads them). Raises InvalidParams if the config cannot be read."""
    return load_config().db_path


def _answers(path: Path) -> bool:
    """True if a server listens at ``path`` (a socket file may outlive its daemon)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def check_socket(path: Path) -> None:
    """Refuse a socket that someone else could have put there: it must be ours, in a
    folder that is ours and that nobody else can write (with ``XDG_RUNTIME_DIR`` unset the
    runtime directory is under the shared temp folder, where another user can be first).
    A missing socket is left to ``connect`` to report. Raises Forbidden."""
    uid = os.getuid()
    try:
        folder, sock = path.parent.stat(), path.lstat()
    except FileNotFoundError:
        return
    if folder.st_uid != uid or folder.st_mode & 0o022:
        raise Forbidden(f"refusing {path}: its folder is owned by uid {folder.st_uid} or writable by others "
                        f"(mode {stat.S_IMODE(folder.st_mode):o}); someone else could have put it there")
    if sock.st_uid != uid:
        raise Forbidden(f"refusing {path}: it belongs to uid {sock.st_uid}, not to you (uid {uid})")


class DaemonNotRunning(Unavailable):
    """Nothing listens on the socket (the daemon is not running)."""


class ProtocolError(SupervisorError):
    """The daemon sent something this client cannot understand, or hung up."""


class _Error(msgspec.Struct):
    code: str
    message: str
    data: dict[str, Any] | None = None


class _Message(msgspec.Struct):
    """A reply, or a streamed notice, with its payload left undecoded."""

    id: int | None = None
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: _Error | None = None
    seq: int | None = None
    event: msgspec.Raw = msgspec.Raw(b"null")


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    """One decoder per result type, built the first time it is needed."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return decoder


class Client:
    """One connection to the daemon. Use as a context manager."""

    def __init__(
        self, socket_path: str | Path | None = None, *, token: str | None = None,
        timeout: float | None = None, client: str = "python", hello: bool = True,
    ) -> None:
        self.socket_path = resolve_socket(socket_path)
        check_socket(self.socket_path)
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
        self._buffer = LineBuffer(MAX_REPLY)
        self._lines: list[bytes] = []
        self._early: dict[int, _Message] = {}  # replies that came before the one being waited for
        self._next_id = 0
        self.agent_id: str | None = None
        if hello:
            try:
                reply = self.call(HELLO, protocol=PROTOCOL_VERSION, client=client, token=self.token)
            except BaseException:
                self._sock.close()
                raise
            self.agent_id = reply.agent_id

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send(self, method: str, params: dict[str, Any]) -> int:
        """Send one request without waiting; return its id. Params that are None are left out."""
        self._next_id += 1
        clean = {k: v for k, v in params.items() if v is not None}
        line = self._encoder.encode({"id": self._next_id, "method": method, "params": clean}) + b"\n"
        try:
            self._sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            self._refused()
        return self._next_id

    def _refused(self) -> None:
        """The daemon closed the connection on us: raise the reason it sent first, if any."""
        self._sock.settimeout(1.0)
        try:
            message = self._receive()
        except (OSError, ProtocolError):
            message = None
        if message is not None:
            self._raise_for(message)
        raise ProtocolError("the daemon closed the connection")

    def call(self, method: Method[P, R], **params: Any) -> R:
        """Call a method; return its result as the method's declared type. Raises the
        daemon's error as a SupervisorError."""
        raw = self._reply(self.send(method.name, params))
        try:
            result: R = _decoder(method.result).decode(raw)
        except msgspec.DecodeError as e:
            raise ProtocolError(f"unreadable result of {method.name}: {e}") from None
        return result

    def request(self, method: str, **params: Any) -> Any:
        """Call a method by name; return its result as plain JSON values."""
        return msgspec.json.decode(self._reply(self.send(method, params)))

    def pages(self, method: Method[P, Page[T]], **params: Any) -> Iterator[T]:
        """Every item of a list method, a page at a time: each page is asked for when the
        items before it have been taken, so a caller that streams them holds one page."""
        while True:
            page = self.call(method, **params)
            yield from page.items
            if page.next is None:
                return
            params["cursor"] = page.next

    def request_all(self, method: str, **params: Any) -> list[Any]:
        """Every item of a list method called by name, as plain JSON values."""
        items: list[Any] = []
        while True:
            page = self.request(method, **params)
            items.extend(page["items"])
            if page.get("next") is None:
                return items
            params["cursor"] = page["next"]

    def pipeline(self, method: str, many: Iterable[dict[str, Any]], *, window: int = 64) -> list[Any]:
        """Call one method with each of ``many`` params without waiting for each reply (at
        most ``window`` unanswered, so neither side's buffers fill); return the results in
        order, as plain JSON values. Raises the first error: the requests before it were
        carried out, and those already sent after it may have been too."""
        sent: deque[int] = deque()
        results = []
        for params in many:
            if len(sent) >= window:
                results.append(msgspec.json.decode(self._reply(sent.popleft())))
            sent.append(self.send(method, params))
        while sent:
            results.append(msgspec.json.decode(self._reply(sent.popleft())))
        return results

    def _reply(self, request_id: int) -> bytes:
        """The reply to one request sent on this connection. Replies to others that come first
        (a method answered in the background ends when it ends) are kept for their turn."""
        message = self._early.pop(request_id, None)
        while message is None:
            received = self._receive()
            if received.id == request_id or (received.id is None and received.error is not None):
                message = received
            elif received.id is not None:
                self._early[received.id] = received
        self._raise_for(message)
        return bytes(message.result)

    def events(self, *, since: int | None = None, task_id: str | None = None,
               agent_id: str | None = None) -> Iterator[Event]:
        """Subscribe; yield each event (replayed after ``since``, then live)."""
        request_id = self.send("events.subscribe", {"since": since, "task_id": task_id, "agent_id": agent_id})
        decode = _decoder(Event).decode
        while True:
            message = self._receive()
            if message.seq is not None:
                yield decode(message.event)
            elif message.id == request_id or message.id is None:
                self._raise_for(message)  # the acknowledgement, or an error that ends the stream

    @staticmethod
    def _raise_for(message: _Message) -> None:
        if message.error is not None:
            err = message.error
            raise from_code(err.code, err.message, err.data)

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
