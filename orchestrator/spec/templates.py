"""Templates in a workflow: syntax, and the names they read (phases, inputs, previous, item).

Every string in ``with``, ``when``, ``foreach``, ``outputs``, ``cache.key``,
``fallback`` and ``compensate`` is checked here; the phases a template reads are
returned so that build can add them as implied dependencies.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import ExpressionError, Location, UnknownReference
from ..template_syntax import is_template
from .context import Checker, clip, unknown
from .schema import json_path
from .source import JsonPath

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["check_template_text", "check_templates", "strings"]

_TEMPLATE_NAMES = (
    "inputs",
    "phases",
    "previous",
    "item",
    "index",
    "run",
    "env",
    "secrets",
    "trigger",
)
# names that only some phases (or keys) define, and why the others do not
_PHASE_NAMES = {
    "iteration": "'iteration' is only defined in a phase with repeat",
    "output": "'output' is only defined in repeat.until (this iteration's output)",
}
_JINJA_GLOBALS = frozenset(
    {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "caller", "varargs"}
    | {"kwargs"}
)
#: what ``run.`` holds everywhere, and in on_success / on_failure / finally phases
_RUN_FIELDS = ("id", "workflow")
_HANDLER_RUN_FIELDS = ("status", "error")
_HANDLERS = frozenset({"on_success", "on_failure", "finally"})


def strings(value: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """Every string inside ``value`` (dicts and lists walked) with its JSON path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings(v, path + (i,))


def check_templates(
    cx: Checker,
    value: Any,
    path: JsonPath,
    phases: set[Any],
    pid: str | None,
    *,
    foreach: bool,
    sequential: bool,
) -> list[tuple[str, Location]]:
    """Check every template string in ``value``; the phases it references, located."""
    found: list[tuple[str, Location]] = []
    if isinstance(value, str) and path[-1:] == ("when",):
        found += check_template_text(
            cx, value, path, phases, pid, foreach=foreach, sequential=sequential, condition=True
        )
        return found
    for sub, text in strings(value, path):
        found += check_template_text(
            cx, text, sub, phases, pid, foreach=foreach, sequential=sequential
        )
    return found


def check_template_text(
    cx: Checker,
    text: str,
    path: JsonPath,
    phases: set[Any],
    pid: str | None,
    *,
    foreach: bool,
    sequential: bool,
    condition: bool = False,
) -> list[tuple[str, Location]]:
    """Check one template (or a condition); record its problems, return the phases it reads."""
    if not condition and not is_template(text):
        return []
    where = cx.smap.value(path)
    shown = json_path(path)
    error, private, chains, unknown_names = _parse_template(text, condition)
    if error:
        error = error[:1].lower() + error[1:].rstrip(".")
        cx.add(
            ExpressionError(
                f"{shown}: template syntax error in '{clip(text)}': {error}", location=where
            )
        )
        return []
    if private is not None:
        cx.add(
            ExpressionError(
                f"{shown}: access to '{private}' is not allowed in templates",
                location=where,
                hint="names starting with _ are Python internals; templates read "
                + ", ".join(_TEMPLATE_NAMES),
            )
        )
        return []
    for kind, name, near in unknown_names:
        cx.add(
            ExpressionError(
                f"{shown}: unknown {kind} '{name}' in '{clip(text)}'"
                + (f"; did you mean '{near}'?" if near else ""),
                location=where,
                hint="orch templates have Jinja's built-in filters and tests",
            )
        )
    found: list[tuple[str, Location]] = []
    for chain in sorted(chains):
        head = chain[0]
        if head == "phases":
            if len(chain) < 2:
                continue
            target = chain[1]
            if path[2:3] == ("compensate",):  # (phases, i, key, ...): the phase's own key
                # A compensation runs after the phases ended: it may read any phase's
                # result, its own included, and implies no dependency.
                if target not in phases and target != pid and target not in cx.bad_ids:
                    cx.add(unknown(cx, "phase", target, shown, phases, where))
            elif target == pid:
                cx.add(
                    UnknownReference(
                        f"{shown}: phase '{pid}' refers to its own result (phases.{target})",
                        location=where,
                    )
                )
            elif target in cx.bad_ids:
                pass
            elif target not in phases:
                cx.add(unknown(cx, "phase", target, shown, phases, where))
            else:
                found.append((target, where))
        elif head == "inputs":
            if len(chain) >= 2 and chain[1] not in cx.inputs:
                cx.add(unknown(cx, "input", chain[1], shown, cx.inputs, where))
        elif head in ("secrets", "env"):
            if len(chain) >= 2:
                (cx.secrets if head == "secrets" else cx.env).add(chain[1])
            else:
                what = "a secret" if head == "secrets" else "an environment variable"
                cx.add(
                    ExpressionError(
                        f"{shown}: read {what} by its name ({head}.NAME or {head}['NAME'])"
                        f" in '{clip(text)}'",
                        location=where,
                        hint=f"orch gives templates only the {head} a workflow names, so that"
                        " nothing else of the environment can reach an output",
                    )
                )
        elif head == "run" and len(chain) >= 2:
            handler = path[0] in _HANDLERS
            known = _RUN_FIELDS + (_HANDLER_RUN_FIELDS if handler else ())
            if chain[1] not in known:
                close = difflib.get_close_matches(chain[1], known, n=1)
                later = chain[1] in _HANDLER_RUN_FIELDS
                cx.add(
                    ExpressionError(
                        f"{shown}: 'run.{chain[1]}' is not defined here"
                        + (f"; did you mean 'run.{close[0]}'?" if close and not later else ""),
                        location=where,
                        hint="run.status and run.error are known in on_success, on_failure"
                        " and finally phases"
                        if later
                        else "templates can read " + ", ".join(f"run.{f}" for f in known),
                    )
                )
        elif head == "previous" and not sequential:
            if cx.sequential and path[0] == "phases":
                message = f"{shown}: 'previous' is not defined in the first phase"
                hint = "the first phase has no phase before it"
            elif cx.sequential:
                message = f"{shown}: 'previous' is only defined in the phases of the main list"
                hint = "name the phase instead: phases.<id>"
            else:
                message = f"{shown}: 'previous' is only defined in sequential mode"
                hint = "add 'mode: sequential' at the top level, or name the phase: phases.<id>"
            cx.add(ExpressionError(message, location=where, hint=hint))
        elif head in cx.extra_names:
            pass
        elif head in _PHASE_NAMES:
            cx.add(ExpressionError(f"{shown}: {_PHASE_NAMES[head]}", location=where))
        elif head in ("item", "index") and not foreach:
            if cx.no_item is not None:
                message = f"{shown}: '{head}' is not defined here: {cx.no_item}"
                hint = "name the whole list instead (its foreach expression)"
                cx.add(ExpressionError(message, location=where, hint=hint))
            else:
                message = f"{shown}: '{head}' is only defined in a phase with foreach"
                cx.add(ExpressionError(message, location=where))
        elif head not in _TEMPLATE_NAMES and head not in _JINJA_GLOBALS:
            names = _TEMPLATE_NAMES + cx.extra_names
            close = difflib.get_close_matches(head, names, n=1)
            msg = f"{shown}: unknown name '{head}' in '{clip(text)}'"
            cx.add(
                ExpressionError(
                    msg + (f"; did you mean '{close[0]}'?" if close else ""),
                    location=where,
                    hint="templates can read " + ", ".join(names),
                )
            )
    return found


