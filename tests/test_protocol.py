"""The wire protocol, sans-IO: line framing, request and params decoding, error replies.

Everything a client can send is hostile until it has decoded. These tests feed the
decoders what a confused or malicious client might send and check that each input is
refused with the right error class and its stable wire code, never with a raw
exception that would escape the server's error handling.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisord_agents.codec import LineBuffer, decode_params, decode_request, error_reply
from supervisord_agents.errors import (
    BadRequest,
    DuplicateAgent,
    ErrorCode,
    InvalidParams,
    NotFound,
    SupervisorError,
    TooLarge,
    UnknownMethod,
    from_code,
)
from supervisord_agents.protocol import MAX_LINE, METHODS, Request

AGENT = "worker-101500-0a1b2c"
TASK = "TASK-20240101-101500-0a1b2c3d"


def line(method: str, params: Any = None, id: Any = 1) -> bytes:
    """One request line as a client would send it (params left out when None)."""
    body: dict[str, Any] = {"id": id, "method": method}
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode()


def decode(raw: bytes) -> Any:
    """Both decoding steps, as the server runs them."""
    return decode_params(decode_request(raw))


def refused(raw: bytes, error: type[SupervisorError]) -> SupervisorError:
    with pytest.raises(error) as info:
        decode(raw)
    assert type(info.value) is error
    assert info.value.code is error.code
    return info.value


# --- LineBuffer -------------------------------------------------------------------------


def test_line_split_across_feeds_is_joined() -> None:
    """A line that arrives in pieces is returned once, whole, when its newline arrives."""
    buf = LineBuffer()
    assert buf.feed(b'{"id": ') == []
    assert buf.pending == 7
    assert buf.feed(b"1, ") == []
    assert buf.feed(b'"x": 2}\n{"id"') == [b'{"id": 1, "x": 2}']
    assert buf.pending == 5
    assert buf.feed(b": 3}\n") == [b'{"id": 3}']
    assert buf.pending == 0


def test_several_lines_in_one_feed_come_out_in_order() -> None:
    """One feed holding several complete lines and a partial one returns the complete ones and keeps the rest."""
    buf = LineBuffer()
    assert buf.feed(b"a\nbb\nccc\ndd") == [b"a", b"bb", b"ccc"]
    assert buf.feed(b"d\n") == [b"ddd"]


def test_blank_lines_are_ignored() -> None:
    """Empty and whitespace-only lines produce nothing (a client may send keep-alive newlines)."""
    buf = LineBuffer()
    assert buf.feed(b"\n\n  \n\t\r\nx\n\n") == [b"x"]
    assert buf.pending == 0


def test_partial_line_over_the_cap_raises() -> None:
    """A partial line that grows past the cap raises TooLarge without waiting for its newline."""
    buf = LineBuffer(max_line=8)
    assert buf.feed(b"12345") == []
    with pytest.raises(TooLarge) as info:
        buf.feed(b"6789")
    assert info.value.code is ErrorCode.TOO_LARGE


def test_complete_line_over_the_cap_raises() -> None:
    """A complete line one byte over the cap raises TooLarge even when its newline came in the same feed."""
    with pytest.raises(TooLarge):
        LineBuffer(max_line=8).feed(b"123456789\n")
    buf = LineBuffer(max_line=8)
    buf.feed(b"1234")
    with pytest.raises(TooLarge):
        buf.feed(b"56789\nok\n")


def test_partial_remainder_over_the_cap_raises() -> None:
    """Short complete lines followed by an oversized partial one in the same feed raise TooLarge."""
    with pytest.raises(TooLarge):
        LineBuffer(max_line=8).feed(b"ok\n123456789")


def test_line_exactly_at_the_cap_is_accepted() -> None:
    """A line of exactly max_line bytes (the newline not counted) is fine, as a partial and complete."""
    buf = LineBuffer(max_line=8)
    assert buf.feed(b"12345678") == []
    assert buf.feed(b"\n") == [b"12345678"]
    assert LineBuffer(max_line=8).feed(b"12345678\n87654321\n") == [b"12345678", b"87654321"]


def test_many_short_lines_may_exceed_the_cap_together() -> None:
    """The cap is per line: one feed of many short lines longer than the cap in total is fine."""
    buf = LineBuffer(max_line=8)
    assert buf.feed(b"1234567\n" * 100) == [b"1234567"] * 100


def test_default_cap_is_one_mebibyte() -> None:
    """Without an explicit cap a line may be 1 MiB, and not a byte more."""
    assert MAX_LINE == 1 << 20
    buf = LineBuffer()
    assert buf.feed(b"x" * MAX_LINE) == []
    with pytest.raises(TooLarge):
        buf.feed(b"x")


@given(
    lines=st.lists(
        st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b.strip()), max_size=20
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_any_chunking_yields_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    """However a stream of lines is cut into feeds, the buffer returns exactly those lines in order."""
    stream = b"".join(x + b"\n" for x in lines)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    buf = LineBuffer(max_line=40)
    out: list[bytes] = []
    for start, end in zip(points, points[1:], strict=False):
        out += buf.feed(stream[start:end])
    assert out == lines
    assert buf.pending == 0


# --- every method with minimal params ---------------------------------------------------

#: The smallest valid params of every method.
MINIMAL: dict[str, dict[str, Any]] = {
    "hello": {},
    "task.create": {"description": "fix the tests"},
    "task.get": {"task_id": TASK},
    "task.list": {},
    "task.close": {"task_id": TASK},
    "task.purge": {"task_id": TASK},
    "agent.spawn": {"type": "worker"},
    "agent.get": {"agent_id": AGENT},
    "agent.list": {},
    "agent.progress": {},
    "agent.finding": {"type": "bug", "message": "it broke"},
    "agent.kill": {"agent_id": AGENT},
    "agent.wake": {"agent_id": AGENT},
    "approval.request": {"tool_name": "Bash"},
    "approval.list": {},
    "approval.answer": {"approval_id": "AP-0123456789ab", "allow": True},
    "agent.wait": {"agent_ids": [AGENT]},
    "agent.output": {"agent_id": AGENT},
    "agent.peek": {"agent_id": AGENT},
    "findings.list": {},
    "events.subscribe": {},
    "daemon.health": {},
    "daemon.reconcile": {},
    "daemon.doctor": {},
    "daemon.stop": {},
}


def test_every_method_has_minimal_params_here() -> None:
    """This file knows every method the protocol serves (a new method must get its tests)."""
    assert set(MINIMAL) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_minimal_params_decode_into_the_method_struct(method: str) -> None:
    """Each method's minimal params decode into exactly that method's Struct, carrying the given values."""
    params = decode(line(method, MINIMAL[method], id=42))
    assert type(params) is METHODS[method].params
    for field, value in MINIMAL[method].items():
        assert getattr(params, field) == value


@pytest.mark.parametrize("method", sorted(METHODS))
def test_omitted_params_mean_an_empty_object(method: str) -> None:
    """A request without params decodes as ``{}``: fine where nothing is required, InvalidParams otherwise."""
    raw = line(method)
    if MINIMAL[method]:
        error = refused(raw, InvalidParams)
        assert "missing required field" in error.message
    else:
        assert type(decode(raw)) is METHODS[method].params


@pytest.mark.parametrize("method", sorted(METHODS))
def test_unknown_fields_are_refused_for_every_method(method: str) -> None:
    """Every method's params forbid unknown fields, so a typo is an error rather than a silent default."""
    error = refused(line(method, {**MINIMAL[method], "bogus": 1}), InvalidParams)
    assert "bogus" in error.message
    assert error.data == {"method": method}


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"description": "d", "limits": {"max_concurrent": 5, "bogus": 1}}, "$.limits"),
        ({"description": "d", "context": {"bogus": 1}}, "$.context"),
    ],
)
def test_unknown_nested_fields_are_refused(params: dict[str, Any], where: str) -> None:
    """Nested Structs of task.create (limits, context) forbid unknown fields too."""
    error = refused(line("task.create", params), InvalidParams)
    assert "bogus" in error.message and where in error.message


