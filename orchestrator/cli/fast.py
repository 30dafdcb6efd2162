"""The command line without typer: `orch validate` with plain arguments, and the last net.

A pre-commit hook runs ``orch validate`` on every commit, so its start-up counts:
``validate_fast`` reads the arguments typer would accept for it (files, folders,
``-``, ``--format``/``-f`` with a known value, ``--``) and answers without
building the typer application. Anything else (``--help``, an unknown option, a
bad format, no file, shell completion) returns None and typer answers, with its
own messages. ``validate_files`` is the command's body for both paths, so the
output is the same byte for byte. ``report_error`` prints an OrchError that a
command let through and gives its exit code (``cli.root.main`` uses it too).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExecutionError, OrchError, RunCancelled, WorkflowInvalid

if TYPE_CHECKING:
    from ..spec.model import Workflow

__all__ = ["FORMATS", "STDIN", "report_error", "validate_fast", "validate_files"]

#: The file name that means standard input (``orch validate -``), and how problems name it.
STDIN = Path("-")
#: The values of ``orch validate --format``.
FORMATS = ("text", "json", "github")


def validate_fast(args: Sequence[str]) -> int | None:
    """Run ``orch validate ARGS`` and return its exit code, or None when typer must answer."""
    parsed = _parse_validate(args)
    if parsed is None:
        return None
    files, fmt = parsed
    try:
        return validate_files(files, fmt)
    except OrchError as exc:
        return report_error(exc)


def _parse_validate(args: Sequence[str]) -> tuple[list[str], str] | None:
    """(files, format) when ``args`` are what typer accepts plainly, else None."""
    if "_ORCH_COMPLETE" in os.environ:  # typer answers shell completion
        return None
    files: list[str] = []
    fmt: str | None = None
    options = True
    it = iter(args)
    for arg in it:
        if not options or arg == "-" or not arg.startswith("-"):
            files.append(arg)
            continue
        if arg == "--":
            options = False
            continue
        if fmt is not None:  # a repeated option: typer decides
            return None
        if arg in ("--format", "-f"):
            value = next(it, None)
        elif arg.startswith("--format="):
            value = arg.partition("=")[2]
        elif arg.startswith("-f") and not arg.startswith("--"):
            value = arg[2:]
        else:
            return None
        if value is None or value.lower() not in FORMATS:
            return None
        fmt = value.lower()
    if not files:
        return None
    return files, fmt or "text"


def validate_files(files: Sequence[str], fmt: str) -> int:
    """Check workflow files (the arguments as given: ``''`` is no ``.``) and print every
    problem; 0 when all are valid, else 2.

    ``fmt`` is text (``FILE:LINE:COL: message`` and an ok line per valid file),
    json (one document for tools) or github (CI annotations).
    """
    from ..agents.registry import AgentRegistry
    from ..render.problems import format_problems, write_problems
    from ..spec import check
    from ..spec.locate import expand_paths

    registry = AgentRegistry.from_entry_points()
    everything = []
    targets, missing = expand_paths(files)
    everything.extend(missing)
    failed = bool(missing)
    if fmt == "text":
        write_problems(missing, "text", sys.stdout)
    for file in targets:
        if file == STDIN:
            file = Path("<stdin>")  # how problems and the ok line name it
            workflow, problems = check(file, registry=registry, stream=sys.stdin.buffer)
        else:
            workflow, problems = check(file, registry=registry)
        everything.extend(problems)
        errors = [p for p in problems if p.severity == "error"]
        if fmt == "text":
            write_problems(problems, "text", sys.stdout)
        if errors or workflow is None:
            failed = True
            continue
        if fmt == "text":
            sys.stdout.write(f"{file}: ok ({_counts(workflow, len(problems))})\n")
            if workflow.schedule or workflow.triggers:  # they do nothing under `orch run`
                sys.stdout.write(
                    f"  note: {_service_note(workflow)} start runs only under `orch serve`"
                    " (`orch schedule` lists the next fire times)\n"
                )
    if fmt == "json":
        sys.stdout.write(format_problems(everything, "json") + "\n")
    elif fmt == "github" and everything:
        sys.stdout.write(format_problems(everything, "github") + "\n")
    return 2 if failed else 0


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


def _service_note(workflow: Any) -> str:
    keys = [k for k, v in (("schedule:", workflow.schedule), ("triggers:", workflow.triggers)) if v]
    return " and ".join(keys)


def report_error(exc: OrchError) -> int:
    """Print an OrchError a command let through; return its exit code."""
    if isinstance(exc, WorkflowInvalid):
        lines = [str(p) for p in exc.problems] or [str(exc)]
    else:
        # located: `FILE:LINE:COL: message`, as `orch validate` prints problems
        lines = [exc.headline if exc.location is not None else f"error: {exc.headline}"]
        if exc.hint:
            lines.append(f"  hint: {exc.hint}")
    sys.stderr.write("\n".join(lines) + "\n")
    if isinstance(exc, RunCancelled):
        return 130
    if isinstance(exc, ExecutionError):
        return 1
    # invalid file, bad usage, or a refused operation on stored runs (as `orch runs` exits)
    return 2
