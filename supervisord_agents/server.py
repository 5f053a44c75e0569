"""The Unix-socket server: connections, framing, peer checks, and error replies.

This is the one place where errors become error replies. Each connection reads lines
through a :class:`~supervisord_agents.protocol.LineBuffer`, decodes each request with
its method's declaration (:data:`~supervisord_agents.protocol.METHODS`), answers
``INLINE`` methods in order, and runs the others (``BACKGROUND``: those that wait for
an agent; ``STREAM``: subscriptions) as tasks of the connection's own nursery, so that
one connection can wait for an agent and still report progress. Replies are matched by
id.

Limits: a line longer than ``max_line`` gets an error reply and the connection is
closed; at ``max_connections`` the connection idle the longest is closed to make room,
and only when none is idle does a new connection get an error reply (which it can read)
and is closed, unless it is the operator's: one slot beyond the cap is kept for the
operator (a peer in no agent, by the kernel's account at accept), so that agents holding
every connection busy cannot lock the operator out; an agent never gets it (nor keeps
it by sending a token). A connection with nothing in flight is closed after
``idle_timeout``. A client that never reads its replies only blocks itself (the daemon
stops reading from it), and a subscriber that falls too far behind is cut off, so memory
stays bounded.

Security: the socket is 0600 inside a 0700 directory, and the peer's uid (SO_PEERCRED
on Linux, LOCAL_PEERCRED on macOS) must be the daemon's own.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import structlog
import trio

from .actor import ON_QUEUED
from .agent_sockets import AgentSockets, listen_unix
from .api import Api
from .codec import LineBuffer, decode_params, decode_request, error_reply
from .config import Settings
from .errors import (
    BadRequest,
    Forbidden,
    InternalError,
    LimitExceeded,
    SupervisorError,
    TooLarge,
)
from .handlers import Caller, ConnectionStats, Stream
from .protocol import METHODS, Answer, Method, Notice, Reply, Request

log = structlog.get_logger()

MAX_BACKGROUND: Final = 64  # long requests in flight on one connection
MAX_PIPELINE: Final = 256  # pipelined reports in flight on one connection; then it is read no further


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
        self._connections: set[Connection] = set()
        # The operator's connection in the slot kept beyond max_connections (counted in
        # stats.open, not in the table's max_connections).
        self.operator_slot: Connection | None = None

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
        config = self.settings.current.daemon
        who = agent_id or identified
        full: LimitExceeded | None = None
        if who is not None and self._held_by(who) >= config.max_connections_per_agent:
            full = LimitExceeded(f"agent {who} has {config.max_connections_per_agent} connections open "
                                 "(max_connections_per_agent)")
        elif (room := self._room(who is None, config.max_connections)) is None:
            beyond = (" (the one kept beyond them is the operator's)" if who is not None else
                      ", and the one kept beyond them for the operator is busy")
            full = LimitExceeded(f"too many connections (max {config.max_connections}), none of them idle{beyond}")
        if full is not None:
            stats.refused += 1
            await _send_and_close(stream, encoder, error_reply(None, full))
            return
        stats.open += 1
        caller = Caller(pid=pid, uid=uid)
        caller.agent_id = who
        connection = Connection(self, stream, caller)
        self._connections.add(connection)
        if room == "operator":
            self.operator_slot = connection
            log.info("connection_in_operator_slot", peer_pid=pid, open=stats.open)
        try:
            await connection.run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except* Exception:
            # The boundary of one connection: a bug here must not stop the listener.
            log.exception("connection_crashed", peer_pid=pid)
        finally:
            self._connections.discard(connection)
            if self.operator_slot is connection:
                self.operator_slot = None
            stats.open -= 1
            await trio.aclose_forcefully(stream)

    def _held_by(self, agent_id: str) -> int:
        """Connections open as this agent (by the kernel's word, or its token's after hello)."""
        return sum(1 for c in self._connections if c.caller.agent_id == agent_id)

    def _room(self, operator: bool, limit: int) -> Literal["table", "operator"] | None:
        """Where a new connection goes: "table", one of the ``limit`` (max_connections),
        where the connection idle the longest gives way if none is free; "operator", the
        slot kept beyond them, for the operator only, when none gives way (or when the one
        that gives way held it); None: nowhere."""
        slot = self.operator_slot
        if self.stats.open - (slot is not None) < limit:
            return "table"
        # An agent may not push the operator's slot out: that would not free it a place in the table.
        victim = self._make_room(spare=None if operator else slot)
        if victim is not None:
            return "operator" if victim is slot else "table"
        if operator and (slot is None or slot.cancel_scope.cancel_called):
            return "operator"
        return None

    def _make_room(self, spare: Connection | None) -> Connection | None:
        """At the connection cap: close the connection idle the longest (waiting for a
        request, nothing in flight) but ``spare``, so that idle connections, however many
        a client opens, never lock others out. The one closed; None if none is idle."""
        idle = [c for c in self._connections if c.idle and not c.cancel_scope.cancel_called and c is not spare]
        if not idle:
            return None
        victim = min(idle, key=lambda c: c.idle_since)
        victim.cancel_scope.cancel()
        self.stats.evicted += 1
        log.info("connection_evicted", peer_pid=victim.caller.pid, idle_seconds=round(trio.current_time() -
                 victim.idle_since, 1))
        return victim


async def _send_and_close(stream: trio.SocketStream, encoder: msgspec.json.Encoder, reply: Reply) -> None:
    """Send a refusal and close, without a reset: what the peer had sent is read and
    dropped first (closing with unread data resets the connection, and the peer would
    see "connection reset" where the reason was). At most a second for all of it."""
    with trio.move_on_after(1.0):
        try:
            await stream.send_all(encoder.encode(reply) + b"\n")
            await stream.send_eof()
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


class _Close(Exception):
    """Raised inside a connection to close it after its last reply."""


class _Report:
    """A pipelined report in flight: ``queued`` once its command is in the actor's mailbox
    (or it failed before), so the next report may go; ``sent`` once its reply is written,
    so the next reply may be."""

    __slots__ = ("queued", "sent")

    def __init__(self) -> None:
        self.queued = trio.Event()
        self.sent = trio.Event()


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
        self.reading = False
        self.idle_since = trio.current_time()
        self._last_report: _Report | None = None  # until its reply is sent
        self._reports = 0

    @property
    def idle(self) -> bool:
        """Waiting for a request, with nothing in flight."""
        return self.reading and not self.background and self._last_report is None

    async def run(self) -> None:
        buffer = LineBuffer(self.server.settings.current.daemon.max_line)
        with self.cancel_scope:
            await self._serve(buffer)

    async def _serve(self, buffer: LineBuffer) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._close_when_idle)
            try:
                while True:
                    self.reading, self.idle_since = True, trio.current_time()
                    data = await self.stream.receive_some(65536)
                    self.reading = False
                    if not data:
                        break
                    try:
                        lines = buffer.feed(data)
                    except TooLarge as e:
                        await self.send_in_turn(error_reply(None, e))
                        break
                    for i, line in enumerate(lines, 1):
                        await self.dispatch(line, nursery, more=i < len(lines))
                await self._reports_answered()  # a client that closed its side still gets them
            except _Close:
                pass
            nursery.cancel_scope.cancel()

    async def _close_when_idle(self) -> None:
        """Close the connection once it has waited ``idle_timeout`` for a request with
        nothing in flight. (A watch beside the reader, not a timeout around each read:
        that cost a cancel scope per request.)"""
        while True:
            deadline = self.idle_since + self.server.settings.current.daemon.idle_timeout
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
            elif self.idle:
                self.cancel_scope.cancel()
                return
            else:
                self.idle_since = trio.current_time()  # busy: the idle clock starts again

    async def send(self, message: Reply | Notice) -> None:
        await self.send_many([message])

    async def send_many(self, messages: Sequence[Reply | Notice]) -> None:
        """Send messages, a line each, in one write."""
        data = b"".join(self.encoder.encode(message) + b"\n" for message in messages)
        async with self.send_lock:
            await self.stream.send_all(data)

    async def send_in_turn(self, message: Reply) -> None:
        """Send a reply after those of the reports before it."""
        await self._reports_answered()
        await self.send(message)

    async def _reports_answered(self) -> None:
        if self._last_report is not None:
            await self._last_report.sent.wait()

    async def dispatch(self, line: bytes, nursery: trio.Nursery, *, more: bool = False) -> None:
        """Decode one request line and answer it (or start answering it, in the background).
        ``more``: other requests came with it, and wait to be read."""
        try:
            request = decode_request(line)
        except BadRequest as e:
            await self.send_in_turn(error_reply(None, e))
            return
        try:
            params = decode_params(request)
        except SupervisorError as e:
            await self.send_in_turn(error_reply(request.id, e))
            return
        method = METHODS[request.method]
        if method.answer is Answer.PIPELINED and (more or self._last_report is not None):
            if self._reports >= MAX_PIPELINE:
                await self._reports_answered()
            before, report = self._last_report, _Report()
            self._last_report = report
            self._reports += 1
            nursery.start_soon(self._report, request, method, params, before, report)
            return
        # Anything else sees what the reports before it changed, as it would one at a time.
        await self._reports_answered()
        if method.answer is not Answer.BACKGROUND:  # a report alone is answered at once: no task to start
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

    async def _report(self, request: Request, method: Method[Any, Any], params: Any, before: _Report | None,
                      report: _Report) -> None:
        """Answer one pipelined report: its command queued after the previous report's,
        its reply sent after the previous report's."""
        self.server.answering += 1
        try:
            if before is not None:
                await before.queued.wait()
            ON_QUEUED.set(report.queued)  # this task's own context: the mailbox sets it
            try:
                reply = await self._reply(request, method, params)
            finally:
                report.queued.set()
            if before is not None:
                await before.sent.wait()
            assert isinstance(reply, Reply), f"{method.name} is pipelined: it cannot stream"
            await self.send(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.cancel_scope.cancel()
        finally:
            self.server.answering -= 1
            report.sent.set()
            self._reports -= 1
            if self._last_report is report:
                self._last_report = None

    async def _reply(self, request: Request, method: Method[Any, Any], params: Any) -> Reply | Stream:
        """The reply to one request (or the stream it opens). A bug in a handler becomes an
        ``internal`` error: it must not take the daemon down with it, nor hide."""
        try:
            result = await self.api.call(method, params, self.caller)
        except SupervisorError as e:
            return error_reply(request.id, e)
        except Exception as e:
            log.exception("handler_crashed", method=method.name)
            return error_reply(request.id, InternalError(f"internal error in {method.name}: {type(e).__name__}"))
        return result if isinstance(result, Stream) else Reply(id=request.id, result=result)

    async def answer(self, request: Request, method: Method[Any, Any], params: Any) -> None:
        self.server.answering += 1
        try:
            reply = await self._reply(request, method, params)
            if isinstance(reply, Stream):
                await self.send_stream(request, reply)
                return
            if self.caller.agent_id is not None and self.server.operator_slot is self:
                # A token (hello) made the operator's slot an agent's: an agent never holds it.
                await self.send(error_reply(request.id, LimitExceeded(
                    f"this connection came in through the slot kept for the operator; agent {self.caller.agent_id}"
                    " may not hold it (too many connections)")))
                self.cancel_scope.cancel()
                return
            await self.send(reply)
        finally:
            self.server.answering -= 1

    async def send_stream(self, request: Request, stream: Stream) -> None:
        """Send a stream's acknowledgement, then its notices until it ends."""
        self.server.answering -= 1  # a stream is not an answer in flight: it may last for ever
        try:
            await self.send(Reply(id=request.id, result=stream.ack))
            try:
                async for notices in stream.notices:
                    await self.send_many(notices)
            except SupervisorError as e:
                await self.send(error_reply(request.id, e))
        finally:
            self.server.answering += 1
            with trio.CancelScope(shield=True):
                await stream.aclose()
