"""Tables for stored runs: ``orch runs`` and ``orch status``.

Pure functions from state records to rich renderables; the CLI prints them. The lines
of ``orch logs`` are plain text, shared with the service: orchestrator/eventlines.py.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..events import format_cost
from ..state.base import Decision, PhaseRecord, PhaseState, RunRecord
from ..state.views import (
    phase_cost,
    phase_time,
    phase_tokens,
    run_time,
    shown_state,
    status_json,
    token_total,
)
from .progress import format_seconds, format_tokens, metadata_notes

__all__ = [
    "fmt_time",
    "runs_table",
    "status_view",
]

_STYLES = {
    "completed": "green",
    "running": "cyan",
    "waiting": "blue",
    "failed": "red",
    "cancelled": "yellow",
    "interrupted": "magenta",
    "corrupt": "red",
    "skipped": "dim",
    "pending": "dim",
}
_NOTE_MAX = 80


def fmt_time(ts: float | None) -> str:
    """A local date and time to the second, or ``-``."""
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def runs_table(
    runs: Sequence[RunRecord], *, now: float, waiting: Mapping[str, Sequence[str]] | None = None
) -> RenderableType:
    """The ``orch runs`` table: id, workflow, status, started, duration (newest first);
    a run whose phases wait for approval (``waiting``, by run) says so after its status:
    ``running (waiting: deploy)``."""
    asking = waiting or {}
    if not runs:
        return Text("no runs recorded yet")
    table = Table(header_style="bold", show_edge=False, pad_edge=False)
    for name in ("id", "workflow", "status", "started", "duration"):
        table.add_column(name, no_wrap=True, justify="right" if name == "duration" else "left")
    for run in runs:
        table.add_row(
            run.id,
            run.workflow,
            _run_status(run, asking.get(run.id, ())),
            fmt_time(run.started),
            _seconds(run_time(run, now)),
        )
    return table


def _run_status(run: RunRecord, waiting: Sequence[str]) -> Text:
    text = Text(run.status, style=_STYLES.get(run.status, ""))
    if waiting and not run.finished:
        text.append(f" (waiting: {', '.join(waiting)})", style=_STYLES["waiting"])
    return text


def _seconds(value: float | None) -> str:
    """A duration for a table cell; ``-`` when there is none (a phase not started)."""
    return "-" if value is None else format_seconds(value)


def _note(phase: PhaseRecord, decision: Decision | None = None) -> str:
    parts = metadata_notes(phase.metadata)
    if decision is not None:  # an approval: who decided
        parts.append(decision.text)
    tokens = phase_tokens(phase)
    if tokens:
        used = tokens.get("total", 0)
        parts.append(f"{used} token{'s' if used != 1 else ''}")
    cost = phase_cost(phase)
    if cost is not None:
        parts.append(format_cost(cost))
    if phase.cached:
        parts.append("cached")
    if phase.fallback_used:
        parts.append("fallback used")
    if phase.error and phase.error.strip() != phase.state.value:  # not `cancelled` twice
        parts.append(phase.error.splitlines()[0] if phase.error.strip() else phase.error)
    if phase.compensated is True:
        parts.append("compensated")
    elif phase.compensated is False:
        parts.append(f"compensation failed: {phase.compensation_error or '?'}")
    text = "; ".join(parts)
    return text if len(text) <= _NOTE_MAX else text[: _NOTE_MAX - 3] + "..."


def _items_text(items: Mapping[str, int]) -> str:
    """``items 3/10 done``: a running foreach phase's items that ended, of all of them."""
    return f"items {items['done']}/{items['total']} done"


