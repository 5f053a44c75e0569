"""``agentctl doctor`` against a real daemon, with stand-in CLIs whose --version and --help
the test controls (and, where installed, the real ones: see test_agent_clis.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DaemonProcess

FAKE_CLI = """#!/bin/sh
case "$*" in
  *--version*) echo "fakecli 1.2.3" ;;
  *--help*) printf 'Usage: fakecli run [options]\\n  --json  events\\n  -m, --model <m>\\n' ;;
  *) exit 0 ;;
esac
"""


@pytest.fixture
def doctored(tmp_path: Path) -> Iterator[DaemonProcess]:
    cli = tmp_path / "fakecli"
    cli.write_text(FAKE_CLI)
    cli.chmod(0o755)
    d = DaemonProcess()
    d.extra_env = {"HOME": str(tmp_path)}
    (d.base / "config.toml").write_text(
        f'[providers.good]\nargv = ["{cli}", "run", "--json"]\ncredentials = ["FAKE_KEY"]\n'
        f'env = {{ FAKE_KEY = "k" }}\n\n'
        f'[providers.stale]\nargv = ["{cli}", "run", "--json", "--renamed-flag"]\n'
        f'credentials = ["FAKE_KEY", "~/.fake"]\n\n'
        f'[providers.gone]\nargv = ["/nonexistent/cli"]\n')
    try:
        yield d.start()
    finally:
        d.close()


def test_doctor_checks_binary_version_flags_and_credentials(doctored: DaemonProcess) -> None:
    result = doctored.agentctl("--json", "doctor", "good", "stale", "gone")
    assert result.returncode == 1, result.stderr
    report = {p["name"]: p for p in json.loads(result.stdout)["providers"]}
    good, stale, gone = report["good"], report["stale"], report["gone"]
    assert good["ok"] and good["version"] == "fakecli 1.2.3" and good["credentials"] == "$FAKE_KEY"
    assert good["flags"] == ["--json", "--model"] and "agentctl" in good["reporting"]
    assert not stale["ok"]
    whats = [p["what"] for p in stale["problems"]]
    assert any("--renamed-flag" in w for w in whats) and any("no credentials" in w for w in whats)
    assert all(p["fix"] for p in stale["problems"])
    assert not gone["ok"] and not gone["installed"] and "not found" in gone["problems"][0]["what"]


def test_doctor_passes_for_a_working_provider_and_says_so_for_people(doctored: DaemonProcess) -> None:
    result = doctored.agentctl("doctor", "good")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("good       ok\n") and "fakecli 1.2.3" in result.stdout
    broken = doctored.agentctl("doctor", "stale")
    assert broken.returncode == 1 and "problem     " in broken.stdout and "fix         " in broken.stdout
    assert "cannot work: stale" in broken.stderr


def test_doctor_refuses_an_unknown_provider(doctored: DaemonProcess) -> None:
    result = doctored.agentctl("doctor", "nosuch")
    assert result.returncode == 2 and "unknown provider 'nosuch'" in result.stderr


def test_default_providers_not_installed_are_notes_not_failures(doctored: DaemonProcess) -> None:
    """A machine without codex can still pass: only what is installed (or named) must work."""
    result = doctored.agentctl("--json", "doctor")
    report = json.loads(result.stdout)
    names = {p["name"]: p for p in report["providers"]}
    assert set(names) >= {"claude", "codex", "gemini", "good", "stale", "gone"}
    # stale and gone were configured by hand: they fail the run; the defaults' absence does not.
    assert result.returncode == 1
    assert all(not names[n]["ok"] for n in ("stale", "gone"))
