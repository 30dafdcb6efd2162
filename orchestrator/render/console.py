"""The Console factory: one place that decides live display or plain lines, and colour.

A terminal (not ``TERM=dumb``) gets the live display; anything else (a pipe, a
file, a CI log) gets plain timestamped lines, and tables that are not wrapped
(``COLUMNS`` honoured) and have no trailing spaces. ``NO_COLOR`` (any non-empty value)
turns colour off, as https://no-color.org asks; ``FORCE_COLOR`` (non-empty, not ``0``
or ``false``) turns it on where it would be off (CI logs that show ANSI colours),
still with plain lines and never the live display. NO_COLOR wins over FORCE_COLOR.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from rich.console import Console

__all__ = ["forces_color", "is_live", "make_console", "wants_color"]

_TRAILING = re.compile(r"[ \t]+(?=\n)")


def wants_color(environ: Mapping[str, str] | None = None) -> bool:
    """False when ``NO_COLOR`` is set to a non-empty value (https://no-color.org)."""
    env = os.environ if environ is None else environ
    return not env.get("NO_COLOR")


def forces_color(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``FORCE_COLOR`` asks for colour (non-empty, not 0/false) and NO_COLOR is unset."""
    env = os.environ if environ is None else environ
    value = env.get("FORCE_COLOR", "").strip().lower()
    return bool(value) and value not in ("0", "false", "no") and wants_color(env)


def make_console(
    file: TextIO | None = None,
    *,
    force_terminal: bool | None = None,
    environ: Mapping[str, str] | None = None,
    width: int | None = None,
) -> Console:
    """A rich Console writing to ``file`` (default: stderr), honouring NO_COLOR.

    ``force_terminal`` overrides the TTY detection (tests, ``--progress``-like
    switches). No markup or highlighting is applied to text we print: workflow
    values are data and must be shown as they are.
    """
    env = os.environ if environ is None else environ
    out = file if file is not None else sys.stderr
    terminal = force_terminal if force_terminal is not None else _isatty(out)
    forced = not terminal and force_terminal is None and forces_color(env)
    if not terminal:
        # A pipe, a file, a CI log: lines are never wrapped (COLUMNS, when set, is the
        # width) and carry no trailing spaces, so that they grep well.
        width = width or _columns(env) or _UNWRAPPED
        out = _StripTrailingSpaces(out)
    return Console(
        file=out,
        # decided here, not by rich from os.environ: FORCE_COLOR gives colour, never
        # the live display (is_live asks for an interactive console)
        force_terminal=terminal or forced,
        force_interactive=terminal and not forced,
        no_color=not wants_color(env),
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
        width=width,
    )


#: The width of output that is not a terminal and has no COLUMNS: no wrapping.
_UNWRAPPED = 10_000


def _isatty(file: TextIO) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def _columns(env: Mapping[str, str]) -> int | None:
    value = env.get("COLUMNS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class _StripTrailingSpaces:
    """A text stream that drops the spaces rich pads lines with, before each newline.

    Everything else (``getvalue``, ``fileno``, ``encoding``...) is the wrapped stream's.
    """

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def write(self, text: str) -> int:
        self._file.write(_TRAILING.sub("", text))
        return len(text)

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def is_live(console: Console) -> bool:
    """Whether this console should show the live display (a real, capable terminal)."""
    return console.is_terminal and console.is_interactive and not console.is_dumb_terminal
