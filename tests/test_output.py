"""An agent's log: the runner's rotation, and reading it back by offsets that count every
byte the agent wrote, live (across rotated files) and from the compressed archive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from supervisord_agents import output
from supervisord_agents.errors import Timeout
from supervisord_agents.files import AgentFiles, read_status
from supervisord_agents.output import read_output, summarize
from supervisord_agents.protocol import OutputParams
from supervisord_agents.tee import LogFile

TASK = "TASK-20260101-000000-0000beef"
AGENT = "talker-000000-00000a"


def line(i: int) -> bytes:
    return f"line {i:04d} ".encode() + b"x" * 89 + b"\n"  # 100 bytes


def written(n: int) -> bytes:
    return b"".join(line(i) for i in range(n))


@pytest.fixture
def files(tmp_path: Path) -> AgentFiles:
    files = AgentFiles(tmp_path, TASK, AGENT)
    files.dir.mkdir(parents=True)
    return files


def read(files: AgentFiles, **params: object) -> dict[str, object]:
    decoded = msgspec.convert({"agent_id": AGENT, **params}, OutputParams)
    return msgspec.to_builtins(read_output(files, decoded))


def without_size(result: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in result.items() if k != "size"}  # an archive's is as far as was read


def write_lines(files: AgentFiles, n: int, max_bytes: int) -> None:
    log = LogFile(str(files.log), max_bytes)
    for i in range(n):
        log.write(line(i))
    log.close()


def test_rotation_bounds_the_disk_and_keeps_offsets(files: AgentFiles) -> None:
    write_lines(files, 100, max_bytes=1000)  # 10,000 bytes written, 10 lines per file
    segments = files.log_segments()
    assert [start for start, _ in segments] == [8000, 9000]  # one rotated file kept, older ones removed
    assert [p.name for _, p in segments] == ["output.log.8000", "output.log"]
    assert sum(p.stat().st_size for _, p in segments) == 2000
    everything = read(files)
    assert everything["output"] == written(100)[8000:].decode()
    assert everything["offset"] == everything["size"] == 10_000
    # An offset names the same bytes whichever file holds them now.
    assert read(files, offset=8500, max_bytes=256)["output"].startswith(line(85).decode())
    assert read(files, offset=9300, max_bytes=256)["output"].startswith(line(93).decode())
    dropped = read(files, offset=0)
    assert dropped["output"] == written(100)[8000:].decode() and "0-8000 were dropped" in str(dropped["note"])
    tail = read(files, tail=3)
    assert tail["output"] == written(100)[9700:].decode() and tail["offset"] == 10_000


def test_a_follower_reads_every_byte_across_a_rotation(files: AgentFiles) -> None:
    log = LogFile(str(files.log), 1000)
    seen, offset = b"", 0
    for i in range(25):
        log.write(line(i))
        if i % 4 == 3:  # the follower polls every fourth line, across rotations
            chunk = read(files, offset=offset)
            seen += str(chunk["output"]).encode()
            offset = int(str(chunk["offset"]))
    log.close()
    seen += str(read(files, offset=offset)["output"]).encode()
    assert seen == written(25)


def test_the_archive_keeps_the_offsets_of_the_live_log(files: AgentFiles) -> None:
    write_lines(files, 100, max_bytes=1000)
    live = [read(files, offset=8500, max_bytes=256), read(files, tail=5), read(files, regex="line 009[0-2]")]
    assert files.archive_log() == str(files.archive)
    assert files.log_segments() == [] and files.archive_start() == 8000
    archived = [read(files, offset=8500, max_bytes=256), read(files, tail=5), read(files, regex="line 009[0-2]")]
    assert [without_size(r) for r in archived] == [without_size(r) for r in live]
    assert files.archive_log() == str(files.archive) and files.archive_start() == 8000  # idempotent


def test_an_interrupted_archive_is_finished_without_losing_the_start(files: AgentFiles) -> None:
    write_lines(files, 30, max_bytes=1000)
    files.archive_log()
    # As if cleanup died after the archive was written, before every file was removed:
    files.archive.unlink()
    write_lines(files, 30, max_bytes=1000)
    files.archive_log()
    files.log.write_bytes(b"")  # a leftover: the archive is complete already
    assert files.archive_log() == str(files.archive) and files.log_segments() == []
    assert read(files, offset=1000)["output"] == written(30)[1000:].decode()


def test_no_rotation_when_unbounded(files: AgentFiles) -> None:
    write_lines(files, 100, max_bytes=0)
    assert [p.name for _, p in files.log_segments()] == ["output.log"]
    assert read(files)["output"] == written(100).decode()


def test_the_runner_rotates_a_runaway_agent(files: AgentFiles) -> None:
    spam = "import sys\nfor i in range(20000): sys.stdout.write(f'{i:07d} ' + 'y' * 91 + '\\n')\n"
    done = subprocess.run(
        [sys.executable, "-m", "supervisord_agents.runner", "--status", str(files.status), "--log", str(files.log),
         "--log-max", "65536", "--", sys.executable, "-c", spam],
        stdout=subprocess.DEVNULL, timeout=60,
    )
    assert done.returncode == 0 and (status := read_status(files)) is not None and status.code == 0
    segments = files.log_segments()
    assert sum(p.stat().st_size for _, p in segments) <= 2 * 65536 + 65536  # one read chunk of slack
    last = read(files, tail=1)
    assert last["output"] == f"{19999:07d} {'y' * 91}\n" and last["offset"] == 2_000_000


def test_a_read_holds_a_bounded_window_of_a_big_log(files: AgentFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an offset a request reads the last MAX_SCAN bytes of the log (memory per read is
    bounded, whatever the log's size), says so, and a line without an end is cut, not held whole."""
    monkeypatch.setattr(output, "MAX_SCAN", 1000)  # ten lines
    long_line = b"a long line " + b"y" * 5000 + b"\n"  # read in pieces of 1000
    files.log.write_bytes(long_line + written(50))
    result = read(files, regex="^line")
    assert result["output"] == "".join(line(i).decode() for i in range(40, 50))
    assert "searched the last" in str(result["note"]) and "offset" in str(result["note"])
    assert read(files, regex="^line", offset=0)["note"] == ""  # reading by offset: no window
    assert read(files, offset=len(long_line), max_bytes=300)["output"] == "".join(line(i).decode() for i in range(3))


