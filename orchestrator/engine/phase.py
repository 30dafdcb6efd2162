"""One phase, start to end: when -> render -> cache -> attempts (timeout, retries) -> fallback.

Also here: foreach (items bounded by the phase's ``max_parallel``) and handoff
(agents passing control by naming the next one). Every agent call goes through
``engine/call.py``. A failing agent gives a failed outcome, never an exception;
cancellation gives a ``cancelled`` outcome.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Mapping
from typing import Any

from .. import events as ev
from ..agents.base import AgentFailure, AgentResult
from ..errors import ExpressionError, OrchError, PhaseTimeout
from ..expr import evaluate, render
from ..spec.model import Phase
from .cache import keyed_input
from .call import (
    bounded,
    breaker_failure,
    call_agent,
    describe,
    make_spec,
    merged_input,
    render_input,
    seconds_left,
)
from .context import DELIVERED, ITERATION, RunContext
from .limits import BreakerOpen
from .rendering import rendered
from .result import PhaseOutcome
from .retry import call_with_retries
from .routing import least_loaded, selected_agent

__all__ = ["describe", "run_phase"]


class _Failed(Exception):
    """A unit of work (the phase, or one foreach item) failed after everything was tried."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


async def run_phase(phase: Phase, run: RunContext) -> PhaseOutcome:
    """Run one phase whose trigger rule allowed it; emit its events; return its outcome."""
    pid = phase.id
    started = run.now()
    tried = [0]  # the attempt running now (for foreach: the highest of any item)
    try:
        ctx = run.context
        if phase.previous is not None:
            ctx = {**ctx, "previous": run.outcomes.get(phase.previous)}
        if phase.when is not None:
            try:
                go = await _when(phase, run, ctx)
            except ExpressionError as exc:
                return await _failed(run, phase, started, f"when: {exc.headline}", 0)
            if not go:
                reason = f"when is false: {phase.when}"
                await run.bus.emit(ev.phase_skipped(run.run_id, run.now(), pid, reason))
                return PhaseOutcome(pid, "skipped")
        approval: dict[str, Any] = {}
        if phase.approval is not None:
            from .approval import wait_for_approval

            refused, approval = await wait_for_approval(run, phase, ctx)
            if refused is not None:
                return await _failed(run, phase, started, refused, 0, approval=approval)
        if phase.foreach is not None:
            return await _run_foreach(phase, run, ctx, started, tried)
        if phase.repeat is not None:
            return await _run_repeat(phase, run, ctx, started, tried, approval)
        first = _first_attempt(run, phase, None)
        await run.bus.emit(
            ev.phase_started(
                run.run_id, run.now(), pid, first, agent=phase.agent_label, approval=approval
            )
        )
        try:
            result, fallback_used, cached = await _run_unit(phase, run, ctx, None, tried)
        except _Failed as failure:
            return await _failed(run, phase, started, failure.message, failure.attempts)
        outcome, recorded = _completed(
            run, phase, started, result.output, tried[0], fallback_used, cached, result.metadata
        )
        await recorded
        return outcome
    except asyncio.CancelledError:
        ended = run.now()
        attempts = tried[0]
        used = _spent(run, pid)
        await run.bus.emit(
            ev.phase_failed(
                run.run_id,
                run.now(),
                pid,
                attempts or None,
                error="cancelled",
                duration=ended - started,
                attempts=attempts,
                cancelled=True,
                continue_on_error=phase.continue_on_error,
                metadata=used,
            )
        )
        return PhaseOutcome(
            pid, "cancelled", None, "cancelled", attempts, started, ended, metadata=used
        )


def _when(phase: Phase, run: RunContext, ctx: Mapping[str, Any]) -> Awaitable[Any]:
    """The value of the phase's ``when`` (a function of its own: a lambda in ``run_phase``
    would make cells of its variables for every phase)."""
    when = phase.when or ""
    return rendered(
        "{{ " + when + " }}",
        lambda: evaluate(when, ctx, where=phase.locations.get("when", phase.location)),
        timeout=phase.timeout,
        left=seconds_left(run),
    )


