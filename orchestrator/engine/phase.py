"""One phase, start to end: when -> render -> cache -> attempts (timeout, retries) -> fallback.

``LocalExecutor`` runs phases as asyncio tasks in this process. Also here:
foreach (items bounded by the phase's ``max_parallel``) and handoff (agents
passing control by naming the next one). A failing agent gives a failed
outcome, never an exception; cancellation gives a ``cancelled`` outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from ..agents.base import AgentContext, AgentFailure, AgentResult
from ..errors import ExpressionError, Location, OrchError, PhaseTimeout
from ..expr import evaluate, has_template, render
from ..spec.model import Phase
from .events import Event
from .result import PLAIN, PhaseOutcome, add_tokens, json_data
from .retry import call_with_retries
from .runner import RunState

__all__ = ["LocalExecutor", "run_phase"]


class LocalExecutor:
    """Runs each phase in the scheduler's own event loop."""

    def execute(self, phase: Phase, run: RunState) -> Coroutine[Any, Any, PhaseOutcome]:
        """The coroutine of ``run_phase``; the scheduler wraps it in a task."""
        return run_phase(phase, run)


class _Failed(Exception):
    """A unit of work (the phase, or one foreach item) failed after everything was tried."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OrchError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_phase(phase: Phase, run: RunState) -> PhaseOutcome:
    """Run one phase whose trigger rule allowed it; emit its events; return its outcome."""
    pid = phase.id
    clock = run.clock
    started = clock()
    tried = [0]  # the attempt running now (for foreach: the highest of any item)
    try:
        ctx = run.context
        if phase.previous is not None:
            ctx = {**ctx, "previous": run.outcomes.get(phase.previous)}
        if phase.when is not None:
            try:
                go = evaluate(phase.when, ctx, where=phase.location)
            except ExpressionError as exc:
                return await _failed(run, phase, started, f"when: {exc}", 0)
            if not go:
                outcome = PhaseOutcome(pid, "skipped")
                await run.emit(
                    "phase_skipped",
                    pid,
                    None,
                    {"status": "skipped", "reason": f"when is false: {phase.when}"},
                )
                return outcome
        if phase.foreach is not None:
            return await _run_foreach(phase, run, ctx, started, tried)
        agent = phase.agent or (phase.handoff.start if phase.handoff else "")
        first = _first_attempt(run, phase, None)
        event = run.publish("phase_started", pid, first, {"agent": agent})
        if run.async_sinks:
            await run.deliver(event)
        try:
            result, fallback_used, cached = await _run_unit(phase, run, ctx, None, tried)
        except _Failed as failure:
            return await _failed(run, phase, started, failure.message, failure.attempts)
        attempts = tried[0]
        ended = clock()
        metadata = result.metadata
        outcome = PhaseOutcome(
            pid,
            "completed",
            result.output,
            None,
            attempts,
            started,
            ended,
            fallback_used,
            cached,
            metadata,
        )
        event = run.publish(
            "phase_completed",
            pid,
            attempts,
            {
                "status": "completed",
                "output": result.output,
                "duration": ended - started,
                "attempts": attempts,
                "fallback_used": fallback_used,
                "cached": cached,
                "metadata": metadata,
            },
        )
        if run.async_sinks:
            await _deliver_completed(run, event)
        return outcome
    except asyncio.CancelledError:
        ended = clock()
        attempts = tried[0]
        outcome = PhaseOutcome(pid, "cancelled", None, "cancelled", attempts, started, ended)
        await run.emit(
            "phase_failed",
            pid,
            attempts or None,
            {
                "status": "cancelled",
                "error": "cancelled",
                "duration": ended - started,
                "attempts": attempts,
                "continue_on_error": phase.continue_on_error,
            },
        )
        return outcome


def _first_attempt(run: RunState, phase: Phase, item: int | None) -> int:
    """The attempt a phase resumes at after a crash (1 otherwise), within its retry budget."""
    resume = run.options.resume_attempts
    if item is not None or not resume:
        return 1
    return max(1, min(resume.get(phase.id, 1), phase.retries.attempts + 1))


async def _deliver_completed(run: RunState, event: Event) -> None:
    """Deliver a phase_completed event. A cancel arriving meanwhile (another phase failed)
    does not undo the completion: the agent's work is done and its record is queued."""
    try:
        await run.deliver(event)
    except asyncio.CancelledError:
        pass


