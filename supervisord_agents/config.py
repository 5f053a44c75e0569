"""Configuration: built-in defaults, a TOML file, then environment overrides.

The file is ``$SUPERVISORD_AGENTS_CONFIG`` or ``<config home>/supervisord-agents/config.toml``
(absent is fine). Every key of ``[daemon]`` and ``[paths]`` can also be set by an
environment variable ``SUPERVISORD_AGENTS_<KEY>`` (``SUPERVISORD_AGENTS_KILL_GRACE=2``),
which wins over the file. ``supervisord-agents --print-config`` shows the result.

This module imports no trio, so the CLI can resolve the same socket path cheaply.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import sys
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from . import digest
from .errors import InvalidParams
from .model import Event, EventFormat, Limits, Policy, Resources, Sandbox, TaskId

ENV_PREFIX: Final = "SUPERVISORD_AGENTS_"
APP: Final = "supervisord-agents"


class Paths(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state_dir: str = ""  # empty: the platform default
    runtime_dir: str = ""


class DaemonConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    log_level: Annotated[str, Meta(pattern=r"^(debug|info|warning|error)\Z")] = "info"
    max_line: Annotated[int, Meta(ge=1024, le=64 << 20)] = 1 << 20
    max_connections: Annotated[int, Meta(ge=1, le=100_000)] = 2048
    max_connections_per_agent: Annotated[int, Meta(ge=1, le=100_000)] = 32  # an agent cannot fill the table
    idle_timeout: Annotated[float, Meta(gt=0)] = 600.0
    global_max_concurrent: Annotated[int, Meta(ge=1, le=100_000)] = 100
    reconcile_interval: Annotated[float, Meta(gt=0)] = 2.0
    kill_grace: Annotated[float, Meta(ge=0)] = 5.0
    log_max_bytes: Annotated[int, Meta(ge=0)] = 64 << 20  # per agent log, then rotated; 0: unbounded
    tmux_command_timeout: Annotated[float, Meta(gt=0)] = 5.0
    tmux: str = "tmux"
    python: str = ""  # interpreter that runs the runner; empty: the daemon's own
    #: Where agents' cgroups go: "" finds one (a delegated cgroup, else beside our own),
    #: a path uses that cgroup2 folder, "off" runs without (identity by process ancestry).
    cgroup_root: str = ""
    #: Purge a closed task's history (agents, findings, events, logs) this many days after it
    #: closed, once all its agents have ended and been cleaned up; 0: keep it until `task purge`.
    closed_task_retention_days: Annotated[float, Meta(ge=0)] = 0.0
    #: Hooks (``[[hooks]]``): how many run at once (more wait their turn, a bounded number), and
    #: how many runs of one hook one agent's events may start in a minute (the rest are dropped).
    hooks_max_running: Annotated[int, Meta(ge=1, le=1000)] = 4
    hooks_per_agent_per_minute: Annotated[int, Meta(ge=1, le=100_000)] = 10


class McpStyle(StrEnum):
    """How a provider's CLI is given the supervisor's MCP server, per agent (never through
    the user's own global settings)."""

    NONE = "none"
    CLAUDE = "claude"  # --mcp-config <agent dir>/mcp.json
    CODEX = "codex"  # -c mcp_servers.supervisord-agents.* overrides on its command line
    GEMINI = "gemini"  # a GEMINI_CLI_HOME of the agent's own: its settings and shell policy


class Provider(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to start one kind of agent: argv (never a shell string) and its options.

    The prompt is always on the agent's stdin (an argument would show in ``ps`` to every
    user). ``argv`` holds the flags for a headless run that can report and nothing more:
    a broader permission (``--yolo``, a bypassed sandbox) is the operator's explicit
    choice, here or in a spawn's extra argv."""

    argv: list[str] = []
    model_flag: list[str] = msgspec.field(default_factory=lambda: ["--model"])
    #: Put last, after every flag: what tells the CLI its prompt is on stdin (codex: "-").
    prompt_from_stdin: list[str] = []
    #: What makes a run continue a conversation, ``{session_id}`` where its id goes; put after
    #: the extra argv, before ``prompt_from_stdin``. Empty: a later attempt starts afresh.
    resume: list[str] = []
    policy: Policy = Policy()  # rate limits, restarts, stalls (a task's policy overrides it)
    #: Route the agent's permission questions to the operator (claude: ``--permission-prompt-tool``
    #: naming the shim's ``approve_tool_use``), who answers with ``agentctl approve|deny``.
    approvals: bool = False
    events: EventFormat = EventFormat.NONE  # the JSON events on its stdout, read for how it ended
    mcp: McpStyle = McpStyle.NONE
    env: dict[str, str] = {}  # set for its agents, over the daemon's environment
    timeout: Annotated[float, Meta(gt=0)] | None = None  # default wall-time limit (s) of its agents
    resources: Resources = Resources()  # bounds of each agent's cgroup (a task's limits may override)
    sandbox: Sandbox = Sandbox.NONE  # a task's sandbox setting overrides it
    #: For ``agentctl doctor``: what prints its version, and where its credentials may be
    #: (environment variable names, or ``~/`` paths), any one of which is enough.
    version_argv: list[str] = msgspec.field(default_factory=lambda: ["--version"])
    credentials: list[str] = []


class HookKind(StrEnum):
    COMMAND = "command"  # run ``argv`` with the event as JSON on its stdin
    NOTIFY = "notify"  # a desktop notification: notify-send (Linux) or osascript (macOS), where present


class Hook(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A program the daemon runs when a committed event matches: ``on`` holds selectors
    (see :mod:`.digest`: an event kind such as ``task_closed``, ``agent:<state>`` such as
    ``agent:failed``, or ``*``); ``tasks``, if given, limits it to those tasks' events. It
    runs off the actor's path, at most once per event, killed after ``timeout`` seconds,
    never retried (see :mod:`.hooks`)."""

    on: Annotated[list[str], Meta(min_length=1, max_length=100)]
    name: Annotated[str, Meta(max_length=100)] = ""  # for the daemon's log; default: hooks[<index>]
    kind: HookKind = HookKind.COMMAND
    argv: list[str] = []  # kind "command": the program and its arguments (never a shell string)
    timeout: Annotated[float, Meta(gt=0, le=86400)] = 10.0
    tasks: list[TaskId] = []

    def selects(self, event: Event) -> bool:
        """True if this hook runs for ``event``."""
        return (not self.tasks or event.task_id in self.tasks) and digest.selects(self.on, event)

    def problem(self) -> str | None:
        """What makes this hook unusable, or None."""
        try:
            for selector in self.on:
                digest.check_selector(selector)
        except InvalidParams as e:
            return e.message
        if self.kind is HookKind.COMMAND and not self.argv:
            return "a command hook needs an argv"
        if self.kind is HookKind.NOTIFY and self.argv:
            return "a notify hook takes no argv (it runs notify-send or osascript)"
        return None


#: Environment variables no agent inherits from the daemon: what would make a nested agent
#: CLI think it runs inside another (and change how it behaves), what belongs to the
#: daemon's service manager or tmux, and the daemon's own settings.
DEFAULT_ENV_DENY: Final = (
    "CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_SSE_PORT", "CLAUDE_AGENT_SDK_VERSION",
    "CLAUDE_CODE_CHILD_SESSION", "CLAUDE_CODE_SESSION_ID", "CLAUDE_CODE_LAUNCHED_BY_SESSION_IDS",
    "CLAUDE_CODE_CHILD_NOTES_DIR", "CLAUDE_CODE_SESSION_ATTENDED", "CLAUDE_CODE_MESSAGING_SOCKET",
    "CLAUDE_CODE_MESSAGING_TOKEN", "CLAUDE_CODE_EXECPATH", "CLAUDE_PID", "AI_AGENT",
    "CODEX_SANDBOX", "CODEX_SANDBOX_NETWORK_DISABLED", "CODEX_THREAD_ID", "CODEX_SESSION_ID", "CODEX_CI",
    "CODEX_VERSION", "CODEX_PERMISSION_PROFILE", "CODEX_MANAGED_BY_NPM",
    "GEMINI_CLI", "GEMINI_CLI_NO_RELAUNCH", "GEMINI_CLI_TRUST_WORKSPACE", "GEMINI_CLI_HOME",
    "GEMINI_CLI_SYSTEM_SETTINGS_PATH", "SANDBOX",
    "TMUX", "TMUX_PANE", "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID",
    "WATCHDOG_USEC", "INVOCATION_ID", "JOURNAL_STREAM", "MANAGERPID", "SUPERVISORD_AGENTS_*",
)


class AgentEnv(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which of the daemon's environment variables its agents get (shell-style patterns):
    those matching ``allow`` and not ``deny``. A provider's ``env`` and a spawn's ``env``
    are added after the filter; the agent's identity last."""

    allow: list[str] = msgspec.field(default_factory=lambda: ["*"])
    deny: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ENV_DENY))

    def filter(self, environ: Mapping[str, str]) -> dict[str, str]:
        allow, deny = _patterns(tuple(self.allow)), _patterns(tuple(self.deny))
        return {k: v for k, v in environ.items() if allow.match(k) and not deny.match(k)}


