"""What every command shares on the command line: its usage line, whole-number options,
--version, the shell completion of workflow names, --state-dir (``StateDirOption``).

``OrchCommand`` writes arguments in usage lines as ``FILE`` or ``FILE...`` (typer
writes ``{FILE}``); ``whole_number`` and ``seconds`` say "'abc' is not a whole
number" where click says "is not a valid int range".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

__all__ = [
    "OrchCommand",
    "StateDirOption",
    "complete_workflow_name",
    "print_version",
    "seconds",
    "state_folder",
    "use_orch_commands",
    "whole_number",
]


def complete_workflow_name(incomplete: str) -> list[str]:
    """Shell completion of a FILE|NAME argument (`orch run`, `graph`, `validate`,
    `resume --workflow`): the workflow names in the workflows path that start with what
    was typed. Nothing for a path (the shell completes files then)."""
    if os.sep in incomplete or "/" in incomplete:
        return []
    from ..spec.locate import workflow_names

    return [n for n in workflow_names() if n.startswith(incomplete)]


class OrchCommand(TyperCommand):
    """A typer command whose usage line shows arguments as ``FILE``, ``FILE...``, ``[NAME]``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS]`` then each argument by its metavar (or upper-cased name)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(argument_usage(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


def use_orch_commands(app: typer.Typer) -> None:
    """Make every command registered on ``app`` so far an OrchCommand (the usage line)."""
    for info in app.registered_commands:
        if info.cls is None or info.cls is TyperCommand:
            info.cls = OrchCommand


def argument_usage(param: Any) -> str:
    """``FILE`` (required), ``[NAME]`` (optional), ``FILE...`` (several)."""
    name = str(param.metavar or (param.name or "arg").upper()).strip("{}[]")
    if param.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if param.required else f"[{name}]"


def state_folder(value: Any) -> Path:
    """Parse --state-dir: an empty one (an unset ``$DIR`` in a script) raises
    typer.BadParameter (exit 2); ``Path('')`` would be the current folder."""
    if isinstance(value, Path):
        return value
    if not str(value):
        raise typer.BadParameter(
            "an empty path names no state folder (an unset variable in a script?); "
            "give . for this folder, or leave the option out for $ORCH_STATE_DIR, else .orch"
        )
    return Path(value)


#: --state-dir of every command that reads or records runs: one definition, one help text.
#: $ORCH_STATE_DIR is read where the folder is resolved (``state.sqlite.resolve_state_dir``,
#: the Python API's too), not by typer: the option given wins, an empty one is refused.
StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        parser=state_folder,
        metavar="DIR",
        help="Where runs are recorded (default: $ORCH_STATE_DIR, else .orch).",
    ),
]


def whole_number(value: Any) -> int:
    """Parse a count option at least 1; raises typer.BadParameter (exit 2) with a plain message.

    ``'abc' is not a whole number``, ``'0' is less than 1``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise typer.BadParameter(f"'{value}' is not a whole number") from None
    if number < 1:
        raise typer.BadParameter(f"'{value}' is less than 1")
    return number


def seconds(value: Any) -> float:
    """Parse a number of seconds, 0 or more; raises typer.BadParameter (exit 2) otherwise.

    ``'abc' is not a number of seconds``, ``'-1' is negative``.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise typer.BadParameter(f"'{value}' is not a number of seconds") from None
    if not number >= 0:  # also NaN
        raise typer.BadParameter(f"'{value}' is not a number of seconds 0 or more")
    return number


def print_version(value: bool) -> None:
    """The ``--version`` callback: print ``orch X.Y.Z`` (``extras.installed_version``), exit 0.

    A plain ``orch --version`` is answered before typer loads (``orchestrator.__main__``)."""
    if not value:
        return
    from ..extras import installed_version

    typer.echo(f"orch {installed_version()}")
    raise typer.Exit(0)
