"""A local mock of the Gemini API (generativelanguage ``v1beta``), as Gemini CLI uses it.

Gemini CLI (0.61) with an API key talks to ``{base}/v1beta/models/<model>:<method>``
through the ``@google/genai`` SDK, the key in ``x-goog-api-key``:
``streamGenerateContent?alt=sse`` for each chat turn (server-sent events, one
``GenerateContentResponse`` per ``data:`` line), ``generateContent`` for its side requests
(JSON-schema answers: the ``auto`` model router's complexity score, next-speaker checks,
loop detection) and ``countTokens``. The mock answers on 127.0.0.1 only and is scripted
(see ``MockModel``).

Point the CLI at it with the environment of :meth:`MockModel.env`::

    GEMINI_API_KEY=<fake key>  GOOGLE_GEMINI_BASE_URL=<mock.base_url>

and the settings of :meth:`MockModel.settings` in the agent's settings file
(``$GEMINI_CLI_HOME/.gemini/settings.json``): a base URL makes 0.61 infer the
``gateway`` auth type, which its headless auth check then refuses ("Invalid auth method
selected.", exit 41; google-gemini/gemini-cli#27550), unless ``security.auth.selectedType``
is pinned to ``gemini-api-key`` (the base URL is still honoured). Pass ``-m`` MODEL to
skip the router's extra request.

Run it alone (``python tests/mock_gemini.py [scenario] [port]``) to try the CLI by hand.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script (see above): import tests.* from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.mock_http import FINDING_ARGS, PROGRESS_ARGS, SHELL_COMMAND, LocalServer, MockHandler, serve  # noqa: E402

SCENARIOS = ("report", "rate_limit", "server_error", "bad_key", "invalid_key", "daily_quota")

API_KEY = "AIzaSyMOCK-gemini-0000000000000000000"
MODEL = "gemini-2.5-flash"

SHELL_TOOL = "run_shell_command"

# The delay a rate-limited request is told to wait (RetryInfo.retryDelay, and "Please retry
# in ...s" in the message): the CLI waits at least this long before its next attempt.
RETRY_DELAY_S = 2

_STATUS = {"rate_limit": 429, "daily_quota": 429, "server_error": 500, "bad_key": 401, "invalid_key": 400}


def tool_results(body: dict[str, Any]) -> int:
    """How many tool calls the conversation in a request holds results of (``functionResponse``
    parts, one per call id): the scripted step. A resumed session (``--resume``) may repeat
    the last result (0.61 replays it twice), which is still one step."""
    seen: set[str] = set()
    count = 0
    for content in body.get("contents") or []:
        if isinstance(content, dict):
            for part in content.get("parts") or []:
                if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict):
                    call_id = part["functionResponse"].get("id")
                    if not isinstance(call_id, str) or call_id not in seen:
                        count += 1
                    if isinstance(call_id, str):
                        seen.add(call_id)
    return count


def tool_names(body: dict[str, Any]) -> list[str]:
    """The names of the functions offered in a request."""
    names: list[str] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            for decl in tool.get("functionDeclarations") or []:
                if isinstance(decl, dict) and "name" in decl:
                    names.append(decl["name"])
    return names


def _tokens(body: dict[str, Any]) -> int:
    """A prompt size that grows with the conversation, as a real one does."""
    return 1000 + len(json.dumps(body.get("contents") or [])) // 4


class MockModel(LocalServer[tuple[str, str]]):
    """A local mock of the Gemini API on 127.0.0.1, scripted.

    Scenarios: ``report`` (report_progress, report_finding, one shell command, then the
    answer), ``rate_limit`` (429 RESOURCE_EXHAUSTED, a per-minute quota with a RetryInfo
    delay: the CLI retries), ``daily_quota`` (429 on a per-day quota: the CLI gives up at
    once), ``server_error`` (500 INTERNAL), ``bad_key`` (401 UNAUTHENTICATED),
    ``invalid_key`` (400 INVALID_ARGUMENT / API_KEY_INVALID: what the real API answers a
    wrong API key). Every model request of an error scenario gets the error.
    """

    def __init__(self, scenario: str = "report", *, answer: str = "ANSWER: all done",
                 retry_delay: int = RETRY_DELAY_S, port: int = 0) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
        super().__init__(_Handler, port=port, name="mock-gemini")  # calls: (method, path) of each
        self.scenario = scenario
        self.answer = answer
        self.retry_delay = retry_delay
        self.paths: list[str] = []  # the path of each model request (``/v1beta/models/m:method``)
        self.headers: list[dict[str, str]] = []  # the headers of each model request
        #: A test's say over each model request: given its body and its step (how many of the
        #: script's tool results its conversation holds), the scenario that answers it, or
        #: None for ``scenario``'s. A conversation can so fail part-way, or until it is resumed.
        self.override: Callable[[dict[str, Any], int], str | None] | None = None

    # -- lifecycle (LocalServer) --------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The env vars that point Gemini CLI at this mock, with a fake key."""
        return {"GEMINI_API_KEY": API_KEY, "GOOGLE_GEMINI_BASE_URL": self.base_url}

    @staticmethod
    def settings(max_attempts: int | None = None) -> dict[str, Any]:
        """What the CLI's settings file needs to use this mock headless and offline: the
        auth type pinned (see the module doc), no usage statistics, telemetry or update
        checks, and optionally ``general.maxAttempts`` (1..10, default 10: the bound on
        its retries of a 429/5xx/network error)."""
        general: dict[str, Any] = {"enableAutoUpdate": False, "enableAutoUpdateNotification": False}
        if max_attempts is not None:
            general["maxAttempts"] = max_attempts
        return {"security": {"auth": {"selectedType": "gemini-api-key"}},
                "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
                "general": general}

    # -- the script ---------------------------------------------------------------------

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """The bodies of the chat turns (``streamGenerateContent``), without the CLI's side
        requests (routing, next-speaker checks, token counts)."""
        with self._lock:
            return [b for p, b in zip(self.paths, self.requests, strict=True) if p.endswith(":streamGenerateContent")]

    def answering(self, body: dict[str, Any]) -> str:
        """The scenario that answers the model request ``body`` (see ``override``)."""
        chosen = None if self.override is None else self.override(body, tool_results(body))
        return self.scenario if chosen is None else chosen

    def record(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None) -> None:
        with self._lock:
            if self._log((method, path), body):
                self.paths.append(path.split("?")[0])
                self.headers.append(headers)

    def step(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The parts of the model turn answering one chat request of ``report``."""
        done = tool_results(body)
        names = tool_names(body)
        if done == 0:
            return [_call(_find(names, "report_progress"), PROGRESS_ARGS)]
        if done == 1:
            return [_call(_find(names, "report_finding"), FINDING_ARGS)]
        if done == 2:
            return [_call(SHELL_TOOL, {"command": SHELL_COMMAND, "description": "report through the shell"})]
        return [{"text": self.answer}]


def _find(names: list[str], suffix: str) -> str:
    for name in names:
        if name.endswith(suffix):
            return name
    return suffix  # not offered: the CLI will say the tool is unknown, which the test sees


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": args}}


def _usage(body: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = _tokens(body)
    out = 20 + len(json.dumps(parts)) // 4
    return {"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out + 8,
            "cachedContentTokenCount": 200, "thoughtsTokenCount": 8,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}


def _response(body: dict[str, Any], parts: list[dict[str, Any]], n: int) -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": _usage(body, parts), "modelVersion": MODEL, "responseId": f"mock-response-{n}"}


def _side_answer(body: dict[str, Any]) -> list[dict[str, Any]]:
    """An answer to a ``generateContent`` side request (the router's complexity score, a
    next-speaker check, loop detection): JSON that fits the schema when one is asked for."""
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if config.get("responseMimeType") != "application/json" and not schema:
        return [{"text": "mock"}]
    answer = _fit(schema or {"type": "object"})
    if isinstance(answer, dict) and "next_speaker" in answer:
        answer["next_speaker"] = "user"  # the model's turn is over: do not prompt it to go on
    return [{"text": json.dumps(answer)}]


def _fit(schema: dict[str, Any], key: str = "") -> Any:
    """A small value that validates against a JSON schema (the subset the CLI uses). Numbers
    are 1 (the router's complexity score must be >= 1), but 0 for a ``confidence`` (the loop
    detector's: anything high would stop the run)."""
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    kind = (kind[0] if isinstance(kind, list) and kind else kind)
    kind = kind.lower() if isinstance(kind, str) else "string"
    if kind == "object":
        return {k: _fit(v or {}, k) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_fit(schema["items"])] * int(schema.get("minItems") or 0) if schema.get("items") else []
    if kind == "boolean":
        return False
    if kind in ("number", "integer"):
        return schema.get("minimum", 0 if "confidence" in key else 1)
    return "mock"


def _error(scenario: str, retry_delay: int) -> dict[str, Any]:
    """The real API's error body for a scenario (it sends no Retry-After header: the delay
    is in the body's RetryInfo and in the message)."""
    if scenario in ("rate_limit", "daily_quota"):
        per_day = scenario == "daily_quota"
        metric = "generate_content_free_tier_requests"
        quota_id = ("GenerateRequestsPerDayPerProjectPerModel-FreeTier" if per_day
                    else "GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
        delay = retry_delay if not per_day else 3600 * 7
        return {"error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing details. For more "
                       "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
                       f"\n* Quota exceeded for metric: generativelanguage.googleapis.com/{metric}, "
                       f"limit: {250 if per_day else 10}, model: {MODEL}\nPlease retry in {delay}.5s.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                    "quotaMetric": f"generativelanguage.googleapis.com/{metric}", "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": MODEL},
                    "quotaValue": "250" if per_day else "10"}]},
                {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"},
            ]}}
    if scenario == "bad_key":
        return {"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                       "cookie or other valid authentication credential. See "
                       "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "status": "UNAUTHENTICATED",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CREDENTIALS_MISSING",
                         "domain": "googleapis.com",
                         "metadata": {"service": "generativelanguage.googleapis.com",
                                      "method": "google.ai.generativelanguage.v1beta.GenerativeService."
                                                "StreamGenerateContent"}}]}}
    if scenario == "invalid_key":
        return {"error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": "API key not valid. Please pass a valid API key."},
            ]}}
    return {"error": {"code": 500, "message": "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting", "status": "INTERNAL"}}