# --- envelope ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"id": 1, "method": "hello"',
        b"{'id': 1}",
        b'{"id": 1, "method": "hello"} trailing',
        b'{"id": 1, "method": "hello", "params": {"timeout": NaN}}',
        b"\xff\xfe{}",
    ],
    ids=["empty", "open-brace", "truncated", "single-quotes", "trailing", "nan", "binary"],
)
def test_malformed_json_is_a_bad_request(raw: bytes) -> None:
    """Input that is not one JSON document raises BadRequest."""
    assert refused(raw, BadRequest).code == "bad_request"


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"[1, 2]", b'"hello"', b"42", b"null", b"true"],
)
def test_non_object_json_is_a_bad_request(raw: bytes) -> None:
    """A JSON value that is not an object is not a request."""
    refused(raw, BadRequest)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"method": "hello"}',
        b'{"id": 1}',
        b'{"id": "1", "method": "hello"}',
        b'{"id": true, "method": "hello"}',
        b'{"id": 1.5, "method": "hello"}',
        b'{"id": 1, "method": 7}',
        b'{"id": null, "method": "hello"}',
    ],
    ids=["no-id", "no-method", "string-id", "bool-id", "float-id", "int-method", "null-id"],
)
def test_envelope_fields_are_required_and_typed(raw: bytes) -> None:
    """A request needs an integer id and a string method."""
    refused(raw, BadRequest)


