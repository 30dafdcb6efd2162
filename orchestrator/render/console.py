"""The Console factory: one place that decides live display or plain lines, and colour.

A terminal (not ``TERM=dumb``) gets the live display; anything else (a pipe, a
file, a CI log) gets plain timestamped lines. ``NO_COLOR`` (any non-empty value)
turns colour off, as https://no-color.org asks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

from rich.console import Console

__all__ = ["is_live", "make_console", "wants_color"]


def wants_color(environ: Mapping[str, str] | None = None) -> bool:
    """False when ``NO_COLOR`` is set to a non-empty value (https://no-color.org)."""
    env = os.environ if environ is None else environ
    return not env.get("NO_COLOR")


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
    return Console(
        file=file if file is not None else sys.stderr,
        force_terminal=force_terminal,
        no_color=not wants_color(env),
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
        width=width,
    )


def is_live(console: Console) -> bool:
    """Whether this console should show the live display (a real, capable terminal)."""
    return console.is_terminal and not console.is_dumb_terminal
