"""Runs that `orch serve` starts: ordinary runs of the state store, run in this process.

At most ``max_runs`` run at once; the rest wait in a queue ordered by priority
(critical, high, medium, low, background), then by arrival. ``start_run`` is
the one place a run is started: switch it to the core's Python API when that
lands, and nothing else changes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import one_line
from ..state.base import new_run_id

if TYPE_CHECKING:
    from ..agents.registry import AgentRegistry
    from ..engine import CancelRequest, RunResult
    from ..engine.executor import Executor
    from ..plan import Plan
    from ..state.sqlite import SqliteStore

__all__ = ["PRIORITIES", "ActiveRun", "RunManager", "start_run"]

log = logging.getLogger("orch.serve")

PRIORITIES = ("critical", "high", "medium", "low", "background")


async def start_run(
    plan: Plan,
    inputs: Mapping[str, Any],
    *,
    store: SqliteStore,
    registry: AgentRegistry,
    run_id: str,
    cancel: CancelRequest,
    trigger: Mapping[str, Any],
    executor: Executor | None = None,
    tracing: Any = None,
    stop_now: asyncio.Event | None = None,
) -> RunResult:
    """Run ``plan`` to its end through the core's Python API (``orchestrator.runs.start``),
    recorded in the service's store exactly as `orch run` records it; requesting ``cancel``
    cancels it (its ``by``, a signal name, is recorded as ``cancelled_by``), then setting
    ``stop_now`` stops it now as a second Ctrl-C stops `orch run`
    (``RunHandle.cancel(force=True)``: what runs is cancelled, compensations and handlers
    not started are not run, the run still records its end).
    ``executor``: where its agent calls run (the service's Dask cluster). ``tracing``:
    the service's OpenTelemetry provider (tracing on): the run is a trace of its own,
    with the spans `orch run` gives."""
    from ..runs import start

    tracer = None
    if tracing is not None:
        import time

        from ..tracing import start_tracing

        tracer = start_tracing({}, tracing)  # no TRACEPARENT: each run its own trace
        tracer.begin(plan.workflow.name, time.time())
    handle = await start(
        plan,
        inputs=inputs,
        state_dir=store.state_dir,
        run_id=run_id,
        registry=registry,
        trigger=trigger,
        executor=executor,
        sinks=() if tracer is None else (tracer.sink,),
        call_middleware=() if tracer is None else (tracer.middleware,),
        trace_id=None if tracer is None else tracer.trace_id,
    )
    stop = asyncio.ensure_future(cancel.wait())
    done = asyncio.ensure_future(handle.wait())
    now = asyncio.ensure_future(stop_now.wait()) if stop_now is not None else None
    try:
        await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            handle.cancel(signal.Signals[cancel.by] if cancel.by else None)
            if now is not None:
                await asyncio.wait({now, done}, return_when=asyncio.FIRST_COMPLETED)
                if not done.done():
                    handle.cancel(force=True)
        return await done
    finally:
        stop.cancel()
        if now is not None:
            now.cancel()


def _cancel_request() -> CancelRequest:
    from ..engine import CancelRequest  # the engine loads when the first run is queued

    return CancelRequest()


@dataclass(eq=False)
class ActiveRun:
    """A run this service queued or runs. ``status``: queued, running, then the final one."""

    id: str
    workflow: str
    plan: Plan
    inputs: Mapping[str, Any]
    trigger: Mapping[str, Any]
    priority: str = "medium"
    status: str = "queued"
    queued_at: float = 0.0
    wait_for: tuple[ActiveRun, ...] = ()
    cancel: CancelRequest = field(default_factory=_cancel_request)
    stop_now: asyncio.Event = field(default_factory=asyncio.Event)  # after cancel: stop now
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None


class RunManager:
    """Starts runs with at most ``max_runs`` at once; ``on_end`` is told each run's end."""

    def __init__(
        self,
        store: SqliteStore,
        registry: AgentRegistry,
        max_runs: int,
        *,
        clock: Callable[[], float],
        on_end: Callable[[ActiveRun], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.max_runs = max(1, max_runs)
        self.clock = clock
        self.on_end = on_end
        self.active: dict[str, ActiveRun] = {}
        self._queue: list[tuple[int, int, ActiveRun]] = []
        self._order = itertools.count()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.started_total = 0
        #: where the agent calls of every run go (``orch serve --executor``); None: here
        self.executor: Executor | None = None
        #: the OpenTelemetry provider every run exports its spans to (tracing on), or None
        self.tracing: Any = None

    def submit(
        self,
        plan: Plan,
        inputs: Mapping[str, Any],
        *,
        trigger: Mapping[str, Any],
        priority: str = "medium",
        wait_for: tuple[ActiveRun, ...] = (),
    ) -> ActiveRun:
        """Queue a run (inputs already checked); it starts when a slot is free."""
        run = ActiveRun(
            id=new_run_id(),
            workflow=plan.workflow.name,
            plan=plan,
            inputs=dict(inputs),
            trigger=dict(trigger),
            priority=priority if priority in PRIORITIES else "medium",
            queued_at=self.clock(),
            wait_for=wait_for,
        )
        self.active[run.id] = run
        heapq.heappush(self._queue, (PRIORITIES.index(run.priority), next(self._order), run))
        self._pump()
        return run

    @property
    def queue_length(self) -> int:
        """Runs waiting for a slot."""
        return sum(1 for r in self.active.values() if r.status == "queued")

    def running(self, workflow: str | None = None) -> list[ActiveRun]:
        """Queued and running runs (of ``workflow``), oldest first."""
        runs = [r for r in self.active.values() if workflow in (None, r.workflow)]
        return sorted(runs, key=lambda r: r.queued_at)

    def _pump(self) -> None:
        while self._queue and self._running < self.max_runs:
            _, _, run = heapq.heappop(self._queue)
            if run.cancel.is_set():  # cancelled while queued: never started
                self._forget(run, "cancelled")
                continue
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._run(run), name=f"run {run.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, run: ActiveRun) -> None:
        try:
            for earlier in run.wait_for:  # overlap: queue (the slot is held meanwhile)
                await earlier.done.wait()
            if run.cancel.is_set():
                self._forget(run, "cancelled")
                return
            run.status = "running"
            self.started_total += 1
            result = await start_run(
                run.plan,
                run.inputs,
                store=self.store,
                registry=self.registry,
                run_id=run.id,
                cancel=run.cancel,
                trigger=run.trigger,
                executor=self.executor,
                tracing=self.tracing,
                stop_now=run.stop_now,
            )
            run.status, run.error = result.status, result.error
        except asyncio.CancelledError:
            run.status = "cancelled"
            raise
        except Exception as exc:  # an agent that cannot load, a store that fails
            run.status, run.error = "failed", one_line(exc)
            log.error("run %s of %s could not run: %s", run.id, run.workflow, exc)
        finally:
            self._running -= 1
            self._forget(run, run.status)
            self._pump()
        if self.on_end is not None:
            await self.on_end(run)

    def _forget(self, run: ActiveRun, status: str) -> None:
        run.status = status
        run.done.set()
        self.active.pop(run.id, None)

    def cancel(self, run_id: str, by: signal.Signals = signal.SIGTERM) -> ActiveRun | None:
        """Ask a queued or running run of this service to stop; None when it is not ours.

        ``by`` is recorded as the run's ``cancelled_by`` (the first one asked is kept):
        SIGTERM when the service stops it (the cancel API, the web UI, a schedule's
        ``overlap: cancel_previous``), as `orch cancel` does; the signal `orch serve`
        received when it stops (SIGINT for Ctrl-C)."""
        run = self.active.get(run_id)
        if run is not None:
            run.cancel.request(by.name)
            if run.status == "queued":
                self._queue = [q for q in self._queue if q[2] is not run]
                heapq.heapify(self._queue)
                self._forget(run, "cancelled")
        return run

    def stop_now(self, by: signal.Signals = signal.SIGTERM) -> None:
        """Stop every run now (``orch serve``'s second signal): each one cancelled (by
        ``by``), then stopped as a second Ctrl-C stops `orch run`; each records its end."""
        for run in list(self.active.values()):
            self.cancel(run.id, by)
            run.stop_now.set()

    async def shutdown(self, by: signal.Signals = signal.SIGTERM) -> None:
        """Cancel every queued and running run (by ``by``, the signal that stops the
        service) and wait for them to record their end."""
        for run in list(self.active.values()):
            self.cancel(run.id, by)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
