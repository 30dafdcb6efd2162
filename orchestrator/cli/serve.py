"""`orch serve` (the service) and `orch schedule` (next fire times, nothing started).

The service's modules (starlette, hypercorn) are imported inside `orch serve`
only; `orch schedule` needs neither.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .run import ExecutorOption
from .runs import _fail
from .usage import StateDirOption, whole_number

if TYPE_CHECKING:
    from ..engine.dask_executor import ExecutorChoice

__all__ = ["register"]

_WORKFLOWS = typer.Option(
    "--workflows",
    help="The folder of workflow files (default: $ORCH_WORKFLOWS, else ./workflows).",
    metavar="DIR",
    readable=False,  # checked by workflows_folder, with orch's own message and hint
)


def register(app: typer.Typer) -> None:
    """Add ``orch serve`` and ``orch schedule`` to ``app``."""
    app.command("serve")(serve_command)
    app.command("schedule")(schedule_command)


def _folder(option: Path | None) -> Path:
    from ..errors import UsageError
    from ..service.catalog import workflows_folder

    try:
        return workflows_folder(option, os.environ)
    except UsageError as exc:
        _fail(exc)


def serve_command(
    host: Annotated[
        str, typer.Option("--host", help="The address to listen on.", metavar="HOST")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", help="The port (0: any free one).", min=0, max=65535, metavar="PORT"
        ),
    ] = 8080,
    workflows: Annotated[Path | None, _WORKFLOWS] = None,
    max_runs: Annotated[
        int,
        typer.Option(
            "--max-runs", parser=whole_number, help="Runs at once; the rest queue.", metavar="N"
        ),
    ] = 4,
    state_dir: StateDirOption = None,
    executor: ExecutorOption = None,
) -> None:
    """The service: scheduler, triggers, HTTP API and web UI over the recorded runs.

    With --executor dask (or dask://HOST:PORT) the agent calls of every run it starts
    go to one Dask cluster, started (or reached) once and kept while it serves.
    """
    from ..engine.dask_executor import parse_executor
    from ..errors import OrchError

    token = os.environ.get("ORCH_API_TOKEN") or None
    folder = _folder(workflows)
    if max_runs < 1:
        sys.stderr.write("error: --max-runs must be at least 1\n")
        raise typer.Exit(2)
    try:
        where = parse_executor(executor)
    except OrchError as exc:
        _fail(exc)
    from ..extras import install_command, missing_module
    from ..service.security import is_loopback

    missing = missing_module("server")
    if missing is not None:
        sys.stderr.write(
            f"error: `orch serve` needs the server extra ({missing} is missing)\n"
            f"  hint: {install_command('server')}\n"
        )
        raise typer.Exit(2)
    if not is_loopback(host) and token is None:
        sys.stderr.write(
            f"error: refusing to listen on {host} without a token: anyone who can reach it"
            " could start and cancel runs\n"
            "  hint: set ORCH_API_TOKEN to a long random secret, or keep --host 127.0.0.1\n"
        )
        raise typer.Exit(2)
    raise typer.Exit(_serve(host, port, folder, max_runs, token, state_dir, where))


def _say(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    sys.stderr.flush()


def _serve(
    host: str,
    port: int,
    folder: Path,
    max_runs: int,
    token: str | None,
    state_dir: Path | None,
    executor: ExecutorChoice | None = None,
) -> int:
    import asyncio
    import logging

    from ..agents.registry import AgentRegistry
    from ..errors import OrchError
    from ..service.scheduler import FileClock, SystemClock
    from ..service.server import bind, run_service
    from ..service.service import ServeConfig, Service
    from ..state.sqlite import open_store

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("orch.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    clock_file = os.environ.get("ORCH_SERVE_CLOCK_FILE")
    clock = FileClock(Path(clock_file)) if clock_file else SystemClock()
    tracing = _tracing()
    try:
        store = open_store(state_dir)
    except OrchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    config = ServeConfig(host, port, folder, max_runs, token, state_dir, executor=executor)
    try:
        sock = bind(host, port)
    except OSError as exc:
        store.close()
        sys.stderr.write(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        return 2
    service = Service(config, store, AgentRegistry.from_entry_points(), clock)
    service.runs.tracing = tracing
    try:
        for line in service.start_up():
            _say(line)
        try:
            code = asyncio.run(run_service(service, sock, say=_say))
        except OrchError as exc:  # the Dask scheduler of --executor cannot be reached
            _fail(exc)
        _say("stopped")
        return code
    finally:
        with contextlib.suppress(OSError):  # hypercorn closed it already
            sock.close()
        store.close()
        if tracing is not None:
            tracing.shutdown()  # the spans still batched go out


def _tracing() -> Any:
    """The OpenTelemetry provider every run of the service exports to when the OTEL_
    variables ask for traces (as for `orch run`); without the extra, a warning and None.
    An exporter or protocol orch does not support exits 2."""
    from ..errors import OrchError
    from ..tracing import TracingUnavailable, tracing_provider, tracing_wanted

    if not tracing_wanted(os.environ):
        return None
    try:
        return tracing_provider(os.environ)
    except TracingUnavailable as exc:
        _say(f"warning: {exc.headline}; runs are not traced (hint: {exc.hint})")
        return None
    except OrchError as exc:
        _fail(exc)


def schedule_command(
    workflows: Annotated[Path | None, _WORKFLOWS] = None,
    count: Annotated[
        int, typer.Option("--count", "-n", help="Fire times shown per entry.", min=1, max=100)
    ] = 3,
) -> None:
    """List each schedule's next fire times, without starting anything."""
    from ..agents.registry import AgentRegistry
    from ..service.catalog import Catalog
    from ..service.scheduler import upcoming

    folder = _folder(workflows)
    catalog = Catalog(folder, AgentRegistry.from_entry_points())
    for message in catalog.scan():
        if "invalid" in message or "cannot load" in message:
            sys.stderr.write(message + "\n")
    rows = upcoming(catalog.served(), time.time(), count)
    if not rows:
        sys.stdout.write(f"no schedules in {folder}\n")
        return
    for row in rows:
        what = row["cron"] or f"run_at {row['run_at']}"
        sys.stdout.write(
            f"{row['workflow']}  {what}  ({row['timezone']}, overlap {row['overlap']})\n"
        )
        times = row["next"] or ["(past: never fires)"]
        for when in times:  # type: ignore[attr-defined]
            sys.stdout.write(f"  {when}\n")
