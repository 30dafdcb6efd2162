"""Cron and one-shot fire times (the only cronsim import): what `orch validate` accepts fires.

A ``schedule:`` entry is either ``cron`` (five fields, names, ranges, steps, or
``@daily`` and friends) in an IANA ``timezone``, or a one-shot ``run_at`` (an
ISO 8601 time with an offset). The same parser serves ``orch validate``
(``cron_problem``), ``orch schedule`` and the service's scheduler
(``next_fire``), so what validates is exactly what fires.

Daylight-saving time, for an expression with a fixed minute and hour (``30 2 * * *``):
a wall-clock time that does not exist that day (the hour skipped in spring) is
skipped, and one that exists twice (the hour repeated in autumn) fires once, at
its first occurrence. An expression with ``*`` in the minute or hour field
(``*/15 * * * *``, ``0 * * * *``) runs by elapsed time: every real minute or
hour, the repeated hour included, as Debian's cron does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone, tzinfo
from typing import Any

from cronsim import CronSim, CronSimError

__all__ = [
    "MACROS",
    "cron_problem",
    "entry_key",
    "fire_times",
    "format_local",
    "next_fire",
    "parse_run_at",
    "zone",
]

#: The ``@`` shorthands and the five fields each stands for.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MAX_SKIPS = 10_000  # nonexistent or already-passed wall times skipped in a row, at most


def _fields(expression: str) -> str:
    text = expression.strip()
    return MACROS.get(text.lower(), text)


def cron_problem(expression: str) -> str | None:
    """Why the cron library refuses ``expression`` (five fields or a macro), or None."""
    text = _fields(expression)
    if len(text.split()) != 5:
        count = len(text.split())
        return f"a cron expression has 5 fields (minute hour day month weekday), not {count}"
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        return str(exc).lower() or "not a cron expression"
    except (ValueError, IndexError) as exc:  # cronsim raises these on some malformed ranges
        return f"not a cron expression ({exc})"
    return None


def zone(name: str) -> tzinfo:
    """The time zone called ``name`` (``UTC`` in any case); raises ValueError when unknown."""
    if name.upper() == "UTC":
        return timezone.utc
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone '{name}'") from exc


def parse_run_at(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time with an offset (``Z`` allowed).

    Raises ValueError for a malformed time or one without an offset (ambiguous).
    """
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"'{text}' is not an ISO 8601 time such as 2026-12-31T12:00:00Z") from exc
    if when.tzinfo is None:
        raise ValueError(f"'{text}' has no time zone offset; add Z or +01:00")
    return when.timestamp()


def _exists(wall: datetime, tz: tzinfo) -> bool:
    """Whether the naive local time ``wall`` exists in ``tz`` (not in a spring-forward gap)."""
    aware = wall.replace(tzinfo=tz, fold=0)
    return aware.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == wall


def fire_times(cron: str, tz_name: str, after: float) -> Iterator[float]:
    """Fire times of ``cron`` in ``tz_name`` strictly after ``after``, in order (epoch seconds).

    Raises ValueError for an invalid expression or time zone (validate refuses both).
    """
    problem = cron_problem(cron)
    if problem:
        raise ValueError(problem)
    text = _fields(cron)
    tz = zone(tz_name)
    start = datetime.fromtimestamp(after, tz)
    minute, hour = text.split()[:2]
    if tz is timezone.utc or minute.startswith("*") or hour.startswith("*"):
        # elapsed-time semantics: cronsim steps in UTC and matches local fields
        for when in CronSim(text, start):
            yield when.timestamp()
        return
    skipped = 0
    for wall in CronSim(text, start.replace(tzinfo=None)):  # wall-clock times, no zone
        ts = wall.replace(tzinfo=tz, fold=0).timestamp()
        if not _exists(wall, tz) or ts <= after:  # skipped by DST, or the repeat's first pass
            skipped += 1
            if skipped > _MAX_SKIPS:
                return
            continue
        skipped = 0
        yield ts


def next_fire(cron: str, tz_name: str, after: float) -> float | None:
    """The first fire time after ``after``, or None when there is none within 50 years."""
    for ts in fire_times(cron, tz_name, after):
        return ts
    return None


def entry_key(cron: str | None, run_at: str | None, tz_name: str, inputs: Any) -> str:
    """A stable id of one schedule entry (its content, not its position in the file)."""
    raw = json.dumps(
        {"cron": cron, "run_at": run_at, "timezone": tz_name, "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def format_local(ts: float, tz_name: str) -> str:
    """``ts`` as a local ISO time in ``tz_name`` with its offset (for people)."""
    return datetime.fromtimestamp(ts, zone(tz_name)).isoformat(timespec="seconds")
