"""`orch graph FILE|NAME [--format ascii|mermaid|dot|json]`: the DAG, implied edges, critical path.

An invalid file prints the same problems as ``orch validate`` and exits 2.
Heavy imports (the loader, rich) happen inside the command so ``orch --help`` stays fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

from .usage import complete_workflow_name

__all__ = ["GraphFormat", "register"]


class GraphFormat(str, Enum):
    """Output formats of ``orch graph``."""

    ascii = "ascii"
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add ``orch graph`` to ``app``."""
    app.command("graph")(graph_command)


def graph_command(
    file: Annotated[
        str,  # as given: an empty one is an error, not Path('') (the current folder)
        typer.Argument(
            help="The workflow file to draw, or NAME for NAME.yaml in $ORCH_WORKFLOWS"
            " (default ./workflows).",
            show_default=False,
            metavar="FILE|NAME",
            autocompletion=complete_workflow_name,
        ),
    ],
    fmt: Annotated[
        GraphFormat,
        typer.Option(
            "--format",
            "-f",
            help="ascii (terminal), mermaid (GitHub markdown), dot (graphviz) or json (machines).",
            case_sensitive=False,
        ),
    ] = GraphFormat.ascii,
) -> None:
    """Draw the workflow's phases by level, their dependencies and the critical path.

    Implied dependencies (a phases.X reference without depends_on) are dotted or
    dashed; the critical path (by estimated_duration, 1 s where absent) is marked.
    """
    from ..errors import WorkflowInvalid
    from ..plan import compile_plan
    from ..render.graph import write_graph
    from ..spec.locate import find_workflow
    from .validate import load_or_exit

    workflow = load_or_exit(find_workflow(file))
    try:
        plan = compile_plan(workflow)
    except WorkflowInvalid as exc:  # the loader reports these first; kept as a net
        from ..render.problems import write_problems

        write_problems(exc.problems, "text", sys.stderr)
        raise typer.Exit(2) from None
    write_graph(plan, fmt.value, sys.stdout)
