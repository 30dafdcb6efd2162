"""Agents chosen at run time: ``capability: X`` (least-loaded healthy agent, per call)
and ``agent: {one_of, select}`` (a template names one of a declared list).

Load is the calls in flight on an agent relative to its ``max_concurrency``
(an agent without a bound counts its calls in flight against a bound of 1000);
healthy means its circuit breaker is not open and its rate limit has a token
now. Ties go to the agent listed first under ``agents:``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..agents.base import AgentFailure
from ..expr import render

if TYPE_CHECKING:
    from ..spec.model import Phase
    from .context import RunContext

__all__ = ["least_loaded", "selected_agent"]

_UNBOUNDED = 1000


def least_loaded(run: RunContext, phase: Phase, skip: Iterable[str] = ()) -> str:
    """The agent with the phase's capability that should take the next call.

    ``skip`` names agents already tried for this call (their breaker just opened).
    Raises AgentFailure (permanent) when every candidate's circuit breaker is open.
    """
    skipped = set(skip)
    best: tuple[tuple[int, float, int, int], str] | None = None
    refused: list[str] = []
    for index, name in enumerate(phase.candidates):
        if name in skipped:
            continue
        limiter = run.pool.limiters.get(name)
        if limiter is not None and limiter.breaker is not None:
            if limiter.breaker.state == "open":
                refused.append(name)
                continue
        spec = run.workflow.agents.get(name)
        bound = spec.max_concurrency if spec is not None and spec.max_concurrency else _UNBOUNDED
        busy = run.in_flight.get(name, 0)
        limited = limiter is not None and limiter.bucket is not None and not limiter.bucket.ready()
        key = (int(limited), busy / bound, busy, index)
        if best is None or key < best[0]:
            best = (key, name)
    if best is None:
        names = ", ".join(f"'{n}'" for n in (refused or phase.candidates))
        raise AgentFailure(
            f"no agent with capability '{phase.capability}' can take the call: the circuit"
            f" breaker of {names} is open",
            transient=False,
        )
    return best[1]


def selected_agent(phase: Phase, ctx: Mapping[str, Any]) -> str:
    """The agent that ``agent: {one_of, select}`` names in this context.

    Raises AgentFailure (permanent) when the value is not one of the listed names;
    ExpressionError when the template fails.
    """
    choice = phase.choice
    assert choice is not None
    value = render(choice.select, ctx, where=phase.location)
    if isinstance(value, str) and value.strip() in choice.one_of:
        return value.strip()
    listed = ", ".join(f"'{n}'" for n in choice.one_of)
    shown = f"'{value}'" if isinstance(value, str) else repr(value)
    raise AgentFailure(
        f"agent select gave {shown}, which is not one of the agents in one_of ({listed})",
        transient=False,
    )
