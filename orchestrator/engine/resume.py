"""Resume as a service of the core: what a stopped run needs to go on.

``prepare_resume`` reads a stopped run from the state store, decides what runs
again (phases not completed, and with ``force`` the changed phases and their
downstream), claims the run, and returns a ``Resume`` that ``execute`` takes
(``prior`` and ``RunOptions.resume_attempts``). ``resume_compensation``
finishes the saga of a run that crashed while compensating. The callers (the
CLI, the Python API) only load the workflow and print.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import events as ev
from ..agents.registry import AgentRegistry
from ..errors import RunLocked, UsageError
from ..events import EventSink, PhaseState, item_checkpoint
from ..plan import Plan
from ..state.base import PhaseRecord, RunRecord, StateStore, each_event
from .context import build_context
from .result import PhaseOutcome, RunOptions, interruptible
from .runner import execute
from .saga import compensate, status_after

__all__ = [
    "CompensationLeft",
    "Resume",
    "changed_phases",
    "is_resumable",
    "pending_compensations",
    "prepare_resume",
    "resume_compensation",
]


@dataclass(frozen=True, slots=True)
class CompensationLeft:
    """A run that crashed while compensating: what is left of its saga."""

    order: tuple[str, ...]  # completion order of its completed phases
    done: tuple[str, ...]  # phases whose compensation already ended
    outputs: Mapping[str, Any]
    error: str
    status: str = "failed"  # cancelled when a cancel caused the compensation
    ended: bool = False  # the run recorded its end (a second cancel cut its saga)

    pending: tuple[str, ...] = ()  # phases of ``order`` whose compensation is still to run

    @property
    def left(self) -> int:
        """How many compensations are still to run."""
        return len(self.pending)


@dataclass(frozen=True, slots=True)
class Resume:
    """What resuming a stopped run does.

    ``finished`` is True when the run already completed (nothing to do).
    ``prior`` are the completed phases kept (not run again); ``again`` the phases
    that were running when it stopped; ``rerun`` the changed phases and their
    downstream (``force``); ``attempts_at`` the attempt each interrupted phase
    goes on from; ``compensation`` is set when the run stopped while compensating;
    ``iterations_at`` the last checkpointed iteration (n, output, done) of each
    unfinished ``repeat`` phase (the loop goes on after it, or, ``done``: its
    ``until`` was true there, the phase completes with that output); ``masked`` the
    completed phases whose output held a secret (stored masked, so run again);
    ``key_epochs`` the phases that had failed, with the number of this launch: their
    idempotency keys end in ``~N`` (``RunOptions.key_epochs``); ``items_at`` the
    items of each unfinished ``foreach`` phase that completed (index -> output);
    ``spent`` the tokens and cost each phase's calls used in earlier launches
    (``RunOptions.resume_spent``, by ``_spent_before``).
    """

    run: RunRecord
    plan: Plan | None
    finished: bool = False
    prior: Mapping[str, PhaseOutcome] = field(default_factory=dict)
    again: tuple[str, ...] = ()
    rerun: tuple[str, ...] = ()
    attempts_at: Mapping[str, int] = field(default_factory=dict)
    compensation: CompensationLeft | None = None
    iterations_at: Mapping[str, tuple[int, Any, bool]] = field(default_factory=dict)
    masked: tuple[str, ...] = ()
    key_epochs: Mapping[str, int] = field(default_factory=dict)
    items_at: Mapping[str, Mapping[int, Any]] = field(default_factory=dict)
    spent: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def options(self, base: RunOptions | None = None) -> RunOptions:
        """``base`` (default ``RunOptions()``) with what going on from this resume takes:
        ``resumed_from``, ``resume_attempts``, ``resume_iterations``, ``resume_items``,
        ``key_epochs`` and ``resume_spent``. One place maps a resume to options, so a
        caller writes ``execute(plan, prior=r.prior, options=r.options(...))`` and
        forgets none of them (``runs.go_on`` does that)."""
        return replace(
            base if base is not None else RunOptions(),
            resumed_from=self.run.id,
            resume_attempts=dict(self.attempts_at),
            resume_iterations=dict(self.iterations_at),
            resume_items=dict(self.items_at),
            key_epochs=dict(self.key_epochs),
            resume_spent=dict(self.spent),
        )

    def summary(self) -> str:
        """One line saying what the resume does (the CLI prints it)."""
        run = self.run
        if self.compensation is not None:
            left = self.compensation.left
            if not left:  # its saga ended (a resume again): it only says how the run ended
                return f"run {run.id} has no compensation left to run: nothing to resume"
            return (
                f"resuming the compensation of run {run.id}: "
                f"{left} phase{'s' if left != 1 else ''} left to compensate"
            )
        total = len(self.plan.order) if self.plan is not None else 0
        todo = total - len(self.prior)
        message = (
            f"resuming run {run.id}: {len(self.prior)} of {total} "
            f"phase{'s' if total != 1 else ''} completed, {todo} to run"
        )
        if self.again:
            message += f" (running when it stopped, so running again: {', '.join(self.again)})"
        if self.rerun:
            message += f"; changed, with their downstream: {', '.join(sorted(self.rerun))}"
        if self.masked:
            message += f"; their output held a secret, so running again: {', '.join(self.masked)}"
        if self.attempts_at:
            going_on = ", ".join(f"{p} at attempt {n}" for p, n in sorted(self.attempts_at.items()))
            message += f"; retries go on: {going_on}"
        if self.iterations_at:
            loops = ", ".join(
                f"{pid} {'ended at' if done else 'after'} iteration {n}"
                for pid, (n, _, done) in sorted(self.iterations_at.items())
            )
            message += f"; loops go on: {loops}"
        if self.items_at:
            kept = ", ".join(
                f"{pid} ({len(items)} item{'s' if len(items) != 1 else ''} done)"
                for pid, items in sorted(self.items_at.items())
            )
            message += f"; foreach goes on: {kept}"
        return message


def changed_phases(run: RunRecord, plan: Plan) -> list[str]:
    """Phases whose definition differs from the one the run recorded (new ones included)."""
    if not run.fingerprints:
        return []
    current = plan.fingerprints()
    changed = [pid for pid in plan.order if run.fingerprints.get(pid) != current[pid]]
    removed = [pid for pid in run.fingerprints if pid not in current]
    return changed + removed


def is_resumable(run: RunRecord) -> bool:
    """Whether a stopped run has anything left to do (False: it completed).

    Raises RunLocked when the process that owns it is still alive.
    """
    if run.status == "running" and run.owner is not None:
        raise RunLocked(
            f"run '{run.id}' is still running in process {run.owner.pid}",
            hint=f"wait for it to end, or stop it with `orch cancel {run.id}`",
        )
    return run.status != "completed"


def prepare_resume(
    store: StateStore, run: RunRecord, plan: Plan, *, force: bool = False, claim: bool = True
) -> Resume:
    """Decide what resuming ``run`` (read from ``store``) with ``plan`` does, and claim it.

    Raises RunLocked when its process is still alive, UsageError when the workflow
    changed since the run started and ``force`` is False (naming the changed
    phases). A completed run gives ``Resume(finished=True)`` and is not claimed.
    """
    if not is_resumable(run):
        return Resume(run, plan, finished=True)
    changed = changed_phases(run, plan)
    if changed and not force:
        raise UsageError(
            f"the workflow '{run.path}' changed since run {run.id} started: "
            f"phase{'s' if len(changed) > 1 else ''} {', '.join(changed)} changed",
            hint="resume with --force to run the changed phases and their downstream again",
        )
    rerun = set(plan.downstream(changed)) if changed else set()
    records = list(store.phases(run.id))
    if any(p.compensation_started for p in records):
        left = _compensation_left(store, run, records, plan)
        if claim and (left.pending or not left.ended):  # else: nothing to do, nothing to record
            store.claim(run.id)
        return Resume(run, plan, compensation=left)
    # an output that held a secret is stored masked (not what later phases read): the
    # phase runs again, so a resumed run gives an uninterrupted run's result (README)
    history = _read_history(store, run.id, plan, records, rerun)
    masked = history.masked & set(plan.phases)
    prior = {
        p.id: _outcome(p)
        for p in records
        if p.state is PhaseState.COMPLETED
        and p.id in plan.phases
        and p.id not in rerun
        and p.id not in masked
    }
    again = tuple(p.id for p in records if p.state is PhaseState.RUNNING)
    # a phase stopped in the middle of its retries goes on from the attempt it was at
    attempts_at = {
        p.id: p.attempts
        for p in records
        if p.state is PhaseState.RUNNING and p.attempts > 1 and p.id not in rerun
    }
    iterations_at = {pid: last for pid, last in history.loops.items() if last is not None}
    items_at = history.items
    if claim:
        store.claim(run.id, rerun=sorted(rerun | masked))
    return Resume(
        run,
        plan,
        False,
        prior,
        again,
        tuple(sorted(rerun)),
        attempts_at,
        None,
        iterations_at,
        tuple(sorted(masked)),
        # a phase that failed is asked again with new idempotency keys (not a replay)
        {p.id: run.resumes + 1 for p in records if p.state is PhaseState.FAILED},
        items_at,
        _spent_before(records, history.spent),
    )


@dataclass(slots=True)
class _History:
    """What a resume takes from the run's events, read in one pass (``_read_history``)."""

    masked: set[str] = field(default_factory=set)
    spent: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[int, Any]] = field(default_factory=dict)
    loops: dict[str, tuple[int, Any, bool] | None] = field(default_factory=dict)


