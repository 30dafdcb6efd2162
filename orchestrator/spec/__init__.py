"""What the user wrote: read, schema-check and build a workflow file, collecting every problem.

``load_workflow`` and ``validate`` import the heavy modules (ruamel.yaml,
jsonschema, jinja2) when called, so ``import orchestrator`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import Location, Problem, WorkflowInvalid

if TYPE_CHECKING:
    from ..agents.registry import AgentRegistry
    from .model import Workflow

__all__ = ["MEMORY", "check", "load_workflow", "source_of", "validate"]

#: The path of a workflow built from a mapping or from YAML text.
MEMORY = "<memory>"


def check(
    path: str | Path | Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
    registry: AgentRegistry | None = None,
    stream: BinaryIO | None = None,
) -> tuple[Workflow | None, list[Problem]]:
    """Read and check a workflow: the Workflow (None if unreadable) and every problem.

    The workflow is a file (``path``), a mapping (as ``yaml.safe_load`` would give),
    or YAML text (``text=``, or a str with a line break as ``path``: ``source_of``);
    a mapping or text is checked exactly as a file is,
    with locations in ``<memory>``: lines of the text, and for a mapping its path
    in the mapping (``<memory>: phases[0].agent: ...``; it is checked laid out as
    indented JSON, whose lines the user never saw).
    Problems (errors and warnings) are sorted by line and column. Never raises
    for anything in the workflow; ``registry`` defaults to the installed agent types.
    ``stream`` gives a file's bytes (standard input): ``path`` then only names it.
    """
    from ..agents.registry import AgentRegistry
    from ..errors import SchemaViolation, UnreadableWorkflow, WorkflowError
    from .build import build_workflow
    from .context import clip
    from .schema import check_workflow
    from .source import parse_source, read_source, read_stream
    from .subflows import LOADER

    path, text = source_of(path, text)
    try:
        if stream is not None:
            try:
                src = read_stream(stream, str(path), keep_going=True)
            except OSError as exc:
                raise UnreadableWorkflow(
                    f"cannot read {path}: {exc.strerror or exc}", location=Location(str(path))
                ) from exc
        elif text is not None:
            src = parse_source(text.encode("utf-8"), MEMORY, keep_going=True)
        elif isinstance(path, Mapping):
            src = parse_source(_mapping_text(path).encode("utf-8"), MEMORY, keep_going=True)
            src.source_map.by_path = True  # located by path in the mapping, not by our lines
        elif isinstance(path, (str, Path)):
            src = read_source(path, keep_going=True)
        else:
            return None, [
                Problem(
                    Location(MEMORY),
                    "a workflow is a file path, a mapping or YAML text (text=...), "
                    f"not {type(path).__name__}",
                )
            ]
    except WorkflowError as exc:
        return None, [exc.to_problem()]
    if not isinstance(src.data, dict):
        value = src.data  # a text file is one long string: shown by its start
        shown = repr(clip(value)) if isinstance(value, str) else clip(repr(value))
        kind = "a list" if isinstance(value, list) else f"the single value {shown}"
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


def validate(
    path: str | Path | Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
    registry: AgentRegistry | None = None,
) -> list[Problem]:
    """Every problem in a workflow (errors and warnings); empty when it is fine.

    Takes a file path, a mapping, or YAML text (``text=``, or a str with a line break),
    as ``check``.
    """
    return check(path, text=text, registry=registry)[1]


def load_workflow(
    path: str | Path | Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
    registry: AgentRegistry | None = None,
) -> Workflow:
    """Read, check and build a workflow: a file path, a mapping, or YAML text (``text=``,
    or a str with a line break in it: a path never has one).

    A mapping or text gets the same checks as a file. Raises WorkflowInvalid with
    every error problem (warnings do not count).
    """
    path, text = source_of(path, text)
    workflow, problems = check(path, text=text, registry=registry)
    errors = [p for p in problems if p.severity == "error"]
    if errors or workflow is None:
        where = str(path) if isinstance(path, (str, Path)) else MEMORY
        raise WorkflowInvalid(errors or [Problem(Location(where), "cannot read workflow")])
    return workflow


def source_of(source: Any, text: str | None = None) -> tuple[Any, str | None]:
    """What a workflow source is, the one rule of ``load_workflow``, ``validate`` and
    ``start``: (path or mapping, YAML text). A str with a line break in it is YAML text
    (a path never has one); any other str or an ``os.PathLike`` is a file path."""
    import os

    if text is None and isinstance(source, str) and ("\n" in source or "\r" in source):
        return None, source
    if isinstance(source, os.PathLike) and not isinstance(source, Path):
        return os.fspath(source), text
    return source, text


def _mapping_text(data: Mapping[str, Any]) -> str:
    """A workflow mapping as indented JSON (which is YAML), so problems have lines.

    A number JSON cannot carry (NaN, an infinity, an integer too long) is refused as
    in a file (``.nan`` there): the same rule (``number_problem``), located by its path.
    """
    import json

    from ..jsontext import bad_number_at

    found = bad_number_at(data)
    if found is not None:
        from ..errors import SchemaViolation
        from .source import data_path

        where, value, problem = found
        shown = f" {value!r}" if isinstance(value, float) else ""  # a huge int: not shown
        raise SchemaViolation(
            f"the number{shown} is {problem}",
            location=Location(MEMORY, at=data_path(where)),
            hint="use a smaller, finite number, or a string to keep it as text",
        )

    def refuse(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not workflow data")

    try:
        return json.dumps(data, indent=2, ensure_ascii=False, default=refuse)
    except (TypeError, ValueError) as exc:
        from ..errors import SchemaViolation

        raise SchemaViolation(
            f"the workflow mapping holds a value that is not YAML data: {exc}",
            location=Location(MEMORY),
            hint="use strings, numbers, booleans, None, lists and dicts",
        ) from exc


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[int, int, str]] = set()
    out: list[Problem] = []
    for p in problems:
        key = (p.location.line, p.location.col, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