def test_envelope_decodes_id_method_and_raw_params() -> None:
    """decode_request keeps params raw, so decoding them is the method's business."""
    request = decode_request(b'{"id": 9, "method": "agent.get", "params": {"agent_id": 5}}')
    assert (request.id, request.method, bytes(request.params)) == (9, "agent.get", b'{"agent_id": 5}')
    assert bytes(decode_request(b'{"id": 9, "method": "hello"}').params) == b"{}"


@pytest.mark.parametrize("method", ["nope", "agent", "agent.spawn ", "Agent.Spawn", "agent.spawn\n", "", "../hello"])
def test_unknown_method(method: str) -> None:
    """A method the daemon does not serve raises UnknownMethod naming it, even with valid-looking params."""
    error = refused(line(method, {}), UnknownMethod)
    assert error.code == "unknown_method"
    assert error.data == {"method": method}
    assert isinstance(error, LookupError)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("agent.get", "not an object"),
        ("agent.get", [AGENT]),
        ("agent.get", None),
    ],
    ids=["string", "array", "null"],
)
def test_params_must_be_an_object(method: str, params: Any) -> None:
    """Params that are not a JSON object are invalid params."""
    raw = json.dumps({"id": 1, "method": method, "params": params}).encode()
    refused(raw, InvalidParams)


# --- invalid UTF-8 ----------------------------------------------------------------------


def test_invalid_utf8_outside_strings_is_a_bad_request() -> None:
    """Bytes that are not UTF-8 between JSON tokens are malformed JSON."""
    refused(b'{"id": 1,\xff "method": "hello"}', BadRequest)


def test_invalid_utf8_in_the_method_is_a_bad_request() -> None:
    """Invalid UTF-8 inside the method string raises BadRequest, not a bare UnicodeDecodeError."""
    refused(b'{"id": 1, "method": "hel\xfflo"}', BadRequest)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": 1, "method": "agent.get", "params": {"agent_id": "worker\xff-101500-0a1b2c"}}',
        b'{"id": 1, "method": "hello", "params": {"client": "\xc3\x28"}}',
        b'{"id": 1, "method": "hello", "params": {"cli\xffent": "x"}}',
        b'{"id": 1, "method": "agent.finding", "params": {"type": "x", "message": "m", "data": {"k": "\xed\xa0\x80"}}}',
    ],
    ids=["in-id", "in-text", "in-key", "surrogate-in-data"],
)
def test_invalid_utf8_in_params_is_a_bad_request(raw: bytes) -> None:
    """Invalid UTF-8 inside a params string raises BadRequest, not a bare UnicodeDecodeError."""
    refused(raw, BadRequest)


