"""The checking context shared by spec.build and spec.templates: problems, did-you-mean, helpers.

Collects problems instead of raising, knows which paths the schema already
refused (so one mistake gives one problem), and keeps "did you mean" cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..agents.registry import AgentRegistry
from ..errors import Location, Problem, SchemaViolation, UnknownReference, WorkflowError
from .model import AgentSpec, InputSpec
from .schema import SchemaReport, json_path
from .source import JsonPath, Source, SourceMap
from .values import parse_duration

__all__ = [
    "Checker",
    "as_int",
    "choice",
    "clip",
    "duration",
    "get",
    "int_or_none",
    "mapping",
    "number_or_none",
    "str_or_none",
    "unknown",
]


@dataclass(slots=True)
class Checker:
    """What the checks of one file share: the source, the schema report, the registry,
    the problems found so far, and what is known about agents, inputs and ids."""

    src: Source
    report: SchemaReport
    registry: AgentRegistry
    problems: list[Problem] = field(default_factory=list)
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    bad_agents: set[str] = field(default_factory=set)
    unloadable: set[str] = field(default_factory=set)  # agent types already reported
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    env: set[str] = field(default_factory=set)
    sequential: bool = False
    extra_names: tuple[str, ...] = ()  # names a phase adds for its templates (iteration...)
    # why 'item'/'index' are not defined in a key of a foreach phase (its approval.message)
    no_item: str | None = None
    bad_ids: set[str] = field(default_factory=set)
    suggestions_left: int = 10  # did-you-mean searches over long lists of names
    sorted_names: dict[int, tuple[Any, list[str]]] = field(default_factory=dict)

    smap: SourceMap = field(init=False)
    clean: bool = field(init=False)  # the schema found nothing: every path is ok

    def __post_init__(self) -> None:
        self.smap = self.src.source_map
        self.clean = not self.report.bad_paths

    def add(self, error: WorkflowError) -> None:
        """Record one problem; checking goes on."""
        self.problems.append(error.to_problem())

    def ok(self, path: JsonPath) -> bool:
        """Whether nothing at ``path`` (or above it) already failed the schema."""
        return self.clean or not self.report.is_bad(path)


def unknown(
    cx: Checker,
    what: str,
    name: str,
    where_text: str | None,
    choices: Any,
    location: Location,
    *,
    hint: str | None = None,
) -> UnknownReference:
    """An "unknown <what> '<name>'" problem with a did-you-mean from ``choices``."""
    cached = cx.sorted_names.get(id(choices))
    if cached is None or cached[0] is not choices or len(cached[1]) != len(choices):
        cached = (choices, sorted(str(c) for c in choices if isinstance(c, str)))
        cx.sorted_names[id(choices)] = cached
    options = cached[1]
    close: list[str] = []
    if len(options) <= 200 or cx.suggestions_left > 0:
        # did-you-mean over thousands of ids costs milliseconds each: bound the total
        cx.suggestions_left -= len(options) > 200
        close = difflib.get_close_matches(name, options, n=1)
    msg = f"unknown {what} '{name}'"
    if where_text:
        msg += f" in {where_text}"
    if close:
        msg += f"; did you mean '{close[0]}'?"
        hint = None
    elif hint is None and options:
        hint = f"known {what}s: " + ", ".join(options[:10]) + (" ..." if len(options) > 10 else "")
    return UnknownReference(
        msg, location=location, suggestion=close[0] if close else None, hint=hint
    )


_POSITIVE_HINTS = {
    "timeout": "leave the key out for no limit",
    "ttl": "leave ttl out to keep cached outputs with no expiry; remove cache to turn it off",
}


def duration(
    cx: Checker,
    value: Any,
    path: JsonPath,
    *,
    positive: str | None = None,
    limit: float | None = None,
) -> float | None:
    """Seconds of a duration value, or None (a problem is recorded when it is not one).

    With ``positive`` (what the value is, e.g. ``a timeout``) zero is a problem too:
    a timeout of 0 would fail every attempt.
    """
    if value is None or not cx.ok(path):
        return None
    try:
        seconds = parse_duration(value, limit=limit)
    except ValueError as exc:
        reason = str(exc)
        cx.add(
            SchemaViolation(
                f"{json_path(path)}: {clip(str(value))} is {reason}"
                if reason.startswith("too long")
                else f"{json_path(path)}: {value!r} is not a duration;"
                " use 500ms, 30s, 5m, 1h or a number of seconds",
                location=cx.smap.value(path),
            )
        )
        return None
    if positive is not None and seconds <= 0:
        cx.add(
            SchemaViolation(
                f"{json_path(path)}: {positive} must be greater than 0",
                location=cx.smap.value(path),
                hint=_POSITIVE_HINTS.get(str(path[-1])),
            )
        )
        return None
    return seconds


def int_or_none(cx: Checker, value: Any, path: JsonPath) -> int | None:
    """The int at ``path``, or None when absent or refused by the schema."""
    return as_int(value, None) if cx.ok(path) else None


def as_int(value: Any, default: Any) -> Any:
    """An int from an int or an integral float (JSON Schema counts 2.0 as an integer)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def number_or_none(value: Any) -> float | None:
    """A finite, non-negative number, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1e300:
        return float(value)  # (float() of a bigger int raises OverflowError)
    return None


def mapping(value: Any) -> Mapping[str, Any]:
    """The value when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def str_or_none(value: Any) -> str | None:
    """The value when it is a string, else None."""
    return value if isinstance(value, str) else None


def choice(value: Any, default: str) -> str:
    """The value when it is a string, else ``default``."""
    return value if isinstance(value, str) else default


def get(data: Any, path: JsonPath) -> Any:
    """The value at ``path`` inside ``data``, or an empty mapping."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return {}
    return data


def clip(text: str, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters for messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
