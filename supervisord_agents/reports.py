"""What the daemon reports of itself: its health, a reconciliation pass, the doctor's checks.

Results of the ``daemon.*`` methods, part of the protocol (:mod:`~supervisord_agents.protocol`
declares the methods and re-exports these).
"""

from __future__ import annotations

from enum import StrEnum

from msgspec import Struct

from .model import Counts


class Problem(Struct, frozen=True, kw_only=True):
    what: str
    fix: str


class ProviderCheck(Struct, kw_only=True, omit_defaults=True):
    """Whether agents of one provider can run, end right and report, as the daemon sees it
    (its environment is the one its agents get)."""

    name: str
    ok: bool
    installed: bool = True  # False: its binary is not there (a default provider you may not use)
    binary: str = ""
    version: str = ""
    flags: list[str] = []  # the profile's flags its --help lists
    credentials: str = ""  # where a credential was found
    reporting: str = ""  # how its agents reach the supervisor's tools
    problems: list[Problem] = []


class DoctorReport(Struct, kw_only=True):
    ok: bool  # False when a provider that is installed (or was asked for) cannot work
    providers: list[ProviderCheck]


class ReconcileReport(Struct, kw_only=True):
    """What one reconciliation pass found and did (or, for a dry run, would do)."""

    dry_run: bool
    tmux_healthy: bool
    sessions: int = 0
    ended: list[str] = []  # live agents whose session had gone
    adopted: list[str] = []
    killed_again: list[str] = []  # sessions of agents already terminal
    orphans: list[str] = []  # sessions with our marker and no agent record
    orphans_killed: list[str] = []
    cleanups_retried: list[str] = []
    timed_out: list[str] = []  # running agents past their wall-clock timeout (killed)
    foreign: list[str] = []  # sessions and panes on our server that were no agent's (ended)
    restored: list[str] = []  # the server's hooks and options that had been changed (put back)
    error: str = ""


class Boundary(StrEnum):
    """How the daemon tells an agent's connections from the operator's."""

    CGROUP = "cgroup"  # each agent in a cgroup of its own: exact, and ends every process of it
    ANCESTRY = "ancestry"  # no writable cgroup: below the agent's runner (its subreaper), weaker
    TOKEN = "token"  # no /proc: the token in the agent's environment, weakest


class ActorStats(Struct, kw_only=True):
    queued: int
    commands: int
    commits: int
    storage_failures: int


class HookStats(Struct, frozen=True, kw_only=True):
    """The hooks' runs since the daemon started (see ``hooks.py``)."""

    ran: int = 0  # started, or tried to start
    failed: int = 0  # of those: could not start, exited non-zero, or killed at their timeout
    dropped: int = 0  # not run: over the per-agent rate, too many waiting, no notification tool
    running: int = 0


class Health(Struct, kw_only=True):
    """``daemon.health``: what the daemon is, and whether its parts work."""

    ok: bool
    pid: int
    version: str
    protocol: int
    uptime: float
    state_dir: str
    socket: str
    tasks: int  # held in memory: open, or with agents not yet settled
    counts: Counts
    last_seq: int
    actor: ActorStats
    subscribers: int
    waiters: int = 0  # waits in progress on agents' changes (agent.wait, a spawn until it runs)
    connections: int
    connections_refused: int  # another uid, or over the connection cap with none idle
    reconcile_passes: int
    tmux_healthy: bool
    tmux_sessions: int | None = None
    last_reconcile_error: str | None = None
    boundary: Boundary = Boundary.TOKEN
    boundary_note: str = ""  # why the boundary is weaker than cgroups, when it is
    cgroup_root: str | None = None
    missing_controllers: list[str] = []  # agents' resource bounds that cannot be applied here
    connections_evicted: int = 0  # idle connections closed to make room at the connection cap
    agents_held: int = 0  # agents in memory: live, not yet cleaned up, or the ancestor of one
    hooks: HookStats = HookStats()
