"""``python -m orchestrator`` and the ``orch`` console script.

``orch --help`` is answered from ``cli/help.txt``, the top-level help that typer
renders, written by ``make reference`` (``docs/make_reference.py``): printing it
needs neither typer nor the rest of orch, which keeps ``orch --help`` at a few
times the start-up of Python itself. The text is used only when it is certain to
be what typer would print: its first line holds a checksum of the command-line
modules it was rendered from, and the terminal is at least 80 columns wide (typer
wraps at 78 then); otherwise, and for everything else, typer answers.

``orch validate`` with plain arguments is answered without typer too
(``cli/fast.py``): a pre-commit hook runs it on every commit. So is ``orch --version``
(``extras.installed_version``: a module hatchling writes, not importlib.metadata).

``main`` imports the command line inside a guard: a Ctrl-C while Python is still
loading orch (the first tenth of a second) exits 130 with one line, never a
KeyboardInterrupt traceback.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

HELP_FILE = os.path.join(os.path.dirname(__file__), "cli", "help.txt")


def cli_checksum() -> str:
    """A checksum of the modules the top-level help is rendered from (cli/*.py)."""
    import zlib

    folder = os.path.join(os.path.dirname(__file__), "cli")
    total = 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as fh:
                total = zlib.crc32(name.encode() + fh.read(), total)
    return f"{total:08x}"


def _columns() -> int:
    """The terminal width as shutil.get_terminal_size reports it (what typer wraps at)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return columns


def fast_help() -> str | None:
    """The top-level help text when it is certainly current, else None."""
    if os.environ.get("ORCH_NO_FAST_HELP") or _columns() < 80:
        return None
    try:
        with open(HELP_FILE, encoding="utf-8") as fh:
            stamp, _, text = fh.read().partition("\n")
    except OSError:
        return None
    return text if stamp == f"checksum {cli_checksum()}" else None


def main() -> None:
    """Run the ``orch`` command (see ``orchestrator.cli.main``)."""
    args = sys.argv[1:]
    if args in (["--help"], ["-h"]):
        text = fast_help()
        if text is not None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
    if args == ["--version"]:
        from .extras import installed_version

        sys.stdout.write(f"orch {installed_version()}\n")
        sys.stdout.flush()
        return
    try:
        if args[:1] == ["validate"]:
            from .cli.fast import validate_fast

            code = validate_fast(args[1:])
            if code is not None:
                sys.stdout.flush()
                sys.exit(code)
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
