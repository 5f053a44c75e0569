"""The Unix-socket server: connections, framing, peer checks, and error replies.

This is the one place where errors become error replies. Each connection reads lines
through a :class:`~supervisord_agents.protocol.LineBuffer`, decodes each request with
its method's declaration (:data:`~supervisord_agents.protocol.METHODS`), answers
``INLINE`` methods in order, and runs the others (``BACKGROUND``: those that wait for
an agent; ``STREAM``: subscriptions) as tasks of the connection's own nursery, so that
one connection can wait for an agent and still report progress. Replies are matched by
id.

Limits: a line longer than ``max_line`` gets an error reply and the connection is
closed; past ``max_connections`` a new connection gets an error reply and is closed; a
connection with nothing in flight is closed after ``idle_timeout``. A client that never
reads its replies only blocks itself (the daemon stops reading from it), and a
subscriber that falls too far behind is cut off, so memory stays bounded.

Security: the socket is 0600 inside a 0700 directory, and the peer's uid (SO_PEERCRED
on Linux, LOCAL_PEERCRED on macOS) must be the daemon's own.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
import trio

from .agent_sockets import AgentSockets, listen_unix
from .api import Api, Caller, ConnectionStats, Stream
from .config import Settings
from .errors import (
    BadRequest,
    Forbidden,
    InternalError,
    LimitExceeded,
    SupervisorError,
    TooLarge,
)
from .protocol import (
    METHODS,
    Answer,
    LineBuffer,
    Method,
    Notice,
    Reply,
    Request,
    decode_params,
    decode_request,
    error_reply,
)

log = structlog.get_logger()

MAX_BACKGROUND: Final = 64  # long requests in flight on one connection


def bind_socket(path: Path) -> socket.socket:
    """Bind and listen on the control socket ``path`` (0600, in a 0700 folder).

    Only call this while holding the instance lock: then no live daemon owns the path.
    """
    return listen_unix(path)


def peer_credentials(sock: trio.socket.SocketType) -> tuple[int | None, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    if sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        raw = sock.getsockopt(0, 0x001, struct.calcsize("IIh16I"))  # SOL_LOCAL, LOCAL_PEERCRED
        _version, uid, _ngroups = struct.unpack_from("IIh", raw)
        return None, uid
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


class Server:
    """Serves the protocol on a Unix socket for one :class:`Api`."""

    def __init__(self, api: Api, settings: Settings, stats: ConnectionStats, agent_sockets: AgentSockets) -> None:
        self.api = api
        self.agent_sockets = agent_sockets
        self.settings = settings
        self.stats = stats
        self.answering = 0  # requests being answered right now
        self.uid = os.getuid()

    async def serve(
        self, sockets: list[socket.socket], *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on already bound and listening sockets until cancelled.

        ``task_status.started`` hands back a cancel scope that stops accepting and
        closes every connection."""
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, self.handle, listeners)
                    nursery.start_soon(self._serve_agent_sockets)
                    task_status.started(scope)
        finally:
            for listener in listeners:
                listener.socket.close()

    async def _serve_agent_sockets(self) -> None:
        """Serve each sandboxed agent's own socket, as that agent, until it is closed."""
        scopes: dict[str, trio.CancelScope] = {}

        async def serve_one(agent_id: str, sock: socket.socket, scope: trio.CancelScope) -> None:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            try:
                with scope:
                    await trio.serve_listeners(functools.partial(self.handle, agent_id=agent_id), [listener])
            finally:
                listener.socket.close()

        async with trio.open_nursery() as nursery:
            async for agent_id, sock in self.agent_sockets.opened:
                old = scopes.pop(agent_id, None)
                if old is not None:
                    old.cancel()
                if sock is not None:
                    scopes[agent_id] = scope = trio.CancelScope()
                    nursery.start_soon(serve_one, agent_id, sock, scope)

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no request is being answered, so that the
        reply to ``daemon.stop`` and to requests already in flight reach their clients."""
        with trio.move_on_after(timeout):
            while self.answering:
                await trio.sleep(0.005)

    async def handle(self, stream: trio.SocketStream, agent_id: str | None = None) -> None:
        """Serve one connection. ``agent_id``: it came in on that agent's own socket."""
        stats = self.stats
        stats.accepted += 1
        encoder = msgspec.json.Encoder()
        try:
            pid, uid = peer_credentials(stream.socket)
        except OSError:
            pid, uid = None, -1
        identified = self.api.access.identify(pid) if uid == self.uid else None
        refusal: Forbidden | None = None
        if uid != self.uid:
            refusal = Forbidden(f"uid {uid} may not use this daemon")
        elif agent_id is not None and identified not in (None, agent_id):
            # Another agent found a sandboxed agent's socket (it lies in the runtime folder,
            # which an unsandboxed agent can read): it stays itself, and may not come in.
            refusal = Forbidden(f"this socket is agent {agent_id}'s; you are agent {identified}")
        if refusal is not None:
            stats.refused += 1
            log.warning("peer_refused", peer_uid=uid, peer_pid=pid, reason=refusal.message)
            await _send_and_close(stream, encoder, error_reply(None, refusal))
            return
        cap = self.settings.current.daemon.max_connections
        if stats.open >= cap:
            stats.refused += 1
            full = LimitExceeded(f"too many connections (max {cap})")
            await _send_and_close(stream, encoder, error_reply(None, full))
            return
        stats.open += 1
        try:
            caller = Caller(pid=pid, uid=uid)
            caller.agent_id = agent_id or identified
            await Connection(self, stream, caller).run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except* Exception:
            # The boundary of one connection: a bug here must not stop the listener.
            log.exception("connection_crashed", peer_pid=pid)
        finally:
            stats.open -= 1
            await trio.aclose_forcefully(stream)