def _progress_text(
    progress: Mapping[str, Any], phases: Sequence[PhaseRecord], members: set[str]
) -> str:
    """``3/4 phases completed (1 failed)``: a failed or skipped phase is not "done" work."""
    text = f"{progress['completed']}/{progress['total']} phases completed"
    others: dict[str, int] = {}
    for p in phases:
        if (not members or p.id in members) and p.state is not PhaseState.COMPLETED:
            if p.state is not PhaseState.PENDING:
                others[p.state.value] = others.get(p.state.value, 0) + 1
    if others:
        order = [state.value for state in PhaseState]
        ordered = sorted(others.items(), key=lambda kv: order.index(kv[0]))
        text += " (" + ", ".join(f"{n} {state}" for state, n in ordered) + ")"
    return text


def status_view(
    run: RunRecord,
    phases: Sequence[PhaseRecord],
    *,
    now: float,
    max_rows: int = 200,
    decisions: Mapping[str, Decision] | None = None,
    cancelled_by: str | None = None,
    items: Mapping[str, tuple[int, int]] | None = None,
) -> RenderableType:
    """``orch status``: a header (state, progress, running phases) and a table of phases
    (``decisions``: who approved or rejected a phase, in its note; ``cancelled_by``: who
    cancelled a cancelled run; ``items``: a running foreach phase's items done, as
    ``status_json`` takes them)."""
    decided = decisions or {}
    info = status_json(
        run, phases, now=now, decisions=decided, cancelled_by=cancelled_by, items=items
    )
    counted = {p["id"]: _items_text(p["items"]) for p in info["phases"] if p["items"]}
    header = Text()
    header.append(f"run {run.id}", style="bold")
    header.append(f"  workflow {run.workflow} ({run.path})\n")
    header.append("status: ")
    header.append(run.status, style=_STYLES.get(run.status, ""))
    if info["cancelled_by"]:
        header.append(f" (by {info['cancelled_by']})")
    progress = info["progress"]
    header.append(f"   progress: {_progress_text(progress, phases, set(run.phase_ids))}")
    header.append(f"\nstarted: {fmt_time(run.started)}")
    header.append(f"   duration: {_seconds(info['duration'])}")
    if run.resumes:
        header.append(f"   resumed: {run.resumes}x")
    if info["current"]:
        label = "running now" if run.status == "running" else "running when it stopped"
        header.append(
            f"\n{label}: "
            + ", ".join(f"{p} ({counted[p]})" if p in counted else p for p in info["current"])
        )
    for pid in info["waiting"]:
        header.append(f"\nwaiting for approval: {pid}", style="bold")
        header.append(f" (`orch approve {run.id} {pid}` or `orch reject {run.id} {pid}`)")
    if run.status == "interrupted" and run.owner is not None:
        header.append(
            f"\nits process ({run.owner.pid}) is gone; `orch resume {run.id}` continues it"
        )
    tokens = token_total(phases)
    if any(tokens.values()):
        header.append(f"\ntokens: {format_tokens(tokens)}")
    if info["cost"] is not None:
        header.append(f"   cost: {format_cost(info['cost'])}")
    if run.trace_id:
        header.append(f"\ntrace: {run.trace_id}")
    if run.error:
        header.append(f"\nerror: {run.error}", style="red")
    table = Table(header_style="bold", show_edge=False, pad_edge=False)
    for name in ("phase", "state", "attempts", "time", "note"):
        table.add_column(
            name, no_wrap=name != "note", justify="right" if name == "time" else "left"
        )
    running = run.status == "running"
    for phase in phases[:max_rows]:
        table.add_row(
            phase.id,
            Text(
                shown_state(phase, decided.get(phase.id)),
                style=_STYLES.get(phase.state.value, ""),
            ),
            str(phase.attempts),
            _seconds(phase_time(phase, now, running)),
            "; ".join(filter(None, (counted.get(phase.id), _note(phase, decided.get(phase.id))))),
        )
    parts: list[RenderableType] = [header, table]
    if len(phases) > max_rows:
        more = len(phases) - max_rows
        parts.append(
            Text(f"... {more} more phase{'s' if more != 1 else ''} (--json lists them all)")
        )
    return Group(*parts)
