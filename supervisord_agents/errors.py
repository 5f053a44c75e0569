"""The exception hierarchy and the stable error codes used on the wire.

Every error the daemon can report is a :class:`SupervisorError` subclass carrying a
stable :class:`ErrorCode`. Code raises these inside; ``server`` turns them into error
replies in exactly one place, and the client turns error replies back into the same
classes, so a caller on either side of the socket catches the same names.

Each class also subclasses the builtin it specialises (``UnknownAgent`` is a
``LookupError``), so callers that do not know this module can still catch it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Stable error codes. Never renumber or rename: clients match on them."""

    BAD_REQUEST = "bad_request"  # not a JSON object, bad framing, invalid UTF-8
    INVALID_PARAMS = "invalid_params"  # the params do not match the method's schema
    UNKNOWN_METHOD = "unknown_method"
    NOT_FOUND = "not_found"
    LIMIT_EXCEEDED = "limit_exceeded"
    DUPLICATE_AGENT = "duplicate_agent"
    ILLEGAL_TRANSITION = "illegal_transition"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"  # tmux or storage cannot serve the request now
    SPAWN_FAILED = "spawn_failed"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


class SupervisorError(Exception):
    """Base of every error this project raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class BadRequest(SupervisorError, ValueError):
    """The request could not be parsed as a protocol message."""

    code = ErrorCode.BAD_REQUEST


class InvalidParams(SupervisorError, ValueError):
    """The request parsed, but its params break the method's schema or rules."""

    code = ErrorCode.INVALID_PARAMS


class UnknownMethod(SupervisorError, LookupError):
    """The method name is not one the daemon serves."""

    code = ErrorCode.UNKNOWN_METHOD


class NotFound(SupervisorError, LookupError):
    """A task, agent or other object named in the request does not exist."""

    code = ErrorCode.NOT_FOUND


class UnknownTask(NotFound):
    """No task has this id."""


class UnknownAgent(NotFound):
    """No agent has this id."""


class LimitExceeded(SupervisorError):
    """An anti-spiral limit refused the request (concurrency, total, depth, global cap)."""

    code = ErrorCode.LIMIT_EXCEEDED


class DuplicateAgent(LimitExceeded):
    """A live agent of the same type already works on the task; ``data`` names it."""

    code = ErrorCode.DUPLICATE_AGENT


class IllegalTransition(SupervisorError):
    """The command is not allowed in the object's current state; nothing changed."""

    code = ErrorCode.ILLEGAL_TRANSITION


class Conflict(SupervisorError):
    """The request conflicts with existing state (for example an id already in use)."""

    code = ErrorCode.CONFLICT


class Forbidden(SupervisorError, PermissionError):
    """The caller may not do this (another uid, or an agent acting for someone else)."""

    code = ErrorCode.FORBIDDEN


class Unavailable(SupervisorError):
    """A dependency (tmux, the disk) cannot serve the request right now."""

    code = ErrorCode.UNAVAILABLE


class TmuxError(Unavailable):
    """tmux refused a command or is not running."""


class StorageError(Unavailable):
    """The database could not commit; the change was not applied."""


class SpawnFailed(SupervisorError):
    """The agent was admitted but its session did not start; it is recorded as failed."""

    code = ErrorCode.SPAWN_FAILED


class TooLarge(SupervisorError, ValueError):
    """A message or value exceeds a configured size limit."""

    code = ErrorCode.TOO_LARGE


class Timeout(SupervisorError, TimeoutError):
    """The operation did not finish within its deadline."""

    code = ErrorCode.TIMEOUT


class ShuttingDown(SupervisorError):
    """The daemon is stopping and takes no new work."""

    code = ErrorCode.SHUTTING_DOWN


class InternalError(SupervisorError):
    """A bug: the daemon hit a state it did not expect."""

    code = ErrorCode.INTERNAL


_BY_CODE: dict[ErrorCode, type[SupervisorError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.INVALID_PARAMS: InvalidParams,
    ErrorCode.UNKNOWN_METHOD: UnknownMethod,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.LIMIT_EXCEEDED: LimitExceeded,
    ErrorCode.DUPLICATE_AGENT: DuplicateAgent,
    ErrorCode.ILLEGAL_TRANSITION: IllegalTransition,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.SPAWN_FAILED: SpawnFailed,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.TIMEOUT: Timeout,
    ErrorCode.SHUTTING_DOWN: ShuttingDown,
    ErrorCode.INTERNAL: InternalError,
}


def from_code(code: str, message: str, data: dict[str, Any] | None = None) -> SupervisorError:
    """Rebuild the exception for a wire error code (unknown codes become ``InternalError``)."""
    try:
        cls = _BY_CODE[ErrorCode(code)]
    except ValueError:
        cls = InternalError
    return cls(message, data=data)
