"""The HTTP plumbing the local model-API mocks share (``mock_anthropic``, ``mock_gemini``,
``mock_openai``): a stdlib server on 127.0.0.1 served by a thread while a ``with`` block
runs, the record of the requests it got, and a request handler's helpers (a JSON body in,
JSON or server-sent events out). What each API says stays in its own mock."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar, cast

C = TypeVar("C")  # how a mock notes one HTTP request in ``calls``
M = TypeVar("M", bound="LocalServer[Any]")

# The script every mock's ``report`` scenario plays: report_progress, report_finding (with
# these arguments), then one shell command, then the answer.
PROGRESS_ARGS = {"message": "mock started", "percent": 10}
FINDING_ARGS = {"message": "mock finding", "type": "issue", "severity": "high"}
SHELL_COMMAND = 'agentctl progress "shell works" --percent 90'


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mock: LocalServer[Any]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a CLI killed mid-request) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer(Generic[C]):
    """An HTTP server on 127.0.0.1 (``port`` 0: a free one) that ``handler`` answers, served
    by a daemon thread named ``name`` from ``__enter__`` to ``__exit__``; ``base_url`` is
    ``http://127.0.0.1:<port><path>`` meanwhile. A handler reaches the server as ``self.mock``."""

    def __init__(self, handler: type[MockHandler[Any]], *, port: int = 0, name: str = "mock-http",
                 path: str = "") -> None:
        self.port = port
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []  # the body of each model request, in order
        self.calls: list[C] = []  # every HTTP request, in order
        self.first_request_at: float | None = None  # time.monotonic() of the first model request
        self._lock = threading.Lock()  # held while the record above changes
        self._stopping = threading.Event()  # set by __exit__: a handler that hangs waits on it
        self._handler = handler
        self._name = name
        self._path = path
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._server = _Server(("127.0.0.1", self.port), self._handler)
        self._server.mock = self
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{self._path}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=self._name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _log(self, call: C, body: dict[str, Any] | None, at: float | None = None) -> bool:
        """Note one HTTP request in ``calls`` and, if it is a model request (``body`` not None),
        its body and the time of the first one (``at``, or now). The caller holds ``_lock``.
        Whether it was a model request."""
        self.calls.append(call)
        if body is None:
            return False
        if self.first_request_at is None:
            self.first_request_at = time.monotonic() if at is None else at
        self.requests.append(body)
        return True


def serve(mock: M, intro: Callable[[M], str]) -> None:
    """Serve ``mock`` until Ctrl-C (a mock run as a script), having printed ``intro(mock)``."""
    with mock:
        print(intro(mock), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def sse(data: Any, event: str | None = None, eol: str = "\n") -> bytes:
    """One server-sent event: ``data`` as JSON, after an ``event:`` line if ``event`` is given."""
    head = f"event: {event}{eol}" if event is not None else ""
    return f"{head}data: {json.dumps(data)}{eol}{eol}".encode()


class MockHandler(BaseHTTPRequestHandler, Generic[M]):
    """A quiet HTTP/1.1 handler of a :class:`LocalServer` (``self.mock``)."""

    protocol_version = "HTTP/1.1"
    json_type = "application/json"  # the Content-Type of _send_json

    @property
    def mock(self) -> M:
        return cast(M, cast(_Server, self.server).mock)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _read_raw(self) -> bytes:
        """The request's body, as sent (``Content-Length`` bytes)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_json(self) -> Any:
        """The request's body parsed: ``{}`` if empty, ``{"_raw": <text>}`` if not JSON."""
        raw = self._read_raw()
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {"_raw": raw.decode(errors="replace")}

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        """A whole JSON answer (headers only to a ``HEAD``)."""
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", self.json_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _start_events(self, headers: dict[str, str] | None = None, content_type: str = "text/event-stream") -> None:
        """The head of a 200 answer of server-sent events (``headers`` after the content type
        and ``Cache-Control: no-cache``); the events follow with :meth:`_send_event`."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send_event(self, data: Any, event: str | None = None, eol: str = "\n") -> None:
        """Write one server-sent event (see :func:`sse`) and flush it."""
        self.wfile.write(sse(data, event, eol))
        self.wfile.flush()
