"""What the user wrote: read, schema-check and build a workflow file, collecting every problem.

``load_workflow`` and ``validate`` import the heavy modules (ruamel.yaml,
jsonschema, jinja2) when called, so ``import orchestrator`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import Location, Problem, WorkflowInvalid

if TYPE_CHECKING:
    from ..agents.registry import AgentRegistry
    from .model import Workflow

__all__ = ["check", "load_workflow", "validate"]


def check(
    path: str | Path, *, registry: AgentRegistry | None = None, stream: BinaryIO | None = None
) -> tuple[Workflow | None, list[Problem]]:
    """Read and check a workflow file: the Workflow (None if unreadable) and every problem.

    Problems (errors and warnings) are sorted by line and column. Never raises
    for anything in the file; ``registry`` defaults to the installed agent types.
    ``stream`` gives the file's bytes (standard input): ``path`` then only names it.
    """
    from ..agents.registry import AgentRegistry
    from ..errors import SchemaViolation, UnreadableWorkflow, WorkflowError
    from .build import build_workflow
    from .schema import check_workflow
    from .source import read_source, read_stream
    from .subflows import LOADER

    try:
        if stream is None:
            src = read_source(path, keep_going=True)
        else:
            try:
                src = read_stream(stream, str(path), keep_going=True)
            except OSError as exc:
                raise UnreadableWorkflow(
                    f"cannot read {path}: {exc.strerror or exc}", location=Location(str(path))
                ) from exc
    except WorkflowError as exc:
        return None, [exc.to_problem()]
    if not isinstance(src.data, dict):
        kind = "a list" if isinstance(src.data, list) else f"the single value {src.data!r}"
        problem = SchemaViolation(
            f"a workflow must be a mapping of keys (name, phases, ...), not {kind}",
            location=src.source_map.value(()),
            hint="start the file with 'name: ...' and 'phases:'",
        ).to_problem()
        return None, [*src.problems, problem]
    report = check_workflow(src.data, src.source_map)
    registry = registry if registry is not None else AgentRegistry.from_entry_points()
    token = LOADER.set(load_workflow)  # named workflow files are checked with this loader
    try:
        workflow, found = build_workflow(src, report, registry)
    finally:
        LOADER.reset(token)
    problems = _dedupe(list(src.problems) + report.problems + found)
    return workflow, sorted(problems, key=lambda p: (p.location.line, p.location.col))


def validate(path: str | Path, *, registry: AgentRegistry | None = None) -> list[Problem]:
    """Every problem in a workflow file (errors and warnings); empty when it is fine."""
    return check(path, registry=registry)[1]


def load_workflow(path: str | Path, *, registry: AgentRegistry | None = None) -> Workflow:
    """Read, check and build a workflow file.

    Raises WorkflowInvalid with every error problem (warnings do not count).
    """
    workflow, problems = check(path, registry=registry)
    errors = [p for p in problems if p.severity == "error"]
    if errors or workflow is None:
        raise WorkflowInvalid(errors or [Problem(Location(str(path)), "cannot read workflow")])
    return workflow


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[int, int, str]] = set()
    out: list[Problem] = []
    for p in problems:
        key = (p.location.line, p.location.col, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
