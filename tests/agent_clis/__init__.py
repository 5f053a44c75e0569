"""The agent CLIs the end-to-end tests and the benchmark run: where the pinned versions
(``package.json`` here) are installed, and the local mock of each one's model API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tests.harness import ROOT

CACHE = ROOT / ".cache" / "agent-clis"


def cli_dir(binary: str) -> Path | None:
    """The folder holding ``binary`` from the pinned install (one prefix, or one per CLI)."""
    for folder in (CACHE / "node_modules" / ".bin", *sorted(CACHE.glob("*/node_modules/.bin"))):
        if (folder / binary).exists():
            return folder
    return None


class Mock(Protocol):
    scenario: str
    requests: list[dict[str, Any]]
    first_request_at: float | None
    #: Given a model request's body and its step in the script, the scenario that answers it (None: ``scenario``).
    override: Callable[[dict[str, Any], int], str | None] | None

    def env(self) -> dict[str, str]: ...
    def __enter__(self) -> Mock: ...
    def __exit__(self, *exc: object) -> None: ...


def mock_for(provider: str, scenario: str) -> Mock:
    if provider == "gemini":
        from tests.mock_gemini import MockModel as Gemini
        return Gemini(scenario)
    if provider == "claude":
        from tests.mock_anthropic import MockModel as Claude
        return Claude(scenario)
    from tests.mock_openai import MockModel as Codex
    return Codex(scenario)


#: provider -> the binary its default profile runs, and how to name the mock's model to it.
PROVIDERS = {"gemini": ("gemini", "gemini-2.5-flash"), "claude": ("claude", None), "codex": ("codex", None)}


