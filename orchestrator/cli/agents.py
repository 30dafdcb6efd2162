"""`orch agents [NAME] [--json]`: the installed agent types, where each comes from, its config.

A plugin that fails to load is listed with its error; the command still exits 0.
An unknown NAME exits 2 with a suggestion.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``orch agents`` to ``app``."""
    app.command("agents")(agents_command)


def agents_command(
    name: Annotated[
        str | None,
        typer.Argument(help="Show one agent type's config in full.", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list (or one object with NAME).")
    ] = False,
) -> None:
    """List the installed agent types: name, distribution and version, description, config."""

    from ..agents import AgentRegistry
    from ..errors import AgentLoadError, AgentNotFound
    from ..render.agents import agent_record, write_agent_detail, write_agents, write_agents_json
    from ..render.console import make_console

    registry = AgentRegistry.from_entry_points()
    if name is not None:
        try:
            registry.resolve(name)
        except AgentNotFound as exc:
            hint = f"; {exc.hint}" if exc.hint else ""
            typer.echo(f"error: {exc.message}{hint}", err=True)
            raise typer.Exit(2) from None
        except AgentLoadError:  # shown by info() below, with the command's exit 0
            pass
        info = registry.info(name)
        if as_json:
            from ..jsontext import dumps

            sys.stdout.write(dumps(agent_record(info), indent=2, what="the agent") + "\n")
        else:
            write_agent_detail(info, make_console(sys.stdout))
        return
    infos = [registry.info(n) for n in registry.names()]
    if as_json:
        write_agents_json(infos, sys.stdout)
    else:
        write_agents(infos, make_console(sys.stdout))
