"""Downtime is visible: the real daemon, SIGKILLed and started again, records in its event log
how long it was down and which agents its first pass then found ended."""

from __future__ import annotations

import json
import re
import subprocess
import time

from supervisord_agents.clients.client import Client
from supervisord_agents.heartbeat import INTERVAL
from supervisord_agents.model import Event, EventKind
from tests.harness import DaemonProcess, eventually


def events(d: DaemonProcess, kind: EventKind | None = None) -> list[Event]:
    """Every event in the daemon's log (of ``kind``, if given), oldest first."""
    with Client(d.socket) as c:
        last = c.request("daemon.health")["last_seq"]
        found: list[Event] = []
        if last:
            for event in c.events(since=0):
                found.append(event)
                if event.seq >= last:
                    break
    return [e for e in found if kind is None or e.kind == kind]


def test_a_killed_daemon_records_its_downtime_and_the_agents_that_ended_meanwhile() -> None:
    """After a SIGKILL, the next start records one daemon_downtime event: down since its last
    heartbeat, for as long as it was down, not stopped cleanly, listing the agents whose
    exit or vanished session the first pass found, after their own events."""
    d = DaemonProcess().start()
    try:
        assert events(d, EventKind.DAEMON_DOWNTIME) == []  # a first start was never down
        task_id = d.create_task()
        failing = d.spawn_fake(task_id, "failing", "--sleep", "1", "--exit", "3")["id"]
        vanishing = d.spawn_fake(task_id, "vanishing", "--sleep", "60")
        running = d.spawn_fake(task_id, "running", "--sleep", "60")["id"]
        beat = json.loads((d.state_dir / "heartbeat").read_text())
        d.kill()
        killed_at = time.time()
        # While the daemon is down: one agent exits with 3, another's session is ended under it.
        subprocess.run(["tmux", "-S", str(d.tmux_socket), "kill-session", "-t", vanishing["tmux"]["session_id"]],
                       check=True)
        time.sleep(2.5)
        restarted_at = time.time()
        d.start()

        [downtime] = events(d, EventKind.DAEMON_DOWNTIME)
        data = downtime.data
        assert downtime.task_id == "" and downtime.agent_id is None
        assert beat["at"] <= data["down_since"] <= killed_at
        assert killed_at - data["down_since"] <= INTERVAL + 1  # late by at most one beat
        assert restarted_at - data["down_since"] <= data["seconds"] <= time.time() - data["down_since"]
        assert data["stopped"] is False
        assert sorted(data["ended"]) == sorted([failing, vanishing["id"]])
        assert running not in data["ended"] and data["adopted"] == []
        assert d.call("agent.get", agent_id=failing)["state"] == "failed"
        assert d.call("agent.get", agent_id=vanishing["id"])["state"] in ("failed", "lost")  # hung up, or no record
        assert d.call("agent.get", agent_id=running)["state"] == "running"
        ends = [e for e in events(d, EventKind.AGENT_STATE) if e.agent_id in data["ended"] and e.state != "running"]
        assert {e.agent_id for e in ends} == set(data["ended"])
        assert all(e.seq < downtime.seq for e in ends)  # the agents' own ends come first
        # The new daemon beats: the next downtime will be measured from its own beats.
        eventually(lambda: json.loads((d.state_dir / "heartbeat").read_text())["at"] >= restarted_at, 10, "a beat")
    finally:
        d.close()


def test_a_stopped_daemon_says_it_stopped_and_no_downtime_is_invented() -> None:
    """A daemon stopped on request leaves a last beat saying so: the next start records the
    downtime as stopped, from the moment it stopped; a start with no heartbeat records none."""
    d = DaemonProcess().start()
    try:
        assert d.stop() == 0
        stopped_at = time.time()
        beat = json.loads((d.state_dir / "heartbeat").read_text())
        assert beat["stopped"] is True and beat["at"] <= stopped_at
        time.sleep(1)
        d.start()
        [downtime] = events(d, EventKind.DAEMON_DOWNTIME)
        assert downtime.data["stopped"] is True and downtime.data["down_since"] == beat["at"]
        assert downtime.data["seconds"] >= 1 and downtime.data["ended"] == []
        line = d.agentctl("events", "--kind", "daemon_downtime").stdout
        assert re.search(r" daemon_downtime +daemon +the daemon was down \d+(\.\d)? s \(stopped\)\n\Z", line), line
        d.kill()
        (d.state_dir / "heartbeat").unlink()  # as if the state were new: nothing to measure from
        d.start()
        assert len(events(d, EventKind.DAEMON_DOWNTIME)) == 1
    finally:
        d.close()
