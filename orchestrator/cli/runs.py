"""`orch runs`, `orch status`, `orch logs`, `orch resume`, `orch cancel` and `orch cache clear`.

They read and act on the state store (``--state-dir``, ``$ORCH_STATE_DIR``,
default ``.orch``). Exit codes: 0 done, 1 the resumed run failed (or a cancelled
run did not stop within --wait), 2 bad usage, an unknown run, a refused operation
(cancel of a run that is not running, resume of a live run) or an unreadable store;
`orch wait` exits with the run's code, or 124 when it stopped waiting first (--timeout
passed, Ctrl-C or SIGTERM): the run goes on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from ..jsontext import dumps
from .run import ExecutorOption, RecordOption, ReplayOption
from .usage import StateDirOption, complete_workflow_name, seconds, whole_number

if TYPE_CHECKING:
    from ..state.base import RunRecord
    from ..state.sqlite import SqliteStore

__all__ = ["register"]

_WORKFLOW = typer.Option(
    None,
    "--workflow",
    metavar="FILE",
    autocompletion=complete_workflow_name,
    help="The workflow file (or NAME in the workflows path) to go on with"
    " (default: the one the run was started from).",
)
#: `orch wait` that stopped waiting while the run goes on (--timeout passed, or Ctrl-C on the
#: waiter): 124, as timeout(1); no run outcome (0, 1, 130, 143) uses it, so a script tells
#: "I stopped waiting" from "the run was cancelled" (130 is a run cancelled by Ctrl-C).
WAIT_TIMEOUT_EXIT = 124


def register(app: typer.Typer) -> None:
    """Add the run-history commands and the ``cache`` group to ``app``."""
    app.command("runs")(runs_command)
    app.command("status")(status_command)
    app.command("logs")(logs_command)
    app.command("resume")(resume_command)
    app.command("cancel")(cancel_command)
    app.command("wait")(wait_command)
    cache = typer.Typer(help="The phase result cache.", no_args_is_help=True)
    cache.command("clear")(cache_clear_command)
    app.add_typer(cache, name="cache")


def _fail(exc: Exception) -> NoReturn:
    """Print an error (located ones as ``FILE:LINE:COL: message``) with its hint; exit.

    Exit 1 when a run failed; 2 for everything refused: bad usage, an unknown run,
    a run that is not running (cancel) or still running (resume), a state
    database that is corrupt or unreadable.
    """
    from ..errors import ExecutionError, OrchError, WorkflowInvalid, one_line

    if isinstance(exc, WorkflowInvalid):
        sys.stderr.write("".join(f"{problem}\n" for problem in exc.problems))
        raise typer.Exit(2)
    hint = getattr(exc, "hint", None)
    located = isinstance(exc, OrchError) and exc.location is not None
    text = one_line(exc)
    sys.stderr.write(
        ("" if located else "error: ") + text + (f"\n  hint: {hint}" if hint else "") + "\n"
    )
    raise typer.Exit(1 if isinstance(exc, ExecutionError) else 2)


def _refuse(message: str) -> NoReturn:
    """A refused operation on a run (exit 2), as ``error: message``."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(2)


def _store(state_dir: Path | None, run_id: str) -> SqliteStore:
    """The existing store; reading commands never create one.

    ``run_id`` names the run asked for: without a store it is an unknown run (exit 2);
    a state folder that is a file exits 2 too (``existing_store``).
    """
    store = _existing(state_dir, run_id)
    assert store is not None  # a run id: RunNotFound without a store
    return store


def _existing(state_dir: Path | None, run_id: str | None = None) -> SqliteStore | None:
    """The existing store, or None where nothing is recorded (then say so, naming the
    folder, on stderr); a state folder that is a file exits 2."""
    from ..errors import OrchError
    from ..runs.recorded import existing_store, nothing_recorded

    try:
        store = existing_store(state_dir, run_id)
    except OrchError as exc:
        _fail(exc)
    if store is None:
        sys.stderr.write(nothing_recorded(state_dir, hint=True) + "\n")
    return store


def _console() -> Any:
    from ..render.console import make_console

    return make_console(sys.stdout)


