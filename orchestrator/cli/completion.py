"""`orch completion SHELL`: print the shell completion script (bash, zsh, fish, powershell).

The same script `orch --show-completion SHELL` prints (typer's), for a start-up file
or a package: ``eval "$(orch completion bash)"`` in ~/.bashrc,
``orch completion fish > ~/.config/fish/completions/orch.fish``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

__all__ = ["SHELLS", "register"]

#: The shells typer writes a completion script for (pwsh: PowerShell 7's name).
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _complete_shell(incomplete: str) -> list[str]:
    return [name for name in SHELLS if name.startswith(incomplete)]


def completion_command(
    shell: Annotated[
        str,
        typer.Argument(
            help="bash, zsh, fish or powershell (pwsh).",
            show_default=False,
            metavar="SHELL",
            autocompletion=_complete_shell,
        ),
    ],
) -> None:
    """Print the shell completion script for SHELL (commands, options, workflow names)."""
    name = shell.strip().lower()
    if name not in SHELLS:
        sys.stderr.write(
            f"error: no completion for the shell '{shell}'\n"
            f"  hint: give one of {', '.join(SHELLS)}\n"
        )
        raise typer.Exit(2)
    # typer's own scripts (what --show-completion prints); typer has no public name for them
    from typer._completion_shared import get_completion_script

    script = get_completion_script(prog_name="orch", complete_var="_ORCH_COMPLETE", shell=name)
    sys.stdout.write(script + "\n")


def register(app: typer.Typer) -> None:
    """Add `orch completion` to ``app``."""
    app.command("completion")(completion_command)
