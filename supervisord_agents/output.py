"""Reading an agent's output: tail, byte offsets, a bounded regex, and three formats.

The log is the runner's copy of the agent's stdout and stderr: ``output.log`` while the
agent is live, ``archive/<id>.log.gz`` after cleanup. Everything here is bounded: at
most ``max_bytes`` of output (with a note when cut), a regex that gives up after
``REGEX_SECONDS`` (the ``regex`` package supports timeouts; the stdlib ``re`` cannot be
interrupted, and a caller-supplied pattern could otherwise hang a worker thread), and a
per-line cap in the summary format.

Formats:
- ``text``: the lines as written;
- ``jsonl``: only lines that are JSON objects (stream-json events);
- ``summary``: one compact line per stream-json event (tool calls, results, errors).
"""

from __future__ import annotations

import gzip
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import regex

from .errors import InvalidParams, Timeout
from .files import AgentFiles
from .protocol import OutputParams, OutputResult

REGEX_SECONDS: Final = 1.0
SUMMARY_WIDTH: Final = 200
MAX_SCAN: Final = 256 << 20  # bytes of a log a single request may read

_json = msgspec.json.Decoder()


def read_output(files: AgentFiles, params: OutputParams) -> OutputResult:
    """The agent's output per ``params``. Blocking: run it in a worker thread."""
    pattern = None
    if params.regex is not None:
        try:
            pattern = regex.compile(params.regex)
        except regex.error as e:
            raise InvalidParams(f"bad regex: {e}") from None
    path, compressed = _source(files)
    size = 0 if path is None else (os.path.getsize(path) if not compressed else -1)
    lines, end = _lines(path, compressed, params)
    if compressed:
        size = end
    try:
        selected = [line for line in lines if _keep(line, params.format, pattern)]
    except TimeoutError:
        raise Timeout(f"regex took longer than {REGEX_SECONDS} s; simplify it") from None
    if params.tail is not None:
        selected = selected[-params.tail:] if params.tail else []
    rendered = [_render(line, params.format) for line in selected]
    text = "\n".join(rendered) + ("\n" if rendered else "")
    data = text.encode()
    truncated, note = False, ""
    if len(data) > params.max_bytes:
        data = data[-params.max_bytes:]
        text = data.decode(errors="ignore")
        text = text[text.find("\n") + 1:] if "\n" in text else text
        truncated = True
        note = f"output cut to the last {params.max_bytes} bytes of {len(rendered)} lines; use tail, regex or offset"
    return OutputResult(agent_id=files.dir.name, format=params.format, output=text, offset=end, size=size,
                        truncated=truncated, note=note)


def _source(files: AgentFiles) -> tuple[Path | None, bool]:
    if files.log.exists():
        return files.log, False
    if files.archive.exists():
        return files.archive, True
    return None, False


def _lines(path: Path | None, compressed: bool, params: OutputParams) -> tuple[list[str], int]:
    """Decoded lines to consider, and the byte offset just past them."""
    if path is None:
        return [], 0
    opener: Any = gzip.open if compressed else open
    with opener(path, "rb") as f:
        start = params.offset or 0
        if start:
            f.seek(start)
        if params.offset is None and params.tail is not None and params.regex is None and not compressed:
            end = f.seek(0, os.SEEK_END)
            return _tail_lines(f, end, params.tail), end
        limit = MAX_SCAN if params.offset is None else params.max_bytes
        if params.offset is None:
            window: deque[bytes] = deque(maxlen=None)
            total = 0
            for raw in f:
                window.append(raw)
                total += len(raw)
                while total > MAX_SCAN and window:
                    total -= len(window.popleft())
            end = f.tell()
            return [_decode(r) for r in window], end
        data = f.read(limit)
        # Stop at the last complete line so the next offset starts a line.
        cut = data.rfind(b"\n") + 1 if len(data) == limit else len(data)
        data = data[: cut or len(data)]
        return [_decode(r) for r in data.splitlines()], start + len(data)


def _tail_lines(f: Any, end: int, n: int) -> list[str]:
    """The last ``n`` lines, reading backwards in blocks (cost grows with n, not the file)."""
    block, pos, chunks, newlines = 65536, end, [], 0
    while pos > 0 and newlines <= n:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    return [_decode(r) for r in data.splitlines()[-n:]] if n else []


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")


def _keep(line: str, fmt: str, pattern: regex.Pattern[str] | None) -> bool:
    if fmt != "text" and not line.startswith("{"):
        return fmt == "summary" and bool(line.strip()) and (pattern is None or _search(pattern, line))
    return pattern is None or _search(pattern, line)


def _search(pattern: regex.Pattern[str], line: str) -> bool:
    return pattern.search(line[:65536], timeout=REGEX_SECONDS) is not None


def _render(line: str, fmt: str) -> str:
    if fmt != "summary":
        return line
    return _clip(summarize(line))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 1] + "…"


def summarize(line: str) -> str:
    """One compact line for one stream-json event (or ``[TEXT]`` for anything else)."""
    try:
        event = _json.decode(line)
    except msgspec.DecodeError:
        return f"[TEXT] {line}"
    if not isinstance(event, dict):
        return f"[TEXT] {line}"
    kind = event.get("type")
    if kind == "system":
        model, session = event.get("model", "?"), event.get("session_id", "?")
        return f"[INIT] {event.get('subtype', '')} model={model} session={session}"
    if kind == "result":
        status = "error" if event.get("is_error") else "ok"
        cost = event.get("total_cost_usd")
        cost_s = f" cost=${cost:.4f}" if isinstance(cost, int | float) else ""
        return f"[DONE] {status}{cost_s} turns={event.get('num_turns', '?')}: {event.get('result', '')}"
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " | ".join(_summarize_block(kind, block) for block in content if isinstance(block, dict)) or f"[{kind}]"
    return f"[{str(kind).upper()}] {line}"


def _summarize_block(kind: Any, block: dict[str, Any]) -> str:
    btype = block.get("type")
    if btype == "text":
        return f"[ASST] {block.get('text', '')}"
    if btype == "tool_use":
        args = block.get("input")
        detail = ""
        if isinstance(args, dict):
            detail = str(next((args[k] for k in ("command", "file_path", "pattern", "url", "prompt") if k in args),
                              msgspec.json.encode(args).decode()))
        return f"[TOOL] {block.get('name', '?')}: {detail}"
    if btype == "tool_result":
        body = block.get("content")
        if isinstance(body, list):
            body = " ".join(str(b.get("text", "")) for b in body if isinstance(b, dict))
        tag = "[ERROR]" if block.get("is_error") else "[RESULT]"
        return f"{tag} {body}"
    if btype == "thinking":
        return "[THINK]"
    return f"[{str(btype or kind).upper()}]"


def iter_chunks(path: Path, offset: int) -> Iterator[bytes]:
    """Bytes of a growing log from ``offset`` (for ``agentctl logs -f``)."""
    with path.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(65536):
            yield chunk
