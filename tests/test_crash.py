"""Durability: SIGKILL the daemon while clients stream mutations; nothing acknowledged is lost."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

from supervisord_agents.clients.client import Client
from supervisord_agents.errors import SupervisorError
from tests.harness import DaemonProcess

CLIENTS = 4
ROUNDS = 10


def _writer(daemon: DaemonProcess, task_id: str, name: str, acked: list[str], stop: threading.Event) -> None:
    """Send findings one after another; remember each one the daemon acknowledged."""
    i = 0
    try:
        with Client(daemon.socket, timeout=10) as c:
            while not stop.is_set():
                message = f"{name}-{i}"
                c.request("agent.finding", task_id=task_id, type="note", message=message)
                acked.append(message)  # only after the reply: the daemon said it is committed
                i += 1
    except (SupervisorError, OSError):
        return  # the daemon died under us: whatever was not acknowledged may be lost


def test_sigkill_at_random_moments_loses_nothing_acknowledged() -> None:
    """Across 10 SIGKILLs at random moments under 4 streaming writers, every acknowledged
    mutation survives the restart and the database passes an integrity check."""
    rng = random.Random(1234)
    daemon = DaemonProcess().start()
    try:
        task_id = daemon.create_task(description="crash target")
        total = 0
        for _ in range(ROUNDS):
            stop = threading.Event()
            acked: list[list[str]] = [[] for _ in range(CLIENTS)]
            threads = [threading.Thread(target=_writer, args=(daemon, task_id, f"c{n}", acked[n], stop))
                       for n in range(CLIENTS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.05, 0.6))
            daemon.kill()
            stop.set()
            for t in threads:
                t.join(30)
            round_acked = [m for per_client in acked for m in per_client]
            total += len(round_acked)
            with sqlite3.connect(daemon.state_dir / "state.sqlite3") as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            daemon.start()
            stored = {f["message"] for f in daemon.list("findings.list", task_id=task_id, limit=500)}
            missing = [m for m in round_acked if m not in stored]
            assert not missing, f"{len(missing)} acknowledged findings lost, e.g. {missing[:5]}"
            # A fresh task per round, so one round's unacknowledged writes never mask another's.
            task_id = daemon.create_task(description="crash target")
        assert total > 0, "no mutation was ever acknowledged: the test exercised nothing"
        assert daemon.call("daemon.health")["ok"]
    finally:
        daemon.close()
