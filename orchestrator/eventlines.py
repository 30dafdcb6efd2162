"""The plain-text lines of events: ``orch logs`` prints them, the service's log shows them.

Standard library only (no rich): the CLI and the web service both read it, and the
live display (render/progress.py) words durations, retries and breakers the same way.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any

from .events import Event, note, phase_state, run_status

__all__ = [
    "breaker_note",
    "event_line",
    "format_seconds",
    "item_label",
    "number",
    "phase_label",
    "retry_wait",
]


def item_label(data: Mapping[str, Any]) -> str:
    """``[2]`` for an event of one foreach item (``data.item``, its 0-based index), else ``""``."""
    item = data.get("item")
    return f"[{item}]" if isinstance(item, int) and not isinstance(item, bool) else ""


def phase_label(phase: str | None, data: Mapping[str, Any]) -> str:
    """Whom an event is about, as every display writes it: ``per_topic[2]`` for an
    event of a foreach phase's item 2, else the phase id (``""``: no phase).

    The plain lines (``per_topic[2] | text``), the live display and ``orch logs``
    all word it here, so the parallel items' streams stay apart and read alike.
    """
    return (phase or "") + item_label(data) if phase else ""


def breaker_note(data: Mapping[str, Any]) -> str:
    """What a ``breaker_opened`` event says: ``circuit breaker of agent 'crm' opened after 3
    failures in a row (last: HTTP 503); its calls fail at once for 1m``."""
    failures = data.get("failures")
    error = data.get("error")
    last = f" (last: {str(error).splitlines()[0]})" if error else ""
    return (
        f"circuit breaker of agent '{data.get('agent')}' opened after {failures} "
        f"failure{'s' if failures != 1 else ''} in a row{last}; its calls fail at once "
        f"for {format_seconds(data.get('reset_after'))}"
    )


def approval_note(approval: Mapping[str, Any]) -> str:
    """An approval's decision (``data.approval``) in words: ``approved by alice: looks
    good``; a timeout's: ``approved: nobody decided within the timeout``."""
    decision = str(approval.get("decision") or "")
    if decision.startswith("timed out"):  # timed out (approve|reject)
        verdict = "approved" if "approve" in decision else "rejected"
        return f"{verdict}: nobody decided within the timeout"
    why = f": {approval['comment']}" if approval.get("comment") else ""
    return f"{decision} by {approval.get('who')}{why}"


def retry_wait(data: Mapping[str, Any]) -> str:
    """The wait of a ``phase_retry`` event: ``2s``, or ``1m (asked to wait 11d; bounded by …)``."""
    bound = data.get("bound")
    return format_seconds(data.get("delay")) + (f" ({bound})" if bound else "")


def format_seconds(value: Any) -> str:
    """Seconds for people: `50ms`, `1.2s`, `42s`, `3m07s`, `1h05m`; `?` when not a number."""
    seconds = number(value)
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def number(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_line(event: Event) -> str:
    """One ``orch logs`` line: local time, event, phase and attempt, and what it says."""
    stamp = _dt.datetime.fromtimestamp(event.ts).strftime("%H:%M:%S.%f")[:-3]
    data = event.data
    who = phase_label(event.phase, data)
    if event.attempt is not None and event.event not in ("phase_completed", "phase_failed"):
        who += f" #{event.attempt}"
    kind = event.event
    detail = ""
    if kind == "workflow_started":
        count = len(data.get("phases") or ())
        detail = f"{data.get('workflow', '')} ({count} phase{'s' if count != 1 else ''})"
        if data.get("resumed_from"):
            detail += " resumed"
    elif kind == "phase_started":
        detail = f"agent {data.get('agent', '?')}"
        approval = data.get("approval")
        if isinstance(approval, Mapping) and approval.get("decision"):
            detail += f"; {approval_note(approval)}"
    elif kind == "phase_stream":
        if "text" in data:
            detail = _short(data["text"])
        elif "progress" in data:
            detail = f"{data['progress'].get('done')}/{data['progress'].get('total')}"
        else:
            detail = _short(data.get("turn", data))
    elif kind == "phase_retry":
        failed = event.attempt or 1
        nxt = data.get("next_attempt") or failed + 1
        wait = retry_wait(data)
        detail = f"attempt {failed} failed: {_short(data.get('error'))}; attempt {nxt} in {wait}"
    elif kind == "phase_completed":
        flags = [f for f in ("cached", "fallback_used") if data.get(f)]
        tries = data.get("attempts", 1)
        detail = (
            f"in {format_seconds(data.get('duration'))}, {tries} attempt{'s' if tries != 1 else ''}"
        )
        detail += "".join(f", {f.replace('_', ' ')}" for f in flags)
        detail += f": {_short(data.get('output'))}"
    elif kind == "phase_failed":
        status, error = str(phase_state(event)), note(event)
        detail = (
            status
            if not error or str(error).strip() == status
            else (f"{status}: {_short(error, 200)}")
        )
    elif kind == "phase_skipped":
        detail = note(event) or ""
    elif kind == "phase_waiting":  # an approval's message says more than its reason
        detail = str(data.get("message") or note(event) or "")
    elif kind == "phase_iteration":
        detail = f"iteration {data.get('iteration')}: {_short(data.get('output'))}"
    elif kind == "phase_compensated":
        detail = "ok" if data.get("ok") else f"failed: {_short(data.get('error'), 200)}"
    elif kind == "breaker_opened":
        detail = _short(breaker_note(data), 200)
    elif run_status(event) is not None:
        detail = str(run_status(event))
        if data.get("error"):
            detail += f": {_short(data['error'], 200)}"
    return f"{stamp}  {kind:<19} {who:<16} {detail}".rstrip()
