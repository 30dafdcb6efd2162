"""`orch runs`, `orch status`, `orch logs`, `orch resume`, `orch cancel` and `orch cache clear`.

They read and act on the state store (``--state-dir``, ``$ORCH_STATE_DIR``,
default ``.orch``). Exit codes: 0 done, 1 the resumed run failed or the command
could not do its job, 2 unknown run or bad usage.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
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
    """Print an OrchError as ``error: ...`` (with its hint) and exit 2 (usage) or 1."""
    from ..errors import OrchError, RunNotFound, UsageError, WorkflowInvalid

    if isinstance(exc, WorkflowInvalid):
        sys.stderr.write("".join(f"{problem}\n" for problem in exc.problems))
        raise typer.Exit(2)
    hint = getattr(exc, "hint", None)
    sys.stderr.write(f"error: {exc}" + (f"\n  hint: {hint}" if hint else "") + "\n")
    code = 2 if isinstance(exc, (RunNotFound, UsageError)) or not isinstance(exc, OrchError) else 1
    raise typer.Exit(code)


def _store(state_dir: Path | None) -> SqliteStore:
    from ..errors import OrchError
    from ..state.sqlite import open_store

    try:
        return open_store(state_dir)
    except OrchError as exc:
        _fail(exc)


def _console() -> Any:
    from ..render.console import make_console

    return make_console(sys.stdout)


def runs_command(
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Show at most this many runs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """List recorded runs, newest first: id, workflow, status, started, duration."""
    from ..errors import OrchError
    from ..render.tables import runs_table

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

    store = _store(state_dir)
    try:
        run = store.get_run(run_id)
        phases = store.phases(run.id)
    except OrchError as exc:
        _fail(exc)
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

    store = _store(state_dir)
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
        10.0, "--wait", min=0, help="Seconds to wait for the run to stop (0: do not wait)."
    ),
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """Stop a run started by another `orch` process (it cancels cleanly, as on Ctrl-C)."""
    import os

    from ..engine.events import Event
    from ..errors import OrchError

    store = _store(state_dir)
    try:
        run = store.get_run(run_id)
        if run.finished:
            sys.stderr.write(f"run {run.id} is not running: it {run.status}\n")
            raise typer.Exit(1)
        if run.status == "interrupted":
            # Its process is gone: nothing to signal, record the decision.
            store.append(
                [
                    Event(
                        "workflow_cancelled",
                        run.id,
                        time.time(),
                        data={
                            "status": "cancelled",
                            "error": "cancelled by `orch cancel` after its process had died",
                        },
                    )
                ]
            )
            sys.stderr.write(f"run {run.id} had no live process; recorded as cancelled\n")
            return
        owner = run.owner
        if owner is None or not owner.alive():  # it died between the two reads
            sys.stderr.write(f"run {run.id} is no longer running\n")
            raise typer.Exit(1)
        os.kill(owner.pid, signal.SIGTERM)
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
    state_dir: Path | None = _STATE_DIR,
) -> None:
    """Run again what did not complete in a stopped run, keeping the completed outputs."""
    from ..errors import OrchError

    try:
        code = _resume(run_id, force=force, state_dir=state_dir)
    except OrchError as exc:
        _fail(exc)
    raise typer.Exit(code)


def _resume(run_id: str, *, force: bool, state_dir: Path | None) -> int:
    from ..errors import UsageError

    raise UsageError("resume is not available yet")