# --- names and ids ----------------------------------------------------------------------

HOSTILE_SUFFIXES = [
    "/x", "/", "..", ".", ".x", ":x", ":", ";x", '"', "'", "$(id)", "`id`", " x", " ", "\t",
    "\n", "\r", "\x00", "\x7f", "é", "A",
]
HOSTILE_NAMES = [
    "", "..", ".", "../etc", "a/b", "a.b", "a:b", "a;b", 'a"b', "a'b", "$(id)", "a b", " a", "a ", "a\nb", "a\n",
    "\na", "-a", "_a", "Worker", "a" * 41, "a\x00", "a\u00e9", "a\u2028",
]

#: (method, params without the field, the field, a valid value of it)
NAME_FIELDS = [
    ("agent.spawn", {}, "type", "worker"),
    ("agent.spawn", {"type": "worker"}, "provider", "claude"),
    ("agent.progress", {}, "activity", "working"),
    ("agent.finding", {"message": "m"}, "type", "bug"),
    ("findings.list", {}, "type", "bug"),
]
AGENT_ID_FIELDS = [
    ("agent.get", {}, "agent_id", AGENT),
    ("agent.kill", {}, "agent_id", AGENT),
    ("agent.spawn", {"type": "worker"}, "parent", AGENT),
    ("agent.progress", {}, "agent_id", AGENT),
    ("findings.list", {}, "agent_id", AGENT),
    ("events.subscribe", {}, "agent_id", AGENT),
]
TASK_ID_FIELDS = [
    ("task.get", {}, "task_id", TASK),
    ("task.close", {}, "task_id", TASK),
    ("agent.spawn", {"type": "worker"}, "task_id", TASK),
    ("agent.list", {}, "task_id", TASK),
    ("findings.list", {}, "task_id", TASK),
]


def _hostile_cases() -> list[Any]:
    cases = []
    for method, base, field, valid in NAME_FIELDS:
        for bad in HOSTILE_NAMES:
            cases.append(pytest.param(method, base, field, valid, bad, id=f"{method}.{field}={bad!r}"))
    for method, base, field, valid in AGENT_ID_FIELDS + TASK_ID_FIELDS:
        variants = [valid + s for s in HOSTILE_SUFFIXES] + [s + valid for s in ("../", "/", " ", "\n", ".")]
        variants += [valid[:-1], valid.replace("-", "_"), valid.lower() if valid != valid.lower() else valid.upper()]
        for bad in variants:
            cases.append(pytest.param(method, base, field, valid, bad, id=f"{method}.{field}={bad!r}"))
    return cases


@pytest.mark.parametrize(("method", "base", "field", "valid", "bad"), _hostile_cases())
def test_hostile_names_and_ids_are_refused(method: str, base: dict[str, Any], field: str, valid: str, bad: str) -> None:
    """Path separators, dots, tmux target syntax, shell metacharacters, quotes, whitespace and control characters
    (a trailing newline included: the patterns end in \\Z because $ would accept it) never get past decoding."""
    accepted = decode(line(method, {**base, field: valid}))
    assert getattr(accepted, field) == valid
    error = refused(line(method, {**base, field: bad}), InvalidParams)
    assert f"$.{field}" in error.message
    assert error.data == {"method": method}


