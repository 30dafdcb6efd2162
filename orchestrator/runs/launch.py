"""Starting and resuming runs in this process: ``start``, ``prepare`` + ``go_on`` =
``resume``. The composition root of the Python API: it wires the engine, the SQLite
store, the phase cache and the installed agents."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RecordFailed, RunTaken, UsageError
from .handle import RunHandle, closing
from .live import live_runs
from .recorded import existing_store, open_store

if TYPE_CHECKING:
    from ..agents.registry import AgentRegistry
    from ..engine import CallMiddleware, Executor, RunResult
    from ..engine.resume import Resume
    from ..events import EventSink
    from ..plan import Plan

__all__ = ["Prepared", "WorkflowLike", "go_on", "prepare", "resume", "start"]


#: A file path, YAML text (a str with a line break: a path never has one), a mapping,
#: a Workflow or a Plan.
WorkflowLike = Any


def _plan_of(workflow: WorkflowLike, registry: Any) -> Plan:
    from ..plan import Plan, compile_plan
    from ..spec import load_workflow
    from ..spec.model import Workflow

    if isinstance(workflow, Plan):
        return workflow
    if isinstance(workflow, Workflow):
        return compile_plan(workflow)
    return compile_plan(load_workflow(workflow, registry=registry))  # a path, text, a mapping


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
    _resume: Resume | None = None,
) -> RunHandle:
    """Start a run in this event loop, recorded in the state store; return its handle once
    its ``workflow_started`` is stored.

    ``workflow`` is a file path, YAML text (a str with a line break in it), a
    mapping, a Workflow or a Plan (text and a mapping get the same checks as a
    file). ``state_dir`` defaults to $ORCH_STATE_DIR, else
    ``.orch``. ``run_id``: the id to record the run under (default: a new 12-hex-digit
    one); a plain token (a letter or digit, then up to 63 letters, digits, '.', '_'
    or '-') that no run in the store has (to go on with a recorded run: ``resume``).
    ``cache:`` is honoured unless ``no_cache``. ``strings`` parses
    string inputs by their declared type (as ``--input`` does). ``sinks`` see every
    event after the store has it. ``replay``: a call middleware answers every
    agent call (``--replay``), so unset secrets are not needed. ``trigger`` says what
    started the run (`orch serve`): templates read ``trigger.*``. ``trace_id`` (tracing
    on, orchestrator/tracing.py) is stamped on every event. Approvals are
    decided in the same store (``orch approve``). Raises WorkflowInvalid, UsageError
    (inputs, a missing secret, a malformed or taken ``run_id``), AgentError and StateError
    before anything runs.
    """
    from ..agents.registry import AgentRegistry
    from ..engine import RunOptions, execute
    from ..engine.cache import StoreCache
    from ..engine.inputs import resolve_inputs
    from ..state.base import check_run_id, new_run_id
    from ..state.sqlite import resolve_state_dir

    if run_id is not None and _resume is None:
        check_run_id(run_id)
    registry = registry if registry is not None else AgentRegistry.from_entry_points()
    plan = _plan_of(workflow, registry)
    resolved = resolve_inputs(plan.workflow, inputs or {}, strings=strings)
    env = dict(os.environ) if environ is None else dict(environ)
    store = open_store(state_dir)
    try:
        store.check_writable()  # a read-only folder: refused before anything runs
        rid = run_id or new_run_id()
        if _resume is None and store.has_run(rid):
            raise _taken(rid, store)
        wf = plan.workflow
        options = RunOptions(
            max_parallel=max_parallel,
            no_cache=no_cache,
            environ=env,
            executor=executor,
            call_middleware=tuple(call_middleware),
            cache=None if no_cache else StoreCache(store, wf),
            approvals=store,  # decisions of `orch approve`/`orch reject` land there
            replay=replay,
            trigger=dict(trigger or {}),
            trace_id=trace_id,
        )
        if _resume is not None:  # going on from a stopped run (go_on)
            options = _resume.options(options)
        handle = RunHandle(rid, plan, resolve_state_dir(state_dir), store)
        task = asyncio.ensure_future(
            closing(
                execute(
                    plan,
                    inputs=resolved,
                    registry=registry,
                    run_id=rid,
                    options=options,
                    sinks=(store.submit, handle._sink, *sinks),
                    prior=_resume.prior if _resume is not None else None,
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
    live_runs.add(handle)

    def finished(_: object) -> None:
        live_runs.forget(rid)
        handle._changed.set()

    task.add_done_callback(finished)
    started = asyncio.ensure_future(handle._started.wait())
    await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if task.done() and not handle._started.is_set():
        try:
            task.result()  # raises what stopped the run before it started
        except RecordFailed as exc:
            if isinstance(exc.__cause__, RunTaken):  # started with this id meanwhile
                taken = _taken(rid, store)
                store.close()
                raise taken from None
            raise
    return handle


def _taken(run_id: str, store: Any) -> UsageError:
    """The error of a new run given the id of a recorded one: runs never share an id (the
    new one's events would be mixed into the old one's history)."""
    run = store.get_run(run_id)
    return UsageError(
        f"run '{run_id}' already exists in {store.path} (workflow '{run.workflow}',"
        f" {run.status}): a new run needs an id of its own",
        hint="leave out --run-id (run_id=) and orch picks a new one; to go on with a stopped"
        f" run: `orch resume {run_id}`",
    )


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

    ``workflow`` defaults to what the run was started from: its file, or the text of
    a workflow given as a mapping or YAML text (recorded with the run). Raises
    RunNotFound, RunLocked (its process is alive), UsageError (the workflow changed
    and ``force`` is False; a run recorded without its workflow), WorkflowInvalid.
    """
    from ..agents.builtin.process import stop_leftovers
    from ..agents.registry import AgentRegistry
    from ..engine.resume import Resume, is_resumable, prepare_resume

    registry = registry if registry is not None else AgentRegistry.from_entry_points()
    store = existing_store(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        if not is_resumable(run):  # raises RunLocked for a live run
            return Prepared(Resume(run, None, finished=True), (), registry)
        if workflow is None:
            workflow = _recorded_workflow(run, registry)
        plan = _plan_of(workflow, registry)
        # Claim first (prepare_resume does, in one transaction): of two resumes at once,
        # only the one that owns the run stops the commands its dead owner left.
        decision = prepare_resume(store, run, plan, force=force)
        stopped = stop_leftovers(run.id)
    finally:
        store.close()
    return Prepared(decision, tuple(stopped), registry)


def _recorded_workflow(run: Any, registry: Any) -> WorkflowLike:
    """The workflow a run was started from: its file, or the text recorded with it when it
    was not a file (a mapping, YAML text). UsageError for a run recorded before orch kept
    that text."""
    if run.path and not run.path.startswith("<"):
        if not os.path.exists(run.path):
            raise UsageError(
                f"the workflow file run '{run.id}' was started from is gone: {run.path}",
                hint=f"pass the workflow it ran (moved, renamed or restored): `orch resume"
                f" {run.id} --workflow FILE`, or resume(..., workflow=...) from Python",
            )
        return run.path
    if run.source:
        from ..spec import load_workflow

        return load_workflow(text=run.source, registry=registry)
    raise UsageError(
        f"run '{run.id}' was not started from a workflow file, and its workflow's text"
        " was not recorded (runs started from Python before orch recorded it)",
        hint=f"pass the workflow it ran: `orch resume {run.id} --workflow FILE`, or"
        " resume(..., workflow=...) from Python",
    )


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
        _resume=decision,
    )


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
    from ..engine import RunResult
    from ..engine.resume import resume_compensation
    from ..state.sqlite import resolve_state_dir

    run = decision.run
    left = decision.compensation
    store = open_store(state_dir)
    handle = RunHandle(run.id, decision.plan, resolve_state_dir(state_dir), store)

    async def go() -> RunResult:
        started = time.time()
        try:
            status_ = await resume_compensation(
                decision.plan,
                run_id=run.id,
                inputs=dict(run.inputs),
                registry=registry,
                sinks=[store.submit, handle._sink, *sinks],
                outputs=left.outputs,
                order=left.order,
                done=left.done,
                error=left.error,
                status=left.status,
                ended=left.ended,
                cancel=handle._cancel,  # RunHandle.cancel(force=True) stops it now
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
