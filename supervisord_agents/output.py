"""Reading an agent's output: tail, byte offsets, a bounded regex, and three formats.

The log is the runner's copy of the agent's stdout and stderr: ``output.log`` (and the
file rotated before it) while the agent is live, ``archive/<id>.log.gz`` after cleanup.
Offsets count every byte the agent wrote, whatever rotation dropped since. Everything here is bounded: at
most ``max_bytes`` of output (with a note when cut), a regex that gives up on one line after
``REGEX_SECONDS`` (the ``regex`` package supports timeouts; the stdlib ``re`` cannot be
interrupted, and a caller-supplied pattern could otherwise hang a worker thread), a search
that stops after ``SEARCH_SECONDS`` in all (with the lines found so far and a note saying
where to continue: one call holds one of the few read threads for no longer than that,
however many lines its window has), and a per-line cap in the summary format.

Formats:
- ``text``: the lines as written;
- ``jsonl``: only lines that are JSON objects (stream-json events);
- ``summary``: one compact line per stream-json event (tool calls, results, errors).
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import time
from collections import deque
from typing import Any, Final, cast

import msgspec
import regex

from .errors import InvalidParams, Timeout
from .files import AgentFiles
from .protocol import OutputParams, OutputResult

REGEX_SECONDS: Final = 1.0  # one line's search; longer is an error (the regex is too slow)
SEARCH_SECONDS: Final = 5.0  # one call's search, all lines together; then it stops where it is
SUMMARY_WIDTH: Final = 200
MAX_SCAN: Final = 16 << 20  # bytes of a log one request reads (from its end, without an offset): memory per read

_json = msgspec.json.Decoder()


def read_output(files: AgentFiles, params: OutputParams) -> OutputResult:
    """The agent's output per ``params``. Blocking: run it in a worker thread."""
    pattern = None
    if params.regex is not None:
        try:
            pattern = regex.compile(params.regex)
        except regex.error as e:
            raise InvalidParams(f"bad regex: {e}") from None
    notes = []
    with _open_log(files) as f:
        log = cast(_Log, f.raw)
        if params.offset is not None and params.offset < log.start:
            notes.append(f"bytes {params.offset}-{log.start} were dropped when the log was rotated")
        raws, end, scanned_from = _lines(f, log, params)
        if params.offset is None and scanned_from > log.start:
            notes.append(f"searched the last {MAX_SCAN >> 20} MiB of the log, from byte {scanned_from};"
                         " read what came before with offset")
        if not log.compressed:
            size = log.end()
        elif params.offset is not None and end == params.offset:
            # Nothing read at the offset: it is at or past the end, which only reading says.
            end = size = _decompressed_end(f, log.start)
        else:
            size = end
    selected, stopped = _select(raws, scanned_from, params.format, pattern)
    if stopped is not None:
        # As a window that was cut: what was found, a note, and the offset to go on from.
        end = stopped
        notes.append(f"the regex search stopped after {SEARCH_SECONDS:g} s at byte {stopped}, before the end;"
                     f" continue with offset {stopped}")
    if params.tail is not None:
        selected = selected[-params.tail:] if params.tail else []
    rendered = [text for line in selected if (text := _render(line, params.format))]
    text = "\n".join(rendered) + ("\n" if rendered else "")
    data = text.encode()
    truncated = False
    if len(data) > params.max_bytes:
        data = data[-params.max_bytes:]
        text = data.decode(errors="ignore")
        text = text[text.find("\n") + 1:] if "\n" in text else text
        truncated = True
        notes.append(f"output cut to the last {params.max_bytes} bytes of {len(rendered)} lines;"
                     " use tail, regex or offset")
    return OutputResult(agent_id=files.dir.name, format=params.format, output=text, offset=end, size=size,
                        truncated=truncated, note="; ".join(notes))


