"""The scheduling loop: starts each phase the moment its dependencies allow it.

Ready phases wait in a heap ordered by priority, then by the longest remaining
critical path (``Plan.remaining``), then by YAML order; at most ``max_parallel``
run at once. Trigger rules decide whether a ready phase runs or is skipped. The
run ends when nothing runs and nothing is ready. Phases themselves run through a
``PhaseExecutor`` (``phase.LocalExecutor`` by default).
"""

from __future__ import annotations

import asyncio
import contextvars
import graphlib
import heapq
import importlib
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..agents.base import Agent, AgentFailure
from ..agents.registry import AgentRegistry
from ..errors import ExpressionError, UsageError, format_duration
from ..expr import has_template, render
from ..plan import Plan
from ..spec.model import AgentSpec, Phase, Workflow
from .events import Event, EventSink, SecretMasker
from .handlers import epilogue, has_epilogue
from .inputs import resolve_inputs
from .limits import AgentLimiter
from .result import (
    PhaseExecutor,
    PhaseOutcome,
    ResultCache,
    RunOptions,
    RunResult,
    add_tokens,
)

__all__ = ["RunState", "execute", "run", "run_sync"]

_DEFAULT_OPTIONS = RunOptions()
# The workflow files of the sub-runs under way, outermost first; a sub-run's phase
# tasks inherit it, so the depth limit can name the files that nest too deep.
_SUB_RUNS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "orch_sub_runs", default=()
)
_TOO_DEEP = ("sub-workflow recursion: ", "sub-workflows nest deeper than ")
# triggers that let a phase start after a failure under fail-fast (its own upstream ended)
_TOLERANT = frozenset({"all_done", "one_success"})
_NOT_STARTED = {
    "failed": "not started: the run failed",
    "cancelled": "not started: the run was cancelled",
    "timeout": "not started: the run timed out",
}