async def _send_and_close(stream: trio.SocketStream, encoder: msgspec.json.Encoder, reply: Reply) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.send_all(encoder.encode(reply) + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


class _Close(Exception):
    """Raised inside a connection to close it after its last reply."""


class Connection:
    def __init__(self, server: Server, stream: trio.SocketStream, caller: Caller) -> None:
        self.server = server
        self.api = server.api
        self.stream = stream
        self.caller = caller
        self.encoder = msgspec.json.Encoder()
        self.send_lock = trio.Lock()
        self.background = 0
        self.cancel_scope = trio.CancelScope()

    async def run(self) -> None:
        buffer = LineBuffer(self.server.settings.current.daemon.max_line)
        with self.cancel_scope:
            await self._serve(buffer)

    async def _serve(self, buffer: LineBuffer) -> None:
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    with trio.move_on_after(self.server.settings.current.daemon.idle_timeout) as idle:
                        data = await self.stream.receive_some(65536)
                    if idle.cancelled_caught:
                        if self.background:
                            continue
                        break
                    if not data:
                        break
                    try:
                        lines = buffer.feed(data)
                    except TooLarge as e:
                        await self.send(error_reply(None, e))
                        break
                    for line in lines:
                        await self.dispatch(line, nursery)
            except _Close:
                pass
            nursery.cancel_scope.cancel()

    async def send(self, message: Reply | Notice) -> None:
        data = self.encoder.encode(message) + b"\n"
        async with self.send_lock:
            await self.stream.send_all(data)

    async def dispatch(self, line: bytes, nursery: trio.Nursery) -> None:
        """Decode one request line and answer it (or start answering it, in the background)."""
        try:
            request = decode_request(line)
        except BadRequest as e:
            await self.send(error_reply(None, e))
            return
        try:
            params = decode_params(request)
        except SupervisorError as e:
            await self.send(error_reply(request.id, e))
            return
        method = METHODS[request.method]
        if method.answer is Answer.INLINE:
            await self.answer(request, method, params)
            return
        if self.background >= MAX_BACKGROUND:
            await self.send(error_reply(request.id, LimitExceeded(
                f"too many long requests in flight on this connection (max {MAX_BACKGROUND})")))
            return
        self.background += 1
        nursery.start_soon(self._background, request, method, params)

    async def _background(self, request: Request, method: Method[Any, Any], params: Any) -> None:
        try:
            await self.answer(request, method, params)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.cancel_scope.cancel()
        finally:
            self.background -= 1

    async def answer(self, request: Request, method: Method[Any, Any], params: Any) -> None:
        self.server.answering += 1
        try:
            try:
                result = await self.api.call(method, params, self.caller)
            except SupervisorError as e:
                reply = error_reply(request.id, e)
            except Exception as e:
                # A bug in a handler must not take the daemon down with it, nor hide.
                log.exception("handler_crashed", method=method.name)
                reply = error_reply(request.id, InternalError(f"internal error in {method.name}: {type(e).__name__}"))
            else:
                if isinstance(result, Stream):
                    await self.send_stream(request, result)
                    return
                reply = Reply(id=request.id, result=result)
            await self.send(reply)
        finally:
            self.server.answering -= 1

    async def send_stream(self, request: Request, stream: Stream) -> None:
        """Send a stream's acknowledgement, then its notices until it ends."""
        self.server.answering -= 1  # a stream is not an answer in flight: it may last for ever
        try:
            await self.send(Reply(id=request.id, result=stream.ack))
            try:
                async for notice in stream.notices:
                    await self.send(notice)
            except SupervisorError as e:
                await self.send(error_reply(request.id, e))
        finally:
            self.server.answering += 1
            with trio.CancelScope(shield=True):
                await stream.aclose()
