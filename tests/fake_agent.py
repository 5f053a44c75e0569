"""A fake headless agent for tests: prints stream-json, reports progress, sleeps, exits.

    fake_agent.py [--sleep S] [--exit N] [--signal NAME] [--report] [--copy-stdin FILE]
                  [--result ok|error] [--stderr TEXT] [--ignore-term] [--child-sleep S] [--spam N]
                  [--session ID] [--rate-limit S] [--resume ID] [--record FILE] [--fail-first N]

As a provider's CLI: ``--rate-limit S`` ends the run with claude's 429 result ("try again in S s")
unless it was started with ``--resume ID`` (a resumed conversation is served); ``--fail-first N``
exits 3 on each of its first N runs (counted in the ``--record`` file); ``--record`` appends one
JSON line per run: its argv and the prompt it read.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--exit", type=int, default=0)
    p.add_argument("--signal")
    p.add_argument("--report", action="store_true", help="report progress and a finding through agentctl")
    p.add_argument("--copy-stdin")
    p.add_argument("--result", choices=["ok", "error"])
    p.add_argument("--stderr")
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--child-sleep", type=float, help="leave a setsid'd grandchild sleeping this long")
    p.add_argument("--dump-env", help="write the environment as JSON to this file")
    p.add_argument("--spam", type=int, default=0, help="write this many numbered 100-byte lines first")
    p.add_argument("--session", default="fake-session", help="the conversation id it reports")
    p.add_argument("--rate-limit", type=float, help="fail as rate-limited for this many seconds (unless resumed)")
    p.add_argument("--resume", help="continue this conversation (as claude --resume)")
    p.add_argument("--record", help="append a JSON line per run: argv and prompt")
    p.add_argument("--fail-first", type=int, default=0, help="exit 3 on the first N runs (counted in --record)")
    p.add_argument("--turns", type=int, default=0, help="take this many turns (claude assistant messages), 0.3 s apart")
    args = p.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.dump_env:
        with open(args.dump_env, "w") as f:
            json.dump(dict(os.environ), f)
    data = sys.stdin.buffer.read()
    if args.record:
        with open(args.record, "a") as f:
            f.write(json.dumps({"argv": sys.argv[1:], "prompt": data.decode(errors="replace")}) + "\n")
        with open(args.record) as f:
            runs = sum(1 for _ in f)
        if runs <= args.fail_first:
            sys.stdout.write(f"run {runs}: failing on purpose\n")
            sys.exit(3)
    session = args.resume or args.session
    if args.rate_limit is not None and args.resume is None:
        emit({"type": "system", "subtype": "init", "model": "fake", "session_id": session})
        emit({"type": "result", "subtype": "success", "is_error": True, "session_id": session, "total_cost_usd": 0.001,
              "result": f'API Error: 429 {{"type":"rate_limit_error"}} try again in {args.rate_limit:g}s'})
        sys.exit(1)
    if args.copy_stdin:
        with open(args.copy_stdin, "wb") as f:
            f.write(data)
    for i in range(args.spam):
        sys.stdout.write(f"spam {i:09d} {'s' * 84}\n")
    emit({"type": "system", "subtype": "init", "model": "fake", "session_id": session})
    emit({"type": "assistant", "message": {"content": [
        {"type": "text", "text": f"read {len(data)} bytes of prompt"},
        {"type": "tool_use", "name": "Bash", "input": {"command": "ls -la"}},
    ]}})
    emit({"type": "user", "message": {"content": [{"type": "tool_result", "content": "total 0", "is_error": False}]}})
    if args.stderr:
        sys.stderr.write(args.stderr + "\n")
        sys.stderr.flush()
    if args.child_sleep:
        # A double fork into a session of its own: the grandchild outlives us, and no
        # process group or parent link of ours leads to it.
        launcher = (f"import subprocess; p = subprocess.Popen(['sleep', '{args.child_sleep}'], "
                    "start_new_session=True, stdout=subprocess.DEVNULL); print(p.pid)")
        child = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
        out, _ = child.communicate()
        sys.stdout.write(f"grandchild {out.strip()}\n")
        sys.stdout.flush()
    if args.report:
        argv = ["agentctl", "progress", "halfway there", "--percent", "50", "--activity", "working"]
        subprocess.run(argv, check=True)
        subprocess.run(["agentctl", "finding", "found a thing", "--type", "issue", "--severity", "high"], check=True)
    for turn in range(args.turns):
        content = [{"type": "text", "text": f"turn {turn}"}]
        emit({"type": "assistant", "message": {"id": f"msg_{turn}", "content": content,
                                               "usage": {"input_tokens": 100, "output_tokens": 10}}})
        time.sleep(0.3)
    if args.sleep:
        time.sleep(args.sleep)
    if args.result:
        emit({"type": "result", "subtype": "success", "is_error": args.result == "error", "total_cost_usd": 0.0123,
              "num_turns": 3, "session_id": session, "result": f"done{' (resumed)' if args.resume else ''}"})
    if args.signal:
        os.kill(os.getpid(), getattr(signal, f"SIG{args.signal}"))
        time.sleep(5)
    sys.exit(args.exit)


if __name__ == "__main__":
    main()
