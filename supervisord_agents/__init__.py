"""supervisord-agents: a supervisor daemon for headless AI coding agents.

A map of the package. Imports point inward: the pure core imports nothing outside the
core, adapters never import the server, clients import only the protocol, the model
and the client library (``tests/test_layers.py`` checks all three).

Pure core (no I/O, no clock; time is an argument):
    errors          the exception hierarchy and the stable wire error codes
    model           ids, names, tasks, agents, findings, events: frozen Structs and StrEnums
    commands        the registry's vocabulary: commands in; events, effects, results out
    registry        the state machine: ``apply(command, now)``, the transition table, admission, counts
    meter           an agent's running turns, tokens and cost, counted from its event stream as it grows
    approvals       permission requests of agents' CLIs, waiting for the operator's answer or a timeout
    handlers        how methods are bound to their handlers (@handles, @streams), and what a handler gets
    reports         what the daemon reports of itself: health, a reconciliation pass, the doctor's checks
    retry           what follows an attempt that ended early: sleep until a rate limit's reset, retry, give up
    admission       which spawns the limits let in, now or once a slot frees (the registry's first part)
    tables          what the registry holds (live work), its indexes, and the tallies of settled history
    drift           compare the registry with one tmux listing; a plan of what to correct
    results         each provider's JSON events read into one report; how a run ended, and why
    digest          what an event says: selectors (a kind, ``agent:<state>``) and one line per event
    protocol        the wire: the method table, params and results, limits
    codec           request lines decoded (envelope, then the method's params), error replies, NDJSON framing
    tmux            the ``TmuxBackend`` seam and the values that cross it
    tmux_protocol   tmux control mode as a sans-IO parser, and tmux command quoting

Adapters (own I/O, run inside the daemon):
    actor           the only writer: mailbox, group commit, acknowledgement after commit, event hub
    store           SQLite (WAL, synchronous=FULL): current rows and the append-only event log, pages of history
    history         reads of what memory no longer holds (settled agents, closed tasks, findings), by page
    watermark       what start-up checks of the database: a high-water mark beside it, its pages
    launch          a spawn's secrets (token, prompt) from the request to the agent's session
    effects         start, stop and clean up agents once the actor's decisions are committed
    reconciler      the loop that keeps the registry truthful about tmux (timer, notifications)
    heartbeat       a file rewritten every few seconds: how long the daemon was down, at its next start
    hooks           programs run on matching committed events: bounded, deduplicated, rate-limited
    waker           the timers of sleeping agents: a Wake for each when its time comes (durable: in the rows)
    tmux_control    the private tmux server, driven through one control-mode client
    api             one handler per method of the protocol's table
    access          who a caller is (by the kernel's account) and what its method's rule allows
    server          the Unix socket: peer checks, framing, limits, the one place errors become replies
    files           where an agent's files live; the runner's records
    output          reading an agent's log: tail, offsets, bounded regex, summaries
    procs           processes by group and parentage (stop and verify, never by name)
    cgroups         each agent in a cgroup of its own: who a peer is, kill all of it, usage
    agent_sockets   a socket of its own for each sandboxed agent (and the runtime folder's rules)
    providers       argv, MCP wiring, environment and prompt for each kind of agent
    doctor          can each provider's agents run, end right and report (``agentctl doctor``)
    config          defaults, TOML file, environment; the settings in force
    logs            structlog set-up
    service         socket activation (systemd, launchd) and sd_notify

Entry points:
    daemon          ``supervisord-agents``: builds the parts, runs them in one nursery
    runner          what runs in each tmux pane around the agent (standard library only)
    tee             the runner's copy of the agent's output: rotated log, last stderr line, JSON events
    clients/        ``agentctl``, ``agents-mcp`` and the blocking client library
                    (installed as ``supervisord_agents.clients``)
"""

__version__ = "0.1.0"
