"""`orch validate FILE... [--format text|json|github]`, and load_or_exit for the other commands.

Exit 0 when every file is valid (one short line each), 2 when any has an error;
every problem of every file is printed, never a traceback.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..spec.model import Workflow

__all__ = ["load_or_exit", "register"]

#: The file name that means standard input (``orch validate -``), and how problems name it.
STDIN = Path("-")


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
        typer.Argument(
            help="Workflow files, folders (their *.yaml and *.yml files) or - (standard input).",
            show_default=False,
            metavar="FILE",
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
    from ..agents.registry import AgentRegistry
    from ..render.problems import format_problems, write_problems
    from ..spec import check
    from ..spec.locate import expand_paths

    registry = AgentRegistry.from_entry_points()
    everything = []
    targets, missing = expand_paths(files)
    everything.extend(missing)
    failed = bool(missing)
    if fmt is ProblemFormat.text:
        write_problems(missing, "text", sys.stdout)
    for file in targets:
        if file == STDIN:
            file = Path("<stdin>")  # how problems and the ok line name it
            workflow, problems = check(file, registry=registry, stream=sys.stdin.buffer)
        else:
            workflow, problems = check(file, registry=registry)
        everything.extend(problems)
        errors = [p for p in problems if p.severity == "error"]
        if fmt is ProblemFormat.text:
            write_problems(problems, "text", sys.stdout)
        if errors or workflow is None:
            failed = True
            continue
        if fmt is ProblemFormat.text:
            sys.stdout.write(f"{file}: ok ({_counts(workflow, len(problems))})\n")
            if workflow.schedule or workflow.triggers:  # they do nothing under `orch run`
                sys.stdout.write(
                    f"  note: {_service_note(workflow)} start runs only under `orch serve`"
                    " (`orch schedule` lists the next fire times)\n"
                )
    if fmt is ProblemFormat.json:
        sys.stdout.write(format_problems(everything, "json") + "\n")
    elif fmt is ProblemFormat.github and everything:
        sys.stdout.write(format_problems(everything, "github") + "\n")
    raise typer.Exit(2 if failed else 0)


def _counts(workflow: Workflow, warnings: int) -> str:
    """``5 phases, 3 agent types: echo, fail, sleep``, the named agents and warnings too."""

    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'s' if n != 1 else ''}"

    types = workflow.agent_types()
    parts = [count(len(workflow.phases), "phase")]
    if workflow.agents:
        parts.append(count(len(workflow.agents), "named agent"))
    parts.append(count(len(types), "agent type") + (f": {', '.join(types)}" if types else ""))
    return ", ".join(parts) + (f"; {count(warnings, 'warning')}" if warnings else "")


def register(app: typer.Typer) -> None:
    """Add `orch validate` to `app`."""
    app.command("validate")(validate_command)


def _service_note(workflow: Any) -> str:
    keys = [k for k, v in (("schedule:", workflow.schedule), ("triggers:", workflow.triggers)) if v]
    return " and ".join(keys)
