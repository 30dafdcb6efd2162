"""`orch run --detach`: a background `orch` process owns the run; this one prints its id.

The workflow, its inputs, every option (--replay's folder, --executor) and the
state folder (the store's own checks) are checked first (a bad one exits 2, and
nothing runs). The child runs
``python -m orchestrator run FILE --run-id ID ...`` with every option of this
command line (``child_options``: one place, so none is forgotten) in its own
session (a closed terminal does not stop it), with its progress lines in
``STATE_DIR/logs/ID.log``. The id is printed once the run is recorded, so
``orch status``, ``logs --follow``, ``cancel`` and ``wait`` find it at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import typer

__all__ = ["child_options", "detach_run"]

_STARTUP = 60.0  # seconds the child has to record the run before we give up on it


#: Options of `orch run` the parent handles itself: never passed on to the child.
_PARENT_ONLY = frozenset({"file", "detach", "run_id", "state_dir", "dry_run", "events"})


def child_options(ctx: typer.Context) -> list[str]:
    """Every option of the current `orch run` invocation, as the child's command line.

    Read from the parsed command (``ctx``), so an option added to `orch run`
    reaches a detached run without a change here; paths are made absolute (the child
    runs in the same folder, but its log names them). The parent's own options
    (the file, --detach, --run-id, --state-dir, and --dry-run/--events, which the
    parent handled or refused) are left out.
    """
    import enum

    argv: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if param.param_type_name != "option" or name in _PARENT_ONLY or name is None:
            continue
        value = ctx.params.get(name)
        if value is None or value is False or (param.multiple and not value):
            continue
        flag = param.opts[0]
        if value is True:
            argv.append(flag)
            continue
        for item in value if param.multiple else [value]:
            if isinstance(item, enum.Enum):
                item = item.value
            elif isinstance(item, Path):
                item = item.absolute()
            argv.append(f"{flag}={item}")  # one token: a value may start with '-'
    return argv


def detach_run(file: Path, options: list[str], *, state_dir: Path | None) -> int:
    """Start the background run of ``file`` with ``options`` (``child_options``); print its
    id on stdout; return the exit code (0 started)."""
    from ..errors import RunNotFound
    from ..runs import status
    from ..state.base import new_run_id
    from ..state.sqlite import open_store, resolve_state_dir

    where = resolve_state_dir(state_dir)
    with open_store(where) as store:  # the checks plain `orch run` makes: a file, read-only
        store.check_writable()  # a StateError (exit 2) before anything starts
    folder = where.absolute()
    run_id = new_run_id()  # the child starts the run under it: a new id
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{run_id}.log"
    argv = [sys.executable, "-m", "orchestrator", "run", str(file.absolute())]
    argv += ["--run-id", run_id, "--state-dir", str(folder), *options]
    with open(log, "ab") as out:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
    end = time.monotonic() + _STARTUP
    while time.monotonic() < end:
        try:
            status(run_id, state_dir=folder)
        except RunNotFound:
            pass
        else:
            sys.stdout.write(run_id + "\n")
            sys.stdout.flush()
            sys.stderr.write(
                f"run {run_id} started in the background (pid {child.pid}); "
                f"its output goes to {log}\n"
                f"  follow it: orch logs {run_id} --follow; wait for it: orch wait {run_id}\n"
            )
            return 0
        code = child.poll()
        if code is not None:
            sys.stderr.write(log.read_text(encoding="utf-8", errors="replace"))
            sys.stderr.write(f"error: the background run exited ({code}) before it started\n")
            return code or 1
        time.sleep(0.05)
    sys.stderr.write(f"error: the background run did not start within {_STARTUP:g}s (see {log})\n")
    return 1