@pytest.mark.parametrize("bad", ["worker\n", "../x", "a.b", "a:b"])
def test_hostile_ids_in_a_list_are_refused(bad: str) -> None:
    """Every element of agent.wait's agent_ids is pattern-checked, not just the first."""
    error = refused(line("agent.wait", {"agent_ids": [AGENT, bad]}), InvalidParams)
    assert "$.agent_ids[1]" in error.message


@pytest.mark.parametrize(
    "name",
    ["a", "0", "worker", "code-reviewer", "test_writer", "a" * 40, "x1-2_3"],
)
def test_good_names_are_accepted(name: str) -> None:
    """The name pattern admits lower-case letters, digits, '-' and '_' up to 40 characters, not starting with - or _."""
    assert decode(line("agent.spawn", {"type": name})).type == name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("argv", ["--flag", "a b", "$(rm -rf /)", "`id`", '"q"', "semi;colon", "../../etc/passwd", "é"]),
        ("model", "claude-sonnet-4.5:latest/x@y+z"),
        ("cwd", "/tmp/a b/../c"),
    ],
)
def test_free_form_argv_model_and_cwd_are_kept_verbatim(field: str, value: Any) -> None:
    """argv elements, model names and cwd may hold shell metacharacters (they never reach a shell) and decode
    unchanged."""
    assert getattr(decode(line("agent.spawn", {"type": "w", field: value})), field) == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("argv", ["ok", "bell\x07"]),  # tabs and newlines are legal, other controls are not
        ("argv", ["nul\x00"]),
        ("argv", ["esc\x1b[31m"]),
        ("argv", ["x"] * 257),
        ("argv", "not-a-list"),
        ("model", "-rf"),
        ("model", "--dangerously-skip-permissions"),
        ("model", "a b"),
        ("model", "m\n"),
        ("cwd", "relative/path"),
        ("cwd", "~/x"),
        ("cwd", "/tmp/x\n"),
        ("cwd", "/" + "x" * 4096),
        ("prompt", "x" * (512 * 1024 + 1)),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_bad_argv_model_cwd_and_prompt_are_refused(field: str, value: Any) -> None:
    """Control characters in argv, flag-like or spaced model names, relative or multi-line cwds and
    oversized values are refused, naming the field."""
    error = refused(line("agent.spawn", {"type": "w", field: value}), InvalidParams)
    assert f"$.{field}" in error.message


# --- wrong types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("agent.get", {"agent_id": 5}, "agent_id"),
        ("agent.get", {"agent_id": None}, "agent_id"),
        ("agent.spawn", {"type": ["worker"]}, "type"),
        ("agent.spawn", {"type": "w", "argv": [1]}, "argv[0]"),
        ("agent.kill", {"agent_id": AGENT, "tree": "yes"}, "tree"),
        ("agent.kill", {"agent_id": AGENT, "tree": 1}, "tree"),
        ("agent.progress", {"percent": "50"}, "percent"),
        ("agent.progress", {"percent": 50.5}, "percent"),
        ("agent.wait", {"agent_ids": AGENT}, "agent_ids"),
        ("agent.wait", {"agent_ids": [AGENT], "timeout": "10"}, "timeout"),
        ("agent.finding", {"type": "x", "message": "m", "severity": "urgent"}, "severity"),
        ("agent.finding", {"type": "x", "message": "m", "data": [1]}, "data"),
        ("task.create", {"description": 5}, "description"),
        ("task.create", {"description": "d", "priority": "P9"}, "priority"),
        ("task.create", {"description": "d", "limits": {"max_depth": "5"}}, "limits.max_depth"),
        ("task.list", {"state": "running"}, "state"),
        ("agent.list", {"live": "true"}, "live"),
        ("hello", {"protocol": "1"}, "protocol"),
        ("daemon.reconcile", {"dry_run": 0}, "dry_run"),
        ("daemon.doctor", {"providers": ["Not A Name"]}, "providers"),
        ("agent.output", {"agent_id": AGENT, "format": "html"}, "format"),
        ("agent.output", {"agent_id": AGENT, "format": "text\n"}, "format"),
    ],
)
def test_wrong_types_are_invalid_params_naming_the_field(method: str, params: dict[str, Any], field: str) -> None:
    """A param of the wrong type or outside its enum raises InvalidParams whose message names the field."""
    error = refused(line(method, params), InvalidParams)
    assert f"$.{field}" in error.message
    assert error.message.startswith(f"{method}: ")
    assert isinstance(error, ValueError)


