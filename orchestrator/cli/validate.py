"""`orch validate FILE... [--format text|json|github]`, and load_or_exit for the other commands.

Exit 0 when every file is valid (one short line each), 2 when any has an error;
every problem of every file is printed, never a traceback.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..spec.model import Workflow

__all__ = ["load_or_exit", "register"]


class ProblemFormat(str, enum.Enum):
    """Output formats of `orch validate`."""

    text = "text"
    json = "json"
    github = "github"


def load_or_exit(path: Path | str) -> Workflow:
    """Load a workflow; on problems print them (text) to stderr and exit 2.

    Warnings are printed too when the file is otherwise valid. Used by
    `orch run`, `orch graph` and every command that takes a workflow file.
    """
    from ..render.problems import write_problems
    from ..spec import check

    workflow, problems = check(path)
    errors = [p for p in problems if p.severity == "error"]
    if problems:
        write_problems(problems, "text", sys.stderr)
    if errors or workflow is None:
        raise typer.Exit(2)
    return workflow


def validate_command(
    files: Annotated[
        list[Path],
        typer.Argument(help="Workflow files to check.", show_default=False, metavar="FILE"),
    ],
    fmt: Annotated[
        ProblemFormat,
        typer.Option(
            "--format",
            "-f",
            help="text (FILE:LINE:COL: message), json (for tools) or github (CI annotations).",
            case_sensitive=False,
        ),
    ] = ProblemFormat.text,
) -> None:
    """Check workflow files: every problem of every file, each as FILE:LINE:COL: message."""
    from ..agents.registry import AgentRegistry
    from ..render.problems import format_problems, write_problems
    from ..spec import check

    registry = AgentRegistry.from_entry_points()
    everything = []
    failed = False
    for file in files:
        workflow, problems = check(file, registry=registry)
        everything.extend(problems)
        errors = [p for p in problems if p.severity == "error"]
        if fmt is ProblemFormat.text:
            write_problems(problems, "text", sys.stdout)
        if errors or workflow is None:
            failed = True
            continue
        if fmt is ProblemFormat.text:
            warn = len(problems)
            extra = f", {warn} warning{'s' if warn != 1 else ''}" if warn else ""
            n, a = len(workflow.phases), len(workflow.agents)
            sys.stdout.write(
                f"{file}: ok ({n} phase{'s' if n != 1 else ''}, "
                f"{a} agent{'s' if a != 1 else ''}{extra})\n"
            )
    if fmt is ProblemFormat.json:
        sys.stdout.write(format_problems(everything, "json") + "\n")
    elif fmt is ProblemFormat.github and everything:
        sys.stdout.write(format_problems(everything, "github") + "\n")
    raise typer.Exit(2 if failed else 0)


def register(app: typer.Typer) -> None:
    """Add `orch validate` to `app`."""
    app.command("validate")(validate_command)
