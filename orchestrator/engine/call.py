"""THE one way to call an agent: phase attempts, foreach items, fallbacks, handoff
turns, handlers and compensations all come through here.

The path of one call, in order (each step is one function below)::

    render_input   the call's `with:` merged over the named agent's (Workflow.call_input),
                   rendered against the run's context (shell_fields shell-quoted);
                   memoised per run when it holds no template
    make_spec      -> CallSpec: plain data (executor.py), with the idempotency key
    call_agent     stream masker + CallChannel, then
      middleware   RunOptions.call_middleware, outermost first: (spec, channel, next)
      _invoke      the agent's limiter (concurrency, rate limit, circuit breaker)
      executor     RunOptions.executor (LocalExecutor by default) runs the call
      normalise    the result as an AgentResult of JSON data (result.json_data)
    spend        before: the budgets (budget.py, BudgetExceeded); after: tokens and cost
    bounded        the per-call or per-chain timeout (PhaseTimeout; counts for the breaker)

Extension points: a middleware sees every call before (it may change the spec,
answer without calling, time it) and after (the result or the exception); an
executor decides where the call runs. A phase's cache hit makes no call, so no
middleware sees it: a middleware with a true ``needs_every_call`` attribute
(``--record``) turns cache lookups off for the run (results are still stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any

from ..agents.base import AgentFailure, AgentResult
from ..errors import ExpressionError, Location, OrchError, PhaseTimeout
from ..events import StreamMasker, breaker_opened, phase_stream
from ..expr import has_template, render
from ..jsontext import NotJson, bad_number
from ..usage import checked_usage
from .context import ITERATION, RunContext, SubRuns
from .executor import CallChannel, CallMiddleware, CallNext, CallSpec
from .limits import CircuitBreaker, OnOpen
from .rendering import rendered
from .result import PLAIN, json_data

__all__ = [
    "CallMiddleware",
    "CallNext",
    "bounded",
    "call_agent",
    "describe",
    "make_spec",
    "merged_input",
    "render_input",
    "seconds_left",
]


async def render_input(
    run: RunContext,
    agent: str | None,
    with_: Mapping[str, Any],
    ctx: Mapping[str, Any],
    where: Location | None,
    *,
    timeout: float | None = None,
    locations: Mapping[str, Location] | None = None,
) -> Mapping[str, Any]:
    """The input of one call: ``with_`` merged over ``agent``'s own ``with``, rendered.

    Keys the agent type lists in ``shell_fields`` are rendered with
    ``expr.render_shell`` (every value shell-quoted). A failing template is
    located at its key (``locations["with.KEY"]``, else ``where``). A costly template renders
    off the event loop within ``timeout`` (the phase's) and the run's timeout
    (engine/rendering.py). Raises ExpressionError.
    """
    merged, templated = merged_input(run, agent, with_)
    if not templated:
        return merged  # checked against the agent's schema when the workflow loaded
    value = await rendered(
        merged,
        lambda: _render(run, agent, merged, ctx, where, locations or {}),
        timeout=timeout,
        left=seconds_left(run),
    )
    _check_rendered(run, agent, value, where, locations or {})
    return value


def merged_input(
    run: RunContext, agent: str | None, with_: Mapping[str, Any]
) -> tuple[Mapping[str, Any], bool]:
    """``with_`` merged over ``agent``'s own ``with`` and whether it holds a template,
    memoised per run (``render_input`` without the rendering: a caller that finds no
    template uses the merged input as it is, without awaiting anything)."""
    key = (agent, id(with_) if with_ else 0)  # every empty `with:` is the same
    found = run.memo.get(key)
    if found is None:
        merged = run.workflow.call_input(agent, with_)
        found = run.memo[key] = (merged, has_template(merged), with_)  # with_ kept alive
    return found[0], found[1]


def _check_rendered(
    run: RunContext,
    agent: str | None,
    value: Mapping[str, Any],
    where: Location | None,
    locations: Mapping[str, Location],
) -> None:
    """A rendered input that fails the agent type's config schema fails the call
    before the agent sees it (ExpressionError: a template gave a wrong value)."""
    instance = run.pool.agents.get(agent or "")
    schema = getattr(instance, "config_schema", None)
    if not schema:
        return
    from ..spec.schema import rendered_config_problems  # jsonschema: loaded by the spec

    found = rendered_config_problems(value, schema)
    if found:
        type_name = run.pool.types.get(agent or "", agent)
        first = found[0][0]
        at = locations.get(f"with.{first[0]}") if first else None
        raise ExpressionError(
            f"the rendered input does not fit agent type '{type_name}': "
            + "; ".join(message for _, message in found),
            location=at or where or Location(run.workflow.path),
        )


def seconds_left(run: RunContext) -> float | None:
    """Seconds before the run's timeout (None: it has none)."""
    return None if run.deadline is None else run.deadline - run.monotonic()


def _render(
    run: RunContext,
    agent: str | None,
    merged: Mapping[str, Any],
    ctx: Mapping[str, Any],
    where: Location | None,
    locations: Mapping[str, Location],
) -> Mapping[str, Any]:
    shell: tuple[str, ...] = getattr(run.pool.agents.get(agent or ""), "shell_fields", ())
    if shell:
        from ..expr import render_shell  # here: only agents with shell command lines need it
    return {
        k: render_shell(v, ctx, where=locations.get(f"with.{k}", where))
        if k in shell and isinstance(v, str)
        else render(v, ctx, where=locations.get(f"with.{k}", where))
        for k, v in merged.items()
    }


def make_spec(
    run: RunContext,
    phase_id: str,
    agent: str,
    input: Mapping[str, Any],
    *,
    attempt: int = 1,
    item: int | None = None,
    turn: int = 1,
    deadline: float | None = None,
) -> CallSpec:
    """The CallSpec of one call of ``agent`` (a named agent or a bare type) for a phase.

    ``deadline`` is on the run's monotonic clock (None: none). ``resources`` are
    the phase's (``resources:``), for every call made for it.
    """
    item_part = f"[{item}]" if item is not None else ""
    iteration = ITERATION.get()  # a repeat loop's iteration n: from the second, "@n"
    if iteration is not None and iteration[2] > 1 and iteration[:2] == (run.run_id, phase_id):
        item_part = f"@{iteration[2]}{item_part}"
    turn_part = f"#{turn}" if turn > 1 else ""
    epoch = run.options.key_epochs.get(phase_id)
    if epoch:  # the phase failed in an earlier launch: these attempts are new requests
        turn_part += f"~{epoch}"
    return CallSpec(  # by position, in the order of its fields (keywords: ~1 us more a call)
        run.run_id,
        phase_id,
        attempt,
        agent,
        run.pool.types.get(agent, agent),  # agent_type
        input,
        f"{run.run_id}/{phase_id}{item_part}/{attempt}{turn_part}",  # idempotency_key
        None if deadline is None else max(0.0, deadline - run.monotonic()),  # time_left
        run.workdir,
        item,
        turn,
        run.secrets,
        _resources(run).get(phase_id, {}),  # resources
        run.options.depth,
    )


def _resources(run: RunContext) -> Mapping[str, Mapping[str, float]]:
    """``resources`` of every phase (handlers included) that has some, made once per run."""
    found: Mapping[str, Mapping[str, float]] | None = run.memo.get(_resources)
    if found is None:
        wf = run.workflow
        every = (*wf.phases, *wf.on_success, *wf.on_failure, *wf.finally_)
        found = run.memo[_resources] = {p.id: p.resources for p in every if p.resources}
    return found


class _Stream:
    """The stream callback of one call: masked ``phase_stream`` events."""

    __slots__ = ("run", "spec", "masker")

    def __init__(self, run: RunContext, spec: CallSpec) -> None:
        self.run = run
        self.spec = spec
        self.masker: StreamMasker | None = None

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
        spec = self.spec
        await self.run.bus.emit(
            phase_stream(
                spec.run_id, self.run.now(), spec.phase_id, spec.attempt, text, item=spec.item
            )
        )

    async def flush(self) -> None:
        if self.masker is not None:
            rest = self.masker.flush()
            self.masker = None
            if rest:
                await self._send(rest)


def describe(exc: BaseException) -> str:
    """A one-line description of an agent's exception for events and reports."""
    if isinstance(exc, OrchError):
        return exc.headline
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def on_breaker_open(
    run: RunContext, phase_id: str, attempt: int | None, item: int | None = None
) -> OnOpen:
    """What a call made for ``phase_id`` does when its failure opens a circuit breaker:
    a ``breaker_opened`` event (stored before the failure goes on)."""

    async def opened(breaker: CircuitBreaker, error: BaseException) -> None:
        await run.bus.emit(
            breaker_opened(
                run.run_id,
                run.now(),
                phase_id,
                attempt,
                agent=breaker.agent,
                failures=breaker.consecutive,
                reset_after=breaker.spec.reset_after,
                error=describe(error),
                item=item,
            )
        )

    return opened


async def breaker_failure(
    run: RunContext,
    agent: str | None,
    error: BaseException,
    phase_id: str,
    attempt: int | None,
    item: int | None = None,
) -> None:
    """A call of ``agent`` was cut (its timeout): its circuit breaker counts a failure."""
    limiter = run.pool.limiters.get(agent or "")
    if limiter is not None:
        await limiter.failed(error, on_breaker_open(run, phase_id, attempt, item))


def _invoke(run: RunContext, spec: CallSpec, channel: CallChannel) -> Awaitable[Any]:
    """The agent's limits around the executor's call (an agent without limits: the
    executor's call itself, with no step in between)."""
    limiter = run.pool.limiters.get(spec.agent_name)
    if limiter is None:
        return run.executor.call(spec, channel)
    on_open = (
        None
        if limiter.breaker is None
        else on_breaker_open(run, spec.phase_id, spec.attempt, spec.item)
    )
    return limiter.call(lambda: run.executor.call(spec, channel), on_open)


def _chain(run: RunContext) -> CallNext:
    """The middleware chain around ``_invoke``, built once per run."""
    chain = run.memo.get(_chain)
    if chain is None:

        async def innermost(spec: CallSpec, channel: CallChannel) -> Any:
            return await _invoke(run, spec, channel)

        chain = innermost
        for middleware in reversed(run.middleware):
            chain = _wrap(middleware, chain)
        run.memo[_chain] = chain
    return chain


def _wrap(middleware: CallMiddleware, inner: CallNext) -> CallNext:
    async def step(spec: CallSpec, channel: CallChannel) -> Any:
        return await middleware(spec, channel, inner)

    return step


async def call_agent(run: RunContext, spec: CallSpec) -> AgentResult:
    """Make one agent call through the middleware, the limits and the executor.

    Returns the result with its output and metadata as JSON data. Raises what
    the agent raises (AgentFailure...), or AgentFailure when its circuit breaker
    is open; CancelledError passes through (the executor stops the work).
    """
    spend = run.spend
    spend.check(spec.phase_id)  # BudgetExceeded once a budget is used up
    stream = _Stream(run, spec)
    sub_runs = SubRuns(run, spec.phase_id, spec.item)  # their spending counts here
    channel = CallChannel(stream, sub_runs, run.pool.agent(spec.agent_name), run.masker)
    in_flight = run.in_flight  # calls under way per agent (capability routing reads it)
    in_flight[spec.agent_name] = in_flight.get(spec.agent_name, 0) + 1
    try:
        if run.middleware:
            result = await _chain(run)(spec, channel)
        else:
            result = await _invoke(run, spec, channel)
    except AgentFailure as exc:  # a failed call may have used tokens too
        spend.add(spec.phase_id, exc.metadata)
        raise
    finally:
        in_flight[spec.agent_name] -= 1
        if stream.masker is not None:
            await stream.flush()
    if isinstance(result, AgentResult):
        spend.add(spec.phase_id, result.metadata)
    if sub_runs.used is not None:  # counted as its sub-runs spent it; reported as the call's
        result = sub_runs.reported(result)
    # The result as an AgentResult of JSON data; a number JSON cannot carry (NaN,
    # Infinity, a huge integer) or a value that is no data fails the call (permanently).
    try:
        if not isinstance(result, AgentResult):
            return AgentResult(output=json_data(result))
        output = result.output
        kind = type(output)
        if (output is not None and (kind not in PLAIN or kind is float or kind is int)) or (
            result.metadata
        ):
            metadata = checked_usage(json_data(result.metadata))
            return AgentResult(json_data(output), metadata, result.handoff)
    except NotJson as exc:
        found = bad_number(result.output if isinstance(result, AgentResult) else result)
        where = f" at {found[0]}" if found and found[0] != "$" else ""
        raise AgentFailure(
            f"the output {exc}{where}; outputs are JSON data (use null or a string instead)",
            transient=False,
        ) from None
    except (RecursionError, ValueError, TypeError) as exc:  # a cycle, a value str() refuses
        raise AgentFailure(
            f"the output of agent '{spec.agent_name}' cannot be stored as JSON: "
            f"{type(exc).__name__}: {exc}",
            transient=False,
        ) from None
    return result


async def bounded(
    run: RunContext,
    call: Coroutine[Any, Any, AgentResult],
    timeout: float | None,
    phase_id: str,
    agent: str | None,
    attempt: int | None = None,
    item: int | None = None,
) -> AgentResult:
    """``call`` within ``timeout`` seconds; past it, PhaseTimeout (and a failure for the
    agent's circuit breaker: the call was cut before it could count itself)."""
    if timeout is None:
        return await call
    try:
        return await asyncio.wait_for(call, timeout)
    except asyncio.TimeoutError:
        error = PhaseTimeout(phase_id, timeout)
        await breaker_failure(run, agent, error, phase_id, attempt, item)
        raise error from None
