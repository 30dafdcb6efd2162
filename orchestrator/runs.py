"""Runs over the state store, from Python: the peer of the CLI (contract section 9).

``start`` runs a workflow in this process's event loop, recorded in the state
store exactly as ``orch run`` records it (so ``orch runs/status/logs/resume/cancel``
see it), with the phase cache; it returns a ``RunHandle`` to follow its events,
read its status, wait for it and cancel it. ``resume`` goes on with a stopped
run. ``status``, ``list_runs``, ``follow``, ``wait`` and ``cancel`` work on any
recorded run, started here or by another process (``orch run``, ``orch serve``).
This module is a composition root: it wires the engine, the SQLite store and the
installed agents; the CLI commands call it and print.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RunNotFound, UsageError

if TYPE_CHECKING:
    from .agents.registry import AgentRegistry
    from .engine import CallMiddleware, Executor, PhaseOutcome, RunResult
    from .events import Event, EventSink
    from .plan import Plan
    from .state.base import PhaseRecord, RunRecord
    from .state.sqlite import SqliteStore

__all__ = [
    "Cancelled",
    "Prepared",
    "RunHandle",
    "RunStatus",
    "EXIT_CODES",
    "cancel",
    "exit_code",
    "follow",
    "go_on",
    "list_runs",
    "prepare",
    "resume",
    "start",
    "status",
    "status_exit_code",
    "wait",
    "wait_sync",
]

#: Seconds between two looks at the store while following or waiting for a run
#: owned by another process.
POLL = 0.2
# Runs this process started and that are still going: cancel() reaches them directly.
_LIVE: dict[str, RunHandle] = {}


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A recorded run and its phases, as the store has them now."""

    run: RunRecord
    phases: tuple[PhaseRecord, ...]

    @property
    def id(self) -> str:
        """The run id."""
        return self.run.id

    cancelled_by: str | None = None

    @property
    def status(self) -> str:
        """running, completed, failed, cancelled or interrupted (its process died)."""
        return self.run.status


