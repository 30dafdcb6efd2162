"""A Plan drawn for people and machines: ascii (rich, by level), mermaid, dot and json.

Every format shows the same things: each phase (its agent, ``foreach``,
``when:`` and ``compensate``), its explicit and implied (``phases.X``)
dependencies, the critical path, and the handler phases (``on_success``,
``on_failure``, ``finally``) in the order they run. Ids and names are quoted or
escaped for each format, so any workflow name renders safely.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from ..jsontext import dumps
from ..plan import Plan
from ..spec.model import Phase
from .progress import format_seconds

__all__ = [
    "FORMATS",
    "graph_ascii",
    "graph_dot",
    "graph_json",
    "graph_mermaid",
    "agent_text",
    "approval_text",
    "phase_details",
    "phase_facts",
    "repeat_text",
    "write_graph",
]

#: The formats ``orch graph --format`` accepts.
FORMATS: tuple[str, ...] = ("ascii", "mermaid", "dot", "json")

_EXPLICIT = "──▶"
_IMPLIED = "┄┄▶"
_CRITICAL_STYLE = "bold red"


def write_graph(plan: Plan, fmt: str, file: TextIO, *, color: bool | None = None) -> None:
    """Write the plan to ``file`` in ``fmt`` (one of FORMATS).

    ``color`` None means: colour only on a terminal and when NO_COLOR is unset.
    Raises ValueError for an unknown format.
    """
    if fmt == "ascii":
        no_color = bool(os.environ.get("NO_COLOR")) if color is None else not color
        console = Console(
            file=file,
            force_terminal=color,
            no_color=no_color,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=True,
        )
        console.print(graph_ascii(plan))
    elif fmt == "mermaid":
        file.write(graph_mermaid(plan))
    elif fmt == "dot":
        file.write(graph_dot(plan))
    elif fmt == "json":
        file.write(dumps(graph_json(plan), indent=2, what="the graph") + "\n")
    else:
        raise ValueError(f"unknown graph format '{fmt}'; use one of {', '.join(FORMATS)}")


# -- json ---------------------------------------------------------------------------------


def graph_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON-ready data, phases in YAML order."""
    return {
        "name": plan.workflow.name,
        "phases": [
            {
                "id": pid,
                **phase_facts(phase),
                "depends_on": [d for d in plan.predecessors[pid] if not plan.is_implied(pid, d)],
                "implied": list(plan.implied.get(pid, ())),
                "level": plan.level_of[pid],
                "priority": phase.priority,
                "estimated_duration": phase.estimated_duration,
            }
            for pid, phase in plan.phases.items()
        ],
        "order": list(plan.order),
        "levels": [list(level) for level in plan.levels],
        "critical_path": list(plan.critical_path),
        "critical_length": plan.critical_length,
        "handlers": {name: [p.id for p in phases] for name, phases in _handlers(plan)},
    }


def _handlers(plan: Plan) -> list[tuple[str, tuple[Phase, ...]]]:
    """The run's handler phases (not part of the DAG), by the key the user wrote."""
    wf = plan.workflow
    return [("on_success", wf.on_success), ("on_failure", wf.on_failure), ("finally", wf.finally_)]


# -- ascii --------------------------------------------------------------------------------


def graph_ascii(plan: Plan) -> RenderableType:
    """A rich renderable: phases by level, incoming edges under each phase, the critical path.

    Readable without colour: critical phases carry a ``*`` and implied edges a
    dotted arrow, both explained in a legend.
    """
    wf = plan.workflow
    count = len(plan.phases)
    title = Text(wf.name, style="bold")
    title.append(
        f"  ({count} phase{'s' if count != 1 else ''}, {len(plan.levels)} "
        f"level{'s' if len(plan.levels) != 1 else ''})",
        style="dim",
    )
    tree = Tree(title, guide_style="dim")
    critical = set(plan.critical_path)
    on_path = set(zip(plan.critical_path, plan.critical_path[1:], strict=False))
    for number, level in enumerate(plan.levels):
        branch = tree.add(Text(f"level {number}", style="cyan"))
        for pid in level:
            node = branch.add(_phase_line(plan, plan.phases[pid], pid in critical))
            for dep in plan.predecessors[pid]:
                implied = plan.is_implied(pid, dep)
                edge = Text(f"{dep} {_IMPLIED if implied else _EXPLICIT} {pid}")
                if (dep, pid) in on_path:
                    edge.stylize(_CRITICAL_STYLE)
                elif implied:
                    edge.stylize("dim")
                if implied:
                    edge.append("  (implied)", style="dim italic")
                node.add(edge)
    parts: list[RenderableType] = [tree]
    if plan.critical_path:
        line = Text("critical path ", style="bold")
        line.append(f"({format_seconds(plan.critical_length)}): ", style="bold")
        path = plan.critical_path
        chain = path[0] + "".join(
            f" {_IMPLIED if plan.is_implied(b, a) else _EXPLICIT} {b}"
            for a, b in zip(path, path[1:], strict=False)
        )
        line.append(chain, style=_CRITICAL_STYLE)
        parts.append(line)
    for name, phases in _handlers(plan):
        if phases:
            line = Text(f"{name}: ", style="bold")
            line.append(" -> ".join(f"{p.id} ({', '.join(phase_details(p))})" for p in phases))
            parts.append(line)
    parts.append(
        Text(
            f"legend: {_EXPLICIT} depends_on   {_IMPLIED} implied by a phases.X reference"
            "   * on the critical path",
            style="dim",
        )
    )
    return Group(*parts)


