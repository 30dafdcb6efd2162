"""``python -m orchestrator`` and the ``orch`` console script.

``main`` imports the command line inside a guard: a Ctrl-C while Python is still
loading orch (the first tenth of a second) exits 130 with one line, never a
KeyboardInterrupt traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Run the ``orch`` command (see ``orchestrator.cli.main``)."""
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
