"""What runs after the phases: fallback workflow, saga compensation, and the handler phases.

Order, once no phase of the plan runs any more:

1. the run failed and ``error_handling.fallback_workflow`` is set: that workflow
   runs as a sub-run with the same inputs (recorded as a phase named
   ``fallback_workflow``); if it completes, the run completes with its outputs
   (as a phase's ``fallback`` makes the phase completed);
2. the run (still) failed or was cancelled: compensation (engine/saga.py);
3. ``on_success`` (completed) or ``on_failure`` (failed) phases, then ``finally``
   (always), each in the order listed. A failing handler is recorded as a failed
   phase; it does not change the run's status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import events as ev
from .context import RunContext
from .phase import describe, run_phase
from .result import PhaseOutcome
from .saga import compensate

if TYPE_CHECKING:
    from ..spec.model import Phase, Workflow

__all__ = ["FALLBACK_PHASE", "epilogue", "has_epilogue"]

#: The phase id under which a fallback workflow's sub-run is recorded.
FALLBACK_PHASE = "fallback_workflow"


def has_epilogue(workflow: Workflow) -> bool:
    """Whether anything runs after the phases (so the engine can skip this step cheaply)."""
    return bool(
        workflow.on_success
        or workflow.on_failure
        or workflow.finally_
        or workflow.error_handling.fallback_workflow
        or any(p.compensate is not None for p in workflow.phases)
    )


async def _fallback_workflow(
    run: RunContext, path: str
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Run the fallback workflow; (its outputs, None) or (None, why it failed)."""
    started = run.now()
    await run.bus.emit(
        ev.phase_started(run.run_id, run.now(), FALLBACK_PHASE, 1, agent="workflow", path=path)
    )
    try:
        outputs = await run.run_workflow(path, run.inputs)
    except Exception as exc:  # noqa: BLE001 - a failing fallback is recorded, not raised
        message = describe(exc)
        ended = run.now()
        run.outcomes[FALLBACK_PHASE] = PhaseOutcome(
            FALLBACK_PHASE, "failed", None, message, 1, started, ended
        )
        await run.bus.emit(
            ev.phase_failed(
                run.run_id,
                run.now(),
                FALLBACK_PHASE,
                1,
                error=message,
                duration=ended - started,
                attempts=1,
            )
        )
        return None, message
    ended = run.now()
    run.outcomes[FALLBACK_PHASE] = PhaseOutcome(
        FALLBACK_PHASE, "completed", dict(outputs), None, 1, started, ended
    )
    await run.bus.emit(
        ev.phase_completed(
            run.run_id,
            run.now(),
            FALLBACK_PHASE,
            1,
            output=dict(outputs),
            duration=ended - started,
            attempts=1,
            fallback_used=True,
        )
    )
    return outputs, None


async def epilogue(
    run: RunContext, status: str, error: str | None, completion_order: Sequence[str]
) -> tuple[str, str | None, Mapping[str, Any] | None]:
    """Run the fallback workflow, compensations and handlers that apply to ``status``.

    Returns the final (status, error, outputs); outputs is None unless a
    fallback workflow completed and its outputs replace the run's.
    """
    wf = run.workflow
    run.spend.enforcing = False  # budgets guard the phases; clean-up runs regardless
    outputs: Mapping[str, Any] | None = None
    fallback = wf.error_handling.fallback_workflow
    if status == "failed" and fallback:
        outputs, why = await _fallback_workflow(run, fallback)
        if outputs is not None:
            status, error = "completed", None
        else:
            error = f"{error}; fallback workflow '{fallback}' failed: {why}"
    if status in ("failed", "cancelled"):
        failures = await compensate(run, completion_order, status=status)
        if failures:
            error = f"{error}; " + "; ".join(failures) if error else "; ".join(failures)
    handlers: tuple[Phase, ...] = ()
    if status == "completed":
        handlers = wf.on_success
    elif status == "failed":
        handlers = wf.on_failure
    if handlers or wf.finally_:  # handlers read run.status and run.error
        run.context["run"] = {**run.context["run"], "status": status, "error": error}
    for phase in (*handlers, *wf.finally_):
        run.outcomes[phase.id] = await run_phase(phase, run)
    return status, error, outputs
