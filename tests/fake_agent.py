"""A fake headless agent for tests: prints stream-json, reports progress, sleeps, exits.

    fake_agent.py [--sleep S] [--exit N] [--signal NAME] [--report] [--copy-stdin FILE]
                  [--result ok|error] [--stderr TEXT] [--ignore-term] [--child-sleep S] [--spam N]
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
    args = p.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.dump_env:
        with open(args.dump_env, "w") as f:
            json.dump(dict(os.environ), f)
    data = sys.stdin.buffer.read()
    if args.copy_stdin:
        with open(args.copy_stdin, "wb") as f:
            f.write(data)
    for i in range(args.spam):
        sys.stdout.write(f"spam {i:09d} {'s' * 84}\n")
    emit({"type": "system", "subtype": "init", "model": "fake", "session_id": "fake-session"})
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
    if args.sleep:
        time.sleep(args.sleep)
    if args.result:
        emit({"type": "result", "subtype": "success", "is_error": args.result == "error", "total_cost_usd": 0.0123,
              "num_turns": 3, "session_id": "fake-session", "result": "done"})
    if args.signal:
        os.kill(os.getpid(), getattr(signal, f"SIG{args.signal}"))
        time.sleep(5)
    sys.exit(args.exit)


if __name__ == "__main__":
    main()
