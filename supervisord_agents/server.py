"""The Unix-socket server: connections, framing, peer checks, and error replies.

This is the one place where errors become error replies. Each connection reads lines
through a :class:`~supervisord_agents.protocol.LineBuffer`, answers ordinary requests
in order, and runs the long ones (``agent.spawn``, ``agent.kill``, ``agent.wait``,
``events.subscribe``) as tasks of the connection's own nursery so that one connection
can wait for an agent and still report progress. Replies are matched by id.

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
import stat
import struct
import sys
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
import trio

from .actor import Subscription
from .api import Api, Caller
from .errors import (
    BadRequest,
    Forbidden,
    InternalError,
    LimitExceeded,
    SupervisorError,
    TooLarge,
    Unavailable,
)
from .protocol import (
    LineBuffer,
    Notice,
    Reply,
    Request,
    SubscribeParams,
    decode_params,
    decode_request,
    error_reply,
)
from .store import Store

log = structlog.get_logger()

BACKGROUND_METHODS: Final = frozenset({"agent.spawn", "agent.kill", "agent.wait", "events.subscribe"})
MAX_BACKGROUND: Final = 64  # long requests in flight on one connection
REPLAY_PAGE: Final = 1000


def prepare_runtime_dir(path: Path) -> None:
    """Create the runtime directory 0700, or refuse one that others could enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise Unavailable(f"{path} is not a directory owned by uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def bind_socket(path: Path) -> socket.socket:
    """Bind and listen on ``path`` (0600), replacing a stale socket left by a dead daemon.

    Only call this while holding the instance lock: then no live daemon owns the path.
    """
    prepare_runtime_dir(path.parent)
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(512)
    return sock


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

    def __init__(
        self, api: Api, store: Store, *, max_line: int, max_connections: int, idle_timeout: float,
    ) -> None:
        self.api = api
        self.store = store
        self.max_line = max_line
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connections = 0
        self.accepted = 0
        self.refused = 0
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
                    task_status.started(scope)
        finally:
            for listener in listeners:
                listener.socket.close()

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no request is being answered, so that the
        reply to ``daemon.stop`` and to requests already in flight reach their clients."""
        with trio.move_on_after(timeout):
            while self.answering:
                await trio.sleep(0.005)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        encoder = msgspec.json.Encoder()
        try:
            pid, uid = peer_credentials(stream.socket)
        except OSError:
            pid, uid = None, -1
        if uid != self.uid:
            self.refused += 1
            log.warning("peer_refused", peer_uid=uid, peer_pid=pid)
            await _send_and_close(stream, encoder, error_reply(None, Forbidden(f"uid {uid} may not use this daemon")))
            return
        if self.connections >= self.max_connections:
            self.refused += 1
            await _send_and_close(
                stream, encoder, error_reply(None, LimitExceeded(f"too many connections (max {self.max_connections})"))
            )
            return
        self.connections += 1
        try:
            await Connection(self, stream, Caller(pid=pid, uid=uid)).run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except* Exception:
            # The boundary of one connection: a bug here must not stop the listener.
            log.exception("connection_crashed", peer_pid=pid)
        finally:
            self.connections -= 1
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
        buffer = LineBuffer(self.server.max_line)
        with self.cancel_scope:
            await self._serve(buffer)

    async def _serve(self, buffer: LineBuffer) -> None:
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    with trio.move_on_after(self.server.idle_timeout) as idle:
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
        if request.method in BACKGROUND_METHODS:
            if self.background >= MAX_BACKGROUND:
                await self.send(error_reply(request.id, LimitExceeded(
                    f"too many long requests in flight on this connection (max {MAX_BACKGROUND})")))
                return
            self.background += 1
            nursery.start_soon(self._background, request, params)
        else:
            await self.answer(request, params)

    async def _background(self, request: Request, params: Any) -> None:
        try:
            if request.method == "events.subscribe":
                await self.subscribe(request, params)
            else:
                await self.answer(request, params)
        except (trio.BrokenResourceError, trio.ClosedResourceError, _Close):
            self.cancel_scope.cancel()
        finally:
            self.background -= 1

    async def answer(self, request: Request, params: Any) -> None:
        self.server.answering += 1
        try:
            try:
                result = await self.api.call(request.method, params, self.caller)
            except SupervisorError as e:
                reply = error_reply(request.id, e)
            except Exception as e:
                # A bug in a handler must not take the daemon down with it, nor hide.
                log.exception("handler_crashed", method=request.method)
                error = InternalError(f"internal error in {request.method}: {type(e).__name__}")
                reply = error_reply(request.id, error)
            else:
                reply = Reply(id=request.id, result=result)
            await self.send(reply)
        finally:
            self.server.answering -= 1

    async def subscribe(self, request: Request, params: SubscribeParams) -> None:
        """Replay committed events after ``since`` from the store, then stream live ones.

        The live subscription is registered *before* the replay reads the store, and
        events already sent are skipped, so nothing is missed and nothing repeats."""
        api = self.api
        agent_ids = [params.agent_id] if params.agent_id else []
        with api.hub.subscribe(agent_ids=agent_ids, task_id=params.task_id) as sub:
            await self.send(Reply(id=request.id, result={"subscribed": True, "last_seq": api.registry.last_seq}))
            sent = params.since if params.since is not None else api.registry.last_seq
            if params.since is not None:
                sent = await self._replay(sent, agent_ids, params.task_id)
            await self._stream_live(sub, sent, request.id)

    async def _replay(self, after: int, agent_ids: list[str], task_id: str | None) -> int:
        while True:
            try:
                read = functools.partial(self.server.store.read_events, after, agent_ids=agent_ids,
                                         task_id=task_id, limit=REPLAY_PAGE)
                rows = await trio.to_thread.run_sync(read)
            except Unavailable as e:
                await self.send(error_reply(None, e))
                raise _Close() from None
            for seq, raw in rows:
                await self.send(Notice(seq=seq, event=msgspec.Raw(raw)))
                after = seq
            if len(rows) < REPLAY_PAGE:
                return after

    async def _stream_live(self, sub: Subscription, sent: int, request_id: int) -> None:
        async for event in sub.receive:
            if event.seq > sent:
                await self.send(Notice(seq=event.seq, event=event))
                sent = event.seq
        if sub.overflowed:
            error = LimitExceeded("subscriber fell too far behind; resubscribe with since")
            await self.send(error_reply(request_id, error))

