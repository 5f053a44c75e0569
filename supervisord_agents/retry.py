"""What follows an attempt that ended early: sleep and try again, give up, or nothing.

supervisord's ``autorestart``/``startretries``/back-off, with what agents add: a rate
limit is not a failure but a wait (until the provider's reset when it said, else a
doubling back-off), and the next attempt resumes the same conversation. A killed agent is
never retried: a kill ends the agent whatever its policy (the registry never asks here).

Pure: ``now`` is an argument, and the spread that keeps agents which failed together from
waking together (:func:`~.model.jitter`) is fixed by the agent's id and attempt.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from msgspec import structs

from .model import TRANSIENT, Agent, Attempt, ErrorClass, Exit, OnRateLimit, Restart, jitter

#: No single back-off sleeps longer than this, whatever the policy's doubling reaches.
LONGEST_SLEEP: Final = 24 * 3600.0
#: How much later than its reset a rate-limited agent may wake, spread over the agents
#: (a fraction of the wait, up to this many seconds).
RESET_SPREAD: Final = 30.0


class Retry(NamedTuple):
    """Sleep until ``wake_at``, then start the next attempt; ``why`` in words."""

    wake_at: float
    why: str


class GiveUp(NamedTuple):
    """The agent ends ``failed`` with this reason (the policy allows no more attempts)."""

    reason: str


def after(agent: Agent, exit: Exit, now: float) -> Retry | GiveUp | None:
    """What follows the attempt of ``agent`` that ended ``failed`` with ``exit`` (its error
    class decided): None when nothing does (the agent ends as the exit says)."""
    policy = agent.policy
    spread = 0.25 * jitter(agent.id, agent.attempt)
    if exit.error_class is ErrorClass.RATE_LIMIT:
        if policy.on_rate_limit is not OnRateLimit.SLEEP:
            return None
        waits = sum(1 for a in agent.attempts if a.exit.error_class is ErrorClass.RATE_LIMIT)
        if waits >= (policy.max_rate_limit_waits or 0):
            return GiveUp(f"gave up after {waits + 1} rate limits: {exit.reason}")
        if exit.retry_at is not None:
            delay = max(0.0, exit.retry_at - now)
            why = "rate limited: waits for the provider's reset"
        else:
            delay = (policy.rate_limit_backoff or 0.0) * 2.0 ** waits
            why = "rate limited: no reset time given, backs off"
        delay = min(delay, LONGEST_SLEEP)
        delay += min(RESET_SPREAD, delay * spread)
        return Retry(now + delay, f"{why} {delay:.3g} s, then resumes")
    if exit.error_class in TRANSIENT and policy.restart is Restart.ON_FAILURE:
        failures = 1 + sum(1 for a in agent.attempts if a.exit.error_class is not ErrorClass.RATE_LIMIT)
        if failures >= (policy.max_attempts or 1):
            return GiveUp(f"gave up after {agent.attempt} attempts: {exit.reason}")
        delay = min(policy.backoff_max or 0.0, (policy.backoff or 0.0) * 2.0 ** (failures - 1), LONGEST_SLEEP)
        delay *= 1 + spread
        return Retry(now + delay, f"{exit.error_class}: backs off {delay:.3g} s, then attempt {agent.attempt + 1}")
    return None


def limit_reached(what: str, used: float, value: float) -> str:
    """The reason an agent is stopped (or not retried) at a limit: what, how much of how much."""
    shown = f"${used:.4f} of ${value:.4f}" if isinstance(value, float) else f"{used:g} of {value:g}"
    return f"limit reached: {what}, {shown}"


def summed(attempts: list[Attempt], exit: Exit) -> Exit:
    """The final exit of an agent that made several attempts: what all of them cost and took."""
    runs = [a.exit for a in attempts] + [exit]

    def total(field: str) -> Any:
        values = [v for e in runs if (v := getattr(e, field)) is not None]
        return sum(values) if values else None

    session = exit.session_id or next((e.session_id for e in reversed(runs) if e.session_id), None)
    return structs.replace(exit, cost_usd=total("cost_usd"), input_tokens=total("input_tokens"),
                           output_tokens=total("output_tokens"), turns=total("turns"), session_id=session)