def phase_facts(phase: Phase) -> dict[str, Any]:
    """What every view of the plan says about a phase, as data (the JSON graph's fields).

    ``agent`` is the agent's name, or null when it is chosen at run time (``capability``;
    ``one_of`` and ``select``) or the phase is a ``handoff``; ``approval`` and ``repeat``
    are their settings or null. ``phase_details`` words these same facts for people
    (the ascii, mermaid and dot graphs, ``orch report``), ``orch run --dry-run`` too.
    """
    approval, repeat, handoff = phase.approval, phase.repeat, phase.handoff
    return {
        "agent": phase.agent or None,
        "capability": phase.capability,
        "one_of": list(phase.choice.one_of) if phase.choice is not None else None,
        "select": phase.choice.select if phase.choice is not None else None,
        "handoff": (
            {"agents": list(handoff.agents), "start": handoff.start, "max_turns": handoff.max_turns}
            if handoff is not None
            else None
        ),
        "foreach": phase.foreach is not None,
        "when": phase.when,
        "approval": (
            {
                "message": approval.message,
                "timeout": approval.timeout,
                "on_timeout": approval.on_timeout,
            }
            if approval is not None
            else None
        ),
        "repeat": (
            {"max": repeat.max, "until": repeat.until, "on_max": repeat.on_max}
            if repeat is not None
            else None
        ),
        "compensate": phase.compensate.agent if phase.compensate is not None else None,
    }


def agent_text(phase: Phase) -> str:
    """The phase's agent for people: its name, ``capability X``, ``one of a, b`` (chosen at
    run time) or ``handoff: a, b``; ``-`` when it has none."""
    facts = phase_facts(phase)
    if facts["handoff"] is not None:
        return "handoff: " + ", ".join(facts["handoff"]["agents"])
    if facts["agent"] is not None:
        return str(facts["agent"])
    if facts["capability"] is not None:
        return f"capability {facts['capability']}"
    if facts["one_of"] is not None:
        return "one of " + ", ".join(facts["one_of"])
    return "-"


def approval_text(phase: Phase) -> str | None:
    """``approval (timeout 1h00m, then reject)``; None without an approval."""
    approval = phase_facts(phase)["approval"]
    if approval is None:
        return None
    limit = approval["timeout"]
    if limit is None:
        return "approval"
    return f"approval (timeout {format_seconds(limit)}, then {approval['on_timeout']})"


def repeat_text(phase: Phase) -> str | None:
    """``repeat until EXPR (max 3)`` (``, on_max fail`` when it fails); None without a repeat."""
    repeat = phase_facts(phase)["repeat"]
    if repeat is None:
        return None
    until = f" until {_one_line(repeat['until'])}" if repeat["until"] else ""
    on_max = ", on_max fail" if repeat["on_max"] == "fail" else ""
    return f"repeat{until} (max {repeat['max']}{on_max})"


def phase_details(phase: Phase) -> list[str]:
    """What every format shows beside a phase id: agent, foreach, when, approval, repeat,
    compensate (the words of ``phase_facts``)."""
    facts = phase_facts(phase)
    details = [agent_text(phase)]
    if phase.foreach is not None:
        each = phase.foreach if isinstance(phase.foreach, str) else f"{len(phase.foreach)} items"
        details.append(f"foreach {_one_line(str(each))}")
    if facts["when"] is not None:
        details.append(f"when: {_one_line(facts['when'])}")
    details += [text for text in (approval_text(phase), repeat_text(phase)) if text]
    if facts["compensate"] is not None:
        details.append(f"compensate: {facts['compensate']}")
    return details


def _phase_line(plan: Plan, phase: Phase, critical: bool) -> Text:
    text = Text()
    text.append("* " if critical else "  ", style=_CRITICAL_STYLE)
    text.append(phase.id, style=_CRITICAL_STYLE if critical else "bold")
    details = phase_details(phase)
    if phase.priority != "medium":
        details.append(f"priority {phase.priority}")
    if phase.estimated_duration is not None:
        details.append(f"~{format_seconds(phase.estimated_duration)}")
    text.append("  " + ", ".join(details), style="dim")
    return text


