"""Run inputs: check provided values against the workflow's typed ``inputs:`` and apply defaults.

The one function the CLI (``--input k=v``, ``--inputs-file``), the Python API, `orch serve`
(webhook inputs) and ``orch validate`` (a schedule's inputs) share.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ..jsontext import MAX_INT_DIGITS, bad_number
from .model import Workflow
from .values import input_type_ok

__all__ = ["resolve_inputs"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def resolve_inputs(
    workflow: Workflow, provided: Mapping[str, Any], *, strings: bool = False
) -> dict[str, Any]:
    """The run's ``inputs`` mapping: provided values checked by declared type, then defaults.

    With ``strings=True`` every provided value that is a string is parsed by its
    declared type (``--input k=v``): integer, number, boolean (true/false/yes/no/
    on/off/1/0), array and object as JSON; string stays as it is. Values that
    are not strings (from ``--inputs-file`` or the Python API) are checked as
    they are. An optional input without a default is None; a None given for an
    input counts as not given (its default applies; a required one is missing).

    Raises UsageError naming the input for an unknown input, a missing required
    input, or a value of the wrong type.
    """
    declared = workflow.inputs
    out: dict[str, Any] = {}
    for name, value in provided.items():
        spec = declared.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(declared), n=1)
            if close:
                hint = f"did you mean '{close[0]}'?"
            elif declared:
                hint = "declared inputs: " + ", ".join(sorted(declared))
            else:
                hint = "this workflow declares no inputs"
            raise UsageError(f"unknown input '{name}'", hint=hint)
        if value is None:
            continue  # null is "not given": the default applies, or it is null, or missing
        if strings and isinstance(value, str):
            value = _parse(name, spec.type, value)
        found = bad_number(value)
        if found is not None:
            where = "" if found[0] == "$" else f" at {found[0]}"
            raise UsageError(
                f"input '{name}' holds {found[1]}{where}",
                hint="inputs are JSON data: use a finite number of at most"
                f" {MAX_INT_DIGITS:,} digits",
            )
        out[name] = _check(name, spec.type, value)
    for name, spec in declared.items():
        if name in out:
            continue
        if spec.has_default:
            out[name] = spec.default
        elif spec.required:
            raise UsageError(
                f"missing required input '{name}' ({spec.type})",
                hint=f"pass it with --input {name}=VALUE",
            )
        else:
            out[name] = None
    return out


def _parse(name: str, type_: str, text: str) -> Any:
    if type_ == "string":
        return text
    if type_ == "boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _wrong(name, type_, text, "use true or false")
    if type_ == "integer":
        try:
            return int(text.strip()) if len(text) <= MAX_INT_DIGITS + 8 else 10**MAX_INT_DIGITS
        except ValueError:
            raise _wrong(name, type_, text, "use a whole number such as 3") from None
    if type_ == "number":
        try:
            return json.loads(text) if text.strip() else float(text)
        except (ValueError, RecursionError):
            raise _wrong(name, type_, text, "use a number such as 2.5") from None
    if type_ in ("array", "object"):
        example = '["a", "b"]' if type_ == "array" else '{"key": "value"}'
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # a huge integer or deep nesting too
            raise _wrong(name, type_, text, f"give it as JSON, e.g. {example}") from None
    return text


def _check(name: str, type_: str, value: Any) -> Any:
    if not input_type_ok(type_, value):
        raise _wrong(name, type_, value, None)
    if type_ == "array":
        return list(value)
    if type_ == "object":
        return dict(value)
    return value


def _wrong(name: str, type_: str, value: Any, hint: str | None) -> UsageError:
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return UsageError(
        f"input '{name}' must be {_article(type_)} {type_}, got {_kind(value)} '{shown}'",
        hint=hint,
    )


def _kind(value: Any) -> str:
    """What a value is, in the words of the input types (JSON's), not Python's."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    if value is None:
        return "null"
    return type(value).__name__


def _article(type_: str) -> str:
    return "an" if type_[0] in "aeiou" else "a"