async def _failed(
    run: RunState,
    phase: Phase,
    started: float,
    error: str,
    attempts: int,
    output: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> PhaseOutcome:
    ended = run.clock()
    outcome = PhaseOutcome(phase.id, "failed", output, error, attempts, started, ended)
    data: dict[str, Any] = {
        "status": "failed",
        "error": error,
        "duration": ended - started,
        "attempts": attempts,
        "continue_on_error": phase.continue_on_error,
    }
    if extra:
        data.update(extra)
    await run.emit("phase_failed", phase.id, attempts or None, data)
    return outcome


def _render_input(
    run: RunState, phase: Phase, agent: str | None, ctx: Mapping[str, Any]
) -> Mapping[str, Any]:
    merged, templated = run.agent_input(phase, agent)
    if not templated:
        return merged
    return _render_with(run, agent, merged, ctx, phase.location)


def _render_with(
    run: RunState,
    agent: str | None,
    merged: Mapping[str, Any],
    ctx: Mapping[str, Any],
    where: Location | None,
) -> Mapping[str, Any]:
    """Render an agent's input; the agent type's ``shell_fields`` are shell-quoted."""
    shell: tuple[str, ...] = getattr(run.agents.get(agent or ""), "shell_fields", ())
    if not shell:
        value = render(merged, ctx, where=where)
        return value if isinstance(value, Mapping) else {"value": value}
    from ..expr import render_shell  # here: only agents with shell command lines need it

    return {
        k: render_shell(v, ctx, where=where)
        if k in shell and isinstance(v, str)
        else render(v, ctx, where=where)
        for k, v in merged.items()
    }


async def _run_unit(
    phase: Phase,
    run: RunState,
    ctx: Mapping[str, Any],
    item: int | None,
    tried: list[int],
) -> tuple[AgentResult, bool, bool]:
    """The phase's work once (or for one foreach item): attempts, retries, fallback.

    Returns (result, fallback_used, cached); ``tried[0]`` counts attempts made.
    Raises _Failed when everything failed; CancelledError passes through.
    """
    name = phase.agent
    handoff = phase.handoff
    rendered: dict[str, Mapping[str, Any]] = {}
    try:
        if handoff is not None:
            for a in handoff.agents:
                rendered[a] = _render_input(run, phase, a, ctx)
            inp: Mapping[str, Any] = {}
        else:
            inp = _render_input(run, phase, name, ctx)
    except ExpressionError as exc:
        raise _Failed(str(exc), 0) from None
    cache = run.cache
    timeout = phase.timeout
    if (
        phase.retries.attempts == 0
        and timeout is None
        and phase.fallback is None
        and handoff is None
        and (cache is None or phase.cache is None)
    ):  # the hot path: one call, no retry or timeout machinery
        tried[0] = 1
        try:
            return await _call(run, phase.id, name or "", inp, 1, item, run.deadline), False, False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing agent is a failed phase
            raise _Failed(_describe(exc), 1) from None
    if cache is not None and phase.cache is not None and handoff is None and name:
        hit = await cache.get(phase, run.agent_types[name], inp)
        if hit is not None:
            return hit, False, True

    async def attempt(n: int) -> AgentResult:
        tried[0] = n
        deadline = run.deadline
        if timeout is not None:
            end = time.monotonic() + timeout
            deadline = end if deadline is None else min(deadline, end)
        if handoff is not None:
            coro = _handoff(run, phase, rendered, n, item, deadline)
        else:
            coro = _call(run, phase.id, name or "", inp, n, item, deadline)
        if timeout is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            limiter = run.limiters.get(name or "")
            if limiter is not None and limiter.breaker is not None:
                limiter.breaker.record(False)
            raise PhaseTimeout(phase.id, timeout) from None

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
                on_retry=lambda n, exc, delay: run.emit(
                    "phase_retry",
                    phase.id,
                    n,
                    {"error": _describe(exc), "delay": delay, "next_attempt": n + 1, "item": item}
                    if item is not None
                    else {"error": _describe(exc), "delay": delay, "next_attempt": n + 1},
                ),
                first=_first_attempt(run, phase, item),
            )
        else:
            result = await attempt(1)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing agent is a failed phase, never a crash
        error = exc
    else:
        if cache is not None and phase.cache is not None and handoff is None and name:
            await cache.put(phase, run.agent_types[name], inp, result)
        return result, False, False
    message = _describe(error)
    if budget_out[0]:
        budget = run.workflow.error_handling.max_total_retries
        message += f"; the run's retry budget (max_total_retries: {budget}) was used up"
    fallback = phase.fallback
    if fallback is None:
        raise _Failed(message, tried[0])
    n = tried[0] + 1
    try:
        spec = run.workflow.agents.get(fallback.agent)
        merged = {**spec.with_, **fallback.with_} if spec and spec.with_ else fallback.with_
        fb_input = (
            _render_with(run, fallback.agent, merged, ctx, fallback.location or phase.location)
            if has_template(merged)
            else merged
        )
        coro = _call(run, phase.id, fallback.agent, fb_input, n, item, None)
        if timeout is None:
            result = await coro
        else:
            try:
                result = await asyncio.wait_for(coro, timeout)
            except asyncio.TimeoutError:
                raise PhaseTimeout(phase.id, timeout) from None
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        raise _Failed(f"{message}; fallback failed: {_describe(exc)}", tried[0]) from None
    return result, True, False


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


