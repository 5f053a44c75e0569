"""The pure core imports no I/O: checked on the source (AST), not on what happens to be loaded.

Reading ``sys.modules`` would tell us what some earlier test imported, not what these
modules depend on. So this parses each pure module, follows its relative imports inside
the package (a pure module importing an impure sibling is impure too), and collects
every absolute import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import supervisord_agents

PACKAGE = Path(supervisord_agents.__file__).parent
PURE = ("errors", "model", "commands", "registry", "reconcile", "protocol", "tmux")
FORBIDDEN = frozenset({"trio", "socket", "os", "time", "sqlite3", "structlog", "subprocess"})


def imports_of(source: str, module: str) -> tuple[set[str], set[str]]:
    """The top-level names of absolute imports, and the sibling modules of relative imports, of one module."""
    absolute: set[str] = set()
    siblings: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                absolute.add((node.module or "").split(".")[0])
            elif node.module:
                siblings.add(node.module.split(".")[0])
            else:  # from . import x, y
                siblings.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            absolute.add("__import__")
    return absolute, siblings


def closure(module: str) -> dict[str, set[str]]:
    """Absolute imports of ``module`` and of every package module it reaches through relative imports."""
    seen: dict[str, set[str]] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        absolute, siblings = imports_of((PACKAGE / f"{name}.py").read_text(), name)
        seen[name] = absolute
        todo.extend(siblings - seen.keys())
    return seen


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    """A pure module, and every package module it imports, imports nothing from trio, socket, os, time, sqlite3,
    structlog or subprocess."""
    offending = {name: sorted(found & (FORBIDDEN | {"__import__"})) for name, found in closure(module).items()}
    assert {name: bad for name, bad in offending.items() if bad} == {}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os", {"os"}),
        ("import os.path as p", {"os"}),
        ("from os import path", {"os"}),
        ("from time import monotonic as now", {"time"}),
        ("def f():\n    import trio\n", {"trio"}),
        ("try:\n    import structlog\nexcept ImportError:\n    pass\n", {"structlog"}),
        ("if TYPE_CHECKING:\n    import socket\n", {"socket"}),
        ("x = __import__('subprocess')", {"__import__"}),
    ],
)
def test_scanner_sees_every_kind_of_import(source: str, expected: set[str]) -> None:
    """The scanner catches aliased, dotted, nested, conditional and dynamic imports, so a clean result means a lot."""
    absolute, _ = imports_of(source, "example")
    assert absolute == expected


def test_scanner_follows_relative_imports() -> None:
    """Relative imports name the sibling modules to check next; reconcile reaches tmux that way."""
    _, siblings = imports_of("from .model import Agent\nfrom . import tmux, errors\n", "example")
    assert siblings == {"model", "tmux", "errors"}
    assert {"reconcile", "tmux", "model"} <= closure("reconcile").keys()
