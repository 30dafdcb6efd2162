"""Retries of a phase's attempts: the only module that imports tenacity.

Always bounded (``RetrySpec.attempts`` retries after the first try); what is
retried is decided by the caller's predicate (``on: [error, timeout]``, never a
permanent failure, within the run's ``max_total_retries``). A failure's
``retry_after`` is the minimum wait before the next attempt, within bounds: the
phase's ``max_delay`` and ``timeout``, and the run's timeout.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_fixed,
    wait_incrementing,
    wait_none,
    wait_random,
)

from ..errors import format_duration
from ..spec.model import RetrySpec

__all__ = ["call_with_retries"]

T = TypeVar("T")
OnRetry = Callable[[int, BaseException, float, str | None], Awaitable[None]]


def _wait(
    spec: RetrySpec,
    timeout: float | None,
    remaining: Callable[[], float | None],
    notes: list[str],
) -> Callable[[RetryCallState], float]:
    """The wait before the next attempt: the backoff, or longer when the failure asks.

    A failure's ``retry_after`` (a server's Retry-After) is honoured up to the
    phase's ``max_delay`` and its ``timeout``; every wait ends by the run's
    timeout (``remaining()`` seconds, None without one). When a bound cut the wait,
    ``notes`` gets one line saying so (shown in the retry line).
    """
    base: Any
    if spec.backoff == "fixed":
        base = wait_fixed(spec.delay)
    elif spec.backoff == "linear":
        base = wait_incrementing(start=spec.delay, increment=spec.delay, max=spec.max_delay)
    else:
        base = wait_exponential(multiplier=spec.delay, max=spec.max_delay)
    if spec.jitter > 0:
        base = base + wait_random(0, spec.jitter)
    else:
        base = base + wait_none()

    def wait(state: RetryCallState) -> float:
        notes.clear()
        delay = float(min(base(state), spec.max_delay + spec.jitter))
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > delay:
            bound, why = spec.max_delay, "max_delay"
            if timeout is not None and timeout < bound:
                bound, why = timeout, "the phase timeout"
            if asked > bound:
                notes.append(
                    f"asked to wait {_seconds(asked)}; bounded by {why} ({_seconds(bound)})"
                )
            delay = max(delay, min(float(asked), bound))
        left = remaining()
        if left is not None and delay > left:
            notes[:] = [f"bounded by the run's timeout ({_seconds(max(0.0, left))} left)"]
            delay = max(0.0, left)
        return delay

    return wait


def _seconds(value: float) -> str:
    if value == math.inf:
        return "for ever"
    return format_duration(value) if value < 1e6 else f"{value:.3g}s"


async def call_with_retries(
    spec: RetrySpec,
    attempt: Callable[[int], Awaitable[T]],
    *,
    should_retry: Callable[[BaseException], bool],
    on_retry: OnRetry,
    first: int = 1,
    timeout: float | None = None,
    deadline: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """``await attempt(n)`` for n = 1, 2 ... until it returns, at most ``spec.attempts + 1`` times.

    ``should_retry(exc)`` decides whether a failure is retried (it is never asked
    about cancellation); ``on_retry(failed_attempt, exc, delay)`` is awaited before
    each wait (``note``: why the wait was shortened, or None). Raises the last
    attempt's exception when no retry is left. ``first`` > 1 continues a phase
    resumed after a crash: attempts are numbered from it, fewer are left, and the
    backoff goes on where it was. ``timeout`` (the phase's) and ``deadline`` (the
    run's, a ``monotonic()`` time) bound the waits (see ``_wait``).
    """
    shift = max(1, first) - 1
    notes: list[str] = []

    def remaining() -> float | None:
        return None if deadline is None else deadline - monotonic()

    wait = _wait(spec, timeout, remaining, notes)

    def shifted_wait(state: RetryCallState) -> float:
        state.attempt_number += shift  # the backoff of the attempt's real number
        try:
            return wait(state)
        finally:
            state.attempt_number -= shift

    def retry(exc: BaseException) -> bool:
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            return False
        return should_retry(exc)

    async def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        assert exc is not None
        await on_retry(state.attempt_number + shift, exc, float(delay), "; ".join(notes) or None)

    retrying = AsyncRetrying(
        sleep=asyncio.sleep,
        stop=stop_after_attempt(max(1, spec.attempts + 1 - shift)),
        wait=shifted_wait if shift else wait,
        retry=retry_if_exception(retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for tried in retrying:
        with tried:
            value = await attempt(tried.retry_state.attempt_number + shift)
        if not tried.retry_state.outcome or not tried.retry_state.outcome.failed:
            return value
    raise AssertionError("unreachable: tenacity stops with the last exception")  # pragma: no cover
