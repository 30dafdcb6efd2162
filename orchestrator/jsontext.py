"""Strict JSON: the numbers orch can keep, the one writer of JSON text, and the
reader of JSON that other programs wrote.

JSON has no NaN or Infinity, and Python refuses to write an integer of more than
4,300 digits as text (``sys.get_int_max_str_digits``: turning a huge integer into
digits takes quadratic time). Every number orch reads (the workflow file, inputs,
agent outputs) is checked with ``number_problem``; every JSON text orch writes
(stdout, ``--output-file``, the state store, ``--events jsonl``, ``--json``
views) goes through ``dumps``, which never writes ``NaN``/``Infinity`` and names
the first value it cannot write. ``loads`` reads JSON text that other programs
wrote (an HTTP body, a model's answer, a command's stdout) without Python's
extensions: ``NaN``, ``Infinity``, a number too large for a float, are not JSON
(RFC 8259) and are refused as invalid JSON.

This module imports only the standard library (and ``errors``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import ExecutionError

__all__ = [
    "MAX_INT_DIGITS",
    "NotJson",
    "bad_number",
    "bad_number_at",
    "dumps",
    "loads",
    "number_problem",
    "quoted",
]

#: Integers with more digits than this are refused (Python's own limit for int <-> str).
MAX_INT_DIGITS = 4300
_INT_LIMIT = 10**MAX_INT_DIGITS
_INT_BITS = int(MAX_INT_DIGITS * math.log2(10))  # below this many bits an int always fits


class NotJson(ExecutionError, ValueError):
    """A value holds something JSON cannot carry (NaN, Infinity, a huge integer)."""


def number_problem(value: Any) -> str | None:
    """Why ``value`` (a number) cannot be stored as JSON, or None (also for non-numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value.bit_length() > _INT_BITS and abs(value) >= _INT_LIMIT:
            return f"an integer of more than {MAX_INT_DIGITS:,} digits"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
        return f"{shown} (JSON has no NaN or Infinity)"
    return None


def bad_number(value: Any) -> tuple[str, str] | None:
    """The first number inside ``value`` (mappings and lists walked) that JSON cannot
    carry: (its path such as ``$.a[2]``, the problem), or None."""
    found = bad_number_at(value)
    if found is None:
        return None
    path, _, problem = found
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path), problem


def bad_number_at(value: Any) -> tuple[tuple[str | int, ...], Any, str] | None:
    """``bad_number`` with the path as its keys and indexes (``("a", 2)``) and the number."""
    for path, item in _walk(value, (), 0):
        problem = number_problem(item)
        if problem is not None:
            return path, item, problem
    return None


def _walk(
    value: Any, path: tuple[str | int, ...], depth: int
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if depth > 200:  # deeper data fails json.dumps with a RecursionError of its own
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, (*path, str(k)), depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i), depth + 1)
    else:
        yield path, value


def dumps(
    value: Any,
    *,
    indent: int | None = None,
    compact: bool = False,
    what: str = "the value",
) -> str:
    """``value`` as strict JSON text (UTF-8 characters kept, unknown objects as ``str``).

    Raises NotJson naming ``what`` and the path of the first NaN, Infinity or
    too-large integer (or nesting too deep to write).
    """
    try:
        if indent is None:  # one encoder each, made once (json.dumps makes one per call)
            return (_COMPACT if compact else _PLAIN)(value)
        return json.dumps(
            value,
            indent=indent,
            ensure_ascii=False,
            allow_nan=False,
            default=str,
            separators=(",", ":") if compact else None,
        )
    except RecursionError:
        raise NotJson(f"{what} is nested too deeply to write as JSON") from None
    except ValueError as exc:
        found = bad_number(value)
        if found is None:
            raise NotJson(f"{what} cannot be written as JSON: {exc}") from None
        path, problem = found
        raise NotJson(f"{what} holds {problem} at {path}; JSON cannot carry it") from None


def _encoder(separators: tuple[str, str] | None) -> Callable[[Any], str]:
    """``JSONEncoder(...).encode`` without the set-up it repeats on every call (a C
    encoder made per call: about 2 us, three times a phase in the state store).

    The C encoder is made once, without a table of the containers being written (a
    shared table is not safe across threads): a value that contains itself fails
    with RecursionError, and then ``encode`` tells it from a value nested too deeply.
    Without the C module (another Python), or if it writes anything else, ``encode``
    is used.
    """
    encoder = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, default=str, separators=separators
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    try:
        chunks = make(
            None,  # markers: no check for containers that contain themselves
            str,  # default
            json.encoder.encode_basestring,  # ensure_ascii=False
            None,  # indent
            encoder.key_separator,
            encoder.item_separator,
            False,  # sort_keys
            False,  # skipkeys
            False,  # allow_nan
        )
    except TypeError:  # another signature
        return encoder.encode

    def encode(value: Any) -> str:
        try:
            return "".join(chunks(value, 0))
        except RecursionError:  # too deep, or a value containing itself: say which
            return encoder.encode(value)

    probe = {"a": [1, 2.5, None, True, 'é\n"', {"b": ()}], "c": _PROBE_OBJECT}
    try:
        same = encode(probe) == encoder.encode(probe)
    except Exception:  # noqa: BLE001 - any surprise: the plain way
        same = False
    return encode if same else encoder.encode


#: ``text`` (a str) as a JSON string, exactly as ``dumps`` writes it (UTF-8 kept).
quoted: Callable[[str], str] = json.encoder.encode_basestring

_PROBE_OBJECT = object()
_COMPACT = _encoder((",", ":"))
_PLAIN = _encoder(None)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a JSON number")
    return value


def loads(text: str | bytes) -> Any:
    """Parse strict JSON; raises ValueError (``json.JSONDecodeError``, NaN/Infinity, a
    number that overflows a float, an integer of more than 4,300 digits)."""
    return json.loads(text, parse_constant=_refuse, parse_float=_finite)