def _first_attempt(run: RunContext, phase: Phase, item: int | None) -> int:
    """The attempt a phase resumes at after a crash (1 otherwise), within its retry budget."""
    resume = run.options.resume_attempts
    if item is not None or not resume:
        return 1
    return max(1, min(resume.get(phase.id, 1), phase.retries.attempts + 1))


def _completed(
    run: RunContext,
    phase: Phase,
    started: float,
    output: Any,
    attempts: int,
    fallback_used: bool,
    cached: bool,
    metadata: Mapping[str, Any],
) -> tuple[PhaseOutcome, Awaitable[None]]:
    """A completed phase's outcome, and its end's delivery (``_record``) to await before
    returning the outcome (a pair, not a coroutine: one frame less per phase); its
    ``tokens`` and ``cost`` are what all its calls used (``_spent``), not only the last
    result's."""
    ended = run.now()
    metadata = _spent(run, phase.id, metadata)
    recorded = _record(
        run,
        ev.phase_completed(
            run.run_id,
            run.now(),
            phase.id,
            attempts or None,  # a cache hit made no attempt (as phase_failed)
            output=output,
            duration=ended - started,
            attempts=attempts,
            fallback_used=fallback_used,
            cached=cached,
            metadata=metadata,
        ),
    )
    outcome = PhaseOutcome(
        phase.id,
        "completed",
        output,
        None,
        attempts,
        started,
        ended,
        fallback_used,
        cached,
        metadata,
    )
    return outcome, recorded


def _record(run: RunContext, event: ev.Event) -> Awaitable[None]:
    """Deliver a phase's end (``phase_completed``, ``phase_failed``) so that a cancel
    arriving meanwhile (another phase failed, Ctrl-C) does not undo it: the store never
    holds that end followed by a ``phase_failed`` (cancelled) of the same phase.

    In a phase task of the scheduler the end is posted (``EventBus.post``): the task returns
    without waiting, so nothing can cancel it in between, and the scheduler counts the
    phase as ended once the end is stored. Without a durable sink ``emit`` delivers at
    once: nothing can interrupt it. With several async sinks the scheduler cancels no
    task in ``run.completing`` (it takes the task out once the task is done); a phase run
    in another task (a handler phase, in the run's own task, which a second cancel or
    ``asyncio.run``'s teardown can reach) has its delivery shielded
    (``EventBus.emit_through``).
    """
    bus = run.bus
    if not bus.async_sinks:
        return bus.emit(event)
    task = asyncio.current_task()
    if task is None or task not in run.phase_tasks:
        return bus.emit_through(event)
    if bus.postable:  # the scheduler waits for the store before it counts the end
        run.posted.setdefault(task, []).append(bus.post(event))
        return DELIVERED
    run.completing.add(task)
    return bus.emit(event)


async def _failed(
    run: RunContext,
    phase: Phase,
    started: float,
    error: str,
    attempts: int,
    output: Any = ev._NO_OUTPUT,
    approval: Mapping[str, Any] | None = None,
    reported: Mapping[str, Any] | None = None,
) -> PhaseOutcome:
    """Record a failed phase; ``reported``: its metadata besides tokens and cost (a
    repeat that failed by ``on_max``: ``iterations``, ``until_met``), as ``_completed``."""
    ended = run.now()
    used = _spent(run, phase.id, reported)
    await _record(
        run,
        ev.phase_failed(
            run.run_id,
            run.now(),
            phase.id,
            attempts or None,
            error=error,
            duration=ended - started,
            attempts=attempts,
            continue_on_error=phase.continue_on_error,
            output=output,
            metadata=used,
            approval=approval,
        ),
    )
    kept = None if output is ev._NO_OUTPUT else output
    return PhaseOutcome(phase.id, "failed", kept, error, attempts, started, ended, metadata=used)


