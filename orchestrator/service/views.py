"""Runs, phases and events as the API shows them (plain JSON data, no HTTP here)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OrchError
from ..state import views

if TYPE_CHECKING:
    from ..engine.events import Event
    from ..state.base import PhaseRecord, RunRecord
    from ..state.sqlite import SqliteStore
    from .runs import ActiveRun

__all__ = [
    "FINAL_EVENTS",
    "ReadEvents",
    "attempts",
    "event_json",
    "graph",
    "logs",
    "read_events",
    "run_json",
]

FINAL_EVENTS = frozenset({"workflow_completed", "workflow_failed", "workflow_cancelled"})


def run_json(run: RunRecord | ActiveRun) -> dict[str, Any]:
    """A run's summary (``state.views.run_json``); a queued run: what it will run with."""
    from .runs import ActiveRun

    if isinstance(run, ActiveRun):
        return {
            "id": run.id,
            "workflow": run.workflow,
            "status": run.status,
            "started": None,
            "ended": None,
            "duration": None,
            "queued_at": run.queued_at,
            "priority": run.priority,
            "inputs": dict(run.inputs),
            "trigger": dict(run.trigger),
        }
    return views.run_json(run)


def event_json(seq: int, event: Event) -> dict[str, Any]:
    """An event with its sequence number in the store."""
    return {"seq": seq, **event.as_dict()}


#: A timeline bar's outcome as the UI's state classes show it.
_BAR_STATE = {
    "completed": "completed",
    "cached": "completed",
    "retried": "failed",
    "failed": "failed",
    "cancelled": "cancelled",
    "unfinished": "running",
    "ok": "completed",
    "retry": "waiting",
    "approval": "waiting",
}


@dataclass
class ReadEvents:
    """What the run's page takes from its events: the Gantt bars (``attempts``), each
    waiting phase's approval message, the trigger (workflow_started) and the last seq."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    asks: dict[str | None, Any] = field(default_factory=dict)
    trigger: Any = None
    last_seq: int = 0


def read_events(store: SqliteStore, run: RunRecord, *, now: float) -> ReadEvents:
    """One pass over the run's events, read a page at a time (``each_event``)."""
    from ..runs.recorded import each_event

    read = ReadEvents()
    first = True

    def tapped() -> Iterator[Event]:
        nonlocal first
        for seq, event in each_event(store, run.id):
            if first:
                read.trigger, first = event.data.get("trigger"), False
            if event.event == "phase_waiting":
                read.asks[event.phase] = event.data.get("message")
            read.last_seq = seq
            yield event

    read.attempts = attempts(tapped(), running=run.status == "running", now=now)
    return read


def attempts(events: Iterable[Event], *, running: bool, now: float) -> list[dict[str, Any]]:
    """The Gantt bars (``state.timeline``, the same bars as `orch report`): each attempt,
    each wait between attempts or for an approval, each compensation. A bar still open
    ends ``now`` while the run runs; ``end`` is None for it."""
    from ..state.timeline import timeline

    bars = timeline(events, end=now if running else None)
    return [
        {
            "phase": b.phase,
            "kind": b.kind,
            "attempt": b.attempt,
            "start": b.start,
            "end": None if running and b.outcome == "unfinished" else b.end,
            "state": _BAR_STATE.get(b.outcome, "pending"),
            "outcome": b.outcome,
            "note": b.note,
        }
        for b in bars
    ]


def logs(events: list[tuple[int, Event]], line: Callable[[Event], str]) -> list[dict[str, Any]]:
    """A run's (or a phase's) log as `orch logs` prints it: one entry per event, in order,
    with its ``line`` (``line(event)``: the CLI's own renderer) and, for streamed output,
    its ``text``."""
    out = []
    for seq, e in events:
        entry = {
            "seq": seq,
            "ts": e.ts,
            "event": e.event,
            "phase": e.phase,
            "attempt": e.attempt,
            "line": line(e),
        }
        text = e.data.get("text")
        if e.event == "phase_stream" and isinstance(text, str):
            entry["text"] = text
        out.append(entry)
    return out


def graph(run: RunRecord, recorded: Sequence[PhaseRecord]) -> dict[str, Any]:
    """Nodes (id, level, row, state) and edges of a run's DAG, from its workflow file;
    the states from ``recorded`` (the phases the rest of the page shows: one read).

    When the file is gone or no longer loads, the stored phases are shown in one
    column each, without edges.
    """
    phases = {p.id: p for p in recorded}
    preds: dict[str, list[str]] = {}
    levels: dict[str, int] = {}
    with contextlib.suppress(OrchError, OSError):
        from ..plan import compile_plan
        from ..spec import load_workflow

        plan = compile_plan(load_workflow(Path(run.path)))
        preds = {pid: list(plan.predecessors[pid]) for pid in plan.order}
        levels = dict(plan.level_of)
    order = list(run.phase_ids) or list(phases)
    extra = [pid for pid in phases if pid not in order]  # handler phases: a last column
    last = max(levels.values(), default=-1) + 1
    nodes: list[dict[str, Any]] = []
    rows: dict[int, int] = {}
    for i, pid in enumerate(order + extra):
        level = levels.get(pid, i if not levels else last)
        row = rows.get(level, 0)
        rows[level] = row + 1
        p = phases.get(pid)
        nodes.append(
            {"id": pid, "level": level, "row": row, "state": str(p.state) if p else "pending"}
        )
    edges = [[d, pid] for pid, ds in preds.items() for d in ds]
    return {"nodes": nodes, "edges": edges}