class RunHandle:
    """A run started (or resumed) in this process.

    ``events()`` yields every event of the run, from its start, each after the
    state store has it; ``status()`` reads the store; ``await wait()`` gives the
    RunResult; ``cancel()`` stops it cleanly (compensations run, the run is
    recorded as cancelled).
    """

    def __init__(self, run_id: str, plan: Plan, state_dir: Path, store: SqliteStore) -> None:
        self.run_id = run_id
        self.plan = plan
        self.state_dir = state_dir
        self._store = store
        self._events: list[Event] = []
        from .engine import CancelRequest

        self._changed = asyncio.Event()
        self._cancel = CancelRequest()
        self._started = asyncio.Event()
        self._task: asyncio.Task[RunResult] | None = None

    async def _sink(self, event: Event) -> None:
        # async: the bus awaits the store's sink (listed first) before this one
        self._events.append(event)
        if event.event == "workflow_started":
            self._started.set()
        self._changed.set()

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self._task is not None and self._task.done()

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the run in order, live, ending with its workflow_* event.

        Several consumers may follow one run; leaving the loop does not stop the run.
        """
        seen = 0
        while True:
            while seen < len(self._events):
                event = self._events[seen]
                seen += 1
                yield event
            if self.done:
                return
            self._changed.clear()
            task = self._task
            assert task is not None
            waiter = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    def status(self) -> RunStatus:
        """The run and its phases as recorded in the store now."""
        return status(self.run_id, state_dir=self.state_dir)

    async def wait(self, timeout: float | None = None) -> RunResult:
        """The run's result once it ended; TimeoutError after ``timeout`` seconds (the run
        goes on). Raises what stopped the run from starting (UsageError, AgentError)."""
        assert self._task is not None
        return await asyncio.wait_for(asyncio.shield(self._task), timeout)

    def cancel(self, signum: int | None = None) -> None:
        """Stop the run cleanly (as Ctrl-C does); ``signum`` (a signal number) is recorded
        as ``cancelled_by`` in workflow_cancelled."""
        self._cancel.request(signal.Signals(signum).name if signum else None)

    @property
    def cancelled_by(self) -> str | None:
        """Who cancelled the run (``SIGINT``, ``SIGTERM``: a signal or ``orch cancel``), if any."""
        return self._cancel.by if self._cancel.is_set() else None

    async def _watch(self, poll: float) -> None:
        """Cancel this run when ``orch cancel`` (any process) records a request for it.

        A cancel reaches the run, never the process: the one hosting it (``orch run``,
        a program using this API, ``orch serve``) may run many and handle no signal.
        """
        while not self._cancel.is_set():
            await asyncio.sleep(poll)
            if self._store.cancel_requested(self.run_id):  # one primary-key read
                self._cancel.request(signal.SIGTERM.name)  # `orch cancel`: as SIGTERM


def _open(state_dir: str | os.PathLike[str] | None) -> SqliteStore:
    from .state.sqlite import open_store

    return open_store(state_dir)


def _existing(state_dir: str | os.PathLike[str] | None, run_id: str | None) -> SqliteStore | None:
    """The store if one exists (reading never creates one); RunNotFound names ``run_id``."""
    from .state.sqlite import resolve_state_dir

    folder = resolve_state_dir(state_dir)
    if not (folder / "state.db").exists():
        if run_id is None:
            return None
        raise RunNotFound(
            f"no run '{run_id}': nothing is recorded in {folder}",
            hint="`orch run` records runs there; --state-dir or ORCH_STATE_DIR look elsewhere",
        )
    return _open(state_dir)


#: A file path, YAML text (a str with a line break: a path never has one), a mapping,
#: a Workflow or a Plan.
WorkflowLike = Any


def _plan_of(workflow: WorkflowLike, registry: Any) -> Plan:
    from .plan import Plan, compile_plan
    from .spec import load_workflow
    from .spec.model import Workflow

    if isinstance(workflow, Plan):
        return workflow
    if isinstance(workflow, Workflow):
        return compile_plan(workflow)
    if isinstance(workflow, str) and ("\n" in workflow or "\r" in workflow):
        return compile_plan(load_workflow(text=workflow, registry=registry))  # YAML text
    if isinstance(workflow, os.PathLike):
        workflow = os.fspath(workflow)
    return compile_plan(load_workflow(workflow, registry=registry))


async def start(
    workflow: WorkflowLike,
    *,
    inputs: Mapping[str, Any] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    max_parallel: int | None = None,
    no_cache: bool = False,
    registry: AgentRegistry | None = None,
    environ: Mapping[str, str] | None = None,
    executor: Executor | None = None,
    call_middleware: Sequence[CallMiddleware] = (),
    sinks: Iterable[EventSink] = (),
    strings: bool = False,
    replay: bool = False,
    trigger: Mapping[str, Any] | None = None,
    trace_id: str | None = None,
    _prior: Mapping[str, PhaseOutcome] | None = None,
    _resume_attempts: Mapping[str, int] | None = None,
    _resume_iterations: Mapping[str, tuple[int, Any, bool]] | None = None,
    _key_epochs: Mapping[str, int] | None = None,
    _resume_items: Mapping[str, Mapping[int, Any]] | None = None,
) -> RunHandle:
    """Start a run in this event loop, recorded in the state store; return its handle once
    its ``workflow_started`` is stored.

    ``workflow`` is a file path, YAML text (a str with a line break in it), a
    mapping, a Workflow or a Plan (text and a mapping get the same checks as a
    file). ``state_dir`` defaults to $ORCH_STATE_DIR, else
    ``.orch``. ``cache:`` is honoured unless ``no_cache``. ``strings`` parses
    string inputs by their declared type (as ``--input`` does). ``sinks`` see every
    event after the store has it. ``replay``: a call middleware answers every
    agent call (``--replay``), so unset secrets are not needed. ``trigger`` says what
    started the run (`orch serve`): templates read ``trigger.*``. ``trace_id`` (tracing
    on, orchestrator/tracing.py) is stamped on every event. Approvals are
    decided in the same store (``orch approve``). Raises WorkflowInvalid, UsageError (inputs, a
    missing secret), AgentError and StateError before anything runs.
    """
    from .agents.registry import AgentRegistry
    from .engine import RunOptions, execute
    from .engine.cache import StoreCache
    from .engine.inputs import resolve_inputs
    from .events import SecretMasker
    from .state.sqlite import resolve_state_dir

    registry = registry if registry is not None else AgentRegistry.from_entry_points()
    plan = _plan_of(workflow, registry)
    resolved = resolve_inputs(plan.workflow, inputs or {}, strings=strings)
    env = dict(os.environ) if environ is None else dict(environ)
    store = _open(state_dir)
    try:
        store.check_writable()  # a read-only folder: refused before anything runs
        import uuid

        rid = run_id or uuid.uuid4().hex[:12]
        wf = plan.workflow
        masker = SecretMasker(env.get(name, "") for name in wf.secret_names)
        options = RunOptions(
            max_parallel=max_parallel,
            no_cache=no_cache,
            environ=env,
            executor=executor,
            call_middleware=tuple(call_middleware),
            cache=None if no_cache else StoreCache(store, wf, mask=masker.mask),
            resumed_from=rid if _prior is not None else None,
            resume_attempts=dict(_resume_attempts or {}),
            resume_iterations=dict(_resume_iterations or {}),
            key_epochs=dict(_key_epochs or {}),
            resume_items=dict(_resume_items or {}),
            approvals=store,  # decisions of `orch approve`/`orch reject` land there
            replay=replay,
            trigger=dict(trigger or {}),
            trace_id=trace_id,
        )
        handle = RunHandle(rid, plan, resolve_state_dir(state_dir), store)
        task = asyncio.ensure_future(
            _closing(
                execute(
                    plan,
                    inputs=resolved,
                    registry=registry,
                    run_id=rid,
                    options=options,
                    sinks=(store.record, handle._sink, *sinks),
                    prior=_prior,
                    cancel=handle._cancel,
                ),
                store,
                handle,
            )
        )
    except BaseException:
        store.close()
        raise
    handle._task = task
    _LIVE[rid] = handle

    def finished(_: object) -> None:
        _LIVE.pop(rid, None)
        handle._changed.set()

    task.add_done_callback(finished)
    started = asyncio.ensure_future(handle._started.wait())
    await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if task.done() and not handle._started.is_set():
        task.result()  # raises what stopped the run before it started
    return handle


@dataclass(frozen=True, slots=True)
class Prepared:
    """A stopped run ready to go on: the decision (``engine.resume.Resume``), the pids of
    leftover commands that were stopped, and the registry to run with."""

    resume: Any
    stopped: tuple[int, ...]
    registry: Any


def prepare(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    workflow: WorkflowLike | None = None,
    registry: AgentRegistry | None = None,
) -> Prepared:
    """Decide what resuming a stopped run does, stop the commands its dead owner left
    running, and claim it for this process.

    ``workflow`` defaults to the file the run was started from (a run started from
    a mapping needs it). Raises RunNotFound, RunLocked (its process is alive),
    UsageError (the workflow changed and ``force`` is False), WorkflowInvalid.
    """
    from .agents.builtin.process import stop_leftovers
    from .agents.registry import AgentRegistry
    from .engine.resume import Resume, is_resumable, prepare_resume

    registry = registry if registry is not None else AgentRegistry.from_entry_points()
    store = _existing(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        if not is_resumable(run):  # raises RunLocked for a live run
            return Prepared(Resume(run, None, finished=True), (), registry)
        if workflow is None:
            if not run.path or run.path.startswith("<"):
                raise UsageError(
                    f"run '{run.id}' was not started from a workflow file",
                    hint="pass the workflow it ran (resume(..., workflow=...))",
                )
            workflow = run.path
        plan = _plan_of(workflow, registry)
        # Claim first (prepare_resume does, in one transaction): of two resumes at once,
        # only the one that owns the run stops the commands its dead owner left.
        decision = prepare_resume(store, run, plan, force=force)
        stopped = stop_leftovers(run.id)
    finally:
        store.close()
    return Prepared(decision, tuple(stopped), registry)


async def go_on(
    prepared: Prepared,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    max_parallel: int | None = None,
    no_cache: bool = False,
    sinks: Iterable[EventSink] = (),
    executor: Executor | None = None,
    call_middleware: Sequence[CallMiddleware] = (),
    replay: bool = False,
    trace_id: str | None = None,
) -> RunHandle | None:
    """Run a prepared resume (None when the run had already completed).

    ``executor``, ``call_middleware`` and ``replay`` are as for ``start``: a resume
    runs where, and answered from what, its caller says (nothing is inherited).
    """
    decision = prepared.resume
    if decision.finished:
        return None
    if decision.compensation is not None:
        return await _resume_saga(decision, state_dir, prepared.registry, sinks)
    return await start(
        decision.plan,
        inputs=dict(decision.run.inputs),
        state_dir=state_dir,
        run_id=decision.run.id,
        max_parallel=max_parallel,
        no_cache=no_cache,
        registry=prepared.registry,
        sinks=sinks,
        executor=executor,
        call_middleware=call_middleware,
        replay=replay,
        trace_id=trace_id,
        _prior=decision.prior,
        _resume_attempts=decision.attempts_at,
        _resume_iterations=decision.iterations_at,
        _key_epochs=decision.key_epochs,
        _resume_items=decision.items_at,
    )


async def _closing(run: Any, store: SqliteStore, handle: RunHandle | None = None) -> RunResult:
    """Await the run (watching the store for a cancel request of ``handle``'s run),
    then release the store (its last writes are committed by then)."""
    watcher = None if handle is None else asyncio.ensure_future(handle._watch(POLL))
    try:
        result: RunResult = await run
        return result
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await store.aclose()


async def resume(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    workflow: WorkflowLike | None = None,
    max_parallel: int | None = None,
    no_cache: bool = False,
    registry: AgentRegistry | None = None,
    sinks: Iterable[EventSink] = (),
    executor: Executor | None = None,
    call_middleware: Sequence[CallMiddleware] = (),
    replay: bool = False,
) -> RunHandle | None:
    """Go on with a stopped run: completed phases keep their outputs, the rest run again.

    ``prepare`` then ``go_on``; returns the run's handle, or None when it had
    already completed. Raises as ``prepare``.
    """
    prepared = prepare(
        run_id, state_dir=state_dir, force=force, workflow=workflow, registry=registry
    )
    return await go_on(
        prepared,
        state_dir=state_dir,
        max_parallel=max_parallel,
        no_cache=no_cache,
        sinks=sinks,
        executor=executor,
        call_middleware=call_middleware,
        replay=replay,
    )


async def _resume_saga(
    decision: Any, state_dir: Any, registry: AgentRegistry, sinks: Iterable[EventSink]
) -> RunHandle:
    """Finish the compensation of a run that crashed while compensating."""
    from .engine import RunResult
    from .engine.resume import resume_compensation
    from .state.sqlite import resolve_state_dir

    run = decision.run
    left = decision.compensation
    store = _open(state_dir)
    handle = RunHandle(run.id, decision.plan, resolve_state_dir(state_dir), store)

    async def go() -> RunResult:
        started = time.time()
        try:
            status_ = await resume_compensation(
                decision.plan,
                run_id=run.id,
                inputs=dict(run.inputs),
                registry=registry,
                sinks=[store.record, handle._sink, *sinks],
                outputs=left.outputs,
                order=left.order,
                done=left.done,
                error=left.error,
                status=left.status,
            )
        finally:
            await store.aclose()
        final = handle._events[-1].data if handle._events else {}
        return RunResult(
            run.id, status_, {}, {}, final.get("error"), started, time.time(), left.order
        )

    handle._task = asyncio.ensure_future(go())
    handle._started.set()
    handle._task.add_done_callback(lambda _t: handle._changed.set())
    return handle


def status(run_id: str, *, state_dir: str | os.PathLike[str] | None = None) -> RunStatus:
    """A recorded run and its phases. Raises RunNotFound, StateCorrupted."""
    store = _existing(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        by = None
        if run.status == "cancelled":
            for _, event in store.events(run.id, after=0)[-1:]:
                by = event.data.get("cancelled_by")
        return RunStatus(run, tuple(store.phases(run.id)), by)
    finally:
        store.close()


def list_runs(
    *, state_dir: str | os.PathLike[str] | None = None, limit: int | None = None
) -> list[RunRecord]:
    """Recorded runs, newest first (empty when nothing is recorded)."""
    store = _existing(state_dir, None)
    if store is None:
        return []
    try:
        return list(store.list_runs(limit))
    finally:
        store.close()


async def follow(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    phase: str | None = None,
    poll: float = POLL,
    live: bool = True,
) -> AsyncIterator[Event]:
    """The events of any recorded run (or of its ``phase``), oldest first, then live until
    the run ends (``live=False``: only those stored now).

    Raises RunNotFound, and UsageError for a phase the run does not have.
    """
    store = _existing(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        if phase is not None:
            _check_phase(store, run, phase)
        last = 0
        while True:
            for seq, event in store.events(run.id, phase=phase, after=last):
                last = seq
                yield event
            if not live:
                return
            if store.get_run(run.id).status != "running":
                for seq, event in store.events(run.id, phase=phase, after=last):
                    last = seq
                    yield event  # the final events may have landed with the status
                return
            await asyncio.sleep(poll)
    finally:
        store.close()


def _check_phase(store: SqliteStore, run: RunRecord, phase: str) -> None:
    """UsageError (with the closest name) when ``run`` has no phase ``phase``."""
    if not run.phase_ids or phase in run.phase_ids:
        return
    known = {p.id for p in store.phases(run.id)}  # handler phases are not in phase_ids
    if phase not in known:
        import difflib

        close = difflib.get_close_matches(phase, sorted(known), n=1)
        hint = f"did you mean '{close[0]}'?" if close else None
        raise UsageError(f"run '{run.id}' has no phase '{phase}'", hint=hint)


def _final(run_id: str, state_dir: Any, timeout: float | None, poll: float) -> RunStatus | None:
    """Poll until the run is no longer running: its status, or None after ``timeout``."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        found = status(run_id, state_dir=state_dir)
        if found.status != "running":
            return found
        if end is not None and time.monotonic() >= end:
            return None
        time.sleep(poll if end is None else max(0.0, min(poll, end - time.monotonic())))


#: The exit code of a run's final status (contract section 6); 143 when SIGTERM cancelled it.
EXIT_CODES: Mapping[str, int] = {"completed": 0, "failed": 1, "cancelled": 130}


def status_exit_code(status: str, cancelled_by: str | None = None) -> int:
    """The exit code of a run that ended with ``status``: 0, 1, 130, or 143 when it was
    cancelled by SIGTERM (``cancelled_by``: a signal name; `orch cancel` counts as SIGTERM).

    Any other status (``interrupted``: its process died) is a failed run: 1.
    """
    if status == "cancelled" and cancelled_by == signal.SIGTERM.name:
        return 143
    return EXIT_CODES.get(status, 1)


def exit_code(found: RunStatus) -> int:
    """The exit code ``orch`` gives for a run that ended: 0, 1, 130 or 143 (SIGTERM)."""
    return status_exit_code(found.run.status, found.cancelled_by)


def wait_sync(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    poll: float = POLL,
) -> RunStatus | None:
    """Block until a recorded run ends (any process); its final status, or None when
    ``timeout`` seconds passed first. ``interrupted`` means its process died."""
    return _final(run_id, state_dir, timeout, poll)


async def wait(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    poll: float = POLL,
) -> RunStatus | None:
    """``wait_sync`` without blocking the event loop."""
    live = _LIVE.get(run_id)
    if live is not None:
        try:
            await live.wait(timeout)
        except asyncio.TimeoutError:
            return None
        return status(run_id, state_dir=state_dir)
    return await asyncio.to_thread(_final, run_id, state_dir, timeout, poll)


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What ``cancel`` did: ``how`` is ``in-process``, ``requested`` (a cancel request
    stored for the run, which its owner ``pid`` picks up) or ``recorded`` (its process
    was gone: recorded as cancelled)."""

    run_id: str
    how: str
    pid: int | None = None


def cancel(run_id: str, *, state_dir: str | os.PathLike[str] | None = None) -> Cancelled:
    """Stop a running run: directly when this process runs it, else through the store.

    Another process's run gets a cancel request in the state store; whoever runs it
    (``orch run``, a detached run, a program using this API, ``orch serve``) polls
    for it and cancels that run only, as SIGTERM would (``cancelled_by`` SIGTERM,
    exit 143). No signal is sent: the owner may host other runs and handle none.
    Raises RunNotFound, and UsageError when the run has ended.
    """
    from .events import workflow_ended

    store = _existing(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        live = _LIVE.get(run.id)
        if live is not None and not live.done:
            live.cancel(signal.SIGTERM)
            return Cancelled(run.id, "in-process", os.getpid())
        if run.finished:
            raise UsageError(f"run {run.id} has already ended ({run.status}); nothing to cancel")
        if run.status == "interrupted":
            error = "cancelled by `orch cancel` after its process had died"
            # one transaction: a resume that claimed the run meanwhile wins (RunLocked)
            store.end_interrupted(
                workflow_ended(
                    run.id,
                    time.time(),
                    "cancelled",
                    outputs={},
                    duration=None,
                    error=error,
                    counts={},
                )
            )
            return Cancelled(run.id, "recorded")
        owner = run.owner
        if owner is None or not owner.alive():
            raise UsageError(f"run {run.id} is no longer running")
        store.request_cancel(run.id, now=time.time())
        return Cancelled(run.id, "requested", owner.pid)
    finally:
        store.close()
