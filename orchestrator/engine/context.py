"""The run context: everything one run shares, built in one place (``build_context``).

A ``RunContext`` holds the plan and options, the resolved inputs and secrets,
the template context, the ``AgentPool`` (one instance per agent, with its
limiter and breaker), the ``EventBus``, the executor and the call middleware,
the outcomes so far and the sub-run launcher. The scheduler (``runner.py``),
the phase logic (``phase.py``), the call path (``call.py``), compensations and
handlers read it; none of them builds one. The engine reads no globals: the
environment, the clocks and the registry come in through ``RunOptions`` and
``execute``'s arguments.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agents.base import Agent, AgentFailure, AgentResult
from ..agents.registry import AgentRegistry
from ..errors import RecordFailed, UsageError
from ..events import Event, EventSink, SecretMasker, is_durable
from ..plan import Plan
from ..spec.model import Workflow
from ..state.base import new_run_id
from .approval import SubRunDesk
from .budget import Spend
from .executor import Executor, LocalExecutor
from .inputs import resolve_inputs
from .limits import AgentLimiter
from .result import PhaseOutcome, ResultCache, RunOptions, RunResult, Slots, Usage

if TYPE_CHECKING:
    from .executor import CallMiddleware

__all__ = ["AgentPool", "EventBus", "Launcher", "RunContext", "SubRuns", "build_context"]

#: Starts a sub-run: ``launch(plan, inputs=..., registry=..., options=...)`` -> RunResult.
#: ``runner.execute`` is passed in (the context does not import the scheduler).
Launcher = Callable[..., Awaitable[RunResult]]

# The workflow files of the sub-runs under way, outermost first; a sub-run's phase
# tasks inherit it, so the depth limit can name the files that nest too deep.
_SUB_RUNS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "orch_sub_runs", default=()
)
TOO_DEEP = ("sub-workflow recursion: ", "sub-workflows nest deeper than ")
# The repeat iteration under way: (run id, phase id, n), set by the phase logic, so a
# sub-run started in iteration n is addressed `phase#n` (engine/approval.py).
ITERATION: contextvars.ContextVar[tuple[str, str, int] | None] = contextvars.ContextVar(
    "orch_iteration", default=None
)


class EventBus:
    """Masks each event once, then hands it to the sinks: the single choke point.

    Durable first: the async sinks (the state store, listed first) are awaited,
    and only then do the sync sinks (the display, ``--events jsonl``, the Python
    iterator) see the event, so nothing is shown that a crash could lose.
    """

    __slots__ = (
        "run_id",
        "now",
        "masker",
        "sync_sinks",
        "async_sinks",
        "trace_id",
        "postable",
        "sink_error",
    )

    def __init__(
        self,
        run_id: str,
        now: Callable[[], float],
        masker: SecretMasker,
        sinks: Iterable[EventSink],
        trace_id: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.trace_id = trace_id  # stamped on every event (tracing on: RunOptions.trace_id)
        self.now = now
        self.masker = masker
        sinks = tuple(sinks)
        self.sync_sinks = tuple(s for s in sinks if not is_durable(s))
        self.async_sinks = tuple(s for s in sinks if is_durable(s))
        # ``post`` can queue an event without waiting: one async sink, one that returns
        # a future settled once the event is stored (``durable``: the state store)
        self.postable = len(self.async_sinks) == 1 and getattr(
            self.async_sinks[0], "durable", False
        )
        # a sync sink that raised on a posted event (the scheduler stops the run with it)
        self.sink_error: BaseException | None = None

    def _stamped(self, event: Event) -> Event:
        if self.trace_id is not None and event.trace_id is None:
            event = dataclasses.replace(event, trace_id=self.trace_id)
        if self.masker:
            event = self.masker.mask_event(event)
        return event

    def emit(self, event: Event) -> Awaitable[None]:
        """Mask the event, await the async sinks in order, then call the sync sinks.

        Without async sinks the event is delivered before this returns (the awaitable
        is already done): no task, no suspension, so no cancel can land in between.
        """
        event = self._stamped(event)
        if self.async_sinks:
            return self._deliver(event)
        for sink in self.sync_sinks:
            sink(event)
        return DELIVERED

    def post(self, event: Event) -> tuple[Event, asyncio.Future[None]]:
        """``emit`` without waiting (only when ``postable``): hand the event to the store
        and return it with the store's future, settled once it is committed; the sync
        sinks see it then (a callback: in the store's order, never before it is stored).
        Whoever posts waits for that future before building on the event (the scheduler,
        before it counts a phase as ended: ``runner._Scheduler``)."""
        event = self._stamped(event)
        try:
            stored = self.async_sinks[0](event)
        except Exception as exc:  # noqa: BLE001 - refused at once (an earlier write failed)
            raise RecordFailed(event.event, event.phase, exc) from exc
        future = stored if isinstance(stored, asyncio.Future) else asyncio.ensure_future(stored)  # type: ignore[arg-type]
        if self.sync_sinks:
            future.add_done_callback(functools.partial(self._stored, event))
        return event, future

    def _stored(self, event: Event, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # not stored: shown to no one (the scheduler stops the run)
        try:
            for sink in self.sync_sinks:
                sink(event)
        except Exception as exc:  # noqa: BLE001 - a sink's bug stops the run, as in emit
            if self.sink_error is None:
                self.sink_error = exc

    async def emit_through(self, event: Event) -> None:
        """``emit`` that a cancel does not interrupt: the event reaches every sink, and
        a cancel arriving meanwhile is absorbed (a phase run outside the scheduler, a
        handler phase in the run's own task, stays completed once its completion is
        being recorded: no ``phase_failed`` follows its stored ``phase_completed``).
        Without async sinks nothing can interrupt ``emit``: no task is made."""
        if not self.async_sinks:
            await self.emit(event)
            return
        delivery = asyncio.ensure_future(self.emit(event))
        while True:
            try:
                await asyncio.shield(delivery)
                return
            except asyncio.CancelledError:
                if delivery.done():  # cancelled while the result was handed over
                    delivery.result()
                    return

    async def _deliver(self, event: Event) -> None:
        sinks = self.async_sinks
        try:
            if len(sinks) == 1:  # the store alone (the usual case): no loop to keep alive
                await sinks[0](event)  # type: ignore[misc]
            else:
                for sink in sinks:
                    await sink(event)  # type: ignore[misc]
        except (asyncio.CancelledError, RecordFailed):
            raise
        except Exception as exc:  # noqa: BLE001 - any failing record stops the run
            raise RecordFailed(event.event, event.phase, exc) from exc
        for sink in self.sync_sinks:
            sink(event)


class _Delivered:
    """An awaitable that is already done (``EventBus.emit`` without async sinks)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


#: What ``emit`` returns when the event is delivered already, and a phase's posted end.
DELIVERED = _Delivered()


class AgentPool:
    """One instance per named agent and per bare type, each with its limiter (if any)."""

    __slots__ = ("workflow", "registry", "monotonic", "agents", "types", "limiters")

    def __init__(
        self, workflow: Workflow, registry: AgentRegistry, monotonic: Callable[[], float]
    ) -> None:
        self.workflow = workflow
        self.registry = registry
        self.monotonic = monotonic
        self.agents: dict[str, Agent] = {}
        self.types: dict[str, str] = {}
        self.limiters: dict[str, AgentLimiter] = {}

    def create_all(self) -> None:
        """Make every agent any phase, handler or compensation uses, before the run starts.

        Raises AgentError (unknown type, a plugin that cannot load).
        """
        wf = self.workflow
        made = self.agents
        for p in (*wf.phases, *wf.on_success, *wf.on_failure, *wf.finally_):
            for name in p.agent_names:
                if name not in made:
                    self.agent(name)

    def agent(self, name: str) -> Agent:
        """The run's instance of a named agent or bare type, made on first use."""
        found = self.agents.get(name)
        if found is None:
            spec = self.workflow.agents.get(name)
            type_ = spec.type if spec else name
            found = self.agents[name] = self.registry.create(type_, name)
            self.types[name] = type_
            if spec is not None and AgentLimiter.needed(spec):
                self.limiters[name] = AgentLimiter(spec, clock=self.monotonic)
        return found

    async def aclose(self) -> None:
        """``aclose`` every instance; errors there do not hide the run's result."""
        for agent in self.agents.values():
            close = getattr(agent, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - a plugin's cleanup may raise anything
                    pass


class RunContext:
    """Everything one run shares between the scheduler, its phases and its agent calls."""

    def __init__(
        self,
        plan: Plan,
        *,
        run_id: str,
        inputs: Mapping[str, Any],
        secrets: Mapping[str, str],
        environ: Mapping[str, str],
        registry: AgentRegistry,
        options: RunOptions,
        bus: EventBus,
        prior: Mapping[str, PhaseOutcome],
        launch: Launcher | None,
    ) -> None:
        wf = plan.workflow
        self.plan = plan
        self.workflow: Workflow = wf
        self.options = options
        self.registry = registry
        self.run_id = run_id
        self.clock = options.clock
        #: the run clock (seconds since the epoch): every event's ``ts``
        self.now: Callable[[], float] = options.clock
        self.monotonic = options.monotonic
        self.inputs = dict(inputs)
        self.secrets = dict(secrets)
        self.environ = environ
        self.masker = bus.masker
        self.bus = bus
        self.prior = dict(prior)
        self.cache: ResultCache | None = None if options.no_cache else options.cache
        self.executor: Executor = options.executor or LocalExecutor()
        self.middleware: tuple[CallMiddleware, ...] = tuple(options.call_middleware)
        # a middleware that must see every call (``--record``) turns cache lookups off
        self.cache_reads = not any(getattr(m, "needs_every_call", False) for m in self.middleware)
        self.pool = AgentPool(wf, registry, options.monotonic)
        self.workdir = str(Path(wf.path).parent) if wf.path != "<memory>" else options.workdir
        self.outcomes: dict[str, PhaseOutcome] = {}
        self.context: dict[str, Any] = {
            "inputs": self.inputs,
            "phases": self.outcomes,
            "run": {"id": run_id, "workflow": wf.name},
            "env": {n: environ[n] for n in wf.env_names if n in environ},
            "secrets": self.secrets,
            "trigger": dict(options.trigger),  # what started the run (orch serve); {} otherwise
        }
        self.retries_left = wf.error_handling.max_total_retries
        # tokens and cost the calls used, against `budget:` (and a sub-run's caller's)
        self.spend = Spend(wf, options.budget_parent)
        # what earlier runs spent: each prior outcome's recorded tokens and cost (a phase
        # not completed runs again: its new end includes them), or ``resume_spent``'s
        spent = {pid: outcome.metadata for pid, outcome in self.prior.items()}
        spent.update(options.resume_spent)
        for pid, used in spent.items():
            self.spend.add(pid, used)
        self.deadline: float | None = None  # monotonic end of the run (its timeout)
        self.memo: dict[Any, Any] = {}  # per-run memo of the call path (merged `with:`)
        self.in_flight: dict[str, int] = {}  # agent calls under way, per agent
        # phase tasks recording their completion: the scheduler cancels none of them (a
        # failure elsewhere, Ctrl-C), so a completion stays one, and the agent's work counts
        self.completing: set[asyncio.Task[Any]] = set()
        # events a scheduler's phase task posted (``EventBus.post``), per task: the
        # scheduler counts the phase as ended once they are all stored
        self.posted: dict[asyncio.Task[Any], list[tuple[Event, asyncio.Future[None]]]] = {}
        # the scheduler's phase tasks (its ``running``); a phase run in another task (the
        # handler phases, in the run's own task) shields its completion instead
        self.phase_tasks: Mapping[asyncio.Task[Any], str] = {}
        self.slots = Slots()  # the scheduler's, while it runs the phases
        # the run's cancel request (execute's ``cancel``): ``forced`` once it asked to stop
        # now (a second Ctrl-C); ``stopped``: a cancel of the run's own task interrupted a
        # compensation (compensations and handlers not started then are not run)
        self.cancel_request: asyncio.Event | None = None
        self.stopped = False
        self._launch = launch

    @property
    def stopping_now(self) -> bool:
        """Whether what runs after the phases (compensations, handlers) must not start:
        the run was forced to stop (a second cancel) after its phases ended (one that
        came while they ran is taken by the runner: it killed them, the saga runs)."""
        return self.stopped or bool(getattr(self.cancel_request, "forced", False))

    def take_retry(self) -> bool:
        """Reserve one retry from the run's ``max_total_retries``; False when none is left."""
        if self.retries_left is None:
            return True
        if self.retries_left <= 0:
            return False
        self.retries_left -= 1
        return True

    async def run_workflow(
        self,
        path: str,
        inputs: Mapping[str, Any],
        *,
        caller: SubRuns | None = None,
        at: str | None = None,
    ) -> Mapping[str, Any]:
        """Run another workflow file as a sub-run; return its outputs (AgentContext.run_workflow).

        ``caller`` (the agent call that starts it) is where the sub-run's spending
        counts and whose budgets it obeys. ``at`` (default: the caller's ``at``)
        addresses the sub-run in this run: phases with ``approval:`` in it wait for
        a decision on the top run at ``<at>/<phase>`` (engine/approval.py); without
        an address they fail as in a run without a store. Raises AgentFailure
        (permanent) when it cannot load, nests too deep, or fails.
        """
        import importlib

        from ..errors import OrchError
        from ..plan import compile_plan

        load_workflow = importlib.import_module("orchestrator.spec").load_workflow  # lazy: spec

        if self._launch is None:
            raise AgentFailure("sub-runs are not available here", transient=False)
        options = self.options
        depth = options.depth + 1
        target = Path(path)
        if not target.is_absolute():
            target = Path(self.workdir) / target
        path = _shown(target, self.workdir)  # messages name it as the workflow does
        top = str(Path(self.workflow.path).resolve()) if self.workflow.path else "workflow"
        chain = (*(_SUB_RUNS.get() or (top,)), str(target.resolve()))
        if depth > options.max_depth:
            raise AgentFailure(_too_deep(chain, options.max_depth), transient=False)
        try:
            sub_plan = compile_plan(load_workflow(str(target), registry=self.registry))
        except OrchError as exc:
            raise AgentFailure(
                f"sub-workflow '{path}': {exc.headline}", transient=False, hint=exc.hint
            ) from exc
        sub = sub_plan.workflow
        every = (*sub.phases, *sub.on_success, *sub.on_failure, *sub.finally_)
        asking = frozenset(p.id for p in every if p.approval is not None)
        if at is None and caller is not None:
            at = caller.at
        desk = SubRunDesk.below(self, at, asking) if at is not None and asking else None
        sub_options = RunOptions(
            max_parallel=options.max_parallel,
            no_cache=options.no_cache,
            clock=options.clock,
            monotonic=options.monotonic,
            environ=self.environ,
            executor=options.executor,
            call_middleware=options.call_middleware,
            cache=options.cache,
            depth=depth,
            max_depth=options.max_depth,
            replay=options.replay,
            trace_id=options.trace_id,
            budget_parent=caller,
            approvals=desk,
            masker_above=self.masker,  # its inputs may hold this run's secrets
        )
        bus = self.bus  # sinks that follow sub-runs too (the tracer) get their events
        sinks = [s for s in (*bus.async_sinks, *bus.sync_sinks) if getattr(s, "sees_sub_runs", 0)]
        token = _SUB_RUNS.set(chain)
        try:
            result = await self._launch(
                sub_plan,
                inputs=inputs,
                registry=self.registry,
                options=sub_options,
                sinks=[*sinks, desk.forward] if desk is not None else sinks,
            )
        except UsageError as exc:
            raise AgentFailure(
                f"sub-workflow '{path}': {exc.headline}", transient=False, hint=exc.hint
            ) from exc
        finally:
            _SUB_RUNS.reset(token)
        if result.status != "completed":
            error = result.error or ""
            for marker in TOO_DEEP:  # already says which files nest: do not wrap it again
                if marker in error:
                    raise AgentFailure(error[error.index(marker) :], transient=False)
            raise AgentFailure(
                f"sub-workflow '{path}' {result.status}: {result.error}", transient=False
            )
        return dict(result.outputs)


class SubRuns:
    """The sub-runs one agent call starts (its ``CallChannel.run_workflow``), and their
    address ``at`` in this run.

    What they spend counts, as they spend it, for the calling phase of this run
    (``spent``: its budgets and the run's see it at once), and before each of
    their calls this run's budgets are checked (``check``). ``used`` sums it, so
    the call reports it as its own ``tokens``/``cost`` (``reported``): the phase,
    the run's totals and ``orch stats`` include what its sub-runs used.
    """

    __slots__ = ("run", "phase_id", "used", "at")

    def __init__(self, run: RunContext, phase_id: str, item: int | None = None) -> None:
        self.run = run
        self.phase_id = phase_id
        self.used: Usage | None = None
        # the sub-runs' address in this run: the phase, `[item]` of a foreach item,
        # `#n` of a repeat iteration (engine/approval.py: approvals inside sub-runs)
        at = phase_id + (f"[{item}]" if item is not None else "")
        iteration = ITERATION.get()
        if iteration is not None and iteration[:2] == (run.run_id, phase_id):
            at += f"#{iteration[2]}"
        self.at = at

    async def __call__(self, path: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return await self.run.run_workflow(path, inputs, caller=self)

    def spent(self, metadata: Mapping[str, Any]) -> None:
        """A call of a sub-run reported usage: it counts for the calling phase now."""
        if self.used is None:
            self.used = Usage()
        self.used.add(metadata)
        self.run.spend.add(self.phase_id, metadata)

    def check(self) -> None:
        """BudgetExceeded when a budget of this run (or of the runs above) is used up."""
        self.run.spend.check(self.phase_id, sub_run=True)

    def reported(self, result: Any) -> AgentResult:
        """The call's result with what its sub-runs used added to its own usage."""
        if not isinstance(result, AgentResult):
            result = AgentResult(output=result)
        usage = Usage()
        usage.add(result.metadata)
        usage.add(self.used.as_metadata() if self.used is not None else None)
        metadata = {**result.metadata, **usage.as_metadata()}
        return AgentResult(result.output, metadata, result.handoff)


def _shown(target: Path, workdir: str) -> str:
    """A sub-workflow's file as messages name it: relative to the calling workflow's folder
    when it is inside it (the workflow agent passes an absolute path), else as it is."""
    try:
        return str(target.absolute().relative_to(Path(workdir).absolute()))
    except ValueError:
        return str(target)


def _too_deep(chain: tuple[str, ...], limit: int) -> str:
    """One line naming the files of sub-runs nested deeper than ``limit``: the loop if any."""
    names = [Path(p).name for p in chain]
    for i, file in enumerate(chain):
        if file in chain[:i]:
            return (
                f"{TOO_DEEP[0]}{' -> '.join(names[: i + 1])} -> ... nests deeper than {limit} runs"
            )
    return f"{TOO_DEEP[1]}{limit} runs: {' -> '.join(names)}"


def read_secrets(
    names: Iterable[str], environ: Mapping[str, str], *, replay: bool = False
) -> dict[str, str]:
    """The value of each secret name in ``environ``; UsageError naming the missing ones.

    ``replay``: agent calls are answered from recordings, which hold no secret; a
    missing one gets a stand-in value (never masked: it is no secret)."""
    missing = sorted(n for n in names if n not in environ)
    if missing and replay:
        return {n: environ.get(n) or f"<{n} not set: replaying>" for n in sorted(names)}
    if missing:
        raise UsageError(
            "secret"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(f"'{n}'" for n in missing)
            + " not set in the environment",
            hint="export " + " ".join(f"{n}=..." for n in missing) + " before the run",
        )
    return {n: environ[n] for n in sorted(names)}


def build_context(
    plan: Plan,
    *,
    inputs: Mapping[str, Any] | None,
    registry: AgentRegistry,
    run_id: str | None,
    options: RunOptions,
    sinks: Iterable[EventSink],
    prior: Mapping[str, PhaseOutcome] | None,
    launch: Launcher | None,
    create_agents: bool = True,
) -> RunContext:
    """The run's context, with its agents made (unless ``create_agents`` is False).

    Raises UsageError (bad inputs, a secret missing from the environment) and
    AgentError (an agent type that cannot be found or loaded), before any event.
    """
    wf = plan.workflow
    environ = options.environ
    resolved = resolve_inputs(wf, inputs or {}, strings=False)
    secrets = read_secrets(wf.secret_names, environ, replay=options.replay)
    rid = run_id or new_run_id()
    real = (v for n, v in secrets.items() if n in environ)  # a replay's stand-ins are not
    masker = SecretMasker(real, also=options.masker_above)  # a sub-run's: its parent's too
    bus = EventBus(rid, options.clock, masker, sinks, trace_id=options.trace_id)
    run = RunContext(
        plan,
        run_id=rid,
        inputs=resolved,
        secrets=secrets,
        environ=environ,
        registry=registry,
        options=options,
        bus=bus,
        prior=prior or {},
        launch=launch,
    )
    if create_agents:
        run.pool.create_all()
    return run
