"""Resume as a service of the core: what a stopped run needs to go on.

``resume_compensation`` finishes the saga of a run that crashed while
compensating.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .. import events as ev
from ..agents.registry import AgentRegistry
from ..events import EventSink
from ..plan import Plan
from .context import build_context
from .result import PhaseOutcome, RunOptions
from .runner import execute
from .saga import compensate

__all__ = ["resume_compensation"]


async def resume_compensation(
    plan: Plan,
    *,
    run_id: str,
    inputs: Mapping[str, Any],
    registry: AgentRegistry,
    sinks: Sequence[EventSink],
    outputs: Mapping[str, Any],
    order: Sequence[str],
    done: Collection[str],
    error: str,
    status: str = "failed",
    options: RunOptions | None = None,
) -> str:
    """Finish the compensation of a run that crashed in the middle of it.

    ``order`` is the completion order of its completed phases (with their
    ``outputs``), ``done`` the phases whose compensation was recorded as ended.
    Emits the remaining compensations and the final workflow event; returns the
    final status (``failed`` or ``cancelled``: compensation never completes a run).
    """
    run = build_context(
        plan,
        inputs=inputs,
        registry=registry,
        run_id=run_id,
        options=options if options is not None else RunOptions(),
        sinks=sinks,
        prior=None,
        launch=execute,
        create_agents=False,
    )
    for pid, output in outputs.items():
        run.outcomes[pid] = PhaseOutcome(pid, "completed", output)
    started = run.now()
    try:
        failures = await compensate(run, order, done=done, status=status)
    finally:
        await run.pool.aclose()
    if failures:
        error = f"{error}; " + "; ".join(failures)
    ended = run.now()
    await run.bus.emit(
        ev.workflow_ended(
            run_id, ended, status, outputs={}, duration=ended - started, error=error, counts={}
        )
    )
    return status
