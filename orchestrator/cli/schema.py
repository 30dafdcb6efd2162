"""`orch schema [--agents]`: the workflow JSON Schema, for editors and other tools.

Without ``--agents`` it prints the bundled file as it is (fast, no plugin loaded);
with ``--agents`` each installed agent type's ``with:`` schema is added.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

__all__ = ["register"]


def schema_command(
    agents: Annotated[
        bool,
        typer.Option(
            "--agents",
            help="Add each installed agent type's `with:` schema (editors then complete"
            " and check keys inside `with:`).",
        ),
    ] = False,
) -> None:
    """Print the workflow JSON Schema (draft 2020-12); save it for an editor's $schema."""
    if not agents:
        from ..spec.schema import workflow_schema_text

        sys.stdout.write(workflow_schema_text())
        return
    import json

    from ..agents.registry import AgentRegistry
    from ..spec.schema import editor_schema

    schema = editor_schema(AgentRegistry.from_entry_points())
    sys.stdout.write(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")


def register(app: typer.Typer) -> None:
    """Add `orch schema` to ``app``."""
    app.command("schema")(schema_command)