class _Log(io.RawIOBase):
    """An agent's log read as one stream addressed by offsets since the agent started:
    the live files the runner rotated and its current file, or the compressed archive.

    Every file is opened up front, so a rotation that removes one while we read changes
    nothing here. Positions before the first retained byte read from that byte.
    """

    def __init__(self, parts: list[tuple[int, io.BufferedIOBase]], *, compressed: bool) -> None:
        super().__init__()
        self.parts = parts
        self.compressed = compressed
        self.start = parts[0][0] if parts else 0
        self.pos = self.start
        # Each part but the last ends where the next begins; the last may still grow.
        self.ends = [nxt for nxt, _ in parts[1:]] + [-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def end(self) -> int:
        if not self.parts:
            return 0
        start, last = self.parts[-1]
        return start + os.fstat(last.fileno()).st_size

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            offset += self.end()
        elif whence == os.SEEK_CUR:
            offset += self.pos
        self.pos = max(offset, self.start)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        for (start, f), end in zip(self.parts, self.ends, strict=True):
            if end != -1 and self.pos >= end:
                continue
            f.seek(self.pos - start)
            want = len(view) if end == -1 else min(len(view), end - self.pos)
            n = f.readinto(view[:want]) or 0
            self.pos += n
            return n
        return 0

    def close(self) -> None:
        for _, f in self.parts:
            f.close()
        super().close()


def _open_log(files: AgentFiles) -> io.BufferedReader:
    parts: list[tuple[int, io.BufferedIOBase]] = []
    for start, path in files.log_segments():
        try:
            parts.append((start, path.open("rb")))
        except FileNotFoundError:
            continue  # rotated away (or archived) between listing and opening
    compressed = not parts and files.archive.exists()
    if compressed:
        parts.append((files.archive_start(), gzip.open(files.archive, "rb")))  # noqa: SIM115 (_Log closes it)
    return io.BufferedReader(_Log(parts, compressed=compressed), buffer_size=1 << 16)


def _lines(f: io.BufferedReader, log: _Log, params: OutputParams) -> tuple[list[bytes], int, int]:
    """Lines to consider (as read, with their ends), the offset just past them, and the offset
    they start at."""
    if not log.parts:
        return [], 0, 0
    if params.offset is None and params.tail is not None and params.regex is None and not log.compressed:
        end = f.seek(0, os.SEEK_END)
        return _tail_lines(f, log.start, end, params.tail), end, log.start
    start = f.seek(params.offset or 0)
    if params.offset is None:
        window: deque[bytes] = deque()
        total = 0
        for raw in iter(functools.partial(f.readline, MAX_SCAN), b""):  # a line without end is cut
            window.append(raw)
            total += len(raw)
            while total > MAX_SCAN and window:
                dropped = window.popleft()
                total -= len(dropped)
                start += len(dropped)
        return list(window), f.tell(), start
    data = f.read(params.max_bytes)
    # Stop at the last complete line so the next offset starts a line.
    cut = data.rfind(b"\n") + 1 if len(data) == params.max_bytes else len(data)
    data = data[: cut or len(data)]
    return data.splitlines(keepends=True), start + len(data), start


def _decompressed_end(f: io.BufferedReader, start: int) -> int:
    f.seek(start)
    while f.read(1 << 20):
        pass
    return f.tell()


def _tail_lines(f: Any, first: int, end: int, n: int) -> list[bytes]:
    """The last ``n`` lines, reading backwards in blocks (cost grows with n, not the file)."""
    block, pos, chunks, newlines = 65536, end, [], 0
    while pos > first and newlines <= n:
        step = min(block, pos - first)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    return data.splitlines(keepends=True)[-n:] if n else []


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")


def _select(
    raws: list[bytes], start: int, fmt: str, pattern: regex.Pattern[str] | None,
) -> tuple[list[str], int | None]:
    """The lines to keep of ``raws`` (which begin at offset ``start``), and the offset of the
    first line left unsearched when the call's time ran out (None: all were searched).

    The deadline is set here, once, after the reading: the reading is bounded by size, and
    the first line always gets the whole per-line bound (``SEARCH_SECONDS`` is the larger),
    so every call either gets further or says why it cannot. Each line's search gets what is
    left, at most ``REGEX_SECONDS``. Raises Timeout when one line alone takes longer than it
    may (the first line searched, or any line with its whole per-line bound): going on from
    there could not get past it.
    """
    if pattern is None:
        return [line for raw in raws if _keep(line := _decode(raw), fmt, None, 0)], None
    selected: list[str] = []
    pos = start
    deadline = time.monotonic() + SEARCH_SECONDS
    for i, raw in enumerate(raws):
        budget = min(REGEX_SECONDS, deadline - time.monotonic())
        if budget <= 0:
            return selected, pos
        line = _decode(raw)
        try:
            if _keep(line, fmt, pattern, budget):
                selected.append(line)
        except TimeoutError:
            if i and budget < REGEX_SECONDS:
                return selected, pos  # the call's time ran out, not the line's
            raise Timeout(f"regex took longer than {budget:.3g} s on one line (at byte {pos}); simplify it",
                          data={"offset": pos}) from None
        pos += len(raw)
    return selected, None


def _keep(line: str, fmt: str, pattern: regex.Pattern[str] | None, timeout: float) -> bool:
    if fmt != "text" and not line.startswith("{") and (fmt != "summary" or not line.strip()):
        return False
    return pattern is None or pattern.search(line[:65536], timeout=timeout) is not None


def _render(line: str, fmt: str) -> str:
    if fmt != "summary":
        return line
    return _clip(summarize(line))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 1] + "…"