# --- numeric bounds ---------------------------------------------------------------------

HUGE = 10**30


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("agent.progress", {"percent": -1}, "percent"),
        ("agent.progress", {"percent": 101}, "percent"),
        ("agent.progress", {"percent": HUGE}, "percent"),
        ("task.create", {"description": "d", "limits": {"max_concurrent": 0}}, "limits.max_concurrent"),
        ("task.create", {"description": "d", "limits": {"max_concurrent": -1}}, "limits.max_concurrent"),
        ("task.create", {"description": "d", "limits": {"max_concurrent": 1001}}, "limits.max_concurrent"),
        ("task.create", {"description": "d", "limits": {"max_total": 0}}, "limits.max_total"),
        ("task.create", {"description": "d", "limits": {"max_total": HUGE}}, "limits.max_total"),
        ("task.create", {"description": "d", "limits": {"max_depth": 0}}, "limits.max_depth"),
        ("task.create", {"description": "d", "limits": {"max_depth": 51}}, "limits.max_depth"),
        ("findings.list", {"limit": 0}, "limit"),
        ("findings.list", {"limit": -5}, "limit"),
        ("findings.list", {"limit": 501}, "limit"),
        ("agent.list", {"limit": 501}, "limit"),
        ("task.list", {"cursor": "not/a=cursor"}, "cursor"),
        ("agent.list", {"cursor": "x" * 257}, "cursor"),
        ("findings.list", {"limit": HUGE}, "limit"),
        ("findings.list", {"since": -1}, "since"),
        ("events.subscribe", {"since": -1}, "since"),
        ("agent.wait", {"agent_ids": [AGENT], "timeout": -1}, "timeout"),
        ("agent.wait", {"agent_ids": [AGENT], "timeout": -1e-9}, "timeout"),
        ("agent.wait", {"agent_ids": [AGENT], "timeout": 7 * 86400 + 1}, "timeout"),
        ("agent.wait", {"agent_ids": [AGENT], "timeout": 1e300}, "timeout"),
        ("agent.wait", {"agent_ids": []}, "agent_ids"),
        ("agent.wait", {"agent_ids": [AGENT] * 1001}, "agent_ids"),
        ("agent.output", {"agent_id": AGENT, "tail": -1}, "tail"),
        ("agent.output", {"agent_id": AGENT, "tail": 100_001}, "tail"),
        ("agent.output", {"agent_id": AGENT, "offset": -1}, "offset"),
        ("agent.output", {"agent_id": AGENT, "max_bytes": 255}, "max_bytes"),
        ("agent.output", {"agent_id": AGENT, "max_bytes": (4 << 20) + 1}, "max_bytes"),
        ("agent.output", {"agent_id": AGENT, "regex": "x" * 1001}, "regex"),
        ("agent.peek", {"agent_id": AGENT, "lines": -1}, "lines"),
        ("agent.peek", {"agent_id": AGENT, "lines": 10_001}, "lines"),
        ("hello", {"client": "x" * 201}, "client"),
        ("hello", {"token": "short"}, "token"),
        ("hello", {"token": "a" * 16 + "/"}, "token"),
    ],
    ids=lambda v: repr(v)[:40] if not isinstance(v, dict) else None,
)
def test_out_of_range_numbers_and_sizes_are_refused(method: str, params: dict[str, Any], field: str) -> None:
    """Negative, zero-where-positive and huge limits, percents, timeouts and sizes raise InvalidParams naming
    the field."""
    error = refused(line(method, {**MINIMAL[method], **params}), InvalidParams)
    assert f"$.{field}" in error.message


