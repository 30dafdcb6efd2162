"""The typer application of ``orch``: the composition root (``orchestrator.cli.app``).

Each command group lives in its own thin module with a ``register(app)``
function; heavy imports (the engine, rich, httpx, jsonschema) happen inside the
commands, so ``orch --help`` stays fast. ``main`` is the last net: an OrchError
that a command did not handle is printed as one message with its exit code
(``fast.report_error``), never as a traceback.
"""

from __future__ import annotations

import sys

import typer

from ..errors import OrchError
from . import (
    agents,
    approve,
    completion,
    graph,
    report,
    run,
    runs,
    schema,
    serve,
    stats,
    validate,
)
from .fast import report_error
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

for _module in (
    validate,
    graph,
    run,
    agents,
    runs,
    stats,
    report,
    approve,
    schema,
    serve,
    completion,
):
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
        sys.exit(report_error(exc))
    except SystemExit as exc:
        # typer turns a Ctrl-C that no command handled into a silent exit 130: say it
        cause = getattr(exc.__context__, "__cause__", None)
        if exc.code == 130 and isinstance(cause, KeyboardInterrupt):
            sys.stderr.write("interrupted\n")
        raise
