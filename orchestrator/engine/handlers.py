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

from .result import PhaseOutcome
from .saga import compensate, describe

if TYPE_CHECKING:
    from ..spec.model import Phase, Workflow
    from .runner import RunState

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
    state: RunState, path: str
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Run the fallback workflow; (its outputs, None) or (None, why it failed)."""
    clock = state.clock
    started = clock()
    await state.emit("phase_started", FALLBACK_PHASE, 1, {"agent": "workflow", "path": path})
    try:
        outputs = await state.run_workflow(path, state.inputs)
    except Exception as exc:  # noqa: BLE001 - a failing fallback is recorded, not raised
        message = describe(exc)
        ended = clock()
        state.outcomes[FALLBACK_PHASE] = PhaseOutcome(
            FALLBACK_PHASE, "failed", None, message, 1, started, ended
        )
        await state.emit(
            "phase_failed",
            FALLBACK_PHASE,
            1,
            {"status": "failed", "error": message, "duration": ended - started, "attempts": 1},
        )
        return None, message
    ended = clock()
    state.outcomes[FALLBACK_PHASE] = PhaseOutcome(
        FALLBACK_PHASE, "completed", dict(outputs), None, 1, started, ended
    )
    await state.emit(
        "phase_completed",
        FALLBACK_PHASE,
        1,
        {
            "status": "completed",
            "output": dict(outputs),
            "duration": ended - started,
            "attempts": 1,
            "fallback_used": True,
            "cached": False,
            "metadata": {},
        },
    )
    return outputs, None


async def _run_handler(state: RunState, phase: Phase) -> PhaseOutcome:
    from .phase import run_phase

    outcome = await run_phase(phase, state)
    state.outcomes[phase.id] = outcome
    return outcome


async def epilogue(
    state: RunState, status: str, error: str | None, completion_order: Sequence[str]
) -> tuple[str, str | None, Mapping[str, Any] | None]:
    """Run the fallback workflow, compensations and handlers that apply to ``status``.

    Returns the final (status, error, outputs); outputs is None unless a
    fallback workflow completed and its outputs replace the run's.
    """
    wf = state.workflow
    outputs: Mapping[str, Any] | None = None
    fallback = wf.error_handling.fallback_workflow
    if status == "failed" and fallback:
        outputs, why = await _fallback_workflow(state, fallback)
        if outputs is not None:
            status, error = "completed", None
        else:
            error = f"{error}; fallback workflow '{fallback}' failed: {why}"
    if status in ("failed", "cancelled"):
        failures = await compensate(state, completion_order)
        if failures:
            error = f"{error}; " + "; ".join(failures) if error else "; ".join(failures)
    handlers: tuple[Phase, ...] = ()
    if status == "completed":
        handlers = wf.on_success
    elif status == "failed":
        handlers = wf.on_failure
    for phase in (*handlers, *wf.finally_):
        await _run_handler(state, phase)
    return status, error, outputs
