"""Saga compensation: when a run fails or is cancelled, undo completed phases in reverse order.

Each completed phase with a ``compensate: {agent, with}`` gets its compensating
call, last completed first. Before a call starts, a ``phase_stream`` event with
``data.compensation == "started"`` is recorded (write-ahead, so a resumed run
knows it was compensating); after it, ``phase_compensated`` with ``ok`` and
``error``. A failed compensation is recorded and reported; it never hides the
failure that caused the saga, and the remaining compensations still run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..events import Event, compensation_started, phase_compensated
from ..spec.model import AgentCall, Phase
from .call import bounded, call_agent, make_spec, render_input
from .context import RunContext
from .phase import describe

__all__ = [
    "INTERRUPTED",
    "NOT_RUN",
    "compensate",
    "compensate_one",
    "status_after",
    "stopped_while_marking",
    "uncancel",
]


async def compensate_one(
    run: RunContext, phase: Phase, call: AgentCall, extra: Mapping[str, Any] | None = None
) -> None:
    """Run one ``{agent, with}`` compensation call for ``phase`` through the call path
    (limits, breaker, executor, sub-runs), bounded by the phase's timeout.

    The input is rendered against the run's context (``phases.X.output`` ...)
    plus ``extra``. Raises whatever the agent raises, ExpressionError for a bad
    template, and PhaseTimeout.
    """
    context = {**run.context, **(extra or {})}
    where = call.location or phase.location
    inp = await render_input(run, call.agent, call.with_, context, where, timeout=phase.timeout)
    deadline = None if phase.timeout is None else run.monotonic() + phase.timeout
    spec = make_spec(run, phase.id, call.agent, inp, deadline=deadline)
    await bounded(run, call_agent(run, spec), phase.timeout, phase.id, call.agent)


async def compensate(
    run: RunContext,
    completion_order: Sequence[str],
    *,
    done: Collection[str] = (),
    status: str = "failed",
) -> list[str]:
    """Compensate the completed phases of ``completion_order``, last completed first.

    Phases in ``done`` (already compensated before a crash) are left alone.
    ``status`` (failed or cancelled: why the run compensates) is written in each
    write-ahead marker as ``cause``, so a resume after a crash (or a forced
    exit) during compensation ends the run with the same status.
    Returns one message per failed compensation (empty when all succeeded).
    Precondition: ``run`` holds the outcomes of the phases.
    """
    failures: list[str] = []
    phases = run.plan.phases
    for pid in reversed(list(completion_order)):
        phase = phases.get(pid)
        if phase is None or phase.compensate is None or pid in done:
            continue
        outcome = run.outcomes.get(pid)
        if outcome is not None and outcome.status != "completed":
            continue
        marker = compensation_started(run.run_id, run.now(), pid, cause=status)
        if run.stopping_now or await stopped_while_marking(run, marker):
            # a second cancel cut the saga: this one is left for a resume (a marker with no
            # end is a compensation that did not end: `orch resume` runs it)
            failures.append(f"compensation of '{pid}' {NOT_RUN}")
            continue
        error: str | None = None
        try:
            await compensate_one(
                run, phase, phase.compensate, {"output": getattr(outcome, "output", None)}
            )
        except asyncio.CancelledError:  # a second cancel: stop now, record where it stopped
            run.stopped = True
            uncancel()
            error = INTERRUPTED
            failures.append(f"compensation of '{pid}' {error}")
        except Exception as exc:  # noqa: BLE001 - a failing compensation is recorded, not raised
            error = describe(exc)
            failures.append(f"compensation of '{pid}' failed: {error}")
        await run.bus.emit_through(phase_compensated(run.run_id, run.now(), pid, error=error))
    return failures


#: The error recorded for a compensation a second cancel interrupted; NOT_RUN: why a
#: ``finally`` handler it kept from starting was skipped, and (in the run's error) why a
#: compensation it kept from starting is pending: nothing is recorded for that one, so
#: ``orch resume`` runs it (the run is recorded cancelled meanwhile).
INTERRUPTED = "cancelled: the run was stopped (a second cancel) while it ran"
NOT_RUN = "not run: the run was stopped (a second cancel) before it started"


def status_after(run: RunContext, status: str) -> str:
    """The run's status once its saga ran: a failed run whose saga a second cancel cut
    (its compensations not run are pending) ends cancelled."""
    return "cancelled" if status == "failed" and run.stopping_now else status


async def stopped_while_marking(run: RunContext, marker: Event) -> bool:
    """Store a write-ahead ``marker`` (a compensation's start, the fallback workflow's) that
    no cancel cuts; whether the run was stopped meanwhile (a second cancel; a cancel of
    its task, taken back here): then what it marks must not start."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    before = cancelling() if cancelling is not None else 0
    await run.bus.emit_through(marker)
    if cancelling is not None and cancelling() > before:
        run.stopped = True
        uncancel()
    return run.stopping_now


def uncancel() -> None:
    """A cancel of the run's task is taken (what it interrupted is recorded): the run goes
    on to record its end (Python 3.11+ counts cancel requests; this takes one back)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