def _spent(
    run: RunContext, phase_id: str, reported: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A phase's metadata at its end, by one rule for every end (completed, failed,
    cancelled): ``reported`` (the result's: ``model``, ``agent``, ``iterations``...) with
    ``tokens`` and ``cost`` replaced by what all the phase's calls used, as the budget
    counted it (``Spend.by_phase``): failed attempts before a retry succeeded, a failed
    primary before its fallback, every foreach item, repeat iteration and handoff turn,
    what its sub-runs used. So the run's totals, ``orch status``, stats and reports
    count them. A cache hit made no call: it records no tokens or cost (what the
    cached call used was counted by the run that made it)."""
    used = run.spend.by_phase.get(phase_id)
    kept: dict[str, Any] = {}
    if reported:
        kept = {k: v for k, v in reported.items() if k != "tokens" and k != "cost"}
    return {**kept, **used.as_metadata()} if used is not None else kept


async def _run_unit(
    phase: Phase,
    run: RunContext,
    ctx: Mapping[str, Any],
    item: int | None,
    tried: list[int],
) -> tuple[AgentResult, bool, bool]:
    """The phase's work once (or for one foreach item, or one repeat iteration): attempts,
    retries, fallback.

    Returns (result, fallback_used, cached); ``tried[0]`` counts attempts made.
    Raises _Failed when everything failed; CancelledError passes through. When the
    agent is chosen at run time (capability, select), the result's metadata names it.
    """
    if phase.choice is None and phase.capability is None:
        if (
            phase.retries.attempts == 0
            and phase.timeout is None
            and phase.fallback is None
            and phase.handoff is None
            and (phase.cache is None or run.cache is None)
        ):  # the hot path: one call, no retry, timeout, fallback or cache machinery
            return await _one_call(phase, run, ctx, item, tried), False, False
        return await _attempts(phase, run, ctx, item, tried, phase.agent or "", [None])
    name = ""
    if phase.choice is not None:
        try:
            name = await rendered(
                phase.choice.select,
                lambda: selected_agent(phase, ctx),
                timeout=phase.timeout,
                left=seconds_left(run),
            )
        except ExpressionError as exc:
            raise _Failed(f"agent select: {exc.headline}", 0) from None
        except AgentFailure as exc:
            raise _Failed(exc.headline, 0) from None
    used: list[str | None] = [name or None]
    result, fallback_used, cached = await _attempts(phase, run, ctx, item, tried, name, used)
    if used[0] is not None and not fallback_used:
        result = AgentResult(result.output, {**result.metadata, "agent": used[0]}, result.handoff)
    return result, fallback_used, cached


async def _one_call(
    phase: Phase, run: RunContext, ctx: Mapping[str, Any], item: int | None, tried: list[int]
) -> AgentResult:
    """``_run_unit`` of a phase with one agent and nothing around its one call."""
    name = phase.agent or ""
    inp, templated = merged_input(run, name, phase.with_)
    if templated:
        try:
            inp = await render_input(
                run, name, phase.with_, ctx, phase.location, locations=phase.locations
            )
        except ExpressionError as exc:
            raise _Failed(exc.headline, 0) from None
    tried[0] = 1
    try:
        return await call_agent(
            run, make_spec(run, phase.id, name, inp, item=item, deadline=run.deadline)
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing agent is a failed phase
        raise _Failed(describe(exc), 1) from None


def _cache_input(
    run: RunContext,
    phase: Phase,
    name: str,
    inp: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, Any]],
    ctx: Mapping[str, Any],
) -> tuple[str, Mapping[str, Any]]:
    """What a cached call is keyed on (agent type, input): the agent's type and its rendered
    input; for a ``capability`` phase, the capability and each of its agents' type and
    input (whichever takes the call); in a ``repeat`` loop the iteration number too
    (iteration 2 is never answered with iteration 1's output; a re-run loop gets each
    iteration from the cache)."""
    if phase.capability is not None:
        kind = f"capability:{phase.capability}"
        inp = {a: {"type": run.pool.types[a], "input": inputs[a]} for a in sorted(inputs)}
    else:
        kind = run.pool.types[name]
    iteration = ctx.get("iteration")
    n = iteration.get("n") if isinstance(iteration, Mapping) else None
    return kind, keyed_input(inp, n if isinstance(n, int) else None)


async def _attempts(
    phase: Phase,
    run: RunContext,
    ctx: Mapping[str, Any],
    item: int | None,
    tried: list[int],
    name: str,
    used: list[str | None],
) -> tuple[AgentResult, bool, bool]:
    """``_run_unit`` once the agent is known (``name``), or chosen per call (capability:
    ``used[0]`` is set to the agent of the last call)."""
    handoff = phase.handoff
    routed = phase.capability is not None
    inputs: dict[str, Mapping[str, Any]] = {}

    async def input_of(agent: str) -> Mapping[str, Any]:
        return await render_input(
            run, agent, phase.with_, ctx, phase.location,
            timeout=phase.timeout, locations=phase.locations,
        )  # fmt: skip

    try:
        inp: Mapping[str, Any] = {}
        if handoff is not None or routed:
            for a in handoff.agents if handoff is not None else phase.candidates:
                inputs[a] = await input_of(a)
        else:
            inp = await input_of(name)
    except ExpressionError as exc:
        raise _Failed(exc.headline, 0) from None
    cache = run.cache if phase.cache is not None and handoff is None and (name or routed) else None
    timeout = phase.timeout
    kind, keyed = (
        _cache_input(run, phase, name, inp, inputs, ctx) if cache is not None else ("", inp)
    )
    if cache is not None and run.cache_reads:
        hit = await cache.get(phase, kind, keyed)
        if hit is not None:  # a capability phase's hit names the agent that made the call
            return hit, False, True

    async def attempt(n: int) -> AgentResult:
        tried[0] = n
        deadline = _deadline(run, timeout)
        if handoff is not None:
            coro = _handoff(run, phase, inputs, n, item, deadline)
        elif routed:
            coro = _routed(run, phase, inputs, n, item, deadline, used)
        else:
            spec = make_spec(run, phase.id, name, inp, attempt=n, item=item, deadline=deadline)
            coro = call_agent(run, spec)
        try:
            return await bounded(run, coro, timeout, phase.id, name, n, item)
        except PhaseTimeout as exc:
            if routed:  # the agent the cut call went to counts the failure
                await breaker_failure(run, used[0], exc, phase.id, n, item)
            raise

    error: BaseException
    budget_out = [False]  # a retry was refused because the run's max_total_retries ran out

    def should_retry(exc: BaseException) -> bool:
        # tenacity asks after the last attempt too: no budget is spent there
        if tried[0] > phase.retries.attempts or not _retryable(phase, exc):
            return False
        if run.take_retry():
            return True
        budget_out[0] = True
        return False

    try:
        if phase.retries.attempts > 0:
            result = await call_with_retries(
                phase.retries,
                attempt,
                should_retry=should_retry,
                on_retry=lambda n, exc, delay, bound: run.bus.emit(
                    ev.phase_retry(
                        run.run_id,
                        run.now(),
                        phase.id,
                        n,
                        error=describe(exc),
                        delay=delay,
                        item=item,
                        bound=bound,
                        spent=_spent(run, phase.id),  # what a resume counts, if killed
                    )
                ),
                first=_first_attempt(run, phase, item),
                timeout=timeout,
                deadline=run.deadline,
                monotonic=run.monotonic,
            )
        else:
            result = await attempt(1)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing agent is a failed phase, never a crash
        error = exc
    else:
        if cache is not None and not _holds_secret(run, result):
            chosen = {"agent": used[0]} if routed and used[0] is not None else {}
            stored = AgentResult(result.output, {**result.metadata, **chosen}, result.handoff)
            await cache.put(phase, kind, keyed, stored)
        return result, False, False
    message = describe(error)
    if budget_out[0]:
        budget = run.workflow.error_handling.max_total_retries
        message += f"; the run's retry budget (max_total_retries: {budget}) was used up"
    fallback = phase.fallback
    if fallback is None:
        raise _Failed(message, tried[0])
    n = tried[0] + 1
    try:
        where = fallback.location or phase.location
        fb_input = await render_input(
            run, fallback.agent, fallback.with_, ctx, where, timeout=timeout
        )
        spec = make_spec(
            run,
            phase.id,
            fallback.agent,
            fb_input,
            attempt=n,
            item=item,
            deadline=_deadline(run, timeout),
        )
        result = await bounded(
            run, call_agent(run, spec), timeout, phase.id, fallback.agent, n, item
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        raise _Failed(f"{message}; fallback failed: {describe(exc)}", tried[0]) from None
    return result, True, False


def _holds_secret(run: RunContext, result: AgentResult) -> bool:
    """Whether a result holds a secret of the run (a sub-run's own ones too, which the
    store's cache does not know): it is not cached (masked, a hit would serve ``***``)."""
    if not run.masker:
        return False
    shown = [result.output, result.metadata]
    return bool(run.masker.mask(shown) != shown)


def _deadline(run: RunContext, timeout: float | None) -> float | None:
    """The monotonic deadline of an attempt: its timeout, within the run's."""
    deadline = run.deadline
    if timeout is not None:
        end = run.monotonic() + timeout
        deadline = end if deadline is None else min(deadline, end)
    return deadline


async def _routed(
    run: RunContext,
    phase: Phase,
    rendered: Mapping[str, Mapping[str, Any]],
    attempt: int,
    item: int | None,
    deadline: float | None,
    used: list[str | None],
) -> AgentResult:
    """One call of a ``capability`` phase: to the least-loaded healthy agent; when its
    circuit breaker refuses the call, to the next one."""
    refused: list[str] = []
    while True:
        name = least_loaded(run, phase, skip=refused)
        used[0] = name
        spec = make_spec(
            run, phase.id, name, rendered[name], attempt=attempt, item=item, deadline=deadline
        )
        try:
            return await call_agent(run, spec)
        except BreakerOpen:
            refused.append(name)


def _retryable(phase: Phase, exc: BaseException) -> bool:
    """Whether the phase's retry policy retries this failure (the run's budget aside)."""
    if isinstance(exc, PhaseTimeout):
        kind = "timeout"
    elif isinstance(exc, AgentFailure):
        if not exc.transient:
            return False
        kind = "error"
    elif isinstance(exc, OrchError):
        return False  # expression and configuration errors do not heal by themselves
    else:
        kind = "error"
    return kind in phase.retries.on


async def _handoff(
    run: RunContext,
    phase: Phase,
    rendered: Mapping[str, Mapping[str, Any]],
    attempt: int,
    item: int | None,
    deadline: float | None,
) -> AgentResult:
    """Agents pass control: turn 1 is ``start``; each names the next in ``AgentResult.handoff``.

    From turn 2 the input is the agent's rendered ``with`` plus
    ``{"handoff": {"from": previous agent, "output": its output, "turn": n}}``.
    """
    spec = phase.handoff
    assert spec is not None
    current = spec.start
    previous: tuple[str, Any] | None = None
    for turn in range(1, spec.max_turns + 1):
        inp = rendered[current]
        if previous is not None:
            inp = {**inp, "handoff": {"from": previous[0], "output": previous[1], "turn": turn}}
        call = make_spec(
            run, phase.id, current, inp, attempt=attempt, item=item, turn=turn, deadline=deadline
        )
        result = await call_agent(run, call)
        nxt = result.handoff
        await run.bus.emit(
            ev.phase_turn(
                run.run_id,
                run.now(),
                phase.id,
                attempt,
                n=turn,
                agent=current,
                next=nxt,
                item=item,
                spent=_spent(run, phase.id),  # what a resume counts, if the run is killed
            )
        )
        if nxt is None:  # the phase's tokens and cost: every turn's (``_spent``)
            result.metadata = {**result.metadata, "turns": turn}
            return result
        if nxt not in spec.agents:
            raise AgentFailure(
                f"agent '{current}' handed off to '{nxt}', which is not one of the handoff "
                f"agents ({', '.join(spec.agents)})",
                transient=False,
            )
        previous = (current, result.output)
        current = nxt
    raise AgentFailure(
        f"the handoff did not finish within max_turns={spec.max_turns} "
        f"(turn {spec.max_turns} by '{previous[0] if previous else spec.start}' "
        f"handed off to '{current}')",
        transient=False,
    )


async def _run_foreach(
    phase: Phase, run: RunContext, ctx: Mapping[str, Any], started: float, most: list[int]
) -> PhaseOutcome:
    """Each item runs as its own unit; the output is the item outputs in input order.

    A failed item's entry is ``{"error": message}``; the phase fails if any item failed.
    """
    pid = phase.id
    try:
        items = await rendered(
            phase.foreach,
            lambda: render(
                phase.foreach, ctx, where=phase.locations.get("foreach", phase.location)
            ),
            timeout=phase.timeout,
            left=seconds_left(run),
        )
    except ExpressionError as exc:
        return await _failed(run, phase, started, f"foreach: {exc.headline}", 0)
    if isinstance(items, Mapping) or not isinstance(items, (list, tuple)):
        return await _failed(
            run, phase, started, f"foreach must give a list, got {type(items).__name__}", 0
        )
    total = len(items)
    agent = phase.agent_label
    # items completed before a crash (resume): their outputs are kept, they do not run again
    kept = run.options.resume_items.get(pid, {})
    done = [sum(1 for index in kept if 0 <= index < total)]
    await run.bus.emit(
        ev.phase_started(run.run_id, run.now(), pid, 1, agent=agent, items=total, kept=done[0])
    )
    outputs: list[Any] = [None] * total
    errors: list[tuple[int, str]] = []
    agents: dict[str, int] = {}  # calls per agent, when the agent is chosen at run time
    fallback_any = [False]
    hits = [0]  # items served from the cache
    for index, output in kept.items():
        if 0 <= index < total:
            outputs[index] = output
    source = iter([(i, item) for i, item in enumerate(items) if i not in kept])

    async def worker() -> None:
        for index, item in source:
            tried = [0]
            item_ctx = {**ctx, "item": item, "index": index}
            completed = False
            try:
                result, fallback_used, hit = await _run_unit(phase, run, item_ctx, index, tried)
                completed = True
            except _Failed as failure:
                outputs[index] = {"error": failure.message}
                errors.append((index, failure.message))
                tried[0] = failure.attempts
            else:
                outputs[index] = result.output
                chosen = result.metadata.get("agent")  # capability routing, agent select
                if isinstance(chosen, str):
                    agents[chosen] = agents.get(chosen, 0) + 1
                fallback_any[0] = fallback_any[0] or fallback_used
                hits[0] += hit
            finally:  # also when cancelled: the phase_failed event counts this item's attempts
                most[0] = max(most[0], tried[0])
            done[0] += 1
            await run.bus.emit(
                ev.phase_progress(
                    run.run_id,
                    run.now(),
                    pid,
                    done[0],
                    total,
                    item=index if completed else None,
                    output=outputs[index],
                    spent=_spent(run, pid),  # what a resume counts, if the run is killed
                )
            )

    width = min(phase.max_parallel or total, total)
    if width == 1:
        await worker()
    elif width > 1:
        await asyncio.gather(*(worker() for _ in range(width)))
    attempts = most[0]
    if errors:
        errors.sort()
        first_index, first = errors[0]
        message = (
            f"{len(errors)} of {total} items failed; "
            f"item {first_index + 1} of {total} (index {first_index}): {first}"
        )
        return await _failed(run, phase, started, message, attempts, outputs)
    # tokens and cost: what every item's calls used (``_completed``)
    metadata = {"agents": dict(sorted(agents.items()))} if agents else {}
    # every item from the cache: the phase is cached (and made no attempt), as a plain one
    cached = total > 0 and hits[0] == total
    outcome, recorded = _completed(
        run, phase, started, outputs, attempts, fallback_any[0], cached, metadata
    )
    await recorded
    return outcome


async def _run_repeat(
    phase: Phase,
    run: RunContext,
    ctx: Mapping[str, Any],
    started: float,
    tried: list[int],
    approval: Mapping[str, Any],
) -> PhaseOutcome:
    """``repeat: {until, max}``: the phase's whole unit (attempts, retries, fallback) runs
    per iteration with ``iteration`` = ``{n, previous, max}`` (``previous``: the last
    output, None at first). After each, ``until`` is evaluated with ``output`` and
    ``iteration``; ``phase_iteration`` (iteration, output, done) is the checkpoint
    ``orch resume`` goes on from. The phase completes with the last output when
    ``until`` is true or after ``max``; it fails when an iteration fails. On a
    ``workflow`` phase each iteration is a whole sub-run (write -> review -> revise)."""
    spec = phase.repeat
    assert spec is not None
    pid = phase.id
    # resumed: go on after the last checkpointed iteration (finished: until was true there)
    done_n, previous, finished = run.options.resume_iterations.get(pid, (0, None, False))
    await run.bus.emit(
        ev.phase_started(run.run_id, run.now(), pid, 1, agent=phase.agent_label, approval=approval)
    )
    agents: list[str] = []
    fallback_any = False
    n = done_n
    until_at = phase.locations.get("repeat.until", phase.location)
    while n < spec.max and not finished:
        n += 1
        iteration = {"n": n, "previous": previous, "max": spec.max}
        it_ctx = {**ctx, "iteration": iteration}
        token = ITERATION.set((run.run_id, pid, n))  # sub-runs are addressed `pid#n`
        try:
            result, fallback_used, _ = await _run_unit(phase, run, it_ctx, None, tried)
        except _Failed as failure:
            message = f"iteration {n}: {failure.message}"
            return await _failed(run, phase, started, message, failure.attempts)
        finally:
            ITERATION.reset(token)
        fallback_any = fallback_any or fallback_used
        chosen = result.metadata.get("agent")
        if isinstance(chosen, str):
            agents.append(chosen)
        if spec.until is not None:
            until, until_ctx = spec.until, {**it_ctx, "output": result.output}
            try:
                finished = bool(
                    await rendered(
                        "{{ " + until + " }}",
                        functools.partial(evaluate, until, until_ctx, where=until_at),
                        timeout=phase.timeout,
                        left=seconds_left(run),
                    )
                )
            except ExpressionError as exc:
                return await _failed(run, phase, started, f"repeat.until: {exc.headline}", tried[0])
        previous = result.output
        details: dict[str, Any] = {"done": finished}
        if isinstance(chosen, str):
            details["agent"] = chosen
        spent = _spent(run, pid)  # what a resume counts, if the run is killed
        if spent:
            details["spent"] = spent
        await run.bus.emit(
            ev.phase_iteration(
                run.run_id, run.now(), pid, iteration=n, output=result.output, details=details
            )
        )
    metadata: dict[str, Any] = {"iterations": n}  # tokens, cost: every iteration's
    if agents:
        metadata["agent"] = agents[-1]
    if spec.until is not None:  # false: stopped at max with until never true
        metadata["until_met"] = finished
        if not finished and spec.on_max == "fail":
            message = (
                f"repeat stopped at max ({spec.max} iteration{'s' if spec.max != 1 else ''})"
                f" without until being true: {spec.until} (on_max: fail)"
            )
            return await _failed(
                run, phase, started, message, tried[0], previous, reported=metadata
            )
    outcome, recorded = _completed(
        run, phase, started, previous, tried[0], fallback_any, False, metadata
    )
    await recorded
    return outcome