def test_timeout_beyond_float_range_is_refused() -> None:
    """A timeout literal too large for a float is refused as invalid params, not accepted as infinity."""
    raw = b'{"id": 1, "method": "agent.wait", "params": {"agent_ids": ["%s"], "timeout": 1e400}}' % AGENT.encode()
    assert "$.timeout" in refused(raw, InvalidParams).message


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("agent.progress", {"percent": 0}),
        ("agent.progress", {"percent": 100}),
        ("task.create", {"description": "d", "limits": {"max_concurrent": 1000, "max_total": 10**5, "max_depth": 50}}),
        ("task.create", {"description": "d", "limits": {"max_concurrent": 1, "max_total": 1, "max_depth": 1}}),
        ("findings.list", {"limit": 1, "since": 0}),
        ("findings.list", {"limit": 500, "since": HUGE}),
        ("agent.wait", {"agent_ids": [AGENT], "timeout": 0}),
        ("agent.wait", {"agent_ids": [AGENT] * 1000, "timeout": 7 * 86400}),
        ("agent.output", {"agent_id": AGENT, "tail": 0, "offset": 0, "max_bytes": 256}),
        ("agent.output", {"agent_id": AGENT, "tail": 100_000, "max_bytes": 4 << 20}),
        ("agent.peek", {"agent_id": AGENT, "lines": 10_000}),
    ],
)
def test_bounds_are_inclusive(method: str, params: dict[str, Any]) -> None:
    """The edge values of every bounded number are accepted."""
    decoded = decode(line(method, params))
    assert type(decoded) is METHODS[method].params


# --- error replies ----------------------------------------------------------------------


def test_error_reply_encodes_code_message_and_data() -> None:
    """An error reply carries the request id and the error's stable code, message and data, and no result."""
    error = DuplicateAgent("reviewer is busy", data={"existing_agent": AGENT, "type": "reviewer"})
    wire = json.loads(msgspec.json.encode(error_reply(7, error)))
    assert wire == {
        "id": 7,
        "error": {"code": "duplicate_agent", "message": "reviewer is busy", "data": {"existing_agent": AGENT,
                                                                                     "type": "reviewer"}},
    }


def test_error_reply_without_data_or_id() -> None:
    """Without data the key is left out; a reply to an unparseable request has a null id."""
    wire = json.loads(msgspec.json.encode(error_reply(None, BadRequest("garbage"))))
    assert wire == {"id": None, "error": {"code": "bad_request", "message": "garbage"}}


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("b"),
        InvalidParams("i", data={"method": "agent.get"}),
        UnknownMethod("u", data={"method": "x"}),
        NotFound("n"),
        DuplicateAgent("d", data={"existing_agent": AGENT}),
        TooLarge("t"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_error_reply_round_trips_to_the_same_class(error: SupervisorError) -> None:
    """A client rebuilding the exception from the wire code gets the same class, message and data."""
    wire = json.loads(msgspec.json.encode(error_reply(1, error)))["error"]
    back = from_code(wire["code"], wire["message"], wire.get("data"))
    assert (type(back), back.message, back.data) == (type(error), error.message, error.data)


def test_stable_error_codes() -> None:
    """The wire codes clients match on are spelled exactly as documented."""
    classes = (BadRequest, InvalidParams, UnknownMethod, TooLarge, DuplicateAgent)
    assert [cls.code.value for cls in classes] == [
        "bad_request", "invalid_params", "unknown_method", "too_large", "duplicate_agent"
    ]
    assert type(from_code("no_such_code", "m")).__name__ == "InternalError"


def test_request_struct_default_params() -> None:
    """A Request built in code without params carries an empty object."""
    assert decode_params(Request(id=1, method="daemon.health")) == METHODS["daemon.health"].params()
