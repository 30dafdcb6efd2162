"""`orch validate FILE... [--format text|json|github]`, and load_or_exit for the other commands.

Exit 0 when every file is valid (one short line each), 2 when any has an error;
every problem of every file is printed, never a traceback. The body is
``fast.validate_files``: plain ``orch validate`` arguments reach it without typer.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .fast import validate_files
from .usage import complete_workflow_name

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
        list[str],  # as given: an empty one is an error, not Path('') (the current folder)
        typer.Argument(
            help="Workflow files, folders (their *.yaml and *.yml files), - (standard input)"
            " or NAMEs (NAME.yaml in $ORCH_WORKFLOWS, default ./workflows).",
            show_default=False,
            metavar="FILE",
            autocompletion=complete_workflow_name,
        ),
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
    raise typer.Exit(validate_files(files, fmt.value))


def register(app: typer.Typer) -> None:
    """Add `orch validate` to `app`."""
    app.command("validate")(validate_command)
