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
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..agents.base import AgentContext, AgentResult
from ..errors import OrchError, PhaseTimeout
from ..expr import has_template, render

if TYPE_CHECKING:
    from ..agents.registry import AgentRegistry
    from ..plan import Plan
    from ..spec.model import AgentCall, Phase
    from .events import EventSink
    from .runner import RunState

__all__ = ["call_agent", "compensate", "describe", "resume_compensation"]


def describe(exc: BaseException) -> str:
    """A one-line description of an agent's exception for events and reports."""
    if isinstance(exc, OrchError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def call_agent(
    state: RunState, phase: Phase, call: AgentCall, extra: Mapping[str, Any] | None = None
) -> AgentResult:
    """Run one ``{agent, with}`` call for ``phase`` once, bounded by the phase's timeout.

    The input is rendered against the run's context (``phases.X.output`` ...)
    plus ``extra``. Raises whatever the agent raises, ExpressionError for a bad
    template, and PhaseTimeout.
    """
    agent = state.agent(call.agent)
    spec = state.workflow.agents.get(call.agent)
    merged: Mapping[str, Any] = {**spec.with_, **call.with_} if spec else call.with_
    if has_template(merged):
        context = {**state.context, **(extra or {})}
        where = call.location or phase.location
        shell: tuple[str, ...] = getattr(agent, "shell_fields", ())
        if shell:  # shell command lines: every template value is shell-quoted
            from ..expr import render_shell

            merged = {
                k: render_shell(v, context, where=where)
                if k in shell and isinstance(v, str)
                else render(v, context, where=where)
                for k, v in merged.items()
            }
        else:
            rendered = render(merged, context, where=where)
            merged = rendered if isinstance(rendered, Mapping) else {"value": rendered}
    deadline = None if phase.timeout is None else time.monotonic() + phase.timeout
    ctx = AgentContext(
        state.run_id,
        phase.id,
        1,
        call.agent,
        state.workdir,
        deadline,
        None,
        state.secrets,
    )
    coro = agent.run(merged, ctx)
    if phase.timeout is None:
        result = await coro
    else:
        try:
            result = await asyncio.wait_for(coro, phase.timeout)
        except asyncio.TimeoutError:
            raise PhaseTimeout(phase.id, phase.timeout) from None
    return result if isinstance(result, AgentResult) else AgentResult(output=result)


async def compensate(
    state: RunState, completion_order: Sequence[str], *, done: Collection[str] = ()
) -> list[str]:
    """Compensate the completed phases of ``completion_order``, last completed first.

    Phases in ``done`` (already compensated before a crash) are left alone.
    Returns one message per failed compensation (empty when all succeeded).
    Precondition: ``state`` is the run's RunState with the outcomes of the phases.
    """
    failures: list[str] = []
    phases = state.plan.phases
    for pid in reversed(list(completion_order)):
        phase = phases.get(pid)
        if phase is None or phase.compensate is None or pid in done:
            continue
        outcome = state.outcomes.get(pid)
        if outcome is not None and outcome.status != "completed":
            continue
        await state.emit(
            "phase_stream", pid, None, {"text": "compensating", "compensation": "started"}
        )
        error: str | None = None
        try:
            await call_agent(
                state, phase, phase.compensate, {"output": getattr(outcome, "output", None)}
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing compensation is recorded, not raised
            error = describe(exc)
            failures.append(f"compensation of '{pid}' failed: {error}")
        await state.emit("phase_compensated", pid, None, {"ok": error is None, "error": error})
    return failures


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
) -> str:
    """Finish the compensation of a run that crashed in the middle of it.

    ``order`` is the completion order of its completed phases (with their
    ``outputs``), ``done`` the phases whose compensation was recorded as ended.
    Emits the remaining compensations and the final workflow event; returns the
    final status (``failed`` or ``cancelled``: compensation never completes a run).
    """
    from .result import PhaseOutcome, RunOptions
    from .runner import RunState

    state = RunState(
        plan,
        inputs=inputs,
        registry=registry,
        run_id=run_id,
        options=RunOptions(),
        sinks=sinks,
        prior=None,
    )
    for pid, output in outputs.items():
        state.outcomes[pid] = PhaseOutcome(pid, "completed", output)
    started = state.clock()
    try:
        failures = await compensate(state, order, done=done)
    finally:
        await state.close_agents()
    if failures:
        error = f"{error}; " + "; ".join(failures)
    kind = "workflow_cancelled" if status == "cancelled" else "workflow_failed"
    await state.emit(
        kind,
        data={
            "status": status,
            "outputs": {},
            "duration": state.clock() - started,
            "error": error,
            "counts": {},
        },
    )
    return status