SLOW = r"^ok|(a|aa)+$"  # backtracks on a run of a's that ends in b: ~2^(n/1.4) steps for n a's


def test_a_slow_regex_over_many_lines_stops_in_time_and_says_where(files: AgentFiles,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One call's regex search is bounded in all, not only per line: over many slow lines it
    returns what it found before its time ran out, the offset it stopped at and a note saying
    so; going on from each offset gets further, until a line alone exhausts the bound, which
    is a timeout error naming that line's offset."""
    monkeypatch.setattr(output, "SEARCH_SECONDS", 0.1)  # the per-line bound stays 1 s
    lines = [f"ok {i:04d}\n" if i % 10 == 0 else "a" * 16 + "b\n" for i in range(300)]  # ~1 ms each but ok
    lines += ["a" * 60 + "b\n", "ok after\n"]  # the first never ends: the search cannot get past it
    files.log.write_text("".join(lines))
    starts = [sum(len(x) for x in lines[:i]) for i in range(len(lines))]
    endless = starts[-2]
    found, notes, offsets = "", [], []
    result = read(files, regex=SLOW)  # no offset: as `agentctl logs --regex` asks
    with pytest.raises(Timeout, match=f"on one line \\(at byte {endless}\\)"):
        for _ in range(len(lines)):
            found += str(result["output"])
            notes.append(str(result["note"]))
            offsets.append(int(str(result["offset"])))
            result = read(files, regex=SLOW, offset=offsets[-1])
    assert all(f"stopped after 0.1 s at byte {o}, before the end; continue with offset {o}" in note
               for note, o in zip(notes, offsets, strict=True))
    assert offsets == sorted(set(offsets)) and set(offsets) <= set(starts) and offsets[-1] == endless
    assert found == "".join(x for x in lines[:-2] if x.startswith("ok"))


def test_an_offset_past_the_end_of_an_archive_reports_the_real_size(files: AgentFiles) -> None:
    write_lines(files, 100, max_bytes=1000)
    files.archive_log()
    past = read(files, offset=50_000)
    assert past["output"] == "" and past["size"] == 10_000 and past["offset"] == 10_000
    at_end = read(files, offset=10_000)
    assert at_end["output"] == "" and at_end["size"] == 10_000


@pytest.mark.parametrize(("event", "summary"), [
    ({"type": "system", "subtype": "api_retry", "attempt": 2, "max_retries": 3, "retry_delay_ms": 1200,
      "error_status": 429, "error": "rate_limit"}, "[RETRY] attempt 2/3: HTTP 429 rate_limit, next in 1.2s"),
    ({"type": "system", "subtype": "init", "model": "m", "session_id": "s"}, "[INIT] model=m session=s"),
    ({"type": "init", "model": "g", "session_id": "s"}, "[INIT] model=g session=s"),
    ({"type": "tool_use", "tool_name": "run_shell_command", "parameters": {"command": "ls"}},
     "[TOOL] run_shell_command: ls"),
    ({"type": "result", "status": "error", "error": {"message": "quota"}, "stats": {"total_tokens": 5}},
     "[DONE] error tokens=5: quota"),
    ({"type": "item.completed", "item": {"type": "command_execution", "command": "ls", "exit_code": 0}},
     "[TOOL] shell: ls -> exit 0"),
    ({"type": "turn.failed", "error": {"message": "429"}}, "[DONE] error: 429"),
    ({"type": "item.started", "item": {"type": "command_execution"}}, ""),
])
def test_summaries_of_each_clis_events(event: dict[str, object], summary: str) -> None:
    assert summarize(json.dumps(event)) == summary
