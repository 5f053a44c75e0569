"""A local mock of Anthropic's Messages API, as Claude Code (``claude -p``) uses it.

Claude Code (2.1.x, a native Bun binary) speaks ``POST {ANTHROPIC_BASE_URL}/v1/messages?beta=true``
with ``"stream": true``, answered as server-sent events (``message_start``,
``content_block_*``, ``message_delta``, ``message_stop``). With
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` that is all it sends; without, it first sends
``HEAD /api/hello``. Other ``HEAD``/``GET`` requests and ``/v1/messages/count_tokens`` get a
minimal answer. The mock answers on 127.0.0.1 only, and is scripted (see ``MockModel``).

Claude Code defers MCP tools by default: a request offers ``ToolSearch`` and lists the
deferred tools by name in a ``<system-reminder>``; the model must call ``ToolSearch`` with
``select:<name>`` before the tool is offered. The mock does that (as a real model does), and
also handles requests where the tools are offered directly (``--tools ...`` or
``ENABLE_TOOL_SEARCH=false``). ToolSearch results do not count as scripted steps.

Point Claude Code at it with ``MockModel.env()`` (``ANTHROPIC_BASE_URL``,
``ANTHROPIC_API_KEY`` and the switches that keep it off the network), e.g.::

    claude -p --output-format stream-json --verbose --strict-mcp-config --setting-sources "" \
        --mcp-config <agent dir>/mcp.json --allowedTools \
        "mcp__supervisord-agents__report_progress,mcp__supervisord-agents__report_finding,Bash(agentctl progress:*)"

The ``needs_approval`` scenario plays a call that needs permission: one ``Bash`` command that
the default ``--allowedTools`` do not allow (``touch approved-marker``, in the agent's working
directory), then the answer ``ANSWER: ran`` if its ``tool_result`` is not an error, else
``ANSWER: denied`` (with ``--permission-prompt-tool``, a denial comes back as an error result
holding the tool's ``message``; without, headless Claude Code denies it by itself).

Run it alone (``python tests/mock_anthropic.py [scenario] [port] [shell command]``) to try the CLI
by hand: it prints the ``export`` lines of ``env()`` and logs each request on stderr.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script (see above): import tests.* from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.mock_http import FINDING_ARGS, PROGRESS_ARGS, SHELL_COMMAND, LocalServer, MockHandler, sse  # noqa: E402

SCENARIOS = ("report", "rate_limit", "server_error", "bad_key", "overloaded", "usage_limit", "hang",
             "needs_approval")

API_KEY = "sk-ant-api03-mock-0000000000000000000000000000000000000000"
MODEL = "claude-sonnet-4-5"

SHELL_TOOL = "Bash"
TOOL_SEARCH = "ToolSearch"

# needs_approval: a command the default --allowedTools (the supervisor's report tools,
# Bash(agentctl progress:*), Bash(agentctl finding:*)) do not allow, so Claude Code asks for
# permission; it leaves this file in the agent's working directory if it ran.
APPROVAL_MARKER = "approved-marker"
APPROVAL_COMMAND = f"touch {APPROVAL_MARKER}"
APPROVAL_RAN = "ANSWER: ran"
APPROVAL_DENIED = "ANSWER: denied"

# What the real API sends with a 429 (an API-key organisation's limits). retry-after is
# in seconds; the *-reset headers are RFC 3339 times.
RETRY_AFTER_S = 2


def _blocks(body: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """The content blocks of the conversation's messages of one role, in order."""
    out: list[dict[str, Any]] = []
    for msg in body.get("messages") or []:
        if isinstance(msg, dict) and msg.get("role") == role and isinstance(msg.get("content"), list):
            out.extend(b for b in msg["content"] if isinstance(b, dict))
    return out


def tool_results(body: dict[str, Any]) -> int:
    """How many results of the script's tool calls the conversation in a request holds: the
    scripted step. Results of ``ToolSearch`` (which Claude Code's model calls to load a
    deferred tool's schema, MCP tools included) do not count."""
    return len(script_results(body))


def tool_names(body: dict[str, Any]) -> list[str]:
    """The names of the tools offered in a request (Claude Code's own, e.g. ``Bash``, and
    the MCP servers' as ``mcp__<server>__<tool>``); a deferred tool (``defer_loading``)
    is offered only once ToolSearch loaded it."""
    return [t["name"] for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]


