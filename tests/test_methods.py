"""The method table: every method is declared once, bound to one handler, documented, and
reachable over the real socket; who may call it follows from its declaration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisord_agents import api, handlers
from supervisord_agents.errors import ErrorCode
from supervisord_agents.protocol import METHODS, Answer
from tests.harness import ROOT, DaemonProcess


def test_every_declared_method_has_exactly_one_handler() -> None:
    """The handler table is derived from the declarations: none missing, none undeclared."""
    assert api.Api is not None  # importing api binds its handlers
    assert handlers.unhandled() == set()
    assert set(handlers.HANDLERS) == set(METHODS)


def test_only_streaming_methods_get_a_stream_handler() -> None:
    """``@streams`` binds exactly the methods declared ``STREAM``; the rest return their result."""
    streaming = {name for name, m in METHODS.items() if m.answer is Answer.STREAM}
    assert streaming == {"events.subscribe"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_documented(name: str) -> None:
    """Each method has a one-line description, and the README's method table lists it with that description."""
    method = METHODS[name]
    assert method.doc and "\n" not in method.doc
    readme = (ROOT / "README.md").read_text()
    assert f"| `{name}` | {method.rule.name.lower()} | {method.doc} |" in readme


def test_every_method_is_reachable_over_the_socket(daemon: DaemonProcess) -> None:
    """Every declared method, sent with empty params, is dispatched: no reply says unknown_method."""
    codes = {}
    with daemon.client() as c:
        for name in sorted(set(METHODS) - {"daemon.stop", "events.subscribe"}):
            try:
                c.request(name)
                codes[name] = "ok"
            except Exception as e:  # noqa: BLE001 - any reply but unknown_method is fine here
                codes[name] = getattr(e, "code", type(e).__name__)
    assert ErrorCode.UNKNOWN_METHOD not in codes.values() and len(codes) == len(METHODS) - 2
    with daemon.client() as c:
        assert c.request("events.subscribe", since=0) == {"subscribed": True, "last_seq": 0}
    with daemon.client() as c:
        assert c.request("daemon.stop") == {"stopping": True}


def _json_or_none(path: Path) -> Any:
    """The JSON in ``path`` once it is whole, else None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
