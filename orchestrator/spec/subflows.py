"""Workflow files a workflow names (sub-workflows of the ``workflow`` agent, the fallback
workflow): at validate, each literal path must exist, be valid, not recurse, and get valid inputs.

One check shared by ``error_handling.fallback_workflow`` and the ``workflow`` agent's
``check_static``; recursion is found across both, since checking a named file checks
the files it names in turn, with the chain of files being checked in a context variable.
"""

from __future__ import annotations

import contextvars
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OrchError, WorkflowInvalid
from ..template_syntax import has_template, is_template

__all__ = ["RefProblem", "check_workflow_ref"]

# The files being checked, outermost first, while validate follows named workflow files.
_CHECKING: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "orch_workflow_checking", default=()
)

# How to load a named workflow file: set by the loader (spec.check) while it builds a
# workflow, so that this module does not import the package that imports it.
LOADER: contextvars.ContextVar[Callable[[str], Any] | None] = contextvars.ContextVar(
    "orch_workflow_loader", default=None
)

_RECURSION = "workflow recursion: "


@dataclass(frozen=True, slots=True)
class RefProblem:
    """A problem with a named workflow file; ``path`` is relative to the reference:
    ``()`` for the path itself, ``("inputs", name)`` for one input given to it."""

    path: tuple[str | int, ...]
    message: str
    hint: str | None = None


def check_workflow_ref(
    ref: Any,
    workflow_path: str,
    *,
    label: str,
    inputs: Mapping[str, Any] | None = None,
) -> list[RefProblem]:
    """Check the workflow file ``ref`` (relative to ``workflow_path``'s folder) at validate.

    ``label`` names it in messages (``sub-workflow``, ``fallback workflow``). A
    template or non-string ``ref`` is not checked (empty list). ``inputs``, when
    given, are the literal values passed to it, checked against its declared
    inputs with the engine's rule (spec.values.input_type_ok). Never raises for
    anything in the files.
    """
    if not isinstance(ref, str) or not ref or is_template(ref):
        return []
    here = str(Path(workflow_path).resolve())
    target = str((Path(workflow_path).parent / ref).resolve())
    chain = _CHECKING.get() or (here,)
    if target in chain:
        loop = [*chain[chain.index(target) :], target]
        return [RefProblem((), _RECURSION + " -> ".join(Path(p).name for p in loop))]
    if not Path(target).is_file():
        return [
            RefProblem(
                (),
                f"{label.removeprefix('sub-')} file '{ref}' not found",
                hint=f"the path is relative to this workflow's folder ({Path(here).parent})",
            )
        ]
    load_workflow = LOADER.get()
    if load_workflow is None:  # checked outside the loader: nothing to load it with
        return []
    token = _CHECKING.set((*chain, target))
    try:
        workflow = load_workflow(target)
    except WorkflowInvalid as exc:
        errors = [p for p in exc.problems if p.severity == "error"]
        if not errors:
            return [RefProblem((), f"{label} '{ref}' is invalid: {exc.headline}")]
        first = errors[0]
        if _RECURSION in first.message:
            return [RefProblem((), first.message[first.message.index(_RECURSION) :])]
        where = first.location
        shown = f"{ref}:{where.line}:{where.col}" if where.path == target else str(where)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return [
            RefProblem(
                (),
                f"{label} '{ref}' is invalid: {shown}: {first.message}{more}",
                hint=f"run 'orch validate {ref}' to see every problem",
            )
        ]
    except OrchError as exc:
        return [RefProblem((), f"{label} '{ref}' is invalid: {exc.headline}", hint=exc.hint)]
    finally:
        _CHECKING.reset(token)
    if inputs is None:
        return []
    return _check_inputs(ref, workflow.inputs, inputs, label)


def _check_inputs(
    ref: str, declared: Mapping[str, Any], given: Mapping[str, Any], label: str
) -> list[RefProblem]:
    from .schema import describe
    from .values import input_type_ok

    out: list[RefProblem] = []
    of = f"{label} '{ref}'"
    for name, value in given.items():
        spec = declared.get(name)
        if spec is None:
            close = difflib.get_close_matches(str(name), [str(n) for n in declared], n=1)
            message = f"unknown input '{name}' of {of}"
            hint: str | None = None
            if close:
                message += f"; did you mean '{close[0]}'?"
            elif declared:
                hint = "its inputs: " + ", ".join(sorted(str(n) for n in declared))
            else:
                hint = f"{of} declares no inputs"
            out.append(RefProblem(("inputs", name), message, hint=hint))
        elif not has_template(value) and not input_type_ok(spec.type, value):
            article = "an" if spec.type[:1] in "aeiou" else "a"
            out.append(
                RefProblem(
                    ("inputs", name),
                    f"input '{name}' of {of} must be {article} {spec.type}, not {describe(value)}",
                )
            )
    missing = [
        n for n, s in declared.items() if s.required and not s.has_default and n not in given
    ]
    for name in missing:
        out.append(
            RefProblem(
                ("inputs",) if given else (),
                f"missing required input '{name}' ({declared[name].type}) of {of}",
                hint=f"give it in inputs, e.g. inputs: {{{name}: ...}}",
            )
        )
    return out