def _read_history(
    store: StateStore, run_id: str, plan: Plan, records: list[PhaseRecord], rerun: set[str]
) -> _History:
    """One pass over the run's events, a page at a time (a long run's are never read at
    once, nor once per phase): the phases whose completion held a secret (``masked``);
    of each phase that did not complete, the last spending it recorded (``spent``, see
    ``_spent_before``); the completed items of each unfinished ``foreach`` phase
    (``items``: index -> output) and the last checkpointed iteration (n, output, done)
    of each unfinished ``repeat`` phase (``loops``), but of none that runs again
    (``rerun``).

    A loop that failed by ``on_max: fail`` (a ``phase_failed``, not cancelled, right
    after the checkpoint of iteration ``max``, ``until`` false) has nothing to go on
    from: its checkpoints are dropped, so the resumed phase loops again from iteration
    1, a fresh attempt (those iterations stay in the history)."""
    unfinished = {p.id for p in records if p.state is not PhaseState.COMPLETED}
    going_on = {
        pid: phase for pid in unfinished - rerun if (phase := plan.phases.get(pid)) is not None
    }
    out = _History()
    for _, e in each_event(store, run_id):
        pid = e.phase
        if not pid:
            continue
        if e.event == "phase_completed" and e.data.get("secret_masked"):
            out.masked.add(pid)
        if pid not in unfinished:
            continue
        recorded = e.data.get("spent") or (e.data.get("metadata") if e.event in _ENDS else None)
        if recorded:
            out.spent[pid] = recorded
        phase = going_on.get(pid)
        if phase is None:
            continue
        if phase.foreach is not None:
            found = item_checkpoint(e)
            if found is not None:
                out.items.setdefault(pid, {})[found[0]] = found[1]
        if phase.repeat is not None:
            last = out.loops.get(pid)
            n = e.data.get("iteration")
            if e.event == "phase_iteration" and isinstance(n, int):
                out.loops[pid] = (n, e.data.get("output"), e.data.get("done") is True)
            elif (
                e.event == "phase_failed"
                and e.data.get("status") == PhaseState.FAILED.value
                and last is not None
                and last[0] >= phase.repeat.max
                and not last[2]
            ):
                out.loops[pid] = None  # failed by on_max: the next attempt loops from 1
    return out


