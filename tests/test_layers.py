"""The layering is a test: imports point inward, checked on the source (AST).

Reading ``sys.modules`` would tell what some earlier test imported, not what a module
depends on, so each module is parsed and its imports collected, including nested,
conditional and dynamic ones. Three rules, and every module must be placed in a layer:

- the pure core imports no package module outside the core, and nothing that does I/O;
- adapters never import the server (or the daemon that builds it);
- clients import from the package only the protocol, the model and the errors, and the
  client library (which may also resolve the socket through ``config``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import supervisord_agents

PACKAGE = Path(supervisord_agents.__file__).parent
CLIENTS = PACKAGE.parent / "clients"
README = PACKAGE.parent / "README.md"

CORE = {"errors", "model", "commands", "registry", "tables", "drift", "protocol", "codec", "tmux", "tmux_protocol",
        "results", "digest", "retry", "meter", "admission", "reports"}
ADAPTERS = {"actor", "store", "launch", "effects", "reconciler", "tmux_control", "api", "server", "files", "output",
            "procs", "cgroups", "agent_sockets", "access", "providers", "doctor", "config", "logs", "service",
            "watermark", "history", "heartbeat", "hooks", "waker", "handlers", "approvals"}
ENTRY = {"daemon", "runner", "tee"}  # the runner's process: runner and its tee
IO = frozenset({"trio", "anyio", "socket", "os", "time", "sqlite3", "structlog", "subprocess", "pathlib", "io",
                "select", "signal", "threading", "asyncio", "shutil", "tempfile", "ctypes", "fcntl", "gzip",
                "libtmux", "mcp", "__import__"})
CLIENT_MAY_IMPORT = {"protocol", "model", "errors", "digest"}  # digest: an event in words, as the daemon says it
CLIENT_LIBRARY_MAY_ALSO_IMPORT = {"config", "codec"}  # where the daemon is; how lines are framed


def imports_of(source: str, module: str, package: str = "supervisord_agents") -> tuple[set[str], set[str]]:
    """(top-level names of external imports, modules of this package imported) of one module's source;
    relative imports count as this package's (see :func:`client_imports` for the clients)."""
    external, absolute, relative = _imports(source, module, package)
    return external, absolute | relative


def client_imports(source: str, module: str) -> tuple[set[str], set[str]]:
    """(external imports, modules of the daemon's package imported) of a client module: its relative
    imports are its own sub-package's."""
    external, absolute, _ = _imports(source, module, "supervisord_agents")
    return external, absolute - {"clients"}


def _imports(source: str, module: str, package: str) -> tuple[set[str], set[str], set[str]]:
    external: set[str] = set()
    internal: set[str] = set()
    relative: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                (internal.add(rest.split(".")[0]) if top == package and rest else external.add(top))
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                relative.update([name.split(".")[0]] if name else [a.name for a in node.names])
            elif name.split(".")[0] == package:
                rest = name.split(".")[1:]
                internal.update([rest[0]] if rest else [a.name for a in node.names])
            else:
                external.add(name.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            external.add("__import__")
    internal.discard("__version__")
    return external, internal, relative


def package_modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def client_modules() -> set[str]:
    return {p.stem for p in CLIENTS.glob("*.py") if p.stem != "__init__"}


def test_every_module_has_a_layer() -> None:
    """A new module must be placed in the core, the adapters or the entry points before it can land."""
    assert package_modules() == CORE | ADAPTERS | ENTRY
    assert not (CORE & ADAPTERS or CORE & ENTRY or ADAPTERS & ENTRY)


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_only_the_core_and_no_io(module: str) -> None:
    """A pure module imports no package module outside the core and nothing that does I/O."""
    external, internal = imports_of((PACKAGE / f"{module}.py").read_text(), module)
    assert internal - CORE == set() and external & IO == set()


@pytest.mark.parametrize("module", sorted(ADAPTERS))
def test_adapters_never_import_the_server(module: str) -> None:
    """Adapters are driven by the server and the daemon; they never reach back for them."""
    _, internal = imports_of((PACKAGE / f"{module}.py").read_text(), module)
    assert internal & {"server", "daemon"} == set()


@pytest.mark.parametrize(("module", "may_import"), [("runner", {"tee"}), ("tee", set())])
def test_the_runner_stands_alone(module: str, may_import: set[str]) -> None:
    """The runner starts in every pane: it imports nothing from the package but its tee (nor
    trio or msgspec)."""
    external, internal = imports_of((PACKAGE / f"{module}.py").read_text(), module)
    assert internal == may_import and external & {"trio", "msgspec", "structlog"} == set()


def test_the_runner_starts_without_site_or_a_json_parser() -> None:
    """A burst starts one runner per pane: what it imports before the agent runs is CPU the
    burst waits for (site alone cost more than the runner; json and typing half as much)."""
    probe = (f"import sys; sys.path.append({str(PACKAGE.parent)!r}); import supervisord_agents.runner; "
             "print(' '.join(m for m in ('site', 'json', 're', 'typing') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []


@pytest.mark.parametrize("module", sorted(client_modules()))
def test_clients_import_only_the_protocol_the_model_and_the_client_library(module: str) -> None:
    """Clients see the daemon through the wire alone: protocol, model, errors and their own library."""
    external, internal = client_imports((CLIENTS / f"{module}.py").read_text(), module)
    allowed = CLIENT_MAY_IMPORT | (CLIENT_LIBRARY_MAY_ALSO_IMPORT if module == "client" else set())
    assert internal - allowed == set()
    assert "clients" not in external  # never the top-level name: the package is supervisord_agents.clients


def test_the_map_and_the_readme_name_every_module() -> None:
    """The package map (supervisord_agents/__init__.py) and the README's module table list every module."""
    doc = supervisord_agents.__doc__ or ""
    readme = README.read_text()
    missing_in_map = {m for m in package_modules() if f"    {m} " not in doc}
    missing_in_readme = {m for m in package_modules() if f"{m}.py" not in readme}
    missing_clients = {m for m in client_modules() if f"{m}.py" not in readme}
    assert (missing_in_map, missing_in_readme, missing_clients) == (set(), set(), set())


@pytest.mark.parametrize(
    ("source", "external", "internal"),
    [
        ("import os", {"os"}, set()),
        ("import os.path as p", {"os"}, set()),
        ("from time import monotonic as now", {"time"}, set()),
        ("def f():\n    import trio\n", {"trio"}, set()),
        ("try:\n    import structlog\nexcept ImportError:\n    pass\n", {"structlog"}, set()),
        ("if TYPE_CHECKING:\n    import socket\n", {"socket"}, set()),
        ("x = __import__('subprocess')", {"__import__"}, set()),
        ("from .model import Agent\nfrom . import tmux, errors\n", set(), {"model", "tmux", "errors"}),
        ("from supervisord_agents.server import Server", set(), {"server"}),
        ("import supervisord_agents.api", set(), {"api"}),
        ("from supervisord_agents import __version__, daemon", set(), {"daemon"}),
    ],
)
def test_the_scanner_sees_every_kind_of_import(source: str, external: set[str], internal: set[str]) -> None:
    """Aliased, dotted, nested, conditional, dynamic, relative and absolute package imports are all seen."""
    assert imports_of(source, "example") == (external, internal)