def summarize(line: str) -> str:
    """One compact line for one JSON event of Claude Code, Codex or Gemini CLI (``[TEXT]``
    for anything else; empty for an event not worth a line, such as a codex item starting)."""
    try:
        event = _json.decode(line)
    except msgspec.DecodeError:
        return f"[TEXT] {line}"
    if not isinstance(event, dict):
        return f"[TEXT] {line}"
    kind = event.get("type")
    if isinstance(kind, str) and "." in kind:
        return _summarize_codex(kind, event)
    if kind == "system":
        subtype = event.get("subtype", "")
        if subtype == "api_retry":
            status = event.get("error_status")
            detail = " ".join(str(x) for x in (f"HTTP {status}" if status else "", event.get("error") or "") if x)
            delay = event.get("retry_delay_ms")
            after = f", next in {delay / 1000:.1f}s" if isinstance(delay, int | float) else ""
            return f"[RETRY] attempt {event.get('attempt', '?')}/{event.get('max_retries', '?')}: {detail}{after}"
        if subtype != "init":
            return f"[SYSTEM] {subtype}"
        return f"[INIT] model={event.get('model', '?')} session={event.get('session_id', '?')}"
    if kind == "init":  # gemini
        return f"[INIT] model={event.get('model', '?')} session={event.get('session_id', '?')}"
    if kind == "result":
        return _summarize_result(event)
    if kind == "error":
        return f"[ERROR] {event.get('message', '')}"
    if kind == "message":  # gemini
        tag = "[ASST]" if event.get("role") == "assistant" else "[USER]"
        return f"{tag} {event.get('content', '')}"
    if kind == "tool_use":  # gemini
        return f"[TOOL] {event.get('tool_name', '?')}: {_tool_detail(event.get('parameters'))}"
    if kind == "tool_result":  # gemini
        tag = "[ERROR]" if event.get("status") == "error" else "[RESULT]"
        error = event.get("error")
        return f"{tag} {event.get('output', '') or (error.get('message', '') if isinstance(error, dict) else '')}"
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " | ".join(_summarize_block(kind, block) for block in content if isinstance(block, dict)) or f"[{kind}]"
    return f"[{str(kind).upper()}] {line}"


def _summarize_result(event: dict[str, Any]) -> str:
    if "status" in event:  # gemini
        stats = _dict(event.get("stats"))
        tokens = f" tokens={stats.get('total_tokens')}" if stats.get("total_tokens") is not None else ""
        if event.get("status") == "success":
            return f"[DONE] ok{tokens}"
        error = event.get("error")
        text = error.get("message", "") if isinstance(error, dict) else str(error or "")
        return f"[DONE] error{tokens}: {text}"
    status = "error" if event.get("is_error") else "ok"
    cost = event.get("total_cost_usd")
    cost_s = f" cost=${cost:.4f}" if isinstance(cost, int | float) else ""
    return f"[DONE] {status}{cost_s} turns={event.get('num_turns', '?')}: {event.get('result', '')}"


def _summarize_codex(kind: str, event: dict[str, Any]) -> str:
    if kind == "thread.started":
        return f"[INIT] thread={event.get('thread_id', '?')}"
    if kind == "turn.completed":
        usage = _dict(event.get("usage"))
        return f"[DONE] ok tokens in={usage.get('input_tokens', '?')} out={usage.get('output_tokens', '?')}"
    if kind == "turn.failed":
        error = event.get("error")
        return f"[DONE] error: {error.get('message', '') if isinstance(error, dict) else error}"
    item = event.get("item")
    if kind != "item.completed" or not isinstance(item, dict):
        return ""  # turn.started, item.started/updated: the completed item says it all
    itype = item.get("type")
    if itype == "agent_message":
        return f"[ASST] {item.get('text', '')}"
    if itype == "reasoning":
        return "[THINK]"
    if itype == "command_execution":
        return f"[TOOL] shell: {item.get('command', '')} -> exit {item.get('exit_code', '?')}"
    if itype == "mcp_tool_call":
        tag = "[ERROR]" if item.get("status") == "failed" else "[TOOL]"
        return f"{tag} {item.get('server', '?')}.{item.get('tool', '?')}"
    if itype == "file_change":
        changes = item.get("changes")
        paths = [str(c.get("path", "?")) for c in changes if isinstance(c, dict)] if isinstance(changes, list) else []
        return "[EDIT] " + ", ".join(paths)
    if itype == "error":
        return f"[ERROR] {item.get('message', '')}"
    return f"[{str(itype).upper()}]"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tool_detail(args: Any) -> str:
    if isinstance(args, dict):
        return str(next((args[k] for k in ("command", "file_path", "pattern", "url", "prompt") if k in args),
                        msgspec.json.encode(args).decode()))
    return ""


def _summarize_block(kind: Any, block: dict[str, Any]) -> str:
    btype = block.get("type")
    if btype == "text":
        return f"[ASST] {block.get('text', '')}"
    if btype == "tool_use":
        return f"[TOOL] {block.get('name', '?')}: {_tool_detail(block.get('input'))}"
    if btype == "tool_result":
        body = block.get("content")
        if isinstance(body, list):
            body = " ".join(str(b.get("text", "")) for b in body if isinstance(b, dict))
        tag = "[ERROR]" if block.get("is_error") else "[RESULT]"
        return f"{tag} {body}"
    if btype == "thinking":
        return "[THINK]"
    return f"[{str(btype or kind).upper()}]"
