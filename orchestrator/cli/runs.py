"""`orch runs`, `orch status`, `orch logs`, `orch resume`, `orch cancel` and `orch cache clear`.

They read and act on the state store (``--state-dir``, ``$ORCH_STATE_DIR``,
default ``.orch``). Exit codes: 0 done, 1 the resumed run failed (or a cancelled
run did not stop within --wait), 2 bad usage, an unknown run, a refused operation
(cancel of a run that is not running, resume of a live run) or an unreadable store.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from .usage import seconds, whole_number

if TYPE_CHECKING:
    from ..plan import Plan
    from ..state.base import PhaseRecord, RunRecord
    from ..state.sqlite import SqliteStore

__all__ = ["register"]

_STATE_DIR = typer.Option(
    None, "--state-dir", help="The state directory (default: $ORCH_STATE_DIR, else .orch)."
)
_FOLLOW_POLL = 0.2


def register(app: typer.Typer) -> None:
    """Add the run-history commands and the ``cache`` group to ``app``."""
    app.command("runs")(runs_command)
    app.command("status")(status_command)
    app.command("logs")(logs_command)
    app.command("resume")(resume_command)
    app.command("cancel")(cancel_command)
    cache = typer.Typer(help="The phase result cache.", no_args_is_help=True)
    cache.command("clear")(cache_clear_command)
    app.add_typer(cache, name="cache")


def _fail(exc: Exception) -> NoReturn:
    """Print an error (located ones as ``FILE:LINE:COL: message``) with its hint; exit.

    Exit 1 when a run failed; 2 for everything refused: bad usage, an unknown run,
    a run that is not running (cancel) or still running (resume), a state
    database that is corrupt or unreadable.
    """
    from ..errors import ExecutionError, OrchError, WorkflowInvalid

    if isinstance(exc, WorkflowInvalid):
        sys.stderr.write("".join(f"{problem}\n" for problem in exc.problems))
        raise typer.Exit(2)
    hint = getattr(exc, "hint", None)
    located = isinstance(exc, OrchError) and exc.location is not None
    sys.stderr.write(
        ("" if located else "error: ") + f"{exc}" + (f"\n  hint: {hint}" if hint else "") + "\n"
    )
    raise typer.Exit(1 if isinstance(exc, ExecutionError) else 2)


def _refuse(message: str) -> NoReturn:
    """A refused operation on a run (exit 2), as ``error: message``."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(2)


def _store(state_dir: Path | None, run_id: str | None = None) -> SqliteStore:
    """The existing store; reading commands never create one.

    ``run_id`` names the run asked for: without a store it is an unknown run (exit 2).
    """
    from ..errors import OrchError, RunNotFound
    from ..state.sqlite import open_store, resolve_state_dir

    folder = resolve_state_dir(state_dir)
    try:
        if run_id is not None and not (folder / "state.db").exists():
            raise RunNotFound(
                f"no run '{run_id}': nothing is recorded in {folder}",
                hint="`orch run` records runs there; --state-dir or ORCH_STATE_DIR look elsewhere",
            )
        return open_store(state_dir)
    except OrchError as exc:
        _fail(exc)


def _has_store(state_dir: Path | None) -> bool:
    from ..state.sqlite import resolve_state_dir

    return (resolve_state_dir(state_dir) / "state.db").exists()


def _console() -> Any:
    from ..render.console import make_console

    return make_console(sys.stdout)


