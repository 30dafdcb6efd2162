"""``orch agents``: the installed agent types as a table, one type's config as a table, or JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ..agents.registry import AgentInfo
from ..jsontext import dumps
from ..spec.schema import INTERNAL

__all__ = ["agent_record", "write_agent_detail", "write_agents", "write_agents_json"]


def agent_record(info: AgentInfo) -> dict[str, Any]:
    """The JSON shape of one agent type (``orch agents --json``)."""
    return {
        "name": info.name,
        "distribution": info.dist,
        "version": info.version,
        "source": info.source,
        "description": info.description,
        "config_schema": dict(info.config_schema) if info.config_schema is not None else None,
        "error": info.error,
    }


def write_agents_json(infos: Sequence[AgentInfo], out: TextIO) -> None:
    """A JSON list of every agent type, sorted by name."""
    out.write(dumps([agent_record(i) for i in infos], indent=2, what="the agents") + "\n")


def write_agents(infos: Sequence[AgentInfo], console: Console) -> None:
    """A table: name, where it comes from, what it does, and its config keys (* required).

    A type that failed to load shows ``error`` and the reason in place of its description.
    """
    table = Table(title="Agent types", title_justify="left", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("description")
    table.add_column("config (* required)")
    for info in infos:
        origin = f"{info.dist} {info.version}" if info.dist else info.source
        if info.error:
            table.add_row(info.name, origin, f"ERROR: {info.error}", "", style="red")
            continue
        table.add_row(info.name, origin, info.description, _keys(info.config_schema))
    console.print(table)
    broken = sum(1 for i in infos if i.error)
    if broken:
        console.print(
            f"{broken} agent type{'s' if broken != 1 else ''} failed to load; "
            "workflows that use them will not validate"
        )
    console.print("Run 'orch agents NAME' to see one type's config.")


def write_agent_detail(info: AgentInfo, console: Console) -> None:
    """One type: provenance, description, and every config key with its type and description."""
    origin = f"{info.dist} {info.version}" if info.dist else "registered in code"
    console.print(f"{info.name}  ({origin}; {info.source})")
    if info.error:
        console.print(f"ERROR: {info.error}")
        return
    if info.description:
        console.print(info.description)
    schema = info.config_schema or {}
    props: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    table = Table(title="with:", title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("required")
    table.add_column("description")
    for key, prop in _public(props).items():
        table.add_row(
            key, _type(prop), "yes" if key in required else "", prop.get("description", "")
        )
    console.print(table)


def _keys(schema: Mapping[str, Any] | None) -> str:
    if not schema:
        return ""
    required = set(schema.get("required") or ())
    props = _public(schema.get("properties") or {})
    return ", ".join(f"{k}*" if k in required else k for k in props)


def _public(props: Mapping[str, Any]) -> dict[str, Any]:
    """Config keys for users: those marked ``"x-internal": true`` (test hooks) are left out."""
    return {k: p for k, p in props.items() if not (isinstance(p, Mapping) and p.get(INTERNAL))}


def _type(prop: Mapping[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(str(v) for v in prop["enum"])
    if "type" in prop:
        kind = prop["type"]
        return " | ".join(kind) if isinstance(kind, list) else str(kind)
    options = prop.get("oneOf") or prop.get("anyOf")
    if options:
        return " | ".join(_type(o) for o in options)
    return "any"
