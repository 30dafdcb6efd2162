"""Per-agent limits: a concurrency bound, a token-bucket rate limit and a circuit breaker.

One ``AgentLimiter`` per named agent that declares any of them; every call of
that agent (phase attempts, foreach items, fallbacks, handoff turns) goes
through ``AgentLimiter.call``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..agents.base import AgentFailure
from ..errors import format_duration
from ..spec.model import AgentSpec, CircuitBreakerSpec, RateLimit

__all__ = ["AgentLimiter", "BreakerOpen", "CircuitBreaker", "OnOpen", "TokenBucket"]

Clock = Callable[[], float]
#: Told when a failed call opened the breaker: ``await on_open(breaker, error)``.
OnOpen = Callable[["CircuitBreaker", BaseException], Awaitable[None]]


class TokenBucket:
    """``count`` calls per ``per`` seconds; starts full; waiters are served in arrival order."""

    def __init__(self, limit: RateLimit, *, clock: Clock = time.monotonic) -> None:
        self._rate = limit.rate
        self._capacity = float(limit.count)
        self._tokens = float(limit.count)
        self._clock = clock
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def ready(self) -> bool:
        """Whether a call could take a token now without waiting (nothing is taken)."""
        if self._lock.locked():
            return False
        now = self._clock()
        return min(self._capacity, self._tokens + (now - self._stamp) * self._rate) >= 1.0

    async def take(self) -> None:
        """Wait until a token is available, then take it."""
        async with self._lock:  # asyncio.Lock is FIFO: calls go out in arrival order
            while True:
                now = self._clock()
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)


class BreakerOpen(AgentFailure):
    """A call refused because the agent's circuit breaker is open (permanent for the call)."""


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``reset_after`` seconds one trial
    call goes through (half-open): success closes it, failure opens it again."""

    def __init__(self, agent: str, spec: CircuitBreakerSpec, *, clock: Clock = time.monotonic):
        self.agent = agent
        self.spec = spec
        self._clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        """closed, open or half-open."""
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at >= self.spec.reset_after:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        """Let a call through, or raise AgentFailure (permanent) when the breaker is open."""
        if self.opened_at is None:
            return
        waited = self._clock() - self.opened_at
        if waited >= self.spec.reset_after and not self._trial:
            self._trial = True  # half-open: this call is the trial
            return
        left = max(self.spec.reset_after - waited, 0.0)
        left = round(left, 1) if left >= 1 else left  # 2s, not 1.99934s
        state = "half-open and testing" if self._trial else "open"
        then = (
            "a trial call is running"
            if self._trial
            else f"calls resume after {format_duration(left)}"
        )
        raise BreakerOpen(
            f"circuit breaker of agent '{self.agent}' is {state} after "
            f"{self.consecutive} consecutive failures; {then}",
            transient=False,
        )

    def record(self, ok: bool) -> bool:
        """Count a finished call; True when this failure opened the breaker (a failed
        trial opens it again; a failure while it is already open does not count)."""
        self._trial = False
        if ok:
            self.consecutive = 0
            self.opened_at = None
            return False
        self.consecutive += 1
        if self.consecutive < self.spec.failures:
            return False
        now = self._clock()
        # it opens now when it was closed, or half-open (its wait was over: a trial failed)
        opened = self.opened_at is None or now - self.opened_at >= self.spec.reset_after
        self.opened_at = now  # a late failure of a call started earlier keeps it open longer
        return opened

    def release_trial(self) -> None:
        """A trial call was cancelled: let the next call try again."""
        self._trial = False


class AgentLimiter:
    """The limits of one named agent, applied around each call."""

    def __init__(self, spec: AgentSpec, *, clock: Clock = time.monotonic) -> None:
        self.name = spec.name
        self.semaphore = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
        self.bucket = TokenBucket(spec.rate_limit, clock=clock) if spec.rate_limit else None
        self.breaker = (
            CircuitBreaker(spec.name, spec.circuit_breaker, clock=clock)
            if spec.circuit_breaker
            else None
        )

    @staticmethod
    def needed(spec: AgentSpec) -> bool:
        """Whether the agent declares any limit."""
        return bool(spec.max_concurrency or spec.rate_limit or spec.circuit_breaker)

    async def call(self, start: Callable[[], Awaitable[Any]], on_open: OnOpen | None = None) -> Any:
        """``await start()`` within the limits; raises what it raises, or AgentFailure
        when the circuit breaker is open. ``on_open`` is awaited when the call's failure
        opens the breaker (before the failure is raised)."""
        if self.semaphore is None:
            return await self._call(start, on_open)
        async with self.semaphore:
            return await self._call(start, on_open)

    async def failed(self, error: BaseException, on_open: OnOpen | None = None) -> None:
        """Count a call that failed outside ``call`` (cut by its timeout) for the breaker."""
        breaker = self.breaker
        if breaker is not None and breaker.record(False) and on_open is not None:
            await on_open(breaker, error)

    async def _call(self, start: Callable[[], Awaitable[Any]], on_open: OnOpen | None) -> Any:
        if self.bucket is not None:
            await self.bucket.take()
        breaker = self.breaker
        if breaker is None:
            return await start()
        breaker.before_call()
        try:
            result = await start()
        except asyncio.CancelledError:
            breaker.release_trial()
            raise
        except BaseException as exc:
            if breaker.record(False) and on_open is not None:
                await on_open(breaker, exc)
            raise
        breaker.record(True)
        return result