@lru_cache(maxsize=4096)
def _parse_template(
    text: str, condition: bool
) -> tuple[
    str | None, str | None, frozenset[tuple[str, ...]], tuple[tuple[str, str, str | None], ...]
]:
    """A template's syntax error (or None), the first ``_name`` it reads (or None: see
    expr.private_access), the names it reads, and its unknown filters and tests.

    A template of the common shape is read without Jinja (see _simple_references),
    and one without filters without importing jinja2 at all (``orch validate``'s
    start-up); everything else goes to expr's parser.
    """
    if not condition:
        simple = _simple_references(text)
        if simple is not None:
            private = next((p for c in simple for p in c[1:] if p.startswith("_")), None)
            filters = _FILTER.findall(text)
            unknown: tuple[tuple[str, str, str | None], ...] = ()
            if filters:
                known = _expr().filter_names()
                if any(f not in known for f in filters):
                    unknown = tuple(_expr().unknown_names(text))
            return None, private, simple, unknown
    expr = _expr()
    chains = expr.references(text) if condition else expr.template_references(text)
    error = None
    if not chains:
        error = expr.check_expression(text) if condition else expr.check_template(text)
    private = None if error else expr.private_access(text, condition=condition)
    unknown = () if error else tuple(expr.unknown_names(text, condition=condition))
    return error, private, frozenset(chains), unknown


def _expr() -> ModuleType:
    """The jinja2 module (orchestrator.expr), imported when a template needs it."""
    from .. import expr

    return expr


# The common template shapes, `text {{ a.b.c }} text {{ x.y | tojson }} {{ index + 1 }}`,
# read without building a Jinja AST (a 10,000-phase file has thousands of these): a
# dotted name, then at most one arithmetic operator with a whole number, then at most
# one filter. Anything else, or a Jinja keyword as a name, goes to the real parser in expr.
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_ARITHMETIC = r"(?:\s*[-+*]\s*(?:0|[1-9][0-9]*))?"
_PLAIN_TEXT = r"(?:[^{]|\{(?![{%#]))*"
_SIMPLE = re.compile(
    rf"{_PLAIN_TEXT}(?:\{{\{{\s*{_DOTTED}{_ARITHMETIC}(?:\s*\|\s*[A-Za-z_][A-Za-z0-9_]*)?\s*\}}\}}{_PLAIN_TEXT})*\Z"
)
_EXPRESSION = re.compile(rf"\{{\{{\s*({_DOTTED})")
_FILTER = re.compile(r"\|\s*([A-Za-z_][A-Za-z0-9_]*)")
_KEYWORDS = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None"}
)


def _simple_references(text: str) -> frozenset[tuple[str, ...]] | None:
    if "}}" not in text or not _SIMPLE.match(text):
        return None
    chains = [tuple(m.group(1).split(".")) for m in _EXPRESSION.finditer(text)]
    if not chains or any(part in _KEYWORDS for chain in chains for part in chain):
        return None
    return frozenset(chains)
