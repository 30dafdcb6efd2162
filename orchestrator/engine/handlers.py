"""What runs after the phases: the run's end (``conclude``: its status, the fallback
workflow, saga compensation, the handler phases, its outputs, ``workflow_ended``, the
RunResult).

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

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..errors import ExpressionError, format_duration
from ..expr import has_template, render
from .context import RunContext, SubRuns
from .phase import describe, run_phase
from .rendering import rendered
from .result import PhaseOutcome, RunResult, Usage, interruptible
from .saga import (
    INTERRUPTED,
    NOT_RUN,
    compensate,
    status_after,
    stopped_while_marking,
    uncancel,
)

if TYPE_CHECKING:
    from ..spec.model import Phase, Workflow

__all__ = ["FALLBACK_PHASE", "conclude", "epilogue", "has_epilogue"]

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


class _NotRun(Exception):
    """The fallback workflow was not started: a second cancel came as it was recorded."""


async def _fallback_workflow(
    run: RunContext, path: str
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Run the fallback workflow; (its outputs, None) or (None, why it failed)."""
    started = run.now()
    marker = ev.phase_started(run.run_id, started, FALLBACK_PHASE, 1, agent="workflow", path=path)
    # what the sub-run's calls use counts as this phase's, as any sub-run's for its caller:
    # in the run's spending and totals, the phase's metadata, `orch stats`
    caller = SubRuns(run, FALLBACK_PHASE)  # its address: FALLBACK_PHASE (approvals)
    try:
        if await stopped_while_marking(run, marker):  # a second cancel as it started
            raise _NotRun
        outputs = await run.run_workflow(path, run.inputs, caller=caller)
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - recorded, not raised
        if isinstance(exc, _NotRun):
            message = NOT_RUN
        elif isinstance(exc, asyncio.CancelledError):  # a second cancel: stop now, as saga
            run.stopped = True
            uncancel()
            message = INTERRUPTED
        else:
            message = describe(exc)
        ended = run.now()
        run.outcomes[FALLBACK_PHASE] = PhaseOutcome(
            FALLBACK_PHASE, "failed", None, message, 1, started, ended, metadata=_used(caller)
        )
        await run.bus.emit_through(  # in the run's own task: a cancel must not undo it
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
    metadata = _used(caller)
    run.outcomes[FALLBACK_PHASE] = PhaseOutcome(
        FALLBACK_PHASE, "completed", dict(outputs), None, 1, started, ended, metadata=metadata
    )
    await run.bus.emit_through(  # in the run's own task: a cancel must not undo it
        ev.phase_completed(
            run.run_id,
            run.now(),
            FALLBACK_PHASE,
            1,
            output=dict(outputs),
            duration=ended - started,
            attempts=1,
            fallback_used=True,
            metadata=metadata,
        )
    )
    return outputs, None


def _used(caller: SubRuns) -> dict[str, Any]:
    """What the fallback workflow's calls used (``tokens``, ``cost``), as phase metadata."""
    return caller.used.as_metadata() if caller.used is not None else {}


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
    status = status_after(run, status)  # a second cancel stopped its compensation
    handlers: tuple[Phase, ...] = ()
    if status == "completed":
        handlers = wf.on_success
    elif status == "failed":
        handlers = wf.on_failure
    if handlers or wf.finally_:  # handlers read run.status and run.error
        run.context["run"] = {**run.context["run"], "status": status, "error": error}
    for phase in (*handlers, *wf.finally_):
        if run.stopping_now:
            await run.bus.emit_through(ev.phase_skipped(run.run_id, run.now(), phase.id, NOT_RUN))
            run.outcomes[phase.id] = PhaseOutcome(phase.id, "skipped")
            continue
        run.outcomes[phase.id] = await run_phase(phase, run)
    return status, error, outputs


async def conclude(
    run: RunContext,
    *,
    stopping: str | None,
    failed: Sequence[str],
    completion_order: Sequence[str],
    started: float,
    cancelled_by: str | None,
) -> RunResult:
    """The run's end, once the scheduler starts no phase any more: its status, what runs
    after the phases (``epilogue``), the workflow's outputs, ``workflow_ended``, the result.

    ``stopping`` is why the scheduler stopped starting phases (cancelled, timeout, failed
    or None), ``failed`` the phases whose failure fails the run, in the order they
    failed, ``completion_order`` the completed phases in order (compensation undoes them
    backwards), ``started`` the run clock at the start, ``cancelled_by`` who cancelled
    (``workflow_cancelled``'s ``cancelled_by``).
    """
    wf = run.workflow
    outcomes = run.outcomes
    error: str | None = None
    if stopping == "cancelled":
        status = "cancelled"
        error = "the run was cancelled"
    elif stopping == "timeout":
        status = "failed"
        error = f"the run timed out after {format_duration(wf.timeout or 0)}"
    elif failed:
        status = "failed"
        first = failed[0]
        error = f"phase '{first}' failed: {outcomes[first].error}"
        if len(failed) > 1:
            error += f" (and {len(failed) - 1} more)"
    else:
        status = "completed"
    replaced: Mapping[str, Any] | None = None
    if has_epilogue(wf):  # fallback workflow, compensation, on_success/on_failure/finally
        with interruptible(run.cancel_request):  # a forced cancel stops what runs there
            status, error, replaced = await epilogue(run, status, error, completion_order)
    outputs: dict[str, Any] = {}
    if replaced is not None:
        outputs = dict(replaced)
    elif wf.outputs:
        for key, value in wf.outputs.items():
            try:
                outputs[key] = (
                    await rendered(value, functools.partial(render, value, run.context))
                    if has_template(value)
                    else value
                )
            except ExpressionError as exc:
                if status == "completed":
                    status, error = "failed", f"output '{key}': {exc.message}"
    counts: dict[str, int] = {}
    usage = Usage({"prompt": 0, "completion": 0, "total": 0})
    for outcome in outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        usage.add(outcome.metadata)
    ended = run.now()
    await run.bus.emit(
        ev.workflow_ended(
            run.run_id,
            run.now(),
            status,
            outputs=outputs,
            duration=ended - started,
            error=error,
            counts=counts,
            tokens=usage.tokens,
            cost=usage.cost,
            cancelled_by=cancelled_by if status == "cancelled" else None,
        )
    )
    if run.stopped and not getattr(run.cancel_request, "forced", False):
        # the caller cancelled the run's task (not a forced cancel request): it ends
        # cancelled, as execute promises, once the run's end is recorded
        raise asyncio.CancelledError
    masker = run.masker
    return RunResult(
        run_id=run.run_id,
        status=status,
        phases=dict(outcomes),
        outputs=masker.mask(outputs) if masker else outputs,
        error=masker.mask_text(error) if (error and masker) else error,
        started=started,
        ended=ended,
        completion_order=tuple(completion_order),
    )
