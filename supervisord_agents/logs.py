"""Logging for the daemon: structlog, JSON lines on stderr, or console output on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

_encoder = msgspec.json.Encoder(enc_hook=repr)  # unknown types become repr(): a log call never crashes

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _dumps(obj: Any, **_: Any) -> bytes:
    return _encoder.encode(obj)


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog once, in the daemon's entry point."""
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        processors = [*shared, structlog.processors.dict_tracebacks, renderer]
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        cache_logger_on_first_use=False,
    )
