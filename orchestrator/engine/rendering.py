"""Rendering a phase's templates without holding the event loop.

A template may be costly (loops, big formatting): ``rendered`` runs the render in
a worker thread under an ``expr.Budget`` whose deadline is the phase's timeout (or
the run's, or ``expr.DEFAULT_RENDER_SECONDS``), so the loop keeps serving
timeouts, other phases and signals meanwhile. When the awaiting task is
cancelled (SIGTERM, Ctrl-C, fail-fast), the budget is cancelled too and the
thread stops at its next step (milliseconds: every operation the sandbox allows
is bounded in size). Cheap templates (``{{ a.b }}``) render in place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from ..expr import DEFAULT_RENDER_SECONDS, Budget, budget_scope, is_costly

__all__ = ["rendered"]

T = TypeVar("T")


async def rendered(
    source: Any,
    fn: Callable[[], T],
    *,
    timeout: float | None = None,
    left: float | None = None,
) -> T:
    """``fn()`` (which renders ``source``) under a budget: in a worker thread when
    ``source`` is costly. ``timeout`` is the phase's (seconds), ``left`` the seconds
    left before the run's timeout; the shorter one (at most
    ``expr.DEFAULT_RENDER_SECONDS``) bounds the render."""
    budget = _budget(timeout, left)
    if not is_costly(source):
        with budget_scope(budget):
            return fn()

    def work() -> T:
        with budget_scope(budget):
            return fn()

    try:
        return await asyncio.to_thread(work)
    except asyncio.CancelledError:
        budget.cancel()
        raise


def _budget(timeout: float | None, left: float | None) -> Budget:
    seconds, why = DEFAULT_RENDER_SECONDS, "the limit for a template"
    if timeout is not None and timeout < seconds:
        seconds, why = timeout, "the phase's timeout"
    if left is not None and left < seconds:
        seconds, why = left, "the run's timeout"
    return Budget(seconds, why)
