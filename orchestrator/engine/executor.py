"""The executor seam: where one agent call runs, given only plain data.

``engine/call.py`` turns every agent call (phase attempts, foreach items,
fallbacks, handoff turns, handlers, compensations) into a ``CallSpec``: plain,
picklable values that say everything needed to build the agent and call it in
another process. An ``Executor`` runs it and gives back an ``AgentResult``.
``LocalExecutor`` (the default) calls the run's own agent instance in this
event loop. What cannot travel (the stream back to the run, sub-runs, the local
instance) is in the ``CallChannel``, which stays in the run's process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..agents.base import Agent, AgentContext, AgentResult, StreamCallback, SubRun
from ..frozen import quick_init

if TYPE_CHECKING:
    from ..events import SecretMasker

__all__ = ["CallChannel", "CallMiddleware", "CallNext", "CallSpec", "Executor", "LocalExecutor"]


@quick_init
@dataclass(frozen=True, slots=True)
class CallSpec:
    """One agent call as plain data (every field pickles; nothing refers to the run).

    ``input`` is the call's ``with:`` merged over the named agent's and rendered:
    exactly what ``Agent.run`` receives. ``time_left`` is the seconds left until the
    call's deadline (phase timeout or run timeout) when it was made, or None; an
    executor in another process turns it back into a local deadline
    (``deadline()``). ``idempotency_key`` is the one ``AgentContext`` gives the
    agent (stable across a crash and resume). ``resources`` are what the call
    needs from a worker (empty unless configured). ``depth`` counts nested sub-runs.
    ``call.make_spec`` passes the fields by position, in this order: a field added or
    moved here is added or moved there (tests/engine/test_call_spec.py checks each).
    """

    run_id: str
    phase_id: str
    attempt: int
    agent_name: str
    agent_type: str
    input: Mapping[str, Any]
    idempotency_key: str
    time_left: float | None = None
    workdir: str = "."
    item: int | None = None
    turn: int = 1
    secrets: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, float] = field(default_factory=dict)
    depth: int = 0
    traceparent: str | None = None  # W3C trace context of the call (tracing on)

    def deadline(self, monotonic: Any = time.monotonic) -> float | None:
        """The call's deadline on this process's monotonic clock (None: no deadline)."""
        return None if self.time_left is None else monotonic() + self.time_left

    def context(self, channel: CallChannel, *, deadline: float | None = None) -> AgentContext:
        """The AgentContext the agent receives; ``deadline`` defaults to ``deadline()``."""
        return AgentContext(
            self.run_id,
            self.phase_id,
            self.attempt,
            self.agent_name,
            self.workdir,
            self.deadline() if deadline is None else deadline,
            self.item,
            self.secrets,
            channel.stream,
            channel.run_workflow,
            self.turn,
            self.idempotency_key,
            self.traceparent,
        )


@dataclass(slots=True)
class CallChannel:
    """What stays in the run's process during a call.

    ``stream(text)`` sends a piece of streamed output back (it becomes a masked
    ``phase_stream`` event); ``run_workflow`` starts a sub-run (the ``workflow``
    agent needs it, so a remote executor runs that agent type locally);
    ``agent`` is the run's own instance of the agent (made at run start with its
    connection pool), for executors that call in this process; ``masker`` is the
    run's SecretMasker (a middleware masks what it writes elsewhere with it: spans).
    """

    stream: StreamCallback
    run_workflow: SubRun | None = None
    agent: Agent | Any = None
    masker: SecretMasker | None = None


#: The rest of the call path, as a middleware sees it (``engine/call.py``).
CallNext = Callable[[CallSpec, CallChannel], Awaitable[Any]]
#: ``async def middleware(spec, channel, next) -> AgentResult | Any``: wraps every call.
CallMiddleware = Callable[[CallSpec, CallChannel, CallNext], Awaitable[Any]]


@runtime_checkable
class Executor(Protocol):
    """Runs one agent call described by a CallSpec and returns its result.

    It raises what the agent raises (an ``AgentFailure`` for a failed call); the
    call path (limits, breaker, timeout, output normalisation) is around it, so
    an executor only builds or finds the agent and runs it. The call may be
    cancelled (timeout, fail-fast, Ctrl-C): the executor must then stop the work.
    """

    async def call(self, spec: CallSpec, channel: CallChannel) -> AgentResult | Any:
        """Run the call; return an AgentResult (or a plain value, taken as the output)."""
        ...


class LocalExecutor:
    """Calls the run's own agent instance in this event loop (the default executor)."""

    async def call(self, spec: CallSpec, channel: CallChannel) -> AgentResult | Any:
        """``channel.agent.run(spec.input, ctx)``."""
        return await channel.agent.run(spec.input, spec.context(channel))
