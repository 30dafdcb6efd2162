"""What CI systems read from a run: a JUnit XML report, GitHub annotations, a step summary.

All three are built from the RunView (the run's events, folded) and the
Workflow (each phase's place in the file), after the run ended:

- ``junit_xml``: one ``<testsuite>`` for the run, one ``<testcase>`` per phase
  (handlers included): a failed phase is a ``<failure>`` with its error, a
  cancelled one an ``<error>``, a skipped one ``<skipped>`` with the reason;
  times in seconds.
- ``github_annotations``: ``::error file=,line=,col=::`` workflow commands, one
  per failed phase, at the phase in the workflow file.
- ``step_summary``: Markdown for ``$GITHUB_STEP_SUMMARY``: the summary table and
  a Mermaid Gantt chart of the phases.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from ..errors import Location
from ..events import format_cost
from ..spec.model import Phase, Workflow
from .problems import github_command
from .progress import PhaseView, RunView, format_seconds, format_tokens

__all__ = ["github_annotations", "junit_xml", "step_summary"]

_FAILED = ("failed", "cancelled")


def _all_phases(workflow: Workflow) -> dict[str, Phase]:
    phases = {p.id: p for p in workflow.phases}
    for group in (workflow.on_success, workflow.on_failure, workflow.finally_):
        for phase in group:
            phases.setdefault(phase.id, phase)
    return phases


def _seconds(view: PhaseView) -> float:
    return round(max(0.0, view.duration or 0.0), 3)


def junit_xml(view: RunView, workflow: Workflow) -> str:
    """The run as JUnit XML: a testsuite named after the workflow, a testcase per phase."""
    phases = [view.phases[pid] for pid in view.order]
    counts = {
        "tests": len(phases),
        "failures": sum(p.state == "failed" for p in phases),
        "errors": sum(p.state == "cancelled" for p in phases),
        "skipped": sum(p.state in ("skipped", "pending") for p in phases),
    }
    suites = ET.Element("testsuites", name="orch")
    suite = ET.SubElement(suites, "testsuite", name=workflow.name)
    for element in (suites, suite):
        for key, count in counts.items():
            element.set(key, str(count))
        element.set("time", f"{view.duration or 0.0:.3f}")
    if view.started is not None:
        from datetime import datetime, timezone

        stamp = datetime.fromtimestamp(view.started, tz=timezone.utc)
        suite.set("timestamp", stamp.strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    for name, text in (("run_id", view.run_id), ("status", view.status), ("file", workflow.path)):
        ET.SubElement(props, "property", name=name, value=str(text or ""))
    defined = _all_phases(workflow)
    for phase in phases:
        case = ET.SubElement(
            suite, "testcase", name=phase.id, classname=workflow.name, time=f"{_seconds(phase)}"
        )
        loc = defined[phase.id].location if phase.id in defined else None
        if loc is not None:
            case.set("file", loc.path)
            case.set("line", str(loc.line))
        error = phase.error or phase.state
        if phase.state == "failed":
            ET.SubElement(case, "failure", message=error, type="PhaseFailed").text = _detail(phase)
        elif phase.state == "cancelled":
            ET.SubElement(case, "error", message=error, type="PhaseCancelled").text = _detail(phase)
        elif phase.state in ("skipped", "pending"):
            reason = phase.note or ("not started" if phase.state == "pending" else "skipped")
            ET.SubElement(case, "skipped", message=reason)
        if phase.streamed:
            ET.SubElement(case, "system-out").text = phase.streamed
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def _detail(phase: PhaseView) -> str:
    n = phase.attempts
    lines = [f"phase '{phase.id}' {phase.state} after {n} attempt{'' if n == 1 else 's'}"]
    if phase.agent:
        lines.append(f"agent: {phase.agent}")
    if phase.error:
        lines.append(f"error: {phase.error}")
    return "\n".join(lines)


def github_annotations(
    view: RunView, workflow: Workflow, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One ``::error`` workflow command per failed phase, at the phase in the workflow file.

    Paths under ``$GITHUB_WORKSPACE`` are made relative to it (GitHub wants
    repository paths). Cancelled phases are not annotated (the failure that
    caused the cancel is), nor is a run that failed without a failed phase.
    """
    env = os.environ if environ is None else environ
    defined = _all_phases(workflow)
    out = []
    for pid in view.order:
        phase = view.phases[pid]
        if phase.state != "failed":
            continue
        spec = defined.get(pid)
        loc = spec.location if spec is not None and spec.location else Location(workflow.path)
        loc = Location(_repo_path(loc.path, env), loc.line, loc.col)
        attempts = f" after {phase.attempts} attempts" if phase.attempts > 1 else ""
        message = f"phase '{pid}' failed{attempts}: {phase.error or 'failed'}"
        out.append(github_command("error", loc, message, title=f"orch: {workflow.name}"))
    return out