class _Stream:
    """The AgentContext stream callback of one attempt: masked phase_stream events."""

    __slots__ = ("run", "phase", "attempt", "item", "masker")

    def __init__(self, run: RunState, phase: str, attempt: int, item: int | None) -> None:
        self.run = run
        self.phase = phase
        self.attempt = attempt
        self.item = item
        self.masker: Any = None

    async def __call__(self, text: str) -> None:
        run = self.run
        if run.masker:
            if self.masker is None:
                self.masker = run.masker.stream()
            text = self.masker.feed(text)
            if not text:
                return
        await self._send(text)

    async def _send(self, text: str) -> None:
        data: dict[str, Any] = {"text": text}
        if self.item is not None:
            data["item"] = self.item
        await self.run.emit("phase_stream", self.phase, self.attempt, data)

    async def flush(self) -> None:
        if self.masker is not None:
            rest = self.masker.flush()
            self.masker = None
            if rest:
                await self._send(rest)


async def _call(
    run: RunState,
    phase_id: str,
    name: str,
    inp: Mapping[str, Any],
    attempt: int,
    item: int | None,
    deadline: float | None,
    turn: int = 1,
) -> AgentResult:
    agent = run.agents[name]
    stream = _Stream(run, phase_id, attempt, item)
    ctx = AgentContext(
        run.run_id,
        phase_id,
        attempt,
        name,
        run.workdir,
        deadline,
        item,
        run.secrets,
        stream,
        run.run_workflow,
        turn,
    )
    limiter = run.limiters.get(name)
    try:
        if limiter is None:
            result = await agent.run(inp, ctx)
        else:
            result = await limiter.call(agent.run, inp, ctx)
    finally:
        if stream.masker is not None:
            await stream.flush()
    if not isinstance(result, AgentResult):
        return AgentResult(output=json_data(result))
    output = result.output
    if (output is not None and type(output) not in PLAIN) or result.metadata:
        return AgentResult(json_data(output), json_data(result.metadata), result.handoff)
    return result


async def _handoff(
    run: RunState,
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
    tokens: dict[str, int] = {}
    for turn in range(1, spec.max_turns + 1):
        inp = rendered[current]
        if previous is not None:
            inp = {**inp, "handoff": {"from": previous[0], "output": previous[1], "turn": turn}}
        result = await _call(run, phase.id, current, inp, attempt, item, deadline, turn)
        add_tokens(tokens, result.metadata)
        nxt = result.handoff
        data: dict[str, Any] = {"turn": {"n": turn, "agent": current, "next": nxt}}
        if item is not None:
            data["item"] = item
        await run.emit("phase_stream", phase.id, attempt, data)
        if nxt is None:
            if tokens:  # the phase used what every turn used
                result.metadata = {**result.metadata, "tokens": tokens, "turns": turn}
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
    phase: Phase, run: RunState, ctx: Mapping[str, Any], started: float, most: list[int]
) -> PhaseOutcome:
    """Each item runs as its own unit; the output is the item outputs in input order.

    A failed item's entry is ``{"error": message}``; the phase fails if any item failed.
    """
    pid = phase.id
    try:
        items = render(phase.foreach, ctx, where=phase.location)
    except ExpressionError as exc:
        return await _failed(run, phase, started, f"foreach: {exc}", 0)
    if isinstance(items, Mapping) or not isinstance(items, (list, tuple)):
        return await _failed(
            run,
            phase,
            started,
            f"foreach must give a list, got {type(items).__name__}",
            0,
        )
    total = len(items)
    agent = phase.agent or (phase.handoff.start if phase.handoff else "")
    await run.emit("phase_started", pid, 1, {"agent": agent, "items": total})
    outputs: list[Any] = [None] * total
    errors: list[tuple[int, str]] = []
    tokens: dict[str, int] = {}
    fallback_any = [False]
    done = [0]
    source = iter(enumerate(items))

    async def worker() -> None:
        for index, item in source:
            tried = [0]
            item_ctx = {**ctx, "item": item, "index": index}
            try:
                result, fallback_used, _ = await _run_unit(phase, run, item_ctx, index, tried)
            except _Failed as failure:
                outputs[index] = {"error": failure.message}
                errors.append((index, failure.message))
                tried[0] = failure.attempts
            else:
                outputs[index] = result.output
                add_tokens(tokens, result.metadata)
                fallback_any[0] = fallback_any[0] or fallback_used
            finally:  # also when cancelled: the phase_failed event counts this item's attempts
                most[0] = max(most[0], tried[0])
            done[0] += 1
            await run.emit(
                "phase_stream", pid, None, {"progress": {"done": done[0], "total": total}}
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
        return await _failed(run, phase, started, message, attempts, outputs, {"output": outputs})
    ended = run.clock()
    metadata: dict[str, Any] = {"tokens": tokens} if tokens else {}
    outcome = PhaseOutcome(
        pid, "completed", outputs, None, attempts, started, ended, fallback_any[0], False, metadata
    )
    event = run.publish(
        "phase_completed",
        pid,
        attempts,
        {
            "status": "completed",
            "output": outputs,
            "duration": ended - started,
            "attempts": attempts,
            "fallback_used": fallback_any[0],
            "cached": False,
            "metadata": metadata,
        },
    )
    if run.async_sinks:
        await _deliver_completed(run, event)
    return outcome
