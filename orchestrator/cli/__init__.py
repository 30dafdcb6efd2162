"""The ``orch`` command: the composition root. The only package that imports typer.

Each command group lives in its own thin module with a ``register(app)``
function; heavy imports (the engine, rich, httpx, jsonschema) happen inside the
commands, so ``orch --help`` stays fast. ``main`` is the last net: an OrchError
that a command did not handle is printed as one message with its exit code,
never as a traceback.
"""

from __future__ import annotations

import sys

import typer

from ..errors import (
    ExecutionError,
    OrchError,
    RunCancelled,
    WorkflowInvalid,
)
from . import agents, approve, graph, report, run, runs, schema, serve, stats, validate
from .usage import print_version, use_orch_commands

__all__ = ["app", "main"]

app = typer.Typer(
    name="orch",
    help="Run multi-agent workflows written in YAML.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for _module in (validate, graph, run, agents, runs, stats, report, approve, schema, serve):
    _module.register(app)
use_orch_commands(app)  # usage lines read `FILE`, not typer's `{FILE}`


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=print_version,
    ),
) -> None:
    """Run multi-agent workflows written in YAML."""


def main() -> None:
    """Entry point of the ``orch`` console script and ``python -m orchestrator``.

    Exits with the contract's codes: 2 for an invalid workflow, usage or a refused
    operation on a run, 1 for a failed run, 130 for a cancelled one.
    """
    try:
        app(prog_name="orch")
    except OrchError as exc:
        sys.exit(_report(exc))
    except SystemExit as exc:
        # typer turns a Ctrl-C that no command handled into a silent exit 130: say it
        cause = getattr(exc.__context__, "__cause__", None)
        if exc.code == 130 and isinstance(cause, KeyboardInterrupt):
            sys.stderr.write("interrupted\n")
        raise


def _report(exc: OrchError) -> int:
    """Print an OrchError a command let through; return its exit code."""
    if isinstance(exc, WorkflowInvalid):
        lines = [str(p) for p in exc.problems] or [str(exc)]
    else:
        # located: `FILE:LINE:COL: message`, as `orch validate` prints problems
        lines = [str(exc) if exc.location is not None else f"error: {exc}"]
        if exc.hint:
            lines.append(f"  hint: {exc.hint}")
    sys.stderr.write("\n".join(lines) + "\n")
    if isinstance(exc, RunCancelled):
        return 130
    if isinstance(exc, ExecutionError):
        return 1
    # invalid file, bad usage, or a refused operation on stored runs (as `orch runs` exits)
    return 2
