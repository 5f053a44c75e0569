"""``agentctl service``: write, remove or check the files that run the daemon under the
service manager (systemd user units, a launchd LaunchAgent). A local verb: it needs no
daemon, only what :mod:`.service_files` renders."""

from __future__ import annotations

import argparse
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from supervisord_agents.errors import NotFound

from .client import resolve_socket
from .render import emit_json

if TYPE_CHECKING:
    from . import service_files


class Action(StrEnum):
    INSTALL = "install"
    UNINSTALL = "uninstall"
    STATUS = "status"


class FileState(StrEnum):
    MISSING = "missing"
    INSTALLED = "installed"  # present, with the content agentctl would write
    DIFFERS = "differs"


class ServiceFileReport(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    state: FileState
    content: str


class ServiceReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What ``agentctl service --json`` prints."""

    platform: str
    action: Action
    dry_run: bool
    files: list[ServiceFileReport]
    next: list[str] | None = None  # install: the commands to run afterwards
    run_first: list[str] | None = None  # uninstall: the commands to run before


def cmd_service(args: argparse.Namespace) -> None:
    """Write (install), remove (uninstall) or check (status) the service-manager files.
    Raises NotFound if ``status`` (without ``--json``) finds one missing or out of date."""
    from . import service_files  # here: what it imports (plistlib, ...) only this verb needs

    platform = args.platform or service_files.current_platform()
    plan = service_files.plan(platform, home=Path.home(),
                              executable=args.executable or service_files.daemon_executable(),
                              socket_path=args.socket or str(resolve_socket()))
    action = Action(args.action)
    report = ServiceReport(
        platform=platform, action=action, dry_run=args.dry_run,
        files=[ServiceFileReport(path=str(f.path), state=_state_of(f), content=f.content.decode())
               for f in plan.files],
        next=plan.after_install if action is Action.INSTALL else None,
        run_first=plan.before_uninstall if action is Action.UNINSTALL else None,
    )
    if not args.dry_run:
        for f in plan.files:
            if action is Action.INSTALL:
                f.path.parent.mkdir(parents=True, exist_ok=True)
                f.path.write_bytes(f.content)
            elif action is Action.UNINSTALL:
                f.path.unlink(missing_ok=True)
    if args.json:
        emit_json(report)
    else:
        sys.stdout.write(_text(report))
    stale = [r.path for r in report.files if r.state is not FileState.INSTALLED]
    # With --json the report says it all and the status is 0, as it always was.
    if action is Action.STATUS and stale and not args.json:
        raise NotFound(f"service files missing or out of date: {', '.join(stale)}")


def _state_of(f: service_files.ServiceFile) -> FileState:
    if not f.path.exists():
        return FileState.MISSING
    return FileState.INSTALLED if f.path.read_bytes() == f.content else FileState.DIFFERS


def _text(report: ServiceReport) -> str:
    lines = []
    for r in report.files:
        if report.action is Action.INSTALL:
            lines.append(f"# {r.path}\n{r.content}\n" if report.dry_run else f"wrote {r.path}\n")
        elif report.action is Action.UNINSTALL:
            removed = "would remove" if report.dry_run else "removed"
            lines.append(f"{removed} {r.path}\n" if r.state is not FileState.MISSING else f"not installed: {r.path}\n")
        else:
            lines.append(f"{r.state:<9} {r.path}\n")
    if report.next is not None:
        lines.append("\nNext, run:\n" + "".join(f"  {cmd}\n" for cmd in report.next))
    elif report.run_first is not None:
        lines.append("\nStop the service first (before the files go), with:\n"
                     + "".join(f"  {cmd}\n" for cmd in report.run_first))
    elif any(r.state is not FileState.INSTALLED for r in report.files):
        lines.append("\nRun `agentctl service install` to write them.\n")
    return "".join(lines)