@functools.lru_cache(maxsize=8)
def _patterns(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """Shell-style patterns as one regex, compiled once (a spawn filters every variable)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")


#: The supervisor's MCP tools that report, as each CLI names them.
REPORT_TOOLS: Final = ("report_progress", "report_finding")
MCP_SERVER: Final = "supervisord-agents"


def default_providers() -> dict[str, Provider]:
    hour = 3600.0
    return {
        "claude": Provider(
            argv=["claude", "-p", "--output-format", "stream-json", "--verbose",
                  # Only the MCP servers it is given (not a .mcp.json of the folder it works in),
                  # and the operator's settings but not the folder's (whose hooks would run).
                  "--strict-mcp-config", "--setting-sources", "user",
                  "--allowedTools", ",".join([*(f"mcp__{MCP_SERVER}__{t}" for t in REPORT_TOOLS),
                                              "Bash(agentctl progress:*)", "Bash(agentctl finding:*)"])],
            events=EventFormat.CLAUDE, mcp=McpStyle.CLAUDE, timeout=hour, resume=["--resume", "{session_id}"],
            # Three retries of a failed API call, not ten over three minutes; five minutes for
            # one call, not six; no self-update.
            env={"CLAUDE_CODE_MAX_RETRIES": "3", "API_TIMEOUT_MS": "300000", "DISABLE_AUTOUPDATER": "1"},
            credentials=["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                         "~/.claude/.credentials.json"],
        ),
        "codex": Provider(
            argv=["codex", "exec", "--json",
                  "--skip-git-repo-check",  # run in any folder, a git repository or not
                  "--disable", "plugins",  # no start-up sync with github.com and chatgpt.com
                  "--disable", "unbounded_connection_retries",  # offline: give up in ~25 s, not never
                  "-c", "analytics.enabled=false", "-c", "feedback.enabled=false",
                  "-c", "check_for_update_on_startup=false",
                  # Headless: nothing can approve, so nothing asks; its shell is not a login
                  # shell (/etc/profile would reset PATH, and agentctl with it).
                  "-c", 'approval_policy="never"', "-c", "allow_login_shell=false",
                  # Writes only in its working folder; network on, which agentctl's Unix socket
                  # needs (Linux's sandbox allows all of the network or none).
                  "-s", "workspace-write", "-c", "sandbox_workspace_write.network_access=true"],
            prompt_from_stdin=["-"], events=EventFormat.CODEX, mcp=McpStyle.CODEX, timeout=hour,
            resume=["resume", "{session_id}"],  # ``codex exec [flags] resume ID -``
            credentials=["OPENAI_API_KEY", "CODEX_API_KEY", "~/.codex/auth.json"],
        ),
        "gemini": Provider(
            # --skip-trust: run in any folder, without merging the folder's own .gemini settings.
            argv=["gemini", "--output-format", "stream-json", "--skip-trust"],
            events=EventFormat.GEMINI, mcp=McpStyle.GEMINI, timeout=hour, resume=["--resume", "{session_id}"],
            # One process, which SIGTERM stops (by default it relaunches itself in a child and
            # the parent ignores SIGTERM).
            env={"GEMINI_CLI_NO_RELAUNCH": "true"},
            credentials=["GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_GCA",
                         "GOOGLE_APPLICATION_CREDENTIALS", "~/.gemini/oauth_creds.json",
                         "~/.gemini/gemini-credentials.json", "~/.gemini/.env"],
        ),
        "command": Provider(argv=[], model_flag=[], version_argv=[]),
    }


class Config(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    paths: Paths = Paths()
    daemon: DaemonConfig = DaemonConfig()
    limits: Limits = Limits()  # defaults for new tasks
    providers: dict[str, Provider] = {}
    agent_env: AgentEnv = AgentEnv()
    hooks: list[Hook] = []

    @property
    def state_dir(self) -> Path:
        return Path(self.paths.state_dir) if self.paths.state_dir else default_state_dir()

    @property
    def runtime_dir(self) -> Path:
        return Path(self.paths.runtime_dir) if self.paths.runtime_dir else default_runtime_dir()

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "control.sock"

    @property
    def tmux_socket(self) -> Path:
        return self.runtime_dir / "tmux.sock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.sqlite3"

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers))
            raise InvalidParams(f"unknown provider {name!r} (configured: {known})") from None


class Settings:
    """The configuration in force, in one holder that every part of the daemon reads
    reloadable values through, at the moment it uses them. A reload replaces the whole
    config in one step; paths are fixed for the life of the daemon."""

    def __init__(self, config: Config, path: Path | None = None) -> None:
        self.current = config
        self.path = path

    def reload(self, environ: Mapping[str, str] = os.environ) -> bool:
        """Re-read the file and the environment, and put the result in force. Raises
        InvalidParams (and keeps the config in force) if it cannot be read. Returns False
        if it changed a path, which is then kept as it was."""
        new = load_config(self.path, environ)
        old = self.current
        paths_kept = (new.state_dir, new.runtime_dir) == (old.state_dir, old.runtime_dir)
        self.current = msgspec.structs.replace(new, paths=old.paths)
        return paths_kept


def default_state_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / APP


def _temp_dir() -> Path:
    import tempfile  # here: its imports cost a client milliseconds, for a folder rarely needed

    return Path(tempfile.gettempdir())


def default_runtime_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_RUNTIME_DIR``, else the folder systemd would have named in it (so that a
    client started with a minimal environment, as MCP clients start their servers, finds
    the daemon a login session started), else a folder of ours under the temp folder."""
    if sys.platform == "darwin":
        return _temp_dir() / f"{APP}-{os.getuid()}"
    base = environ.get("XDG_RUNTIME_DIR") or _user_runtime_dir()
    return Path(base) / APP if base else _temp_dir() / f"{APP}-{os.getuid()}"


def _user_runtime_dir() -> str | None:
    path = f"/run/user/{os.getuid()}"
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path if st.st_uid == os.getuid() and not st.st_mode & 0o077 else None


def locator_path() -> Path:
    """Where a daemon that chose its socket from the environment says where it is: found
    from the home folder alone (see ``daemon.leave_locator``)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP / "socket"
    return Path.home() / ".local" / "state" / APP / "socket"


def runtime_dir_candidates(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Where a daemon started with another environment may have put its runtime folder,
    most likely first (for a client that finds no socket where it looked)."""
    found = [default_runtime_dir(environ)]
    for base in (_user_runtime_dir(), None):
        candidate = Path(base) / APP if base else _temp_dir() / f"{APP}-{os.getuid()}"
        if candidate not in found:
            found.append(candidate)
    return found


def default_config_path() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP / "config.toml"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP / "config.toml"


def socket_path_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    """The control socket a client should use when none is given explicitly."""
    explicit = environ.get(ENV_PREFIX + "SOCKET")
    if explicit:
        return Path(explicit)
    runtime = environ.get(ENV_PREFIX + "RUNTIME_DIR")
    return (Path(runtime) if runtime else default_runtime_dir()) / "control.sock"


def load_config(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Defaults, then the TOML file, then environment overrides. Raises InvalidParams."""
    if path is None:
        explicit = environ.get(ENV_PREFIX + "CONFIG")
        path = Path(explicit) if explicit else default_config_path()
        required = bool(explicit)
    else:
        required = True
    raw: dict[str, object] = {}
    if path.exists() or required:
        try:
            raw = msgspec.toml.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError) as e:
            raise InvalidParams(f"cannot read config {path}: {e}") from None
    for section, cls in (("daemon", DaemonConfig), ("paths", Paths)):
        table = dict(raw.get(section) or {})  # type: ignore[call-overload]
        for field in msgspec.structs.fields(cls):
            value = environ.get(ENV_PREFIX + field.name.upper())
            if value is not None:
                table[field.name] = value
        raw[section] = table
    # A provider of the defaults named in the file takes its fields from there over the default
    # profile (``[providers.claude] approvals = true`` keeps claude's argv); a new one, from scratch.
    defaults = default_providers()
    given = raw.get("providers")
    if isinstance(given, dict):
        raw["providers"] = {name: {**msgspec.to_builtins(defaults[name]), **table}
                            if name in defaults and isinstance(table, dict) else table
                            for name, table in given.items()}
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        raise InvalidParams(f"invalid config ({path}): {e}") from None
    for index, hook in enumerate(config.hooks):
        problem = hook.problem()
        if problem is not None:
            raise InvalidParams(f"invalid config ({path}): hooks[{index}]: {problem}")
    providers = defaults
    providers.update(config.providers)
    return msgspec.structs.replace(config, providers=providers)


def dump_config(config: Config) -> str:
    """The effective config as TOML-like text (for ``--print-config``)."""
    lines: list[str] = []
    data = msgspec.to_builtins(config)
    data["paths"] = {
        "state_dir": str(config.state_dir),
        "runtime_dir": str(config.runtime_dir),
        "socket": str(config.socket_path),
        "tmux_socket": str(config.tmux_socket),
    }
    for section in ("paths", "daemon", "limits", "agent_env"):
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in data[section].items())
        lines.append("")
    for name, provider in sorted(data["providers"].items()):
        lines.append(f"[providers.{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in provider.items())
        lines.append("")
    for hook in data["hooks"]:
        lines.append("[[hooks]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in hook.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    return msgspec.json.encode(value).decode() if not isinstance(value, bool) else str(value).lower()
