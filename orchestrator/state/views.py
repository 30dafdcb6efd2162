"""Recorded runs as JSON data: the one builder behind `orch runs --json`, `orch status --json`,
the text view of `orch status`, `orch report` and the service's HTTP API.

``run_row`` is a line of `orch runs --json`; ``run_json`` adds what a run's summary
carries (error, outputs, inputs, counts, resumes: the API's run list); ``status_json``
adds the live figures and each phase (`orch status --json`, ``GET /api/runs/ID``).
Tokens and cost are summed as the engine sums them (``orchestrator.usage``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..usage import Usage
from .base import Decision, PhaseRecord, PhaseState, RunRecord

__all__ = [
    "cost_total",
    "phase_cost",
    "phase_time",
    "phase_tokens",
    "run_json",
    "run_row",
    "run_time",
    "status_json",
    "token_total",
]

_DONE = {PhaseState.COMPLETED, PhaseState.FAILED, PhaseState.SKIPPED, PhaseState.CANCELLED}


def run_time(run: RunRecord, now: float) -> float | None:
    """Seconds the run took, or has taken so far while it runs (None when unknown)."""
    if run.ended is not None:
        return run.duration
    return max(0.0, now - run.started) if run.status == "running" else None


def phase_time(phase: PhaseRecord, now: float, running: bool) -> float | None:
    """Seconds the phase took, or has taken so far while its run (``running``) runs it."""
    if phase.state is PhaseState.RUNNING and running and phase.started is not None:
        return max(0.0, now - phase.started)
    return phase.duration


def phase_tokens(phase: PhaseRecord) -> dict[str, int] | None:
    """The tokens a phase used (``{prompt, completion, total}`` as reported), or None."""
    usage = Usage()
    usage.add(phase.metadata)
    return dict(usage.tokens) if any(usage.tokens.values()) else None


def token_total(phases: Sequence[PhaseRecord]) -> dict[str, int]:
    """The tokens all the phases used: ``{prompt, completion, total}`` (0 where none)."""
    usage = Usage()
    for phase in phases:
        usage.add(phase.metadata)
    return {"prompt": 0, "completion": 0, "total": 0, **usage.tokens}


def phase_cost(phase: PhaseRecord) -> float | None:
    """What a phase's calls cost (its metadata ``cost``), or None when not reported."""
    usage = Usage()
    usage.add(phase.metadata)
    return usage.cost


def cost_total(phases: Sequence[PhaseRecord]) -> float | None:
    """What all the phases cost; None when none reported a cost."""
    usage = Usage()
    for phase in phases:
        usage.add(phase.metadata)
    return usage.cost


def run_row(run: RunRecord, waiting: Sequence[str] = ()) -> dict[str, Any]:
    """A line of `orch runs --json`: id, workflow, path, status, started, ended, duration,
    and ``waiting``: its phases waiting for approval (a run that only waits for a person)."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "path": run.path,
        "status": run.status,
        "started": run.started,
        "ended": run.ended,
        "duration": run.duration,
        "waiting": list(waiting),
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run's summary: ``run_row`` plus error, outputs, inputs, counts and resumes."""
    return {
        **run_row(run),
        "error": run.error,
        "outputs": run.outputs,
        "inputs": dict(run.inputs),
        "counts": dict(run.counts),
        "resumes": run.resumes,
    }


#: The state shown for a phase approved while it still waits for a ``max_parallel`` slot.
APPROVED_WAITING = "approved, waiting for a slot"


def asks_approval(phase: PhaseRecord, decision: Decision | None) -> bool:
    """Whether ``phase`` waits for a person's decision: waiting, and none recorded (an
    approved phase waiting for a ``max_parallel`` slot does not)."""
    return phase.state is PhaseState.WAITING and decision is None


def shown_state(phase: PhaseRecord, decision: Decision | None) -> str:
    """The phase's state as `orch status` shows it (``APPROVED_WAITING`` for a waiting
    phase that is approved already)."""
    if phase.state is PhaseState.WAITING and decision is not None and decision.approved:
        return APPROVED_WAITING
    return phase.state.value


def status_json(
    run: RunRecord,
    phases: Sequence[PhaseRecord],
    *,
    now: float,
    decisions: Mapping[str, Decision] | None = None,
    cancelled_by: str | None = None,
    items: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """A run with its progress, the phases running or waiting now, and each phase.

    ``run_json`` plus cancelled_by, owner_pid, trace_id, progress, current, waiting,
    phases, tokens and cost; ``duration`` counts up while the run runs. ``cancelled_by``:
    who cancelled a cancelled run (``runs.recorded.cancelled_by``), else None. Progress counts the
    workflow's own phases; handler phases (on_failure, finally, the fallback
    workflow) are listed with ``"handler": true``. ``decisions`` (the store's, by phase)
    gives each phase its ``decision`` on an approval: decision, who, at, comment.
    ``items`` (the store's ``items_done``: a running foreach phase's (done, total))
    gives such a phase its ``items``: ``{done, total}`` (None for any other phase).
    """
    decided = decisions or {}
    counted = items or {}
    running = run.status == "running"
    members = set(run.phase_ids) or {p.id for p in phases}
    own = [p for p in phases if p.id in members]
    done = sum(1 for p in own if p.state in _DONE)
    completed = sum(1 for p in own if p.state is PhaseState.COMPLETED)
    return {
        **run_json(run),
        "duration": run_time(run, now),
        "cancelled_by": cancelled_by if run.status == "cancelled" else None,
        "owner_pid": run.owner.pid if run.owner else None,
        "trace_id": run.trace_id,
        # done: phases that ended in any state; completed: those that succeeded
        "progress": {"done": done, "completed": completed, "total": max(len(members), len(own))},
        "current": [p.id for p in phases if p.state is PhaseState.RUNNING],
        "waiting": [p.id for p in phases if asks_approval(p, decided.get(p.id))],
        "phases": [
            _phase_json(
                p,
                now,
                running,
                handler=p.id not in members,
                decision=decided.get(p.id),
                items=counted.get(p.id) if p.state is PhaseState.RUNNING else None,
            )
            for p in phases
        ],
        "tokens": token_total(phases),
        "cost": cost_total(phases),
    }


def _phase_json(
    p: PhaseRecord,
    now: float,
    running: bool,
    *,
    handler: bool,
    decision: Decision | None,
    items: tuple[int, int] | None = None,
) -> dict[str, Any]:
    return {
        "id": p.id,
        "state": p.state.value,
        "attempts": p.attempts,
        "started": p.started,
        "ended": p.ended,
        "duration": phase_time(p, now, running),
        "cached": p.cached,
        "fallback_used": p.fallback_used,
        "error": p.error,
        "output": p.output,
        "compensated": p.compensated,
        "compensation_error": p.compensation_error,
        "handler": handler,
        "tokens": phase_tokens(p),
        "cost": phase_cost(p),
        "agent": p.metadata.get("agent"),
        "agents": p.metadata.get("agents"),
        "iterations": p.metadata.get("iterations"),
        # a running foreach phase: its items that ended (in any state) of all of them
        "items": None if items is None else {"done": items[0], "total": items[1]},
        "metadata": dict(p.metadata),
        "decision": None
        if decision is None
        else {
            "decision": decision.verb,
            "who": decision.who,
            "at": decision.at,
            "comment": decision.comment,
        },
    }
