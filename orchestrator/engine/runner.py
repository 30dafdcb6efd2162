"""The scheduling loop: starts each phase the moment its dependencies allow it.

Ready phases wait in a heap ordered by priority, then by the longest remaining
critical path (``Plan.remaining``), then by YAML order; at most ``max_parallel``
run at once. Trigger rules decide whether a ready phase runs or is skipped. The
run ends when nothing runs and nothing is ready. A phase's own logic is
``phase.run_phase``; the run's end (its status, what runs after the phases,
``workflow_ended``, the RunResult) is ``handlers.conclude``. ``execute``, ``run`` and
``run_sync`` are the engine's entry points.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from .. import events as ev
from ..agents.registry import AgentRegistry
from ..errors import RecordFailed, one_line
from ..events import Event, EventSink
from ..plan import Plan, compile_plan
from ..spec.model import Phase, Workflow
from .context import RunContext, build_context
from .handlers import conclude
from .heap import frozen_heap
from .phase import run_phase
from .result import CancelRequest, PhaseOutcome, RunOptions, RunResult, Slots, interruptible
from .saga import uncancel

__all__ = ["execute", "run", "run_sync"]

# triggers that let a phase start after a failure under fail-fast (its own upstream ended)
_TOLERANT = frozenset({"all_done", "one_success"})
_NOT_STARTED = {
    "failed": "not started: the run failed",
    "cancelled": "not started: the run was cancelled",
    "timeout": "not started: the run timed out",
}


class _Slots(Slots):
    """The scheduler's ``max_parallel`` slots: a phase task waiting for a person is
    ``parked`` (not counted, nor in its agent's ``max_concurrency`` count); going on, it
    queues in ``returning`` until a slot is free (before any phase not started yet)."""

    __slots__ = ("scheduler", "parked", "returning")

    def __init__(self, scheduler: _Scheduler) -> None:
        self.scheduler = scheduler
        self.parked: set[asyncio.Task[Any]] = set()
        self.returning: collections.deque[tuple[asyncio.Task[Any], asyncio.Future[None]]] = (
            collections.deque()
        )

    def busy(self) -> int:
        """How many slots are taken: running phase tasks that are not parked."""
        return len(self.scheduler.running) - len(self.parked)

    def release(self) -> None:
        task = asyncio.current_task()
        if task is not None and task in self.scheduler.running:
            self.parked.add(task)
            self._agent(task, -1)
            self.scheduler._wakeup()

    def _agent(self, task: asyncio.Task[Any], change: int) -> None:
        """Count the task's phase in (1) or out (-1) of its agent's ``max_concurrency``
        bound of the scheduler (the call semaphore bounds the calls themselves)."""
        scheduler = self.scheduler
        agent = scheduler.plan.phases[scheduler.running[task]].agent
        if agent is not None and agent in scheduler.agent_busy:
            scheduler.agent_busy[agent] += change

    async def take(self) -> None:
        task = asyncio.current_task()
        if task is None or task not in self.parked:
            return
        limit = self.scheduler.limit
        if limit is None or (not self.returning and self.busy() < limit):
            self.parked.discard(task)
            self._agent(task, 1)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.returning.append((task, turn))
        self.scheduler._wakeup()
        await turn  # cancelled: the entry is passed over (its future is done)

    def grant(self) -> None:
        """Give free slots to parked phases that go on, first come first served."""
        limit = self.scheduler.limit
        returning = self.returning
        while returning and (limit is None or self.busy() < limit):
            task, turn = returning.popleft()
            if not turn.done():
                self.parked.discard(task)
                self._agent(task, 1)
                turn.set_result(None)


class _Scheduler:
    """One run's loop. ``_done`` collects finished phase tasks from their callbacks."""

    def __init__(self, state: RunContext, cancel: asyncio.Event | None):
        self.state = state
        self.plan = state.plan
        self.cancel = cancel
        wf = state.workflow
        limit = state.options.max_parallel or wf.max_parallel
        self.limit: int | None = limit if limit and limit > 0 else None
        self.keep_going = wf.error_handling.continue_on_error
        self.running: dict[asyncio.Task[PhaseOutcome], str] = {}
        state.phase_tasks = self.running  # phases not in it shield their completion
        # a phase waiting for a person (an approval) holds no slot meanwhile
        self.slots = _Slots(self)
        state.slots = self.slots
        # phases started per agent with max_concurrency (one waiting for a person is not)
        self.agent_busy: dict[str, int] = {}
        self._done: list[asyncio.Task[PhaseOutcome]] = []
        # ended phase tasks whose posted events are not all stored yet (_on_task_done)
        self._storing: collections.deque[asyncio.Task[PhaseOutcome]] = collections.deque()
        self._wake: asyncio.Future[None] | None = None
        self.stopping: str | None = None  # why no new phase starts: failed, cancelled, timeout
        self.failed: list[str] = []
        self.crash: BaseException | None = None  # an exception is always true
        self.completion_order: list[str] = []
        self._cancelled: set[asyncio.Task[PhaseOutcome]] = set()
        # direct upstream phases of a phase whose trigger tolerates failure: a failure
        # elsewhere lets them finish, so that phase sees their real outcome
        self.spared = frozenset(
            dep
            for pid, p in self.plan.phases.items()
            if p.trigger in _TOLERANT
            for dep in self.plan.predecessors[pid]
        )

    def _wakeup(self, _: object = None) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _on_task_done(self, task: asyncio.Task[PhaseOutcome]) -> None:
        """A phase task ended. It is finished once the events it posted are stored: until
        then it waits in ``_storing``, in the order the tasks ended, which is the order the
        store settles their last events in; one callback on the first event still
        pending there wakes the scheduler (not one per phase)."""
        if self._pending(task) is not None:
            storing = self._storing
            storing.append(task)
            if len(storing) == 1:
                self._arm()
            return
        self._done.append(task)
        self._wakeup()

    def _arm(self, _: object = None) -> None:
        """Move the tasks at the head of ``_storing`` whose events are stored to ``_done``;
        wait for the first event still pending."""
        storing = self._storing
        moved = False
        while storing:
            pending = self._pending(storing[0])
            if pending is not None:
                pending.add_done_callback(self._arm)
                break
            self._done.append(storing.popleft())
            moved = True
        if moved:
            self._wakeup()

    def _pending(self, task: asyncio.Task[PhaseOutcome]) -> asyncio.Future[Any] | None:
        """What a phase task's end waits for: the task, a posted event not yet stored, or
        None when it can be finished."""
        if not task.done():
            return task
        for _event, stored in self.state.posted.get(task, ()):
            if not stored.done():
                return stored
        return None

    async def run(self) -> None:
        """Run every phase that can run; returns when nothing runs and nothing is ready."""
        plan = self.plan
        phases = plan.phases
        index = {pid: i for i, pid in enumerate(phases)}
        # the start order of ready phases, as one int per phase (cheap to compare)
        by_rank = sorted(
            phases,
            key=lambda pid: (phases[pid].priority_rank, -plan.remaining[pid], index[pid]),
        )
        rank = {pid: n for n, pid in enumerate(by_rank)}
        # unfinished direct upstream phases per phase; a phase is ready at 0
        unfinished = {pid: len(deps) for pid, deps in plan.predecessors.items()}
        successors = plan.successors
        released = [pid for pid in plan.order if not unfinished[pid]]

        def finished(pid: str) -> None:
            for nxt in successors[pid]:
                left = unfinished[nxt] - 1
                unfinished[nxt] = left
                if not left:
                    released.append(nxt)

        heap: list[int] = []
        # phases of an agent with max_concurrency wait here, not in a max_parallel slot
        bounds = {
            name: spec.max_concurrency
            for name, spec in plan.workflow.agents.items()
            if spec.max_concurrency
        }
        agent_busy = self.agent_busy
        loop = asyncio.get_running_loop()
        on_done = self._on_task_done  # one bound method for every task
        bare = contextvars.Context()  # on_done reads no context variable: no copy per task
        state = self.state
        outcomes = state.outcomes
        prior = state.prior
        running = self.running
        slots = self.slots
        wf = state.workflow
        timer = None
        if wf.timeout:
            state.deadline = loop.time() + wf.timeout
            timer = loop.call_later(wf.timeout, self._stop, "timeout")
        watcher = None
        if self.cancel is not None:
            if self.cancel.is_set():
                self.stopping = "cancelled"
            else:
                watcher = loop.create_task(self.cancel.wait())
                # Only a set cancel event cancels the run; the watcher's own cancellation
                # at the end of the run must not (done callbacks also fire on cancel).
                watcher.add_done_callback(
                    lambda t: None if t.cancelled() else self._stop("cancelled")
                )
        try:
            while True:
                progressed = True
                while progressed:
                    progressed = False
                    for pid in released:
                        heapq.heappush(heap, rank[pid])
                    released.clear()
                    slots.grant()  # phases that waited for a person go on first
                    deferred = []
                    while heap:
                        stopping = self.stopping
                        # after a failure (fail-fast) the graph is still walked: phases
                        # whose trigger tolerates failure run, the others are skipped
                        if stopping is not None and (stopping != "failed" or self.crash):
                            break
                        if self.limit is not None and (
                            slots.returning or slots.busy() >= self.limit
                        ):
                            break
                        entry = heapq.heappop(heap)
                        pid = by_rank[entry]
                        old = prior.get(pid)
                        if old is not None and old.status == "completed":
                            outcomes[pid] = old
                            self.completion_order.append(pid)
                            finished(pid)
                            progressed = True
                            continue
                        if stopping is not None and phases[pid].trigger not in _TOLERANT:
                            await self._skip(pid, _NOT_STARTED["failed"])
                            finished(pid)
                            progressed = True
                            continue
                        reason = self._blocked(phases[pid])
                        if reason is not None:
                            await self._skip(pid, reason)
                            finished(pid)
                            progressed = True
                            continue
                        agent = phases[pid].agent
                        if agent is not None and agent in bounds:
                            busy = agent_busy.get(agent, 0)
                            if busy >= bounds[agent]:  # saturated: keep the slot for others
                                deferred.append(entry)
                                continue
                            agent_busy[agent] = busy + 1
                        task = loop.create_task(run_phase(phases[pid], state))
                        running[task] = pid
                        task.add_done_callback(on_done, context=bare)
                    for entry in deferred:
                        heapq.heappush(heap, entry)
                if not running:
                    break
                if not self._done:
                    self._wake = loop.create_future()
                    try:
                        await self._wake
                    finally:
                        self._wake = None
                done, self._done = self._done, []
                for task in done:
                    pid = running.pop(task)
                    agent = phases[pid].agent
                    if task in slots.parked:  # ended waiting: counted out of its agent already
                        slots.parked.discard(task)
                    elif agent in agent_busy:
                        agent_busy[agent] -= 1
                    self._finish(pid, task)
                    if pid not in outcomes:  # cancelled before its first step
                        await self._skip(pid, _NOT_STARTED.get(self.stopping or "", "not started"))
                    finished(pid)
        except asyncio.CancelledError:
            self._stop("cancelled")
            await self._drain()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
        reason = _NOT_STARTED.get(self.stopping or "", "not started")
        for pid in plan.order:
            if pid not in outcomes:
                await self._skip(pid, reason)

    async def _drain(self) -> None:
        """After the run's own task was cancelled: cancel phases, wait for their outcomes."""
        self._stop("cancelled")
        # a forced cancel request (a second Ctrl-C) cancels the phases again: a command
        # being stopped is killed now instead of after its kill_grace
        self._cancel_running(again=bool(getattr(self.cancel, "forced", False)))
        while self.running:
            waits = [w for w in map(self._pending, self.running) if w is not None]
            if waits:
                await asyncio.wait(waits)
            for task in [t for t in self.running if self._pending(t) is None]:
                pid = self.running.pop(task)
                self._finish(pid, task)
        self._done = []
        self._storing.clear()
        for pid in self.plan.order:
            if pid not in self.state.outcomes:
                await self._skip(pid, "not started: the run was cancelled")

    def _stop(self, why: str) -> None:
        """Stop starting phases and cancel the running ones, when the run starts stopping
        or escalates (cancelled and timeout win over failed: they say why the others did
        not finish). On a failure, the direct upstream phases of a phase whose trigger
        tolerates failure (all_done, one_success) are left to finish. A later failure
        does not cancel the phases that started after the first one: only phases whose
        trigger tolerates failure can have started then."""
        current = self.stopping
        if current is not None and (current != "failed" or why == "failed"):
            return
        self.stopping = why
        self._cancel_running(spare=self.spared if why == "failed" else frozenset())

    def _cancel_running(self, spare: frozenset[str] = frozenset(), *, again: bool = False) -> None:
        completing = self.state.completing  # their completion is being recorded: let it
        for task, pid in self.running.items():
            if (
                (again or task not in self._cancelled)
                and pid not in spare
                and task not in completing
            ):
                self._cancelled.add(task)
                task.cancel()
        self._wakeup()

    def _finish(self, pid: str, task: asyncio.Task[PhaseOutcome]) -> None:
        state = self.state
        state.completing.discard(task)  # it recorded its end (phase.py, _record)
        posted = state.posted.pop(task, ())
        outcomes = state.outcomes
        if task.cancelled():
            # cancelled before its first step: it never started and emitted nothing, so it
            # is left out here and reported as not started (phase_skipped) at the end
            return
        exc = task.exception() or _not_stored(posted)
        if exc is None and state.bus.sink_error is not None:  # a sink failed on a posted event
            exc, state.bus.sink_error = state.bus.sink_error, None
        if exc is not None:  # a bug in an executor or a sink: stop and re-raise at the end
            if self.crash is None:
                self.crash = exc
            self._stop("failed")
            self._cancel_running()
            outcome = PhaseOutcome(pid, "failed", error=f"{type(exc).__name__}: {one_line(exc)}")
        else:
            outcome = task.result()
        outcomes[pid] = outcome
        status = outcome.status
        if status == "completed":
            self.completion_order.append(pid)
        elif status == "failed" or (status == "cancelled" and self.stopping is None):
            if not self.plan.phases[pid].continue_on_error:
                self.failed.append(pid)
                if not self.keep_going:
                    self._stop("failed")

    def _blocked(self, phase: Phase) -> str | None:
        """Why a ready phase must be skipped under its trigger rule, or None to run it."""
        preds = self.plan.predecessors[phase.id]
        if not preds:
            return None
        outcomes = self.state.outcomes
        phases = self.plan.phases
        trigger = phase.trigger
        if trigger == "all_done":
            return None
        states = []
        for dep in preds:
            ended = outcomes.get(dep)
            status = ended.status if ended is not None else "skipped"
            if status in ("failed", "cancelled") and phases[dep].continue_on_error:
                status = "completed"  # its failure was declared harmless
            states.append((dep, status))
        if trigger == "one_success":
            if any(s == "completed" for _, s in states):
                return None
            return "trigger one_success: no upstream phase completed"
        for dep, status in states:
            if status == "completed":
                continue
            if trigger == "none_failed" and status == "skipped":
                continue
            return f"upstream '{dep}' {status}"
        return None

    async def _skip(self, pid: str, reason: str) -> None:
        state = self.state
        state.outcomes[pid] = PhaseOutcome(pid, "skipped", error=None)
        if self.crash is not None:  # the run is stopping on an error: record nothing more
            return
        await state.bus.emit(ev.phase_skipped(state.run_id, state.now(), pid, reason))


def _not_stored(posted: Iterable[tuple[Event, asyncio.Future[None]]]) -> BaseException | None:
    """Why the first of a phase task's posted events was not stored, as ``emit`` says it
    (RecordFailed), or None when all were."""
    for event, stored in posted:
        error = None if stored.cancelled() else stored.exception()
        if error is not None:
            if isinstance(error, RecordFailed):
                return error
            return RecordFailed(event.event, event.phase, error)
    return None


async def execute(
    plan: Plan | Workflow,
    *,
    inputs: Mapping[str, Any] | None = None,
    registry: AgentRegistry | None = None,
    run_id: str | None = None,
    options: RunOptions | None = None,
    sinks: Iterable[EventSink] = (),
    prior: Mapping[str, PhaseOutcome] | None = None,
    cancel: asyncio.Event | None = None,
) -> RunResult:
    """Run a plan to its end and return the RunResult; every event goes to ``sinks``, masked.

    ``inputs`` are checked by ``resolve_inputs`` (UsageError before anything runs,
    as is a secret missing from the environment, or an agent type that cannot be
    found or loaded: AgentError). A failing phase is a failed run, never an
    exception. Setting ``cancel`` or cancelling the calling task ends the run as
    cancelled (the latter re-raises CancelledError after the last event). ``prior``:
    an earlier run's outcomes; its completed phases are kept, and what every prior
    outcome's calls used (its ``metadata`` tokens and cost) counts as spent. A Workflow
    (``load_workflow``) is compiled here; anything else is a UsageError.
    """
    plan = _as_plan(plan)
    with frozen_heap():
        return await _execute(plan, inputs, registry, run_id, options, sinks, prior, cancel)


def _as_plan(plan: Plan | Workflow) -> Plan:
    """What ``execute`` runs: a Plan, or the plan of a Workflow (``compile_plan``)."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, Workflow):
        return compile_plan(plan)
    from ..errors import UsageError

    raise UsageError(
        f"execute() and run_sync() run a Plan, not {type(plan).__name__}",
        hint="`orchestrator.run_sync(orchestrator.compile_plan(orchestrator.load_workflow(...)))`",
    )


async def _execute(
    plan: Plan,
    inputs: Mapping[str, Any] | None,
    registry: AgentRegistry | None,
    run_id: str | None,
    options: RunOptions | None,
    sinks: Iterable[EventSink],
    prior: Mapping[str, PhaseOutcome] | None,
    cancel: asyncio.Event | None,
) -> RunResult:
    options = options if options is not None else RunOptions()
    registry = registry if registry is not None else AgentRegistry.from_entry_points()
    state = build_context(
        plan,
        inputs=inputs,
        registry=registry,
        run_id=run_id,
        options=options,
        sinks=sinks,
        prior=prior,
        launch=execute,
    )
    wf = plan.workflow
    state.cancel_request = cancel
    scheduler = _Scheduler(state, cancel)
    started = state.now()
    await state.bus.emit(
        ev.workflow_started(
            state.run_id,
            state.now(),
            workflow=wf.name,
            path=wf.path,
            source_hash=wf.source_hash,
            phases=plan.order,
            fingerprints=plan.fingerprints(),
            inputs=state.inputs,
            pid=os.getpid(),
            resumed_from=options.resumed_from,
            trigger=options.trigger,
            source=wf.text or None,
        )
    )
    interrupted: BaseException | None = None
    try:
        try:
            with interruptible(cancel):  # a forced cancel request kills the phases now
                await scheduler.run()
        except asyncio.CancelledError as exc:
            interrupted = exc
        # a forced cancel request (RunHandle: a second Ctrl-C) that came while phases ran
        # killed them now (the scheduler's drain); it is taken here: the saga and the
        # handlers run as after a first cancel. Only one that comes after the phases
        # (while compensating) stops what follows (RunContext.stopping_now).
        forced = False
        if isinstance(cancel, CancelRequest) and cancel.forced:
            forced, cancel.forced = True, False
            if interrupted is not None:
                uncancel()
        if scheduler.crash is None and state.bus.sink_error is not None:
            scheduler.crash = state.bus.sink_error  # a sink failed on a posted event
        if scheduler.crash is not None:
            raise scheduler.crash
        # the epilogue (compensations, handlers) still uses the agents: close them after
        result = await conclude(
            state,
            stopping="cancelled" if interrupted is not None else scheduler.stopping,
            failed=scheduler.failed,
            completion_order=scheduler.completion_order,
            started=started,
            cancelled_by=getattr(scheduler.cancel, "by", None),
        )
        if interrupted is not None and not forced:
            raise interrupted  # the caller cancelled the run's task: execute re-raises
        return result
    finally:
        await state.pool.aclose()


async def run(
    plan: Plan,
    *,
    inputs: Mapping[str, Any] | None = None,
    registry: AgentRegistry | None = None,
    run_id: str | None = None,
    options: RunOptions | None = None,
    sinks: Iterable[EventSink] = (),
    prior: Mapping[str, PhaseOutcome] | None = None,
    cancel: asyncio.Event | None = None,
) -> AsyncIterator[Event]:
    """The run as an async iterator of its (masked) events, ending with the workflow_* event.

    Same arguments and errors as ``execute`` (an error before the run starts is
    raised by the first ``__anext__``). Leaving the loop early cancels the run.
    """
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    task = asyncio.ensure_future(
        execute(
            plan,
            inputs=inputs,
            registry=registry,
            run_id=run_id,
            options=options,
            sinks=(queue.put_nowait, *sinks),
            prior=prior,
            cancel=cancel,
        )
    )
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    try:
        while True:
            event = await queue.get()
            if event is None:
                break
            yield event
        task.result()  # re-raise an error that stopped the run before or during it
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - the consumer left; its reason wins
                pass


def run_sync(
    plan: Plan | Workflow,
    *,
    inputs: Mapping[str, Any] | None = None,
    registry: AgentRegistry | None = None,
    run_id: str | None = None,
    options: RunOptions | None = None,
    sinks: Iterable[EventSink] = (),
    prior: Mapping[str, PhaseOutcome] | None = None,
) -> RunResult:
    """``execute`` in a new event loop (``asyncio.run``); for scripts, not for async code.

    Raises UsageError when called inside a running event loop (Jupyter, async code):
    ``await execute(...)`` (or ``await orchestrator.start(...)``) works there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        from ..errors import UsageError

        raise UsageError(
            "run_sync() cannot run inside a running event loop (Jupyter, async code)",
            hint="use `result = await orchestrator.execute(plan, ...)`, or "
            "`handle = await orchestrator.start(...)` then `await handle.wait()`",
        )
    box: list[RunResult] = []

    async def main() -> None:  # returns None: asyncio.run may repr a task's result on the way out
        box.append(
            await execute(
                plan,
                inputs=inputs,
                registry=registry,
                run_id=run_id,
                options=options,
                sinks=sinks,
                prior=prior,
            )
        )

    asyncio.run(main())
    return box[0]