def _spent_before(
    records: list[PhaseRecord], recorded: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """What each phase's calls used in the earlier launches, by one rule: the tokens and
    cost it last recorded, whatever its state now.

    Each launch's Spend starts from this, so what a phase records (its end's metadata,
    and the ``spent`` of each step: a foreach item's progress, a repeat iteration, a
    retry, a handoff turn) is what it used in every launch up to then: the last record
    is the sum over the launches, whatever their mix. A completed phase's is its end
    (its row's metadata). Any other may have been killed while running (no end in that
    launch): a step of that launch may come after its last end, so its events say
    (``recorded``: the last spending each such phase's events recorded, by
    ``_read_history``; a phase failed in launch 1, killed in launch 2 after an item
    completed, counts both). Only the calls a kill cut short are recorded nowhere. A
    completed phase run again (changed, or masked) counts too: its calls were made in
    this run. A cache hit recorded none (it made no call)."""
    out: dict[str, dict[str, Any]] = {}
    for p in records:
        used: Mapping[str, Any] = p.metadata
        if p.state is not PhaseState.COMPLETED:
            used = recorded.get(p.id, used)
        if used:
            out[p.id] = dict(used)
    return out


_ENDS = ("phase_completed", "phase_failed")


def _outcome(p: PhaseRecord) -> PhaseOutcome:
    return PhaseOutcome(
        p.id,
        "completed",
        p.output,
        None,
        p.attempts,
        p.started,
        p.ended,
        p.fallback_used,
        p.cached,
        dict(p.metadata),
    )


def pending_compensations(
    plan: Plan, order: Sequence[str], done: Collection[str]
) -> tuple[str, ...]:
    """The phases of ``order`` with a ``compensate`` whose compensation did not end."""
    phases = plan.phases
    return tuple(p for p in order if p not in done and p in phases and phases[p].compensate)


def _compensation_left(
    store: StateStore, run: RunRecord, records: list[PhaseRecord], plan: Plan
) -> CompensationLeft:
    completed = [p for p in records if p.state is PhaseState.COMPLETED]
    order = tuple(
        p.id
        for p in sorted(
            (p for p in completed if p.completed_seq), key=lambda p: p.completed_seq or 0
        )
    )
    # why it compensated (failed, or cancelled: Ctrl-C, then a second one forced the exit)
    markers = [
        e.data.get("cause")
        for _, e in each_event(store, run.id)
        if e.event == "phase_stream" and e.data.get("compensation") == "started"
    ]
    # a run recorded cancelled stays so (a second cancel cut its saga: it ended cancelled)
    status = "cancelled" if "cancelled" in markers or run.status == "cancelled" else "failed"
    failed = [p for p in records if p.state is PhaseState.FAILED]
    error = run.error or (
        "the run was cancelled"
        if status == "cancelled"
        else f"phase '{failed[0].id}' failed: {failed[0].error}"
        if failed
        else "the run failed"
    )
    done = tuple(p.id for p in records if p.compensated is not None)
    return CompensationLeft(
        order=order,
        done=done,
        pending=pending_compensations(plan, order, done),
        outputs={p.id: p.output for p in completed},
        error=error,
        status=status,
        ended=run.finished,
    )


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
    ended: bool = False,
    cancel: asyncio.Event | None = None,
) -> str:
    """Finish the compensation of a run that crashed in the middle of it.

    ``order`` is the completion order of its completed phases (with their
    ``outputs``), ``done`` the phases whose compensation was recorded as ended.
    Emits the remaining compensations and the final workflow event; returns the
    final status (``failed`` or ``cancelled``: compensation never completes a run).
    ``ended``: the run already recorded its end; with no compensation left, nothing
    is emitted (a resume again records no second end). ``cancel``: the run's cancel
    request, as ``execute``'s: a forced one (a second Ctrl-C) stops the compensation
    under way and leaves the others pending, and the run ends cancelled.
    """
    if ended and not pending_compensations(plan, order, done):
        return status
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
    run.cancel_request = cancel
    started = run.now()
    try:
        with interruptible(cancel):  # a forced cancel request stops the compensation now
            failures = await compensate(run, order, done=done, status=status)
    finally:
        await run.pool.aclose()
    if failures:
        error = f"{error}; " + "; ".join(failures)
    status = status_after(run, status)  # as the epilogue's: a second cancel stopped it
    by = getattr(cancel, "by", None) if status == "cancelled" else None
    now = run.now()
    await run.bus.emit(
        ev.workflow_ended(
            run_id,
            now,
            status,
            outputs={},
            duration=now - started,
            error=error,
            counts={},
            cancelled_by=by,
        )
    )
    return status
