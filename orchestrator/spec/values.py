"""Values in a workflow: durations, rate limits, cron expressions and typed input values.

Pure functions; each says why a value is wrong (ValueError or a message) so the
caller can locate the problem.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "INPUT_TYPES",
    "MAX_DURATION",
    "MAX_TTL",
    "check_cron",
    "input_type_ok",
    "parse_duration",
    "parse_rate_limit",
]

#: The types an input may declare (``inputs: {x: {type: ...}}``).
INPUT_TYPES = ("string", "integer", "number", "boolean", "array", "object")

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The longest duration a workflow may give (timeouts, delays, ttl): 30 days. Longer
#: values are refused, so that no wait is infinite or overflows a clock.
MAX_DURATION = 30 * 24 * 3600.0
#: A cache entry may live longer: ten years.
MAX_TTL = 3650 * 24 * 3600.0
_RATE = re.compile(r"^\s*([0-9]{1,9})\s*/\s*(s|m|h)\s*$")  # at most 999,999,999 calls


def parse_duration(value: Any, *, limit: float | None = None) -> float:
    """Seconds in a duration (``500ms``, ``30s``, ``5m``, ``1h``, ``1h30m`` or a number).

    Raises ValueError when ``value`` is not one, or is longer than ``limit``
    (``MAX_DURATION`` when None; the message then starts with ``too long``).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if not 0 <= value < math.inf:
            raise ValueError(f"not a duration: {value!r}")
        seconds = float(value) if value <= 1e300 else math.inf  # float() of a huge int raises
    else:
        text = str(value).replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {value!r}")
        if any(len(n) > 20 for n, _ in parts):  # float() of 400 digits is infinity
            seconds = math.inf
        else:
            seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    most = MAX_DURATION if limit is None else limit
    if seconds > most:
        raise ValueError(f"too long: more than {_days(most)}")
    return seconds


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} days ({days * 24:g}h)"


def parse_rate_limit(text: Any) -> tuple[int, float] | None:
    """``10/s`` -> (10, 1.0), ``600/m`` -> (600, 60.0); None when ``text`` is not one."""
    m = _RATE.match(str(text))
    if m is None:
        return None
    return int(m.group(1)), _UNIT[m.group(2)]


_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    ),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)
_CRON_MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


def check_cron(expression: str) -> str | None:
    """Why ``expression`` is not a five-field cron expression, or None when it is."""
    text = expression.strip()
    if text.lower() in _CRON_MACROS:
        return None
    fields = text.split()
    if len(fields) != 5:
        return f"a cron expression has 5 fields (minute hour day month weekday), not {len(fields)}"
    for raw, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in raw.split(","):
            problem = _cron_item(item.lower(), name, low, high, names)
            if problem:
                return problem
    return None


def _cron_item(item: str, name: str, low: int, high: int, names: Mapping[str, int]) -> str | None:
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        return f"'{item}' has a bad step in the {name} field"

    def number(text: str) -> int | None:
        if text in names:
            return names[text]
        return int(text) if text.isdigit() else None

    if base == "*":
        return None
    lo_text, dash, hi_text = base.partition("-")
    lo = number(lo_text)
    hi = number(hi_text) if dash else lo
    if lo is None or hi is None:
        return f"'{item}' is not a valid {name} (use a number, a range a-b, a list or *)"
    for n in (lo, hi):
        if not low <= n <= high:
            return f"{name} {n} is out of range {low}-{high}"
    if lo > hi:
        return f"the {name} range '{base}' runs backwards"
    return None


def input_type_ok(type_: str, value: Any) -> bool:
    """Whether ``value`` (already parsed, not text) is of the declared input type.

    The one rule shared by validate (input defaults) and the engine (run inputs):
    booleans are not numbers, an integral float is not an integer, a list or tuple
    is an array, any mapping is an object. An unknown type accepts anything.
    """
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "array":
        return isinstance(value, (list, tuple))
    if type_ == "object":
        return isinstance(value, Mapping)
    return True
