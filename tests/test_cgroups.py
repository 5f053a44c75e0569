"""The cgroup adapter's own parts: finding the hierarchy, bounds and usage files (on a
folder standing in for a cgroup), and the real setup where this machine allows it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from supervisord_agents.cgroups import Cgroups, find_mount, own_cgroup, setup
from supervisord_agents.model import Resources

HYBRID = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 24 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
42 31 0:39 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
"""


def test_the_cgroup2_mount_is_found_in_a_hybrid_layout() -> None:
    """On a hybrid layout cgroup2 is not /sys/fs/cgroup: it is read from mountinfo, escapes and all."""
    assert find_mount(HYBRID) == (Path("/sys/fs/cgroup/unified"), "/")
    spaced = "41 31 0:38 /sub /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
    assert find_mount(spaced) == (Path("/mnt/my cgroups"), "/sub")
    assert find_mount(HYBRID.replace("cgroup2 cgroup2", "cgroup cgroup")) is None


def test_our_cgroup_is_the_unified_line() -> None:
    """A process's cgroup2 path is its ``0::`` line; v1 lines are ignored."""
    assert own_cgroup("4:memory:/process_api/x\n0::/user.slice/svc.service\n") == "/user.slice/svc.service"
    assert own_cgroup("4:memory:/x\n") is None


def fake_tree(tmp_path: Path, controllers: frozenset[str]) -> Cgroups:
    (tmp_path / "base" / "agents").mkdir(parents=True)
    return Cgroups(tmp_path, tmp_path / "base", controllers)


def test_bounds_are_written_where_the_controller_is_ours(tmp_path: Path) -> None:
    """memory.max (bytes), pids.max and cpu.max (quota per 100 ms period) are written when the controller
    is enabled for the subtree, and left alone when it is not."""
    tree = fake_tree(tmp_path, frozenset({"memory", "pids", "cpu"}))
    folder = tree.agent_dir("w-000000-000001")
    folder.mkdir()
    for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.max"):
        (folder / name).write_text("max")
    tree.create("w-000000-000001", Resources(memory_max_mb=512, pids_max=64, cpu_max=1.5))
    assert [(folder / n).read_text() for n in ("memory.max", "memory.swap.max", "pids.max", "cpu.max")] == [
        str(512 << 20), "0", "64", "150000 100000"]
    bare = fake_tree(tmp_path / "bare", frozenset())
    bare.create("w-000000-000002", Resources(memory_max_mb=512))
    assert sorted(p.name for p in bare.agent_dir("w-000000-000002").iterdir()) == []
    assert bare.missing_controllers == ["memory", "pids", "cpu"]


def test_usage_and_emptiness_come_from_the_cgroup_files(tmp_path: Path) -> None:
    """CPU seconds from cpu.stat, peak memory from memory.peak, populated from cgroup.events."""
    tree = fake_tree(tmp_path, frozenset())
    folder = tree.agent_dir("w-000000-000001")
    folder.mkdir()
    (folder / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (folder / "memory.peak").write_text(str(300 << 20))
    (folder / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    usage = tree.usage("w-000000-000001")
    assert (usage.cpu_seconds, usage.memory_peak_kb) == (2.5, 300 << 10)
    assert tree.populated("w-000000-000001") and not tree.populated("w-000000-000009")


def test_setup_gives_a_working_subtree_or_says_why(tmp_path: Path) -> None:
    """On this machine: either a subtree in which a process is placed, found by its pid, killed at once,
    and removed, or None with the reason (which the daemon shows in health)."""
    tree, reason = setup("", f"test-{os.getpid()}")
    if tree is None:
        assert reason
        pytest.skip(reason)
    agent = "t-000000-000001"
    child = subprocess.Popen(["sleep", "60"])
    try:
        tree.create(agent, Resources())
        (tree.agent_dir(agent) / "cgroup.procs").write_text(str(child.pid))
        assert tree.agent_of(child.pid) == agent and tree.agent_of(os.getpid()) is None
        assert tree.populated(agent) and tree.pids(agent) == [child.pid]
        tree.kill(agent)
        assert child.wait(10) == -9
        for _ in range(500):
            if not tree.populated(agent):
                break
        tree.remove(agent)
        assert not tree.agent_dir(agent).exists()
    finally:
        child.kill()
        child.wait()
        for leaf in (tree.agent_dir(agent), tree.agents, tree.base):
            try:
                leaf.rmdir()
            except OSError:
                pass
    assert setup("off", "x") == (None, 'cgroups are turned off in the config (cgroup_root = "off")')
