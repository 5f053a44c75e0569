"""A local mock of OpenAI's Responses API, as Codex CLI (``codex exec``, 0.171) uses it.

Codex speaks only the Responses API: ``POST {base_url}/responses`` with ``"stream": true``,
answered as server-sent events (``wire_api = "chat"`` is refused at config load). The mock
answers on 127.0.0.1 only, and is scripted (see :class:`MockModel`).

Codex reads no base-URL environment variable (``OPENAI_BASE_URL`` is ignored): point it at
the mock with a custom model provider on the command line (no OpenAI login, no websocket,
no ChatGPT-only requests)::

    codex exec --json --skip-git-repo-check \\
        -c model_provider="mock" -c model_providers.mock.name="mock" \\
        -c model_providers.mock.base_url="<mock.base_url>" \\
        -c model_providers.mock.env_key="CODEX_MOCK_API_KEY" -c model="mock-model" ...

:meth:`MockModel.codex_config` gives those ``-c`` pairs, :meth:`MockModel.env` the key.
An MCP server's tools reach the model as one ``namespace`` tool (``mcp__<server>`` with
``-`` made ``_``); the mock calls them by that namespace and the tool's own name.

Run it alone (``python tests/mock_openai.py [scenario] [port]``) to try a CLI by hand.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script (see above): import tests.* from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.mock_http import FINDING_ARGS, PROGRESS_ARGS, SHELL_COMMAND, LocalServer, MockHandler, serve  # noqa: E402

SCENARIOS = ("report", "rate_limit", "server_error", "bad_key", "usage_limit")

API_KEY = "sk-mock-codex-0000000000000000"
ENV_KEY = "CODEX_MOCK_API_KEY"
MODEL = "mock-model"


# The items of a Responses request's ``input`` that carry a tool's result back.
_TOOL_RESULT_TYPES = ("function_call_output", "custom_tool_call_output", "mcp_tool_call_output",
                      "tool_search_output")


def tool_results(body: dict[str, Any]) -> int:
    """How many tool results the conversation in a request holds: the scripted step."""
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    return sum(1 for it in items if isinstance(it, dict) and it.get("type") in _TOOL_RESULT_TYPES)


def tool_names(body: dict[str, Any]) -> dict[str, str | None]:
    """The function tools offered in a request: each name, with its namespace (None at top level).

    Codex offers an MCP server's tools as one ``{"type": "namespace", "name":
    "mcp__<server>", "tools": [...]}`` (the server's name with ``-`` made ``_``); the
    model calls one with ``{"type": "function_call", "namespace": ..., "name": <tool>}``.
    For a model slug codex knows, tools come instead in an ``additional_tools`` input item
    (code mode: one JavaScript ``exec`` tool in namespace ``functions``), which this
    script cannot drive: use an unknown slug (``mock-model``) to get plain function tools."""
    names: dict[str, str | None] = {}
    offered = list(body.get("tools") or [])
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            offered += item.get("tools") or []
    for tool in offered:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            namespace = None if tool.get("name") == "functions" else tool.get("name")
            for sub in tool.get("tools") or []:
                if isinstance(sub, dict) and "name" in sub:
                    names.setdefault(sub["name"], namespace)
        elif "name" in tool:
            names[tool["name"]] = None
    return names


class MockModel(LocalServer[tuple[str, str]]):
    """A local mock of OpenAI's Responses API on 127.0.0.1, scripted.

    Scenarios: ``report`` (report_progress, report_finding, one shell command, then the
    answer), ``rate_limit`` (429), ``server_error`` (500), ``bad_key`` (401),
    ``usage_limit`` (429 as a ChatGPT plan's usage limit, with its reset time).
    """

    def __init__(self, scenario: str = "report", *, answer: str = "ANSWER: all done",
                 shell: str = SHELL_COMMAND, retry_after: int = 2, port: int = 0) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
        super().__init__(_Handler, port=port, name="mock-openai", path="/v1")  # calls: (method, path) of each
        self.scenario = scenario
        self.answer = answer
        self.shell = shell  # the command of the scripted shell step
        self.retry_after = retry_after  # seconds a 429 tells the client to wait (codex sleeps that long)
        self.headers: list[dict[str, str]] = []  # the headers of each model request
        #: A test's say over each model request: given its body and its step (how many of the
        #: script's tool results its conversation holds), the scenario that answers it, or
        #: None for ``scenario``'s. A conversation can so fail part-way, or until it is resumed.
        self.override: Callable[[dict[str, Any], int], str | None] | None = None

    # -- lifecycle (LocalServer) --------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The key, in the env var the provider of :meth:`codex_config` reads."""
        return {ENV_KEY: API_KEY}

    def codex_config(self, **retries: int) -> list[str]:
        """``-c`` overrides pointing codex at this mock (a custom provider); ``retries``
        sets provider keys such as ``request_max_retries=0, stream_max_retries=0``."""
        pairs: dict[str, str | int] = {
            "model_provider": "mock",
            "model": MODEL,
            "model_providers.mock.name": "mock",
            "model_providers.mock.base_url": self.base_url,
            "model_providers.mock.env_key": ENV_KEY,
            "model_providers.mock.wire_api": "responses",
        }
        pairs.update({f"model_providers.mock.{k}": v for k, v in retries.items()})
        args: list[str] = []
        for key, value in pairs.items():
            args += ["-c", f"{key}={json.dumps(value)}"]
        return args

    # -- the script ---------------------------------------------------------------------

    def answering(self, body: dict[str, Any]) -> str:
        """The scenario that answers the model request ``body`` (see ``override``)."""
        chosen = None if self.override is None else self.override(body, tool_results(body))
        return self.scenario if chosen is None else chosen

    def record(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None) -> None:
        with self._lock:
            if self._log((method, path), body):
                self.headers.append(headers)

    def step(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The output items answering one request of the ``report`` scenario."""
        done = tool_results(body)
        names = tool_names(body)
        if done == 0:
            return [_function_call(_find(names, "report_progress"), PROGRESS_ARGS, "call_progress")]
        if done == 1:
            return [_function_call(_find(names, "report_finding"), FINDING_ARGS, "call_finding")]
        if done == 2:
            return [_shell_call(names, self.shell)]
        return [_message(self.answer)]


def _find(names: dict[str, str | None], suffix: str) -> tuple[str, str | None]:
    """The offered tool whose name ends with ``suffix`` (an MCP tool's first), and its namespace."""
    found = sorted((ns is None, name) for name, ns in names.items() if name.endswith(suffix))
    if found:
        name = found[0][1]
        return name, names[name]
    return suffix, None  # not offered: the CLI will say the tool is unknown, which the test sees


def _function_call(tool: str | tuple[str, str | None], args: dict[str, Any], call_id: str) -> dict[str, Any]:
    name, namespace = (tool, None) if isinstance(tool, str) else tool
    item = {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": json.dumps(args), "status": "completed"}
    if namespace is not None:
        item["namespace"] = namespace
    return item


def _shell_call(names: dict[str, str | None], command: str) -> dict[str, Any]:
    """One shell command through whichever shell tool codex offered for this model."""
    if "exec_command" in names:  # unified exec
        return _function_call("exec_command", {"cmd": command, "yield_time_ms": 10_000}, "call_shell")
    if "shell_command" in names:  # a command string, run by the user's shell
        return _function_call("shell_command", {"command": command, "timeout_ms": 30_000}, "call_shell")
    # the classic "shell" tool: an argv
    return _function_call("shell", {"command": ["bash", "-lc", command], "timeout_ms": 30_000}, "call_shell")


def _message(text: str) -> dict[str, Any]:
    return {"type": "message", "id": "msg_answer", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _usage(body: dict[str, Any]) -> dict[str, Any]:
    """Token usage that grows with the conversation, as a real one does."""
    input_tokens = 1000 + 100 * len(body.get("input") or [])
    output_tokens = 50
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 200},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 10},
            "total_tokens": input_tokens + output_tokens}


class _Handler(MockHandler[MockModel]):
    def _request_id(self) -> str:
        return f"req_mock_{len(self.mock.calls)}"

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        super()._send_json(status, payload, {"x-request-id": self._request_id(), **(headers or {})})

    def do_GET(self) -> None:  # noqa: N802
        self.mock.record("GET", self.path, dict(self.headers), None)
        if self.path.split("?")[0].endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mock"}]})
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        mock = self.mock
        body = self._read_json()
        path = self.path.split("?")[0]
        if not path.endswith("/responses"):
            mock.record("POST", self.path, dict(self.headers), None)
            self._send_json(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
            return
        mock.record("POST", self.path, dict(self.headers), body)
        scenario = mock.answering(body)
        if scenario == "bad_key":
            self._send_json(401, {"error": {
                "message": f"Incorrect API key provided: {API_KEY[:3]}*****{API_KEY[-4:]}. You can find your "
                           "API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        elif scenario == "rate_limit":
            self._send_json(429, {"error": {
                "message": f"Rate limit reached for {MODEL} in organization org-mock on requests per min "
                           f"(RPM): Limit 3, Used 3, Requested 1. Please try again in {mock.retry_after}s. Visit "
                           "https://platform.openai.com/account/rate-limits to learn more.",
                "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                {"retry-after": str(mock.retry_after), "x-ratelimit-limit-requests": "3",
                 "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": f"{mock.retry_after}s",
                 "x-ratelimit-limit-tokens": "40000", "x-ratelimit-remaining-tokens": "39000",
                 "x-ratelimit-reset-tokens": "1.5s"})
        elif scenario == "usage_limit":
            resets_at = int(time.time()) + 3600
            self._send_json(429, {"error": {
                "type": "usage_limit_reached", "message": "The usage limit has been reached",
                "plan_type": "plus", "resets_at": resets_at, "resets_in_seconds": 3600}},
                {"x-codex-primary-used-percent": "100", "x-codex-primary-window-minutes": "300",
                 "x-codex-primary-reset-at": str(resets_at),
                 "x-codex-secondary-used-percent": "40", "x-codex-secondary-window-minutes": "10080"})
        elif scenario == "server_error":
            self._send_json(500, {"error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error", "param": None, "code": None}})
        else:
            self._stream(body, mock.step(body))

    def _stream(self, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
        self._start_events({"Connection": "close", "x-request-id": self._request_id()})
        rid = f"resp_mock_{len(self.mock.requests)}"
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "model": MODEL,
                    "status": "in_progress", "output": []}
        self._event("response.created", {"response": response})
        for index, item in enumerate(items):
            added = {**item, "status": "in_progress"}
            self._event("response.output_item.added", {"output_index": index, "item": added})
            if item["type"] == "message":
                text = item["content"][0]["text"]
                self._event("response.output_text.delta", {"item_id": item["id"], "output_index": index,
                                                           "content_index": 0, "delta": text})
                self._event("response.output_text.done", {"item_id": item["id"], "output_index": index,
                                                          "content_index": 0, "text": text})
            self._event("response.output_item.done", {"output_index": index, "item": item})
        done = {**response, "status": "completed", "output": items, "usage": _usage(body)}
        self._event("response.completed", {"response": done})
        self.close_connection = True

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self._send_event({"type": kind, **data}, kind)


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "report"
    mock = MockModel(scenario, port=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    serve(mock, lambda m: f"{m.base_url} {' '.join(m.codex_config())}")


if __name__ == "__main__":
    main()