def script_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tool_result`` blocks of the script's tool calls in a request's conversation, in
    order (``ToolSearch``'s left out, as in ``tool_results``)."""
    searches = {b.get("id") for b in _blocks(body, "assistant") if b.get("type") == "tool_use"
                and b.get("name") == TOOL_SEARCH}
    return [b for b in _blocks(body, "user") if b.get("type") == "tool_result" and b.get("tool_use_id") not in searches]


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("__" + suffix)


def find_tool(body: dict[str, Any], suffix: str) -> str | None:
    """The offered tool whose name is ``suffix`` or ends with ``__<suffix>``."""
    for name in tool_names(body):
        if _matches(name, suffix):
            return name
    return None


_DEFERRED = re.compile(r"available via ToolSearch.*?:\n(.*?)</system-reminder>", re.S)


def deferred_tools(body: dict[str, Any]) -> list[str]:
    """The deferred tools Claude Code lists (by name only) in a ``<system-reminder>`` of the
    conversation: callable only after ``ToolSearch`` ``select:<name>`` loaded them."""
    names: list[str] = []
    for b in _blocks(body, "user"):
        text = b.get("text") if b.get("type") == "text" else None
        if isinstance(text, str) and "ToolSearch" in text:
            for m in _DEFERRED.finditer(text):
                names.extend(line.strip() for line in m.group(1).splitlines() if line.strip())
    return names


def _estimate_tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps(body.get("messages") or [])) // 4 + len(json.dumps(body.get("system") or "")) // 4)


