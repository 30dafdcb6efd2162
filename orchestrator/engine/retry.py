"""Retries of a phase's attempts: the only module that imports tenacity.

Always bounded (``RetrySpec.attempts`` retries after the first try); what is
retried is decided by the caller's predicate (``on: [error, timeout]``, never a
permanent failure, within the run's ``max_total_retries``). A failure's
``retry_after`` is the minimum wait before the next attempt.
"""

from __future__ import annotations

import asyncio
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

from ..spec.model import RetrySpec

__all__ = ["call_with_retries"]

T = TypeVar("T")
OnRetry = Callable[[int, BaseException, float], Awaitable[None]]


def _wait(spec: RetrySpec) -> Callable[[RetryCallState], float]:
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
        delay = float(min(base(state), spec.max_delay + spec.jitter))
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > delay:
            delay = float(retry_after)
        return delay

    return wait


async def call_with_retries(
    spec: RetrySpec,
    attempt: Callable[[int], Awaitable[T]],
    *,
    should_retry: Callable[[BaseException], bool],
    on_retry: OnRetry,
    first: int = 1,
) -> T:
    """``await attempt(n)`` for n = 1, 2 ... until it returns, at most ``spec.attempts + 1`` times.

    ``should_retry(exc)`` decides whether a failure is retried (it is never asked
    about cancellation); ``on_retry(failed_attempt, exc, delay)`` is awaited before
    each wait. Raises the last attempt's exception when no retry is left.
    ``first`` > 1 continues a phase resumed after a crash: attempts are numbered
    from it, fewer are left, and the backoff goes on where it was.
    """
    shift = max(1, first) - 1
    wait = _wait(spec)

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
        await on_retry(state.attempt_number + shift, exc, float(delay))

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
