"""``orch report``: one self-contained HTML page of a recorded run.

No script, no stylesheet, no font and no image is fetched: the page is plain
HTML with inline CSS and inline SVG, so it opens from a CI artifact offline.
Sections: the summary; the graph (levels, dependencies, ``when:``/``foreach``,
the handlers); a Gantt timeline with a bar per attempt, per wait between
attempts and per compensation (each ``<rect>`` carries its recorded times in
``data-start``/``data-end``); errors with their log tails; tokens and cost.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Sequence

from ..events import format_cost
from ..plan import Plan
from ..state.base import PhaseRecord
from ..state.timeline import Bar, RunReport
from ..state.views import cost_total, phase_cost, phase_tokens, token_total
from .graph import phase_details
from .progress import format_seconds, format_tokens, metadata_notes

__all__ = ["report_html"]

_COLOURS = {
    "completed": "#2e9e4f",
    "cached": "#7cc48f",
    "retried": "#e0a030",
    "failed": "#d03b3b",
    "cancelled": "#a05ab8",
    "unfinished": "#7a8ca0",
    "retry": "#f3e2b8",
    "approval": "#c8d8f0",
    "ok": "#4f7fd0",
    "skipped": "#c9c9c9",
    "pending": "#e4e4e4",
    "running": "#3a9fd0",
    "waiting": "#c8d8f0",
}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #e3e3e3;
text-align:left;vertical-align:top}th{background:#f5f5f5}td.n{text-align:right}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;max-height:320px;white-space:pre-wrap}
.muted{color:#777}svg text{font:12px system-ui,sans-serif}.legend span{margin-right:14px}
.swatch{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _badge(state: str) -> str:
    colour = _COLOURS.get(state, "#888")
    return f'<span class="badge" style="background:{colour}">{_e(state)}</span>'


def report_html(report: RunReport, plan: Plan | None, graph_note: str = "") -> str:
    """The whole page. ``plan`` is the workflow as it is now (None when it cannot be
    loaded; ``graph_note`` says why, or that the file changed since the run)."""
    run = report.run
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>orch run {_e(run.id)}: {_e(run.workflow)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(run.workflow)} {_badge(run.status)}</h1>",
        f'<div class="muted">run {_e(run.id)} of {_e(run.path)}</div>',
        _summary(report),
        "<h2>Graph</h2>",
        _graph_svg(plan, report.phases) if plan is not None else "",
        f'<p class="muted">{_e(graph_note)}</p>' if graph_note else "",
        "<h2>Timeline</h2>",
        _gantt_svg(report),
        "<h2>Phases</h2>",
        _phase_table(report.phases),
        _errors(report),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _summary(report: RunReport) -> str:
    run, phases = report.run, report.phases
    counts: dict[str, int] = {}
    for p in phases:
        counts[p.state.value] = counts.get(p.state.value, 0) + 1
    rows = [
        ("status", _badge(run.status)),
        ("started", _e(_when(run.started))),
        ("ended", _e(_when(run.ended))),
        ("duration", _e(format_seconds(run.duration) if run.duration is not None else "-")),
        ("phases", _e(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "-")),
    ]
    tokens = token_total(phases)
    if any(tokens.values()):
        rows.append(("tokens", _e(format_tokens(tokens))))
    cost = cost_total(phases)
    if cost is not None:
        rows.append(("cost", _e(format_cost(cost))))
    if run.resumes:
        rows.append(("resumed", f"{run.resumes}x"))
    if run.error:
        rows.append(("error", f"<pre>{_e(run.error)}</pre>"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="summary">{body}</table>'


# -- graph ----------------------------------------------------------------------------------

_NODE_W, _NODE_H, _GAP_X, _GAP_Y = 210, 58, 60, 18


def _graph_svg(plan: Plan, phases: Sequence[PhaseRecord]) -> str:
    """Levels left to right, a box per phase coloured by its recorded state; edges as
    lines (implied ones dashed); the handlers in dashed boxes on the right."""
    state = {p.id: p.state.value for p in phases}
    pos: dict[str, tuple[int, int]] = {}
    columns: list[list[tuple[str, object]]] = [
        [(pid, plan.phases[pid]) for pid in level] for level in plan.levels
    ]
    wf = plan.workflow
    handler_cols = [
        (k, ps)
        for k, ps in (
            ("on_success", wf.on_success),
            ("on_failure", wf.on_failure),
            ("finally", wf.finally_),
        )
        if ps
    ]
    height = max([len(c) for c in columns] + [sum(len(ps) for _, ps in handler_cols) + 1, 1])
    width = (len(columns) + (1 if handler_cols else 0)) * (_NODE_W + _GAP_X)
    svg_h = height * (_NODE_H + _GAP_Y) + 30
    out = [
        f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{svg_h}" role="img" aria-label="workflow graph">'
    ]
    for x_index, column in enumerate(columns):
        for y_index, (pid, _) in enumerate(column):
            pos[pid] = (x_index * (_NODE_W + _GAP_X) + 10, y_index * (_NODE_H + _GAP_Y) + 20)
    for pid in plan.order:
        x, y = pos[pid]
        for dep in plan.predecessors[pid]:
            dx, dy = pos[dep]
            dash = ' stroke-dasharray="5,4"' if plan.is_implied(pid, dep) else ""
            out.append(
                f'<line class="edge" data-from="{_e(dep)}" data-to="{_e(pid)}" '
                f'x1="{dx + _NODE_W}" y1="{dy + _NODE_H // 2}" x2="{x}" '
                f'y2="{y + _NODE_H // 2}" stroke="#888"{dash}/>'
            )
    for pid in plan.order:
        out.append(_node(pid, phase_details(plan.phases[pid]), pos[pid], state.get(pid, "pending")))
    if handler_cols:
        x = len(columns) * (_NODE_W + _GAP_X) + 10
        y = 20
        for kind, handler_phases in handler_cols:
            top = y
            out.append(f'<text x="{x}" y="{y - 4}" class="muted">{_e(kind)}</text>')
            for p in handler_phases:
                out.append(
                    _node(p.id, phase_details(p), (x, y), state.get(p.id, "pending"), kind=kind)
                )
                y += _NODE_H + _GAP_Y
            out.append(
                f'<rect x="{x - 5}" y="{top - 2}" width="{_NODE_W + 10}" '
                f'height="{y - top - _GAP_Y + 4}" fill="none" stroke="#999" '
                'stroke-dasharray="4,3"/>'
            )
            y += 12
    out.append("</svg>")
    return "".join(out)


def _node(pid: str, details: list[str], at: tuple[int, int], state: str, kind: str = "") -> str:
    x, y = at
    colour = _COLOURS.get(state, "#888")
    lines = [pid, *details][:3]
    bold = ' font-weight="bold"'
    text = "".join(
        f'<tspan x="{x + 8}" dy="{15 if i == 0 else 14}"{bold if i == 0 else ""}>'
        f"{_e(_clip(line, 32))}</tspan>"
        for i, line in enumerate(lines)
    )
    title = _e(" | ".join([pid, *details]))
    return (
        f'<g class="node" data-phase="{_e(pid)}" data-state="{_e(state)}" '
        f'data-handler="{_e(kind)}"><title>{title}</title>'
        f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="7" fill="#fff" '
        f'stroke="{colour}" stroke-width="2.5"/><text x="{x + 8}" y="{y + 2}">{text}</text></g>'
    )


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- gantt ----------------------------------------------------------------------------------

_LABEL_W, _CHART_W, _ROW_H = 190, 900, 24


def _gantt_svg(report: RunReport) -> str:
    """A row per phase (in the order they first started), a bar per attempt, wait and
    compensation; x is time since the run started, at ``_CHART_W`` px for the whole run."""
    bars = report.bars
    run = report.run
    if not bars:
        return '<p class="muted">no phase ran</p>'
    t0 = min(run.started, *(b.start for b in bars))
    t1 = max([run.ended or 0.0, *(b.end for b in bars)])
    span = max(t1 - t0, 1e-6)
    rows: list[str] = []
    for b in bars:
        if b.phase not in rows:
            rows.append(b.phase)
    height = len(rows) * _ROW_H + 40
    out = [
        f'<svg id="gantt" xmlns="http://www.w3.org/2000/svg" width="{_LABEL_W + _CHART_W + 20}"'
        f' height="{height}" data-t0="{t0!r}" data-t1="{t1!r}" data-x0="{_LABEL_W}" '
        f'data-width="{_CHART_W}" role="img" aria-label="timeline">'
    ]
    for i in range(5):  # the time axis
        x = _LABEL_W + _CHART_W * i / 4
        out.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 22}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="muted">'
            f"{_e(format_seconds(span * i / 4))}</text>"
        )
    for index, pid in enumerate(rows):
        y = index * _ROW_H + 4
        out.append(
            f'<text x="{_LABEL_W - 8}" y="{y + 15}" text-anchor="end">{_e(_clip(pid, 26))}</text>'
        )
    for b in bars:
        out.append(_bar(b, rows.index(b.phase) * _ROW_H + 4, t0, span))
    out.append("</svg>")
    legend = "".join(
        f'<span><i class="swatch" style="background:{_COLOURS[k]}"></i>{k}</span>'
        for k in ("completed", "cached", "retried", "failed", "cancelled", "retry", "ok")
    )
    return (
        "".join(out) + f'<div class="legend muted">{legend} (retry: the wait before the '
        "next attempt; ok: a compensation)</div>"
    )


def _bar(b: Bar, y: int, t0: float, span: float) -> str:
    x = _LABEL_W + (b.start - t0) / span * _CHART_W
    w = max((b.end - b.start) / span * _CHART_W, 0.0)
    h = 16 if b.kind == "attempt" else 10
    dy = 0 if b.kind == "attempt" else 3
    label = f"{b.phase}: {b.kind}" + (f" {b.attempt}" if b.attempt else "")
    label += f" {b.outcome}, {format_seconds(b.end - b.start)}"
    if b.note:
        label += f": {b.note}"
    return (
        f'<rect class="bar {b.kind} {b.outcome}" data-phase="{_e(b.phase)}" '
        f'data-kind="{b.kind}" data-outcome="{b.outcome}" '
        f'data-attempt="{b.attempt or ""}" data-start="{b.start!r}" data-end="{b.end!r}" '
        f'x="{x:.3f}" y="{y + dy}" width="{w:.3f}" height="{h}" rx="2" '
        f'fill="{_COLOURS.get(b.outcome, "#888")}"><title>{_e(label)}</title></rect>'
    )


# -- phases and errors ------------------------------------------------------------------------


def _phase_table(phases: Sequence[PhaseRecord]) -> str:
    head = (
        "<tr><th>phase</th><th>state</th><th>attempts</th><th>duration</th>"
        "<th>tokens</th><th>cost</th><th>note</th></tr>"
    )
    rows = []
    for p in phases:
        tokens = phase_tokens(p)
        cost = phase_cost(p)
        notes = metadata_notes(p.metadata)
        notes += ["cached"] if p.cached else []
        notes += ["fallback used"] if p.fallback_used else []
        if p.compensated is not None:
            notes.append(
                "compensated" if p.compensated else f"compensation failed: {p.compensation_error}"
            )
        note = "; ".join(notes)
        rows.append(
            f'<tr data-phase="{_e(p.id)}"><td>{_e(p.id)}</td><td>{_badge(p.state.value)}</td>'
            f'<td class="n">{p.attempts or "-"}</td>'
            f'<td class="n">{_e(format_seconds(p.duration) if p.duration is not None else "-")}'
            f'</td><td class="n">{_e((tokens or {}).get("total", "-"))}</td>'
            f'<td class="n">{_e(format_cost(cost) if cost is not None else "-")}</td>'
            f"<td>{_e(note)}</td></tr>"
        )
    return f'<table id="phases">{head}{"".join(rows)}</table>'


def _errors(report: RunReport) -> str:
    failed = [p for p in report.phases if p.error and p.state.value in ("failed", "cancelled")]
    if not failed:
        return ""
    out = ["<h2>Errors</h2>"]
    for p in failed:
        out.append(
            f'<div class="error" data-phase="{_e(p.id)}"><h3>{_e(p.id)} '
            f"{_badge(p.state.value)}</h3><pre>{_e(p.error)}</pre>"
        )
        tail = report.tails.get(p.id)
        if tail:
            out.append(f'<div class="muted">last output</div><pre class="tail">{_e(tail)}</pre>')
        out.append("</div>")
    return "".join(out)
