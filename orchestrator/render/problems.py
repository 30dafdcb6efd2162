"""Problems as text (``FILE:LINE:COL: message``), JSON for tools, or GitHub annotations.

Colour only on a terminal (through rich) and never with NO_COLOR; everything
else is plain text, one problem per line plus an optional ``  hint:`` line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from ..errors import Location, Problem
from ..jsontext import dumps

__all__ = ["FORMATS", "format_problems", "github_command", "write_problems"]

#: The output formats of ``orch validate --format``.
FORMATS = ("text", "json", "github")


def format_problems(problems: Sequence[Problem], fmt: str = "text") -> str:
    """The problems in one of FORMATS, without a trailing newline.

    Raises ValueError for an unknown format.
    """
    if fmt == "text":
        return "\n".join(str(p) for p in problems)
    if fmt == "json":
        return dumps([p.as_dict() for p in problems], indent=2, what="the problems")
    if fmt == "github":
        return "\n".join(_github(p) for p in problems)
    raise ValueError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")


def write_problems(problems: Sequence[Problem], fmt: str, out: TextIO) -> None:
    """Write the problems to ``out``; text on a terminal is coloured (NO_COLOR honoured)."""
    if not problems:
        return
    if fmt == "text" and out.isatty():
        from .console import make_console

        console = make_console(out)
        if console.no_color:
            out.write(format_problems(problems, fmt) + "\n")
            return
        for p in problems:
            colour = "red" if p.severity == "error" else "yellow"
            console.print(f"{p.location}: ", style="bold", end="")
            if p.severity == "warning":
                console.print("warning: ", style=colour, end="")
            console.print(p.message, style=colour if p.severity == "error" else None)
            if p.hint:
                console.print(f"  hint: {p.hint}", style="dim")
        return
    out.write(format_problems(problems, fmt) + "\n")


def _github(p: Problem) -> str:
    level = "warning" if p.severity == "warning" else "error"
    message = p.message + (f"\nhint: {p.hint}" if p.hint else "")
    return github_command(level, p.location, message)


def github_command(level: str, loc: Location, message: str, *, title: str | None = None) -> str:
    """A GitHub Actions workflow command (``::error file=F,line=L,col=C::message``).

    Escaped as GitHub's docs on workflow commands ask: ``%``, CR and LF in the
    message; also ``:`` and ``,`` in the properties.
    """
    pairs: list[tuple[str, object]] = [("file", loc.path), ("line", loc.line), ("col", loc.col)]
    if title:
        pairs.append(("title", title))
    props = ",".join(f"{k}={_escape_property(str(v))}" for k, v in pairs)
    return f"::{level} {props}::{_escape_data(message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