def runs_command(
    limit: int = typer.Option(
        20, "--limit", "-n", parser=whole_number, metavar="N", help="Show at most this many runs."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    state_dir: StateDirOption = None,
) -> None:
    """List recorded runs, newest first: id, workflow, status, started, duration."""
    from ..errors import OrchError
    from ..render.tables import runs_table

    runs: list[RunRecord] = []
    waiting: dict[str, list[str]] = {}
    store = _existing(state_dir)
    if store is not None:
        with store:
            try:
                runs = store.list_runs(limit)
                waiting = store.waiting([r.id for r in runs if not r.finished])
            except OrchError as exc:
                _fail(exc)
    if as_json:
        from ..state.views import run_row

        rows = [run_row(r, waiting.get(r.id, ())) for r in runs]
        sys.stdout.write(dumps(rows, indent=2) + "\n")
        return
    _console().print(runs_table(runs, now=time.time(), waiting=waiting))


def status_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    state_dir: StateDirOption = None,
) -> None:
    """Show a run: its state, progress, the phases running now, and each phase."""
    from ..errors import OrchError
    from ..render.tables import status_view
    from ..runs.recorded import cancelled_by
    from ..state.views import status_json

    with _store(state_dir, run_id) as store:
        try:
            run = store.get_run(run_id)
            phases = store.phases(run.id)
            decisions = store.decisions(run.id)
            by = cancelled_by(store, run)
            items = store.items_done(run.id)
        except OrchError as exc:
            _fail(exc)
    if run.status == "interrupted":
        _tell_leftovers(run.id)
    now = time.time()
    if as_json:
        info = status_json(run, phases, now=now, decisions=decisions, cancelled_by=by, items=items)
        sys.stdout.write(dumps(info, indent=2, what="the run's status") + "\n")
        return
    _console().print(
        status_view(run, phases, now=now, decisions=decisions, cancelled_by=by, items=items)
    )


def logs_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    phase: str | None = typer.Option(None, "--phase", "-p", help="Only this phase's events."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
    state_dir: StateDirOption = None,
) -> None:
    """Print a run's events (all, or one phase's), oldest first; --follow waits for more."""
    import asyncio

    from ..errors import OrchError
    from ..eventlines import event_line
    from ..runs import follow as follow_run
    from ..runs import wait_sync

    async def show() -> None:
        async for event in follow_run(run_id, state_dir=state_dir, phase=phase, live=follow):
            sys.stdout.write((event.to_json() if as_json else event_line(event)) + "\n")
            sys.stdout.flush()

    try:
        asyncio.run(show())
        # followed to its end: a run whose process died did not end by itself (as orch wait)
        final = wait_sync(run_id, state_dir=state_dir, timeout=0) if follow else None
    except OrchError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130) from None
    if final is not None and final.run.status == "interrupted":
        sys.stderr.write(_ended(final.run) + "\n")
        raise typer.Exit(1)


def cancel_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    wait: float = typer.Option(
        10.0,
        "--wait",
        parser=seconds,
        metavar="SECONDS",
        help="Seconds to wait for the run to stop (0: do not wait).",
    ),
    state_dir: StateDirOption = None,
) -> None:
    """Stop a run started by another process (it cancels cleanly, as on SIGTERM)."""
    from ..errors import OrchError, UsageError
    from ..runs import cancel, wait_sync

    try:
        done = cancel(run_id, state_dir=state_dir)
    except UsageError as exc:
        _refuse(str(exc))
    except OrchError as exc:
        _fail(exc)
    if done.how == "recorded":
        sys.stderr.write(f"run {done.run_id} had no live process; recorded as cancelled\n")
        return
    sys.stderr.write(f"asked process {done.pid} to cancel run {done.run_id}\n")
    if not wait:
        return
    try:
        final = wait_sync(done.run_id, state_dir=state_dir, timeout=wait, poll=0.1)
    except OrchError as exc:
        _fail(exc)
    if final is None:
        sys.stderr.write(f"run {done.run_id} has not stopped after {wait:g}s\n")
        raise typer.Exit(1)
    sys.stderr.write(f"run {done.run_id} {final.status}\n")


