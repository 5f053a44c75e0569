"""``agentctl doctor``: can each provider's agents run, end right and report?

The daemon checks, not the client, because the daemon's environment (filtered, plus each
provider's variables) is what its agents get: a key exported in the operator's shell but
not in the daemon's is missing where it matters. For each provider: its binary on the
agents' PATH and its version; that its ``--help`` lists every flag of its profile (a CLI
that renamed a flag fails at once, in every agent); a credential in the environment or a
login file; and how its agents reach the supervisor's tools (the MCP shim, agentctl).
Every problem comes with its fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import trio

from .config import Config, McpStyle, Provider, default_providers
from .launch import mcp_shim, tools_dir
from .model import Sandbox
from .protocol import DoctorReport, Problem, ProviderCheck
from .providers import agent_environment

TIMEOUT: Final = 30.0  # seconds for one --version or --help (a node CLI's first start is slow)
INSTALL: Final = {
    "claude": "npm install -g @anthropic-ai/claude-code",
    "codex": "npm install -g @openai/codex",
    "gemini": "npm install -g @google/gemini-cli",
}


async def check(config: Config, names: list[str], environ: Mapping[str, str] = os.environ) -> DoctorReport:
    """Check ``names`` (every configured provider but ``command`` when empty), concurrently."""
    chosen = names or [n for n, p in sorted(config.providers.items()) if p.argv]
    for name in chosen:
        config.provider(name)  # raises InvalidParams for an unknown one
    results: dict[str, ProviderCheck] = {}

    async def one(name: str) -> None:
        results[name] = await check_provider(name, config, environ)

    async with trio.open_nursery() as nursery:
        for name in chosen:
            nursery.start_soon(one, name)
    checks = [results[n] for n in chosen]
    # A default provider whose CLI is not installed is only a note: you may not use it.
    defaults = default_providers()
    failing = [c for c in checks
               if not c.ok and (c.installed or names or config.providers[c.name] != defaults.get(c.name))]
    return DoctorReport(ok=not failing, providers=checks)


async def check_provider(name: str, config: Config, environ: Mapping[str, str]) -> ProviderCheck:
    provider = config.provider(name)
    env = agent_environment(environ, config.agent_env, provider.env, {}, tools_dir=tools_dir())
    result = ProviderCheck(name=name, ok=True)
    problems = result.problems = []
    if not provider.argv:
        problems.append(Problem(what="no argv configured", fix=f"set [providers.{name}] argv"))
        result.ok = False
        return result
    binary = shutil.which(provider.argv[0], path=env["PATH"])
    if binary is None:
        result.installed = result.ok = False
        fix = INSTALL.get(Path(provider.argv[0]).name, f"install it, or set [providers.{name}] argv")
        problems.append(Problem(what=f"{provider.argv[0]!r} not found on the agents' PATH", fix=fix))
        return result
    result.binary = binary
    if provider.version_argv:
        code, out = await _run([binary, *provider.version_argv], env)
        result.version = out.strip().splitlines()[0] if out.strip() else ""
        if code != 0:
            problems.append(Problem(what=f"{binary} {' '.join(provider.version_argv)} failed (exit {code}): "
                                         f"{_last_line(out)}", fix="reinstall it"))
    await _check_flags(name, provider, binary, env, result)
    _check_credentials(name, provider, env, result)
    _check_reporting(name, provider, env, result)
    result.ok = not problems
    return result


async def _check_flags(name: str, provider: Provider, binary: str, env: dict[str, str], result: ProviderCheck) -> None:
    argv = [*provider.argv[1:], *_mcp_flags(provider.mcp)]
    subcommands = []
    for arg in provider.argv[1:]:
        if arg.startswith("-"):
            break
        subcommands.append(arg)
    flags = sorted({a.split("=", 1)[0] for a in argv if re.match(r"^--?[A-Za-z]", a)})
    if provider.model_flag:
        flags = sorted({*flags, *provider.model_flag})
    if not flags:
        return
    code, text = await _run([binary, *subcommands, "--help"], env)
    if code != 0 and not text:
        result.problems.append(Problem(what=f"{binary} {' '.join(subcommands)} --help failed (exit {code})",
                                       fix="reinstall it"))
        return
    listed = [f for f in flags if re.search(rf"(^|[\s,\[]){re.escape(f)}([\s,=<\[]|$)", text, re.M)]
    result.flags = listed
    missing = [f for f in flags if f not in listed]
    if missing:
        result.problems.append(Problem(
            what=f"{result.version or binary} does not list {', '.join(missing)} in its --help",
            fix=f"install a version this supervisor was tested with (README), or adjust [providers.{name}] argv"))


def _mcp_flags(style: McpStyle) -> list[str]:
    return {McpStyle.CLAUDE: ["--mcp-config"], McpStyle.CODEX: ["-c"]}.get(style, [])


def _check_credentials(name: str, provider: Provider, env: dict[str, str], result: ProviderCheck) -> None:
    if not provider.credentials:
        return
    home = env.get("HOME") or str(Path.home())
    for place in provider.credentials:
        if place.startswith("~/"):
            if (Path(home) / place[2:]).is_file():
                result.credentials = place
                return
        elif env.get(place):
            result.credentials = f"${place}"
            return
    variables = [p for p in provider.credentials if not p.startswith("~/")]
    files = [p for p in provider.credentials if p.startswith("~/")]
    result.problems.append(Problem(
        what="no credentials in the agents' environment: none of " + ", ".join([*variables, *files]),
        fix=f"export {variables[0] if variables else 'the key'} where the daemon starts (the service's "
            f"environment, then restart it), or set it in [providers.{name}.env]"
            + (f", or log in with the CLI (it writes {files[0]})" if files else "")))


def _check_reporting(name: str, provider: Provider, env: dict[str, str], result: ProviderCheck) -> None:
    agentctl = shutil.which("agentctl", path=env["PATH"])
    ways = []
    if agentctl is None:
        result.problems.append(Problem(what="agentctl is not on the agents' PATH", fix="reinstall supervisord-agents"))
    else:
        ways.append(f"agentctl ({agentctl})")
    if provider.mcp is not McpStyle.NONE:
        shim = mcp_shim()
        if shim is None:
            result.problems.append(Problem(what="the MCP shim (agents-mcp) is not installed",
                                           fix="pip install 'supervisord-agents[mcp]'"))
        else:
            ways.append(f"MCP tools ({shim}, {provider.mcp.value} style)")
    if provider.sandbox is Sandbox.BWRAP and shutil.which("bwrap") is None:
        result.problems.append(Problem(what="its sandbox is bubblewrap, which is not installed",
                                       fix="apt-get install bubblewrap"))
    result.reporting = "; ".join(ways)


async def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Exit code and output (stdout, else stderr) of a short command; never raises."""
    try:
        with trio.fail_after(TIMEOUT):
            done = await trio.run_process(argv, env=env, stdin=subprocess.DEVNULL, capture_stdout=True,
                                          capture_stderr=True, check=False, cwd=env.get("HOME") or "/")
    except trio.TooSlowError:
        return 124, f"no answer within {TIMEOUT:g} s"
    except OSError as e:
        return 127, str(e)
    out = done.stdout.decode(errors="replace") or done.stderr.decode(errors="replace")
    return done.returncode, out


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
