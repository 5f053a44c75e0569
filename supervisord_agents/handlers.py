"""How the daemon's methods are bound to their handlers, and what a handler works with.

Each handler in :mod:`~supervisord_agents.api` is bound to its
:class:`~supervisord_agents.protocol.Method` with ``@handles`` (or ``@streams``, for a method
that answers with a stream of notices); :data:`HANDLERS` is derived from those bindings, and a
test checks that every declared method has exactly one (:func:`unhandled`). A handler gets the
decoded params and the :class:`Caller`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from .protocol import METHODS, Answer, Method, Notice, P, R


class Caller:
    """Who is on the other end of one connection."""

    def __init__(self, *, pid: int | None = None, uid: int | None = None) -> None:
        self.pid = pid
        self.uid = uid
        self.agent_id: str | None = None
        self.client = ""


class ConnectionStats:
    """Counted by the server, reported by ``daemon.health``."""

    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0
        self.refused = 0
        self.evicted = 0  # idle connections closed to make room at the cap


class Stream:
    """The answer of a ``STREAM`` method: an acknowledgement, then notices, in batches sent
    one write each, until the stream ends (a SupervisorError raised by ``notices`` ends it
    with an error reply). Whoever receives it must ``aclose`` it."""

    def __init__(self, ack: Any, notices: AsyncGenerator[list[Notice], None], on_close: Callable[[], None]) -> None:
        self.ack = ack
        self.notices = notices
        self._on_close = on_close

    async def aclose(self) -> None:
        try:
            await self.notices.aclose()
        finally:
            self._on_close()


#: A handler: a coroutine method of the Api, taking the method's params and the caller.
Handler = Callable[[Any, P, Caller], Awaitable[R]]
#: The handler of each method, by name: filled by ``@handles`` and ``@streams`` as api.py is imported.
HANDLERS: dict[str, Callable[..., Awaitable[Any]]] = {}


def _bind(method: Method[Any, Any], handler: Callable[..., Awaitable[Any]]) -> None:
    if method.name in HANDLERS:
        raise RuntimeError(f"{method.name} has two handlers")
    HANDLERS[method.name] = handler


def handles(method: Method[P, R]) -> Callable[[Handler[P, R]], Handler[P, R]]:
    """Bind the decorated coroutine method as the handler of ``method``; mypy checks
    that it takes the method's params and returns its result."""

    def bind(handler: Handler[P, R]) -> Handler[P, R]:
        assert method.answer is not Answer.STREAM, f"{method.name} streams: use @streams"
        _bind(method, handler)
        return handler

    return bind


def streams(method: Method[P, Any]) -> Callable[[Handler[P, Stream]], Handler[P, Stream]]:
    """Bind the handler of a ``STREAM`` method (it returns a :class:`Stream` whose
    acknowledgement is the method's result)."""

    def bind(handler: Handler[P, Stream]) -> Handler[P, Stream]:
        assert method.answer is Answer.STREAM, f"{method.name} does not stream: use @handles"
        _bind(method, handler)
        return handler

    return bind


def unhandled() -> set[str]:
    """Declared methods without a handler (a test keeps this empty)."""
    return set(METHODS) - set(HANDLERS)
