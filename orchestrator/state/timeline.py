"""A recorded run, made ready for ``orch report``: its attempts, waits and compensations as
time intervals, each phase's log tail, read from the store's events.

``load_report(store, run_id)`` gathers the run record, the phase records, the
``timeline`` (one ``Bar`` per attempt, per wait between attempts, per approval
wait and per compensation) and the last streamed text of each phase. Pure
folding of events; no rendering (render/report.py draws it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..events import Event
from .base import PhaseRecord, RunRecord

__all__ = ["Bar", "RunReport", "load_report", "timeline"]

#: Characters of streamed output kept per phase for the report's log tails.
TAIL_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Bar:
    """One interval of a phase on the run's timeline.

    ``kind``: ``attempt``, ``wait`` (the backoff before the next attempt, or an
    approval), ``compensation``. ``outcome``: for an attempt ``completed``,
    ``cached``, ``retried`` (it failed and another attempt followed), ``failed``,
    ``cancelled`` or ``unfinished``; for a compensation ``ok`` or ``failed``;
    ``retry`` or ``approval`` for a wait.
    """

    phase: str
    kind: str
    start: float
    end: float
    outcome: str
    attempt: int | None = None
    note: str = ""


@dataclass(slots=True)
class _Open:
    start: float
    attempt: int | None
    why: str = ""  # a wait's outcome: retry or approval


def timeline(events: Iterable[Event], end: float | None = None) -> list[Bar]:
    """The bars of a run's events, in the order they started.

    An attempt runs from ``phase_started`` (or, after a retry, from the end of
    the recorded ``delay``) to the next ``phase_retry`` or the phase's end; the
    wait between two attempts is the ``phase_retry``'s ``delay``. A bar still open
    when the events end closes at ``end`` (the run's end, or the last event's
    time) as ``unfinished``. Foreach item retries do not split
    the phase's bar (the items overlap); they are counted in its note.
    """
    bars: list[Bar] = []
    open_: dict[tuple[str, str], _Open] = {}
    item_retries: dict[str, int] = {}
    last = 0.0

    def close(phase: str, kind: str, ts: float, outcome: str, note: str = "") -> None:
        found = open_.pop((phase, kind), None)
        if found is not None:
            outcome = found.why or outcome
            bars.append(
                Bar(phase, kind, found.start, max(ts, found.start), outcome, found.attempt, note)
            )

    for e in events:
        last = max(last, e.ts)
        pid, data = e.phase, e.data
        if pid is None:
            continue
        kind = e.event
        if kind == "phase_started":
            close(pid, "wait", e.ts, "")
            open_[(pid, "attempt")] = _Open(e.ts, e.attempt)
        elif kind == "phase_retry" and "item" in data:
            item_retries[pid] = item_retries.get(pid, 0) + 1
        elif kind == "phase_retry":
            # one phase_started per phase: the next attempt starts when the recorded
            # delay ends (a phase_started for it, after a resume, takes precedence)
            close(pid, "attempt", e.ts, "retried", str(data.get("error") or ""))
            delay = data.get("delay")
            wait = float(delay) if isinstance(delay, (int, float)) and delay > 0 else 0.0
            bars.append(Bar(pid, "wait", e.ts, e.ts + wait, "retry", e.attempt))
            nxt = data.get("next_attempt")
            open_[(pid, "attempt")] = _Open(e.ts + wait, nxt if isinstance(nxt, int) else None)
        elif kind == "phase_waiting":
            open_[(pid, "wait")] = _Open(e.ts, e.attempt, "approval")
        elif kind in ("phase_completed", "phase_failed", "phase_skipped"):
            close(pid, "wait", e.ts, "")
            status = str(data.get("status") or kind.removeprefix("phase_"))
            if kind == "phase_completed" and data.get("cached"):
                status = "cached"
            n = item_retries.pop(pid, 0)
            note = str(data.get("error") or "") if kind == "phase_failed" else ""
            if n:
                note = (note + "; " if note else "") + f"{n} item retr{'y' if n == 1 else 'ies'}"
            close(pid, "attempt", e.ts, status, note)
        elif kind == "phase_stream" and data.get("compensation") == "started":
            open_[(pid, "compensation")] = _Open(e.ts, None)
        elif kind == "phase_compensated":
            ok = bool(data.get("ok"))
            close(pid, "compensation", e.ts, "ok" if ok else "failed", str(data.get("error") or ""))
    stop = end if end is not None else last
    for (pid, kind), found in list(open_.items()):
        outcome = found.why or "unfinished"
        bars.append(Bar(pid, kind, found.start, max(stop, found.start), outcome, found.attempt))
    bars.sort(key=lambda b: (b.start, b.end))
    return bars


def log_tails(events: Iterable[Event], limit: int = TAIL_CHARS) -> dict[str, str]:
    """The last ``limit`` characters each phase streamed (``phase_stream`` text)."""
    tails: dict[str, str] = {}
    for e in events:
        if e.event == "phase_stream" and e.phase and "compensation" not in e.data:
            text = e.data.get("text")
            if isinstance(text, str):
                tails[e.phase] = (tails.get(e.phase, "") + text)[-limit:]
    return tails


class _Store(Protocol):
    def get_run(self, run_id: str) -> RunRecord: ...
    def phases(self, run_id: str) -> Sequence[PhaseRecord]: ...
    def events(
        self, run_id: str, *, phase: str | None = None, after: int = 0
    ) -> Sequence[tuple[int, Event]]: ...


@dataclass(frozen=True, slots=True)
class RunReport:
    """Everything ``orch report`` shows of one run."""

    run: RunRecord
    phases: Sequence[PhaseRecord]
    bars: list[Bar]
    tails: dict[str, str]


def load_report(store: _Store, run_id: str) -> RunReport:
    """The report data of a run (an id or unique prefix). Raises RunNotFound, StateCorrupted."""
    run = store.get_run(run_id)
    events = [e for _, e in store.events(run.id)]
    return RunReport(
        run=run,
        phases=store.phases(run.id),
        bars=timeline(events, run.ended),
        tails=log_tails(events),
    )