class _Handler(MockHandler[MockModel]):
    json_type = "application/json; charset=UTF-8"

    def do_GET(self) -> None:  # noqa: N802
        self.mock.record("GET", self.path, dict(self.headers), None)
        self._send_json(404, {"error": {"code": 404, "message": f"no route {self.path}", "status": "NOT_FOUND"}})

    def do_POST(self) -> None:  # noqa: N802
        mock = self.mock
        body = self._read_json()
        path = self.path.split("?")[0]
        method = path.rsplit(":", 1)[-1] if ":" in path else ""
        if method not in ("streamGenerateContent", "generateContent", "countTokens"):
            mock.record("POST", self.path, dict(self.headers), None)
            self._send_json(404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}})
            return
        mock.record("POST", self.path, dict(self.headers), body)
        scenario = mock.answering(body)
        if scenario != "report":
            self._send_json(_STATUS[scenario], _error(scenario, mock.retry_delay))
        elif method == "countTokens":
            self._send_json(200, {"totalTokens": _tokens(body)})
        elif method == "generateContent":
            parts = _side_answer(body)
            self._send_json(200, _response(body, parts, len(mock.calls)))
        else:
            self._stream(body, mock.step(body), len(mock.requests))

    def _stream(self, body: dict[str, Any], parts: list[dict[str, Any]], n: int) -> None:
        """One model turn as the API streams it: a text answer in two chunks (the
        finish reason on the last), a function call in one; usage on every chunk."""
        self._start_events({"Connection": "close"})
        chunks: list[list[dict[str, Any]]] = [parts]
        text = parts[0].get("text") if len(parts) == 1 else None
        if text and len(text) > 1:
            half = len(text) // 2
            chunks = [[{"text": text[:half]}], [{"text": text[half:]}]]
        for i, chunk in enumerate(chunks):
            response = _response(body, chunk, n)
            if i < len(chunks) - 1:
                del response["candidates"][0]["finishReason"]
            self._send_event(response, eol="\r\n")
        self.close_connection = True


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "report"
    mock = MockModel(scenario, port=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    serve(mock, lambda m: " ".join(f"{k}={v}" for k, v in m.env().items()))


if __name__ == "__main__":
    main()