def _error_body(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


class MockModel(LocalServer[dict[str, Any]]):
    """A local mock of Anthropic's Messages API on 127.0.0.1, scripted.

    Scenarios: ``report`` (report_progress, report_finding, one shell command, then the
    answer), ``rate_limit`` (429 rate_limit_error with retry-after and the
    anthropic-ratelimit-* headers), ``server_error`` (500 api_error), ``bad_key`` (401
    authentication_error), ``overloaded`` (529 overloaded_error), ``usage_limit`` (429 with
    a subscription's anthropic-ratelimit-unified-* headers: rejected, reset time in epoch s),
    ``hang`` (accepts a request and never answers), ``needs_approval`` (one shell command
    that needs permission, ``approval_command``, then ``ANSWER: ran`` or ``ANSWER: denied``
    as its result is not or is an error).
    """

    def __init__(self, scenario: str = "report", *, answer: str = "ANSWER: all done",
                 shell: str = SHELL_COMMAND, retry_after: int = RETRY_AFTER_S, usage_reset: int = 3 * 3600,
                 approval_command: str = APPROVAL_COMMAND, port: int = 0) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
        # requests: the bodies of the model requests (POST /v1/messages); calls: every HTTP
        # request as its method, path, time and status
        super().__init__(_Handler, port=port, name="mock-anthropic")
        self.scenario = scenario
        self.answer = answer
        self.shell = shell
        self.retry_after = retry_after
        self.usage_reset = usage_reset  # usage_limit: seconds until the plan's window resets
        self.approval_command = approval_command  # needs_approval: the command that needs permission
        #: A test's say over each model request: given its body and its step (how many of the
        #: script's tool results its conversation holds), the scenario that answers it, or
        #: None for ``scenario``'s. A conversation can so fail part-way, or until it is resumed.
        self.override: Callable[[dict[str, Any], int], str | None] | None = None

    # -- lifecycle (LocalServer) ---------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The env vars that point Claude Code at this mock, with a fake key, and keep it off
        the network (no telemetry, error reporting, auto-update, feature-flag fetches)."""
        return {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": API_KEY,
            "ANTHROPIC_MODEL": MODEL,
            "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_BUG_COMMAND": "1",
            "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
        }

    # -- the script ----------------------------------------------------------------------

    def answering(self, body: dict[str, Any]) -> str:
        """The scenario that answers the model request ``body`` (see ``override``)."""
        chosen = None if self.override is None else self.override(body, tool_results(body))
        return self.scenario if chosen is None else chosen

    def record(self, method: str, path: str, status: int, body: dict[str, Any] | None) -> None:
        with self._lock:
            now = time.monotonic()
            self._log({"method": method, "path": path, "status": status, "at": now}, body, now)

    def reply(self, body: dict[str, Any], scenario: str = "report") -> list[dict[str, Any]]:
        """The content blocks of the assistant's answer to one request (``report`` or
        ``needs_approval`` scenario)."""
        if not body.get("tools"):
            # A side request (e.g. a title or a classification with the small model): plain text.
            return [{"type": "text", "text": "mock"}]
        if scenario == "needs_approval":
            return self._needs_approval(body)
        step = tool_results(body)
        calls = [("report_progress", PROGRESS_ARGS), ("report_finding", FINDING_ARGS),
                 (SHELL_TOOL, {"command": self.shell, "description": "Report progress from the shell"})]
        if step < len(calls):
            suffix, args = calls[step]
            name = find_tool(body, suffix)
            if name is None and find_tool(body, TOOL_SEARCH):
                # A deferred tool: load its schema first, as the real model does.
                deferred = [n for n in deferred_tools(body) if _matches(n, suffix)]
                if deferred:
                    name, args = TOOL_SEARCH, {"query": f"select:{deferred[0]}", "max_results": 5}
            if name is not None:
                return [{"type": "text", "text": f"Step {step + 1}."},
                        {"type": "tool_use", "id": f"toolu_mock{step + 1:02d}{uuid.uuid4().hex[:16]}",
                         "name": name, "input": args}]
            missing = f"MOCK: no tool named *{suffix} offered (tools: {', '.join(tool_names(body))})"
            return [{"type": "text", "text": missing}]
        return [{"type": "text", "text": self.answer}]

    def _needs_approval(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """needs_approval: the command that needs permission, then whether it ran."""
        results = script_results(body)
        if not results:
            if find_tool(body, SHELL_TOOL) is None:
                return [{"type": "text", "text": f"MOCK: no tool named {SHELL_TOOL} offered "
                                                 f"(tools: {', '.join(tool_names(body))})"}]
            return [{"type": "text", "text": "Step 1."},
                    {"type": "tool_use", "id": f"toolu_mock01{uuid.uuid4().hex[:16]}", "name": SHELL_TOOL,
                     "input": {"command": self.approval_command, "description": "Leave a marker file"}}]
        return [{"type": "text", "text": APPROVAL_DENIED if results[0].get("is_error") else APPROVAL_RAN}]


class _Handler(MockHandler[MockModel]):
    # -- plumbing (MockHandler) ----------------------------------------------------------

    def _read_body(self) -> dict[str, Any] | None:
        """The request's JSON object (gzip undone), or None if it is not one."""
        raw = self._read_raw()
        if self.headers.get("content-encoding") == "gzip" and raw:
            raw = gzip.decompress(raw)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _request_id(self) -> str:
        return "req_mock" + uuid.uuid4().hex[:20]

    # -- methods -------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # connectivity probes
        self.mock.record("HEAD", self.path, 200, None)
        self._send_json(200, {})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.rstrip("/").endswith("/v1/models"):
            self.mock.record("GET", self.path, 200, None)
            self._send_json(200, {"data": [{"type": "model", "id": MODEL, "display_name": "Mock",
                                            "created_at": "2025-01-01T00:00:00Z"}],
                                  "has_more": False, "first_id": MODEL, "last_id": MODEL})
            return
        self.mock.record("GET", self.path, 200, None)
        self._send_json(200, {})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._read_body()
        if body is None:
            self.mock.record("POST", self.path, 400, None)
            self._send_json(400, _error_body("invalid_request_error", "mock: body is not a JSON object",
                                             self._request_id()))
            return
        if path.endswith("/v1/messages/count_tokens"):
            self.mock.record("POST", self.path, 200, None)
            self._send_json(200, {"input_tokens": _estimate_tokens(body)})
            return
        if not path.endswith("/v1/messages"):
            self.mock.record("POST", self.path, 404, None)
            self._send_json(404, _error_body("not_found_error", f"mock: no route {path}", self._request_id()))
            return
        scenario = self.mock.answering(body)
        status = {"report": 200, "rate_limit": 429, "server_error": 500, "bad_key": 401,
                  "overloaded": 529, "usage_limit": 429, "hang": 0, "needs_approval": 200}[scenario]
        self.mock.record("POST", self.path, status, body)
        rid = self._request_id()
        if scenario == "rate_limit":
            reset = (datetime.now(UTC) + timedelta(seconds=self.mock.retry_after)).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._send_json(429, _error_body(
                "rate_limit_error",
                "This request would exceed the rate limit for your organization "
                "(00000000-0000-0000-0000-000000000000) of 50 input tokens per minute. For details, refer to: "
                "https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. "
                "Please reduce the prompt length or the maximum tokens requested, or try again later. You may "
                "also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a "
                "rate limit increase.", rid), {
                "request-id": rid,
                "retry-after": str(self.mock.retry_after),
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "49",
                "anthropic-ratelimit-requests-reset": reset,
                "anthropic-ratelimit-input-tokens-limit": "50",
                "anthropic-ratelimit-input-tokens-remaining": "0",
                "anthropic-ratelimit-input-tokens-reset": reset,
                "anthropic-ratelimit-output-tokens-limit": "10000",
                "anthropic-ratelimit-output-tokens-remaining": "10000",
                "anthropic-ratelimit-output-tokens-reset": reset,
                "anthropic-ratelimit-tokens-limit": "10050",
                "anthropic-ratelimit-tokens-remaining": "10000",
                "anthropic-ratelimit-tokens-reset": reset,
                "x-should-retry": "true",
            })
            return
        if scenario == "hang":
            # Accept the request and never answer (no headers) until the mock stops.
            self.mock._stopping.wait()
            self.close_connection = True
            return
        if scenario == "usage_limit":
            # A subscription's (claude.ai plan) usage limit: the unified headers, reset in epoch seconds.
            reset_at = int(time.time()) + self.mock.usage_reset
            self._send_json(429, _error_body("rate_limit_error", "This request would exceed your account's rate "
                                             "limit. Please try again later.", rid), {
                "request-id": rid,
                "retry-after": str(self.mock.usage_reset),
                "anthropic-ratelimit-unified-status": "rejected",
                "anthropic-ratelimit-unified-reset": str(reset_at),
                "anthropic-ratelimit-unified-representative-claim": "five_hour",
                "anthropic-ratelimit-unified-5h-status": "rejected",
                "anthropic-ratelimit-unified-5h-reset": str(reset_at),
                "anthropic-ratelimit-unified-5h-utilization": "1.0",
                "anthropic-ratelimit-unified-7d-status": "allowed",
                "anthropic-ratelimit-unified-7d-reset": str(reset_at + 5 * 86400),
                "anthropic-ratelimit-unified-7d-utilization": "0.4",
                "anthropic-ratelimit-unified-fallback-percentage": "0.5",
            })
            return
        if scenario == "server_error":
            self._send_json(500, _error_body("api_error", "Internal server error", rid),
                            {"request-id": rid, "x-should-retry": "true"})
            return
        if scenario == "overloaded":
            self._send_json(529, _error_body("overloaded_error", "Overloaded", rid),
                            {"request-id": rid, "x-should-retry": "true"})
            return
        if scenario == "bad_key":
            self._send_json(401, _error_body("authentication_error", "invalid x-api-key", rid),
                            {"request-id": rid, "x-should-retry": "false"})
            return
        self._answer(body, rid, scenario)

    # -- a successful answer -------------------------------------------------------------

    def _answer(self, body: dict[str, Any], rid: str, scenario: str = "report") -> None:
        blocks = self.mock.reply(body, scenario)
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        model = body.get("model") or MODEL
        msg_id = "msg_mock" + uuid.uuid4().hex[:20]
        input_tokens = _estimate_tokens(body)
        output_tokens = sum(len(json.dumps(b)) // 4 + 1 for b in blocks)
        if not body.get("stream"):
            self._send_json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": blocks,
                "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }, {"request-id": rid})
            return
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1}}}),
            ("ping", {"type": "ping"}),
        ]
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": {"type": "text", "text": ""}}))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "text_delta", "text": block["text"]}}))
            else:
                events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": {"output_tokens": output_tokens}}))
        events.append(("message_stop", {"type": "message_stop"}))
        data = b"".join(sse(payload, name) for name, payload in events)
        self._start_events({"request-id": rid, "Content-Length": str(len(data))}, "text/event-stream; charset=utf-8")
        self.wfile.write(data)
        self.wfile.flush()


def main(argv: list[str]) -> None:
    scenario = argv[1] if len(argv) > 1 else "report"
    port = int(argv[2]) if len(argv) > 2 else 0
    command = argv[3] if len(argv) > 3 else None  # the shell command (needs_approval: the one that needs permission)
    if scenario == "needs_approval":
        mock = MockModel(scenario, port=port, approval_command=command or APPROVAL_COMMAND)
    else:
        mock = MockModel(scenario, port=port, shell=command or SHELL_COMMAND)
    with mock:
        for k, v in mock.env().items():
            print(f"export {k}={v}")
        sys.stdout.flush()
        seen = 0
        try:
            while True:
                time.sleep(0.5)
                with mock._lock:
                    new = mock.calls[seen:]
                    seen = len(mock.calls)
                for c in new:
                    print(f"{c['method']} {c['path']} -> {c['status']}", file=sys.stderr)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main(sys.argv)