# -- mermaid ------------------------------------------------------------------------------


def graph_mermaid(plan: Plan) -> str:
    """A ``flowchart TD`` for GitHub markdown: implied edges ``-.->``, critical path in a class.

    Node ids are generated (``p0``, ``p1``...) so no phase id can collide with
    mermaid keywords such as ``end``; the phase id is the quoted label.
    """
    node = {pid: f"p{i}" for i, pid in enumerate(plan.phases)}
    lines = ["flowchart TD", f"    %% {_one_line(plan.workflow.name)}"]
    for pid, phase in plan.phases.items():
        lines.append(f'    {node[pid]}["{_mermaid_label(phase)}"]')
    critical_edges: list[int] = []
    on_path = set(zip(plan.critical_path, plan.critical_path[1:], strict=False))
    for number, (dep, pid) in enumerate(_edges(plan)):
        arrow = "-.->" if plan.is_implied(pid, dep) else "-->"
        lines.append(f"    {node[dep]} {arrow} {node[pid]}")
        if (dep, pid) in on_path:
            critical_edges.append(number)
    if plan.critical_path:
        lines.append("    classDef critical stroke:#d00,stroke-width:3px,font-weight:bold")
        lines.append("    class " + ",".join(node[p] for p in plan.critical_path) + " critical")
    if critical_edges:
        indexes = ",".join(str(n) for n in critical_edges)
        lines.append(f"    linkStyle {indexes} stroke:#d00,stroke-width:3px")
    for kind, phases in _handlers(plan):
        if not phases:
            continue
        ids = [f"{kind}_{i}" for i in range(len(phases))]
        lines.append(f'    subgraph {kind}["{kind}: {_HANDLER_WHEN[kind]}"]')
        lines += [f'        {n}["{_mermaid_label(p)}"]' for n, p in zip(ids, phases, strict=True)]
        lines += [f"        {a} --> {b}" for a, b in zip(ids, ids[1:], strict=False)]
        lines.append("    end")
    return "\n".join(lines) + "\n"


#: When each kind of handler phase runs (after the workflow's own phases).
_HANDLER_WHEN = {
    "on_success": "after the run completed",
    "on_failure": "after the run failed",
    "finally": "after everything, always",
}


def _mermaid_label(phase: Phase) -> str:
    return "<br/>".join(_mermaid_text(part) for part in (phase.id, *phase_details(phase)))


def _mermaid_text(value: str) -> str:
    # Inside a quoted label mermaid reads entity codes; these characters would end or break it.
    table = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "\n": " ", "\r": " "}
    return "".join(table.get(ch, ch) for ch in value)


def _one_line(value: str) -> str:
    return " ".join(value.split())


# -- dot ----------------------------------------------------------------------------------


def graph_dot(plan: Plan) -> str:
    """A graphviz ``digraph``: implied edges dashed, the critical path red and thick."""
    critical = set(plan.critical_path)
    on_path = set(zip(plan.critical_path, plan.critical_path[1:], strict=False))
    lines = [
        f"digraph {_dot_quote(plan.workflow.name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
    ]
    for pid, phase in plan.phases.items():
        label = "\n".join((pid, *phase_details(phase)))
        attrs = [f"label={_dot_quote(label)}"]
        if pid in critical:
            attrs += ["color=red", "penwidth=2"]
        lines.append(f"    {_dot_quote(pid)} [{', '.join(attrs)}];")
    for dep, pid in _edges(plan):
        attrs = []
        if plan.is_implied(pid, dep):
            attrs.append("style=dashed")
        if (dep, pid) in on_path:
            attrs += ["color=red", "penwidth=2"]
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {_dot_quote(dep)} -> {_dot_quote(pid)}{suffix};")
    for kind, phases in _handlers(plan):
        if not phases:
            continue
        lines.append(f"    subgraph {_dot_quote('cluster_' + kind)} {{")
        lines.append(f"        label={_dot_quote(f'{kind}: {_HANDLER_WHEN[kind]}')}; style=dashed;")
        for p in phases:
            label = "\n".join((p.id, *phase_details(p)))
            lines.append(f"        {_dot_quote(kind + ':' + p.id)} [label={_dot_quote(label)}];")
        for a, b in zip(phases, phases[1:], strict=False):
            lines.append(
                f"        {_dot_quote(kind + ':' + a.id)} -> {_dot_quote(kind + ':' + b.id)};"
            )
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{escaped}"'


def _edges(plan: Plan) -> Iterator[tuple[str, str]]:
    """(dependency, phase) pairs, phases in YAML order, explicit before implied."""
    for pid in plan.phases:
        for dep in plan.predecessors[pid]:
            yield dep, pid