def _is_async_sink(sink: EventSink) -> bool:
    return inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
        getattr(sink, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


class RunState:
    """Everything one run shares between the scheduler and its phases.

    Built by ``execute``; executors read the template context, the agent
    instances and limiters, and emit events through ``publish``/``deliver``.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        inputs: Mapping[str, Any] | None,
        registry: AgentRegistry,
        run_id: str | None,
        options: RunOptions,
        sinks: Iterable[EventSink],
        prior: Mapping[str, PhaseOutcome] | None,
    ) -> None:
        wf = plan.workflow
        self.plan = plan
        self.workflow: Workflow = wf
        self.options = options
        self.registry = registry
        self.clock = options.clock
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.inputs = resolve_inputs(wf, inputs or {}, strings=False)
        self.secrets = _read_secrets(wf.secret_names)
        self.masker = SecretMasker(self.secrets.values())
        sinks = tuple(sinks)
        self.sync_sinks = tuple(s for s in sinks if not _is_async_sink(s))
        self.async_sinks = tuple(s for s in sinks if _is_async_sink(s))
        self.prior = dict(prior or {})
        self.cache: ResultCache | None = None if options.no_cache else options.cache
        self.workdir = str(Path(wf.path).parent) if wf.path != "<memory>" else os.getcwd()
        self.outcomes: dict[str, PhaseOutcome] = {}
        self.context: dict[str, Any] = {
            "inputs": self.inputs,
            "phases": self.outcomes,
            "run": {"id": self.run_id, "workflow": wf.name},
            "env": dict(os.environ),
            "secrets": self.secrets,
        }
        self.retries_left = wf.error_handling.max_total_retries
        self.deadline: float | None = None  # monotonic end of the run (its timeout)
        self.agents: dict[str, Agent] = {}
        self.agent_types: dict[str, str] = {}
        self.limiters: dict[str, AgentLimiter] = {}
        self._with: dict[tuple[str, str | None], tuple[Mapping[str, Any], bool]] = {}

    # -- events -------------------------------------------------------------------
    def publish(
        self,
        kind: str,
        phase: str | None = None,
        attempt: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Build an event, mask it, hand it to the sync sinks; return it for ``deliver``."""
        event = Event(kind, self.run_id, self.clock(), phase, attempt, data or {})
        if self.masker:
            event = self.masker.mask_event(event)
        for sink in self.sync_sinks:
            sink(event)
        return event

    async def deliver(self, event: Event) -> None:
        """Await the async sinks (the durable store) for an event from ``publish``."""
        for sink in self.async_sinks:
            await sink(event)  # type: ignore[misc]

    async def emit(
        self,
        kind: str,
        phase: str | None = None,
        attempt: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """publish, then deliver when async sinks exist."""
        event = self.publish(kind, phase, attempt, data)
        if self.async_sinks:
            await self.deliver(event)

    # -- agents and inputs ----------------------------------------------------------
    def create_agents(self, registry: AgentRegistry) -> None:
        """One instance per named agent and per bare type that any phase, handler or
        compensation uses, made before the run starts. Raises AgentError."""
        wf = self.workflow
        for p in (*wf.phases, *wf.on_success, *wf.on_failure, *wf.finally_):
            for name in _agents_of(p):
                self.agent(name)

    def agent(self, name: str) -> Agent:
        """The run's instance of a named agent or bare type (with its limiter), made on
        first use. Raises AgentError."""
        found = self.agents.get(name)
        if found is None:
            spec = self.workflow.agents.get(name)
            type_ = spec.type if spec else name
            found = self.agents[name] = self.registry.create(type_, name)
            self.agent_types[name] = type_
            if spec is not None and AgentLimiter.needed(spec):
                self.limiters[name] = AgentLimiter(spec)
        return found

    async def close_agents(self) -> None:
        """``aclose`` every agent instance; errors there do not hide the run's result."""
        for agent in self.agents.values():
            close = getattr(agent, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - a plugin's cleanup may raise anything
                    pass

    def agent_input(self, phase: Phase, agent: str | None) -> tuple[Mapping[str, Any], bool]:
        """The phase's ``with`` merged (shallow) over the named agent's, and whether it
        holds any template. Computed once per (phase, agent)."""
        key = (phase.id, agent)
        found = self._with.get(key)
        if found is None:
            spec: AgentSpec | None = self.workflow.agents.get(agent) if agent else None
            merged = {**spec.with_, **phase.with_} if spec and spec.with_ else phase.with_
            found = (merged, has_template(merged))
            self._with[key] = found
        return found

    def take_retry(self) -> bool:
        """Reserve one retry from the run's ``max_total_retries``; False when none is left."""
        if self.retries_left is None:
            return True
        if self.retries_left <= 0:
            return False
        self.retries_left -= 1
        return True

    async def run_workflow(self, path: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run another workflow file as a sub-run; return its outputs (AgentContext.run_workflow).

        Raises AgentFailure (permanent) when it cannot load, nests too deep, or fails.
        """
        from ..errors import OrchError
        from ..plan import compile_plan

        load_workflow = importlib.import_module("orchestrator.spec").load_workflow  # lazy: spec

        depth = self.options.depth + 1
        target = Path(path)
        if not target.is_absolute():
            target = Path(self.workdir) / target
        top = str(Path(self.workflow.path).resolve()) if self.workflow.path else "workflow"
        chain = (*(_SUB_RUNS.get() or (top,)), str(target.resolve()))
        if depth > self.options.max_depth:
            raise AgentFailure(_too_deep(chain, self.options.max_depth), transient=False)
        try:
            sub_plan = compile_plan(load_workflow(str(target), registry=self.registry))
        except OrchError as exc:
            raise AgentFailure(f"sub-workflow '{path}': {exc}", transient=False) from exc
        opts = RunOptions(
            max_parallel=self.options.max_parallel,
            no_cache=self.options.no_cache,
            clock=self.clock,
            cache=self.options.cache,
            depth=depth,
            max_depth=self.options.max_depth,
        )
        token = _SUB_RUNS.set(chain)
        try:
            result = await execute(sub_plan, inputs=inputs, registry=self.registry, options=opts)
        except UsageError as exc:
            raise AgentFailure(f"sub-workflow '{path}': {exc}", transient=False) from exc
        finally:
            _SUB_RUNS.reset(token)
        if result.status != "completed":
            error = result.error or ""
            for marker in _TOO_DEEP:  # already says which files nest: do not wrap it again
                if marker in error:
                    raise AgentFailure(error[error.index(marker) :], transient=False)
            raise AgentFailure(
                f"sub-workflow '{path}' {result.status}: {result.error}", transient=False
            )
        return dict(result.outputs)


def _too_deep(chain: tuple[str, ...], limit: int) -> str:
    """One line naming the files of sub-runs nested deeper than ``limit``: the loop if any."""
    names = [Path(p).name for p in chain]
    for i, file in enumerate(chain):
        if file in chain[:i]:
            return (
                f"{_TOO_DEEP[0]}{' -> '.join(names[: i + 1])} -> ... nests deeper than {limit} runs"
            )
    return f"{_TOO_DEEP[1]}{limit} runs: {' -> '.join(names)}"


def _agents_of(phase: Phase) -> list[str]:
    """Every agent a phase may call: its own, the fallback's, the compensation's, handoff's."""
    names = [phase.agent] if phase.agent else []
    for call in (phase.fallback, phase.compensate):
        if call is not None:
            names.append(call.agent)
    if phase.handoff:
        names.extend(phase.handoff.agents)
    return names


def _read_secrets(names: Iterable[str]) -> dict[str, str]:
    missing = sorted(n for n in names if n not in os.environ)
    if missing:
        raise UsageError(
            "secret"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(f"'{n}'" for n in missing)
            + " not set in the environment",
            hint="export " + " ".join(f"{n}=..." for n in missing) + " before the run",
        )
    return {n: os.environ[n] for n in sorted(names)}


class _Scheduler:
    """One run's loop. ``_done`` collects finished phase tasks from their callbacks."""

    def __init__(self, state: RunState, executor: PhaseExecutor, cancel: asyncio.Event | None):
        self.state = state
        self.plan = state.plan
        self.executor = executor
        self.cancel = cancel
        wf = state.workflow
        limit = state.options.max_parallel or wf.max_parallel
        self.limit: int | None = limit if limit and limit > 0 else None
        self.keep_going = wf.error_handling.continue_on_error
        self.running: dict[asyncio.Task[PhaseOutcome], str] = {}
        self._done: list[asyncio.Task[PhaseOutcome]] = []
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
        self._done.append(task)
        self._wakeup()

    async def run(self) -> None:
        """Run every phase that can run; returns when nothing runs and nothing is ready."""
        plan = self.plan
        phases = plan.phases
        rank = {
            pid: (p.priority_rank, -plan.remaining[pid], i)
            for i, (pid, p) in enumerate(phases.items())
        }
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for pid in plan.order:
            sorter.add(pid, *plan.predecessors[pid])
        sorter.prepare()
        heap: list[tuple[tuple[int, float, int], str]] = []
        # phases of an agent with max_concurrency wait here, not in a max_parallel slot
        bounds = {
            name: spec.max_concurrency
            for name, spec in plan.workflow.agents.items()
            if spec.max_concurrency
        }
        agent_busy: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        state = self.state
        outcomes = state.outcomes
        prior = state.prior
        executor = self.executor
        running = self.running
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
                    for pid in sorter.get_ready():
                        heapq.heappush(heap, (rank[pid], pid))
                    deferred = []
                    while heap:
                        stopping = self.stopping
                        # after a failure (fail-fast) the graph is still walked: phases
                        # whose trigger tolerates failure run, the others are skipped
                        if stopping is not None and (stopping != "failed" or self.crash):
                            break
                        if self.limit is not None and len(running) >= self.limit:
                            break
                        entry = heapq.heappop(heap)
                        pid = entry[1]
                        old = prior.get(pid)
                        if old is not None and old.status == "completed":
                            outcomes[pid] = old
                            self.completion_order.append(pid)
                            sorter.done(pid)
                            progressed = True
                            continue
                        if stopping is not None and phases[pid].trigger not in _TOLERANT:
                            await self._skip(pid, _NOT_STARTED["failed"])
                            sorter.done(pid)
                            progressed = True
                            continue
                        reason = self._blocked(phases[pid])
                        if reason is not None:
                            await self._skip(pid, reason)
                            sorter.done(pid)
                            progressed = True
                            continue
                        agent = phases[pid].agent
                        if agent is not None and agent in bounds:
                            busy = agent_busy.get(agent, 0)
                            if busy >= bounds[agent]:  # saturated: keep the slot for others
                                deferred.append(entry)
                                continue
                            agent_busy[agent] = busy + 1
                        task = loop.create_task(executor.execute(phases[pid], state))
                        running[task] = pid
                        task.add_done_callback(self._on_task_done)
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
                    if agent in agent_busy:
                        agent_busy[agent] -= 1
                    self._finish(pid, task)
                    if pid not in outcomes:  # cancelled before its first step
                        await self._skip(pid, _NOT_STARTED.get(self.stopping or "", "not started"))
                    sorter.done(pid)
        except asyncio.CancelledError:
            self._stop("cancelled")
            await self._drain(sorter)
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

    async def _drain(self, sorter: graphlib.TopologicalSorter[str]) -> None:
        """After the run's own task was cancelled: cancel phases, wait for their outcomes."""
        self._stop("cancelled")
        self._cancel_running()
        while self.running:
            await asyncio.wait(list(self.running))
            for task in [t for t in self.running if t.done()]:
                pid = self.running.pop(task)
                self._finish(pid, task)
                sorter.done(pid)
        self._done = []
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

    def _cancel_running(self, spare: frozenset[str] = frozenset()) -> None:
        for task, pid in self.running.items():
            if task not in self._cancelled and pid not in spare:
                self._cancelled.add(task)
                task.cancel()
        self._wakeup()

    def _finish(self, pid: str, task: asyncio.Task[PhaseOutcome]) -> None:
        outcomes = self.state.outcomes
        if task.cancelled():
            # cancelled before its first step: it never started and emitted nothing, so it
            # is left out here and reported as not started (phase_skipped) at the end
            return
        exc = task.exception()
        if exc is not None:  # a bug in an executor or a sink: stop and re-raise at the end
            if self.crash is None:
                self.crash = exc
            self._stop("failed")
            self._cancel_running()
            outcome = PhaseOutcome(pid, "failed", error=f"{type(exc).__name__}: {exc}")
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
        self.state.outcomes[pid] = PhaseOutcome(pid, "skipped", error=None)
        await self.state.emit("phase_skipped", pid, None, {"status": "skipped", "reason": reason})


async def execute(
    plan: Plan,
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
    cancelled (the latter re-raises CancelledError after the last event).
    """
    from .phase import LocalExecutor

    options = options or _DEFAULT_OPTIONS
    registry = registry if registry is not None else AgentRegistry.from_entry_points()
    state = RunState(
        plan,
        inputs=inputs,
        registry=registry,
        run_id=run_id,
        options=options,
        sinks=sinks,
        prior=prior,
    )
    state.create_agents(registry)
    wf = plan.workflow
    scheduler = _Scheduler(state, options.executor or LocalExecutor(), cancel)
    started = state.clock()
    await state.emit(
        "workflow_started",
        data={
            "workflow": wf.name,
            "path": wf.path,
            "source_hash": wf.source_hash,
            "phases": list(plan.order),
            "fingerprints": wf.fingerprints(),
            "inputs": state.inputs,
            "pid": os.getpid(),
            **({"resumed_from": options.resumed_from} if options.resumed_from else {}),
        },
    )
    interrupted: BaseException | None = None
    try:
        try:
            await scheduler.run()
        except asyncio.CancelledError as exc:
            interrupted = exc
        if scheduler.crash is not None:
            raise scheduler.crash
        # the epilogue (compensations, handlers) still uses the agents: close them after
        return await _finish(state, scheduler, started, interrupted)
    finally:
        await state.close_agents()


async def _finish(
    state: RunState, scheduler: _Scheduler, started: float, interrupted: BaseException | None
) -> RunResult:
    wf = state.workflow
    outcomes = state.outcomes
    error: str | None = None
    if interrupted is not None or scheduler.stopping == "cancelled":
        status = "cancelled"
        error = "the run was cancelled"
    elif scheduler.stopping == "timeout":
        status = "failed"
        error = f"the run timed out after {format_duration(wf.timeout or 0)}"
    elif scheduler.failed:
        status = "failed"
        first = scheduler.failed[0]
        error = f"phase '{first}' failed: {outcomes[first].error}"
        if len(scheduler.failed) > 1:
            error += f" (and {len(scheduler.failed) - 1} more)"
    else:
        status = "completed"
    replaced: Mapping[str, Any] | None = None
    if has_epilogue(wf):  # fallback workflow, compensation, on_success/on_failure/finally
        status, error, replaced = await epilogue(state, status, error, scheduler.completion_order)
    outputs: dict[str, Any] = {}
    if replaced is not None:
        outputs = dict(replaced)
    elif wf.outputs:
        for key, value in wf.outputs.items():
            try:
                outputs[key] = render(value, state.context) if has_template(value) else value
            except ExpressionError as exc:
                if status == "completed":
                    status, error = "failed", f"output '{key}': {exc.message}"
    counts: dict[str, int] = {}
    tokens: dict[str, int] = {"prompt": 0, "completion": 0, "total": 0}
    for outcome in outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        add_tokens(tokens, outcome.metadata)
    ended = state.clock()
    kind = {"completed": "workflow_completed", "failed": "workflow_failed"}.get(
        status, "workflow_cancelled"
    )
    event = state.publish(
        kind,
        data={
            "status": status,
            "outputs": outputs,
            "duration": ended - started,
            "error": error,
            "counts": counts,
            "tokens": tokens,
        },
    )
    if state.async_sinks:
        await state.deliver(event)
    result = RunResult(
        run_id=state.run_id,
        status=status,
        phases=dict(outcomes),
        outputs=state.masker.mask(outputs) if state.masker else outputs,
        error=state.masker.mask_text(error) if (error and state.masker) else error,
        started=started,
        ended=ended,
        completion_order=tuple(scheduler.completion_order),
    )
    if interrupted is not None:
        raise interrupted
    return result


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
    plan: Plan,
    *,
    inputs: Mapping[str, Any] | None = None,
    registry: AgentRegistry | None = None,
    run_id: str | None = None,
    options: RunOptions | None = None,
    sinks: Iterable[EventSink] = (),
    prior: Mapping[str, PhaseOutcome] | None = None,
) -> RunResult:
    """``execute`` in a new event loop (``asyncio.run``); for scripts, not for async code."""
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
