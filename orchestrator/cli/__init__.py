"""The ``orch`` command: the composition root. The only package that imports typer.

Each command group lives in its own thin module with a ``register(app)``
function; heavy imports (the engine, rich, httpx, jsonschema) happen inside the
commands, so ``orch --help`` stays fast.
"""

from __future__ import annotations

import typer

from . import agents, graph, run, runs, validate

__all__ = ["app", "main"]

app = typer.Typer(
    name="orch",
    help="Run multi-agent workflows written in YAML.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for _module in (validate, graph, run, agents, runs):
    _module.register(app)


def main() -> None:
    """Entry point of the ``orch`` console script."""
    app()