def wait_command(
    run_id: str = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix)."),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        parser=seconds,
        metavar="SECONDS",
        help=f"Give up after this many seconds (exit {WAIT_TIMEOUT_EXIT}, as timeout(1); "
        "the run goes on).",
    ),
    state_dir: StateDirOption = None,
) -> None:
    """Wait for a run to end; exit with its outcome (0 completed, 1 failed, 130/143 cancelled).

    124 (as timeout(1)) when it stopped waiting first, the run still going: --timeout
    passed, or Ctrl-C or SIGTERM on this command (which stop the waiting, not the run).
    """
    import signal

    from ..errors import OrchError
    from ..runs import exit_code, wait_sync

    def stop_waiting(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (a CI job stopped) stops the waiting as Ctrl-C does

    previous = signal.signal(signal.SIGTERM, stop_waiting)
    try:
        final = wait_sync(run_id, state_dir=state_dir, timeout=timeout)
    except OrchError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        # the run goes on in its own process: not a cancelled run's 130
        sys.stderr.write(f"stopped waiting; run {run_id} goes on (`orch status {run_id}`)\n")
        raise typer.Exit(WAIT_TIMEOUT_EXIT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if final is None:
        sys.stderr.write(f"run {run_id} is still running after {timeout:g}s\n")
        raise typer.Exit(WAIT_TIMEOUT_EXIT)
    sys.stderr.write(_ended(final.run) + "\n")
    raise typer.Exit(exit_code(final))


def _ended(run: RunRecord) -> str:
    """How a run ended, as orch wait and orch logs --follow say it (stderr)."""
    message = f"run {run.id} {run.status}"
    if run.status == "interrupted":
        message += f" (its process died)\n  hint: `orch resume {run.id}` goes on with it"
    elif run.error and run.status != "completed":
        message += f": {run.error}"
    return message


def cache_clear_command(
    state_dir: StateDirOption = None,
) -> None:
    """Forget every cached phase result."""
    from ..errors import OrchError

    store = _existing(state_dir)
    if store is None:
        sys.stderr.write("cleared 0 cached results\n")
        return
    with store:
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
    workflow: str | None = _WORKFLOW,
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
    state_dir: StateDirOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    executor: ExecutorOption = None,
) -> None:
    """Run again what did not complete in a stopped run, keeping the completed outputs.

    The run keeps its id; its new events are appended to its history. A run whose
    process is still alive is refused. A changed workflow is refused (naming the
    changed phases) unless --force: then those phases and their downstream run again.
    A run started from Python with a mapping or YAML text goes on with that workflow
    (recorded with the run); --workflow FILE gives another.
    --record, --replay and --executor are as for `orch run`, and are not inherited
    from the stopped run: give them again (a run started with --replay DIR resumes
    with --replay DIR, else its agents are called for real).
    """
    from ..engine.dask_executor import parse_executor
    from ..errors import OrchError
    from ..spec.locate import find_workflow
    from .run import call_log

    try:
        where = parse_executor(executor)  # bad options: exit 2 before the run is touched
        calls = call_log(record, replay)
        found = None if workflow is None else find_workflow(workflow)  # as `orch run`
        code = _resume(
            run_id,
            force=force,
            state_dir=state_dir,
            max_parallel=max_parallel,
            no_cache=no_cache,
            calls=calls,
            executor=where,
            workflow=found,
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
    calls: Any = None,
    executor: Any = None,
    workflow: Path | None = None,
) -> int:
    from ..runs import prepare
    from .run import _run

    prepared = prepare(run_id, state_dir=state_dir, force=force, workflow=workflow)
    decision = prepared.resume
    if prepared.stopped:
        count = (
            f"{len(prepared.stopped)} leftover process{'es' if len(prepared.stopped) > 1 else ''}"
        )
        pids = ", ".join(map(str, prepared.stopped))
        sys.stderr.write(f"stopped {count} of run {decision.run.id} (pids {pids})\n")
    if decision.finished:
        sys.stderr.write(f"run {decision.run.id} already completed; nothing to resume\n")
        return 0
    sys.stderr.write(decision.summary() + "\n")
    if decision.compensation is not None:  # only the saga is left: no phase display
        return _finish_compensation(prepared, state_dir)
    return _run(
        decision.plan,
        dict(decision.run.inputs),
        events=False,
        output_file=None,
        max_parallel=max_parallel,
        no_cache=no_cache,
        state_dir=state_dir,
        prepared=prepared,
        calls=calls,
        executor=executor,
    )


def _finish_compensation(prepared: Any, state_dir: Path | None) -> int:
    """Run what is left of a crashed run's saga, with `orch run`'s signal handling (Ctrl-C
    lets the compensation finish, a second one stops it and leaves the rest pending, a
    third forces the exit); say how the run ended (130/143 cancelled, else 1)."""
    import asyncio
    import os
    import signal

    from ..runs import go_on, status_exit_code
    from .run import _execute

    received: list[int] = []

    def force() -> None:
        sys.stderr.write("forced exit: the compensation may still be running\n")
        sys.stderr.flush()
        os._exit(status_exit_code("cancelled", signal.Signals(received[-1]).name))

    async def go() -> Any:
        return await _execute(lambda: go_on(prepared, state_dir=state_dir), received, force)

    final = asyncio.run(go()).status
    sys.stderr.write(f"run {prepared.resume.run.id} {final}\n")
    return status_exit_code(final, signal.Signals(received[0]).name if received else None)


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