def _repo_path(path: str, env: Mapping[str, str]) -> str:
    workspace = env.get("GITHUB_WORKSPACE")
    if not workspace:
        return path
    try:
        return str(Path(path).resolve().relative_to(Path(workspace).resolve()))
    except ValueError:
        return path


_ICONS = {
    "completed": "✅",
    "failed": "❌",
    "cancelled": "⛔",
    "skipped": "⏭️",
    "pending": "⏸️",
    "running": "⏳",
}


def step_summary(view: RunView, workflow: Workflow) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: a heading, the phase table, a Mermaid Gantt."""
    status = view.status or "unknown"
    took = format_seconds(view.duration) if view.duration is not None else "-"
    lines = [
        f"### {_ICONS.get(status, '')} orch: {_md(workflow.name)} {status} in {took}".replace(
            "  ", " "
        ),
        "",
        f"Run `{view.run_id or '-'}` of `{_md(workflow.path)}`.",
    ]
    if view.error:
        lines += ["", f"**Error:** {_md(view.error)}"]
    lines += ["", "| phase | status | duration | attempts | note |", "|---|---|---|---|---|"]
    for pid in view.order:
        p = view.phases[pid]
        duration = format_seconds(p.duration) if p.duration is not None else "-"
        note = p.error if p.state in _FAILED else p.note
        lines.append(
            f"| {_md(pid)} | {_ICONS.get(p.state, '')} {p.state} | {duration} "
            f"| {p.attempts or '-'} | {_md(note or '')} |"
        )
    tokens = view.token_totals()
    if tokens.get("total"):
        lines += ["", f"Tokens: {format_tokens(tokens)}."]
    cost = view.cost_total()
    if cost is not None:
        lines += ["", f"Cost: {format_cost(cost)}."]
    gantt = _gantt(view)
    if gantt:
        lines += ["", "```mermaid", *gantt, "```"]
    return "\n".join(lines) + "\n"


def _gantt(view: RunView) -> list[str]:
    """A Mermaid Gantt chart, one bar per phase that ran (times in ms since the epoch)."""
    bars = []
    for pid in view.order:
        p = view.phases[pid]
        if p.started is None:
            continue
        end = p.ended if p.ended is not None else p.started
        start_ms, end_ms = int(p.started * 1000), max(int(end * 1000), int(p.started * 1000) + 1)
        tag = {"failed": "crit, ", "cancelled": "crit, ", "completed": "done, "}.get(p.state, "")
        name = pid.replace(":", "_").replace("#", "_").replace(";", "_")
        bars.append(f"    {name} :{tag}{start_ms}, {end_ms}")
    if not bars:
        return []
    return [
        "gantt",
        "    dateFormat x",
        "    axisFormat %M:%S",
        f"    title {view.workflow or 'run'}".replace(":", " "),
        "    section phases",
        *bars,
    ]


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped, kept short."""
    one = " ".join(str(text).split()).replace("|", "\\|")
    return one if len(one) <= 200 else one[:199] + "…"