def runs_command(
    limit: int = typer.Option(
        20, "--limit", "-n", parser=whole_number, metavar="N", help="Show at most this many runs."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """List recorded runs, newest first: id, workflow, status, started, duration."""
    from ..errors import OrchError
    from ..render.tables import runs_table

    runs: list[RunRecord] = []
    if _has_store(state_dir):
        store = _store(state_dir)
        try:
            runs = store.list_runs(limit)
        except OrchError as exc:
            _fail(exc)
    if as_json:
        rows = [
            {
                "id": r.id,
                "workflow": r.workflow,
                "path": r.path,
                "status": r.status,
                "started": r.started,
                "ended": r.ended,
                "duration": r.duration,
            }
            for r in runs
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    _console().print(runs_table(runs, now=time.time()))


def status_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """Show a run: its state, progress, the phases running now, and each phase."""
    from ..errors import OrchError
    from ..render.tables import status_dict, status_view

    store = _store(state_dir, run_id)
    try:
        run = store.get_run(run_id)
        phases = store.phases(run.id)
    except OrchError as exc:
        _fail(exc)
    if run.status == "interrupted":
        _tell_leftovers(run.id)
    now = time.time()
    if as_json:
        info = status_dict(run, phases, now=now)
        sys.stdout.write(json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n")
        return
    _console().print(status_view(run, phases, now=now))


def logs_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    phase: str | None = typer.Option(None, "--phase", "-p", help="Only this phase's events."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """Print a run's events (all, or one phase's), oldest first; --follow waits for more."""
    from ..errors import OrchError, UsageError
    from ..render.tables import event_line

    store = _store(state_dir, run_id)
    last = 0
    try:
        run = store.get_run(run_id)
        if phase is not None and run.phase_ids and phase not in run.phase_ids:
            known = {p.id for p in store.phases(run.id)}
            if phase not in known:
                import difflib

                close = difflib.get_close_matches(phase, sorted(known), n=1)
                hint = f"did you mean '{close[0]}'?" if close else None
                raise UsageError(f"run '{run.id}' has no phase '{phase}'", hint=hint)
        while True:
            for seq, event in store.events(run.id, phase=phase, after=last):
                last = seq
                line = event.to_json() if as_json else event_line(event)
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
            if not follow:
                return
            current = store.get_run(run.id)
            if current.status != "running":
                # one last look: the final events may have landed with the status
                for seq, event in store.events(run.id, phase=phase, after=last):
                    last = seq
                    sys.stdout.write((event.to_json() if as_json else event_line(event)) + "\n")
                sys.stdout.flush()
                return
            time.sleep(_FOLLOW_POLL)
    except OrchError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def cancel_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    wait: float = typer.Option(
        10.0,
        "--wait",
        parser=seconds,
        metavar="SECONDS",
        help="Seconds to wait for the run to stop (0: do not wait).",
    ),
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """Stop a run started by another `orch` process (it cancels cleanly, as on Ctrl-C)."""
    import os

    from ..errors import OrchError
    from ..events import Event

    store = _store(state_dir, run_id)
    try:
        run = store.get_run(run_id)
        if run.finished:
            _refuse(f"run {run.id} has already ended ({run.status}); nothing to cancel")
        if run.status == "interrupted":
            # Its process is gone: nothing to signal, record the decision (unless a
            # resume claimed the run since it was read: then it is refused).
            store.end_interrupted(
                Event(
                    "workflow_cancelled",
                    run.id,
                    time.time(),
                    data={
                        "status": "cancelled",
                        "error": "cancelled by `orch cancel` after its process had died",
                    },
                )
            )
            sys.stderr.write(f"run {run.id} had no live process; recorded as cancelled\n")
            return
        owner = run.owner
        if owner is None or not owner.alive():  # it died between the two reads
            _refuse(f"run {run.id} is no longer running")
        try:
            os.kill(owner.pid, signal.SIGTERM)
        except ProcessLookupError:
            _refuse(f"run {run.id} is no longer running")
        except PermissionError:
            _refuse(
                f"not allowed to signal process {owner.pid} running {run.id}"
                " (another user's process?)"
            )
        sys.stderr.write(f"sent SIGTERM to process {owner.pid} running {run.id}\n")
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline:
            current = store.get_run(run.id)
            if current.status != "running":
                sys.stderr.write(f"run {run.id} {current.status}\n")
                return
            time.sleep(0.1)
        if wait:
            sys.stderr.write(f"run {run.id} has not stopped after {wait:g}s\n")
            raise typer.Exit(1)
    except OrchError as exc:
        _fail(exc)
    finally:
        store.close()


def cache_clear_command(
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """Forget every cached phase result."""
    from ..errors import OrchError

    if not _has_store(state_dir):
        sys.stderr.write("cleared 0 cached results\n")
        return
    store = _store(state_dir)
    try:
        count = store.cache_clear()
    except OrchError as exc:
        _fail(exc)
    sys.stderr.write(f"cleared {count} cached result{'s' if count != 1 else ''}\n")


def resume_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    force: bool = typer.Option(
        False, "--force", help="Resume a changed workflow: its changed phases run again."
    ),
    max_parallel: int | None = typer.Option(
        None,
        "--max-parallel",
        parser=whole_number,
        metavar="N",
        help="At most this many phases at once.",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Neither read nor write cached phase results."
    ),
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """Run again what did not complete in a stopped run, keeping the completed outputs.

    The run keeps its id; its new events are appended to its history. A run whose
    process is still alive is refused. A changed workflow is refused (naming the
    changed phases) unless --force: then those phases and their downstream run again.
    """
    from ..errors import OrchError

    try:
        code = _resume(
            run_id, force=force, state_dir=state_dir, max_parallel=max_parallel, no_cache=no_cache
        )
    except OrchError as exc:
        _fail(exc)
    raise typer.Exit(code)


def _resume(
    run_id: str,
    *,
    force: bool,
    state_dir: Path | None,
    max_parallel: int | None,
    no_cache: bool,
) -> int:
    from ..engine.result import PhaseOutcome
    from ..errors import RunLocked, UsageError
    from ..plan import compile_plan
    from ..state.base import PhaseState
    from .run import _run
    from .session import changed_phases, downstream
    from .validate import load_or_exit

    store = _store(state_dir, run_id)
    try:
        run = store.get_run(run_id)
        if run.status == "running" and run.owner is not None:
            raise RunLocked(
                f"run '{run.id}' is still running in process {run.owner.pid}",
                hint=f"wait for it to end, or stop it with `orch cancel {run.id}`",
            )
        if run.status == "completed":
            sys.stderr.write(f"run {run.id} already completed; nothing to resume\n")
            return 0
        if not run.path or run.path.startswith("<"):
            raise UsageError(f"run '{run.id}' was not started from a workflow file")
        workflow = load_or_exit(Path(run.path))
        plan = compile_plan(workflow)
        changed = changed_phases(run, plan)
        if changed and not force:
            raise UsageError(
                f"the workflow '{run.path}' changed since run {run.id} started: "
                f"phase{'s' if len(changed) > 1 else ''} {', '.join(changed)} changed",
                hint="resume with --force to run the changed phases and their downstream again",
            )
        rerun = set(downstream(plan, changed)) if changed else set()
        records = store.phases(run.id)
        compensating = any(p.compensation_started for p in records)
        # Claim first, in one transaction: of two resumes at once, only the one that
        # owns the run stops the commands its dead owner left (the other one is
        # refused here, having stopped nothing: the winner's commands carry the same tag).
        store.claim(run.id, rerun=() if compensating else sorted(rerun))
        _stop_leftovers(run.id)
        if compensating:
            return _resume_compensation(store, run, plan, records)
        prior = {
            p.id: PhaseOutcome(
                p.id,
                "completed",
                p.output,
                None,
                p.attempts,
                p.started,
                p.ended,
                p.fallback_used,
                p.cached,
                dict(p.metadata),
            )
            for p in records
            if p.state is PhaseState.COMPLETED and p.id in plan.phases and p.id not in rerun
        }
        again = [p.id for p in records if p.state is PhaseState.RUNNING]
        # a phase stopped in the middle of its retries goes on from the attempt it was at
        attempts_at = {
            p.id: p.attempts
            for p in records
            if p.state is PhaseState.RUNNING and p.attempts > 1 and p.id not in rerun
        }
        iterations_at = _iterations(store, run.id, plan, records, rerun)
    finally:
        store.close()
    todo = len(plan.order) - len(prior)
    total = len(plan.order)
    message = (
        f"resuming run {run.id}: {len(prior)} of {total} phase{'s' if total != 1 else ''} completed"
    )
    message += f", {todo} to run"
    if again:
        message += f" (running when it stopped, so running again: {', '.join(again)})"
    if rerun:
        message += f"; changed, with their downstream: {', '.join(sorted(rerun))}"
    if attempts_at:
        going_on = ", ".join(f"{pid} at attempt {n}" for pid, n in sorted(attempts_at.items()))
        message += f"; retries go on: {going_on}"
    if iterations_at:
        loops = ", ".join(
            f"{pid} after iteration {n}" for pid, (n, _) in sorted(iterations_at.items())
        )
        message += f"; loops go on: {loops}"
    sys.stderr.write(message + "\n")
    return _run(
        plan,
        dict(run.inputs),
        events=False,
        output_file=None,
        max_parallel=max_parallel,
        no_cache=no_cache,
        state_dir=state_dir,
        run_id=run.id,
        prior=prior,
        resume_attempts=attempts_at,
        resume_iterations=iterations_at,
    )


def _iterations(
    store: SqliteStore, run_id: str, plan: Plan, records: list[PhaseRecord], rerun: set[str]
) -> dict[str, tuple[int, Any]]:
    """The last checkpointed iteration (n, output) of each unfinished ``repeat`` phase."""
    from ..state.base import PhaseState

    out: dict[str, tuple[int, Any]] = {}
    for p in records:
        phase = plan.phases.get(p.id)
        if phase is None or phase.repeat is None or p.id in rerun:
            continue
        if p.state is PhaseState.COMPLETED:
            continue
        marks = [e for _, e in store.events(run_id, phase=p.id) if e.event == "phase_iteration"]
        if marks and isinstance(marks[-1].data.get("iteration"), int):
            out[p.id] = (int(marks[-1].data["iteration"]), marks[-1].data.get("output"))
    return out


def _tell_leftovers(run_id: str) -> None:
    """Say on stderr how many commands of an interrupted run still run."""
    from ..agents.builtin.process import leftovers

    pids = leftovers(run_id)
    if pids:
        count = f"{len(pids)} leftover process{'es' if len(pids) > 1 else ''}"
        sys.stderr.write(
            f"{count} of run {run_id} still running (pids {', '.join(map(str, pids))})\n"
            f"  hint: `orch resume {run_id}` stops them first\n"
        )


def _stop_leftovers(run_id: str) -> None:
    """End the commands a killed owner of the run left running, and say so on stderr."""
    from ..agents.builtin.process import stop_leftovers

    pids = stop_leftovers(run_id)
    if pids:
        count = f"{len(pids)} leftover process{'es' if len(pids) > 1 else ''}"
        sys.stderr.write(f"stopped {count} of run {run_id} (pids {', '.join(map(str, pids))})\n")


def _resume_compensation(
    store: SqliteStore, run: RunRecord, plan: Plan, records: list[PhaseRecord]
) -> int:
    """The run crashed while compensating: finish the compensation, then record it failed
    (or cancelled, when a cancel caused the compensation).

    The caller has claimed the run.
    """
    import asyncio

    from ..agents.registry import AgentRegistry
    from ..engine.resume import resume_compensation
    from ..state.base import PhaseState

    order = [
        p.id
        for p in sorted(
            (p for p in records if p.state is PhaseState.COMPLETED and p.completed_seq),
            key=lambda p: p.completed_seq or 0,
        )
    ]
    done = [p.id for p in records if p.compensated is not None]
    outputs = {p.id: p.output for p in records if p.state is PhaseState.COMPLETED}
    # why it compensated (failed, or cancelled: Ctrl-C, then a second one forced the exit)
    markers = [
        e.data.get("cause")
        for _, e in store.events(run.id)
        if e.event == "phase_stream" and e.data.get("compensation") == "started"
    ]
    status = "cancelled" if "cancelled" in markers else "failed"
    failed = [p for p in records if p.state is PhaseState.FAILED]
    error = run.error or (
        "the run was cancelled"
        if status == "cancelled"
        else f"phase '{failed[0].id}' failed: {failed[0].error}"
        if failed
        else "the run failed"
    )
    left = len([p for p in order if p not in done])
    sys.stderr.write(
        f"resuming the compensation of run {run.id}: "
        f"{left} phase{'s' if left != 1 else ''} left to compensate\n"
    )

    async def go() -> str:
        try:
            return await resume_compensation(
                plan,
                run_id=run.id,
                inputs=dict(run.inputs),
                registry=AgentRegistry.from_entry_points(),
                sinks=[store.record],
                outputs=outputs,
                order=order,
                done=done,
                error=error,
                status=status,
            )
        finally:
            await store.aclose()

    final = asyncio.run(go())
    sys.stderr.write(f"run {run.id} {final}\n")
    return 130 if final == "cancelled" else 1
