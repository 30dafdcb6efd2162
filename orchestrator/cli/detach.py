"""`orch run --detach`: a background `orch` process owns the run; this one prints its id.

The workflow and its inputs were checked before (a bad file still exits 2 here).
The child runs ``python -m orchestrator run FILE --run-id ID ...`` in its own
session (a closed terminal does not stop it), with its progress lines in
``STATE_DIR/logs/ID.log``. The id is printed once the run is recorded, so
``orch status``, ``logs --follow``, ``cancel`` and ``wait`` find it at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

__all__ = ["detach_run"]

_STARTUP = 60.0  # seconds the child has to record the run before we give up on it


def detach_run(
    file: Path,
    pairs: list[str],
    *,
    inputs_file: Path | None,
    max_parallel: int | None,
    output_file: Path | None,
    no_cache: bool,
    state_dir: Path | None,
    junit: Path | None = None,
) -> int:
    """Start the background run; print its id on stdout; return the exit code (0 started)."""
    from ..errors import RunNotFound
    from ..runs import status
    from ..state.sqlite import resolve_state_dir

    folder = resolve_state_dir(state_dir).absolute()
    run_id = uuid.uuid4().hex[:12]
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{run_id}.log"
    argv = [sys.executable, "-m", "orchestrator", "run", str(file.absolute())]
    argv += ["--run-id", run_id, "--state-dir", str(folder)]
    for pair in pairs:
        argv += ["--input", pair]
    if inputs_file is not None:
        argv += ["--inputs-file", str(inputs_file.absolute())]
    if max_parallel is not None:
        argv += ["--max-parallel", str(max_parallel)]
    if output_file is not None:
        argv += ["--output-file", str(output_file.absolute())]
    if junit is not None:
        argv += ["--junit", str(junit.absolute())]
    if no_cache:
        argv.append("--no-cache")
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
