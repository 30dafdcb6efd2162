"""The event contract: the only output of a run (contract section 5), and the masking of secrets.

Every event is one JSON object with ``event``, ``v`` (the format version, 1),
``run_id``, ``ts`` and, where it applies, ``phase``, ``attempt`` and ``data``.
The same objects reach the Python API, ``--events jsonl``, the live display and
the state store. Events are built by the typed constructors below (one per
kind); readers fold them through ``phase_state``, ``run_status`` and ``note``.
Secrets are masked in ``SecretMasker`` before any sink sees an event. This
module imports only the standard library (and ``frozen``): engine, state and render
all read it.
"""

from __future__ import annotations

import base64
import inspect
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypeVar

from .frozen import quick_init

__all__ = [
    "EVENT_TYPES",
    "EVENT_VERSION",
    "MIN_SECRET_LENGTH",
    "PHASE_STATES",
    "Event",
    "EventSink",
    "PhaseState",
    "SecretMasker",
    "StreamMasker",
    "breaker_opened",
    "compensation_started",
    "durable",
    "is_durable",
    "item_checkpoint",
    "format_cost",
    "note",
    "phase_completed",
    "phase_compensated",
    "phase_failed",
    "phase_iteration",
    "phase_progress",
    "phase_retry",
    "phase_skipped",
    "phase_started",
    "phase_state",
    "phase_stream",
    "phase_turn",
    "phase_waiting",
    "run_status",
    "too_short",
    "workflow_ended",
    "workflow_started",
]

#: The version written as ``v`` in every event's JSON form.
EVENT_VERSION = 1

EventType = Literal[
    "workflow_started",
    "phase_started",
    "phase_stream",
    "phase_retry",
    "phase_waiting",
    "phase_iteration",
    "phase_completed",
    "phase_failed",
    "phase_skipped",
    "phase_compensated",
    "breaker_opened",
    "workflow_completed",
    "workflow_failed",
    "workflow_cancelled",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]


class PhaseState(str, Enum):
    """The state of one phase (contract section 5); the strings are a stored file format."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


PHASE_STATES: tuple[str, ...] = tuple(s.value for s in PhaseState)
#: The phase states a phase ends in.
FINAL_PHASE_STATES = frozenset(
    {PhaseState.COMPLETED, PhaseState.FAILED, PhaseState.SKIPPED, PhaseState.CANCELLED}
)
_RUN_END = {
    "workflow_completed": "completed",
    "workflow_failed": "failed",
    "workflow_cancelled": "cancelled",
}
MASK = "***"
#: ``data`` fields whose values orch writes itself (never user data): not masked.
STRUCTURAL_FIELDS = frozenset(
    {
        "status",
        "secret_masked",
        "phases",
        "fingerprints",
        "counts",
        "source_hash",
        "pid",
        "attempts",
        "duration",
        "cached",
        "fallback_used",
        "items",
        "next_attempt",
        "delay",
        "continue_on_error",
        "resumed_from",
        "progress",
        "turn",
        "iteration",
        "cancelled_by",
        "failures",
        "reset_after",
    }
)


@quick_init
@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a run. ``ts`` is seconds since the epoch (float).

    Build events with the constructors of this module (``phase_started(...)``),
    which give every kind its documented ``data``.
    """

    event: str
    run_id: str
    ts: float
    phase: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    #: the OpenTelemetry trace id (32 hex digits) of the run, when tracing is on
    trace_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The contract's JSON shape; keys that do not apply are left out."""
        out: dict[str, Any] = {
            "v": EVENT_VERSION,
            "event": self.event,
            "run_id": self.run_id,
            "ts": self.ts,
        }
        if self.phase is not None:
            out["phase"] = self.phase
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.data:
            out["data"] = self.data
        if self.trace_id is not None:
            out["trace_id"] = self.trace_id
        return out

    def to_json(self) -> str:
        """One line of ``--events jsonl``."""
        try:  # strict JSON, as jsontext.dumps writes it (this module imports only the stdlib)
            return json.dumps(
                self.as_dict(),
                ensure_ascii=False,
                allow_nan=False,
                default=str,
                separators=(",", ":"),
            )
        except ValueError as exc:
            raise ValueError(f"the {self.event} event is not strict JSON: {exc}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        """Inverse of as_dict (``v`` is read and dropped); raises KeyError or TypeError on a
        malformed record."""
        return cls(
            event=str(raw["event"]),
            run_id=str(raw["run_id"]),
            ts=float(raw["ts"]),
            phase=raw.get("phase"),
            attempt=raw.get("attempt"),
            data=dict(raw.get("data") or {}),
            trace_id=raw.get("trace_id"),
        )


#: A sink receives every event, already masked. It may be sync or async; an
#: async sink is awaited before the engine goes on (the durable store relies on it).
#: A plain function marked ``durable`` counts as async: it returns an awaitable
#: (a future the store settles at commit) without a coroutine of its own.
EventSink = Callable[[Event], "Awaitable[None] | None"]

_Sink = TypeVar("_Sink", bound=Callable[..., Any])


def durable(sink: _Sink) -> _Sink:
    """Mark an event sink that returns an awaitable settled once the event is stored
    (``SqliteStore.submit``): the engine awaits it, like an async sink, before any
    other sink sees the event."""
    sink.durable = True  # type: ignore[attr-defined]
    return sink


def is_durable(sink: EventSink) -> bool:
    """Whether the engine awaits ``sink`` before showing an event: an async function (or
    a callable object with an async ``__call__``), or a sink marked ``durable``."""
    return (
        getattr(sink, "durable", False) is True
        or inspect.iscoroutinefunction(sink)
        or inspect.iscoroutinefunction(getattr(sink, "__call__", None))  # noqa: B004
    )


# -- typed constructors: the only places event data is written -------------------------


def workflow_started(
    run_id: str,
    ts: float,
    *,
    workflow: str,
    path: str,
    source_hash: str,
    phases: Iterable[str],
    fingerprints: Mapping[str, str],
    inputs: Mapping[str, Any],
    pid: int,
    resumed_from: str | None = None,
    trigger: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> Event:
    """A run starts (or resumes: ``resumed_from`` is the run id then); ``trigger``: what
    started it in `orch serve` (``kind``: schedule, webhook, after, api); ``source``: the
    workflow's text when it is not a file (``path`` ``<memory>``), for ``orch resume``."""
    data: dict[str, Any] = {
        "workflow": workflow,
        "path": path,
        "source_hash": source_hash,
        "phases": list(phases),
        "fingerprints": dict(fingerprints),
        "inputs": dict(inputs),
        "pid": pid,
    }
    if resumed_from:
        data["resumed_from"] = resumed_from
    if trigger:
        data["trigger"] = dict(trigger)
    if source:
        data["source"] = source
    return Event("workflow_started", run_id, ts, None, None, data)


def phase_started(
    run_id: str,
    ts: float,
    phase: str,
    attempt: int,
    *,
    agent: str,
    items: int | None = None,
    kept: int = 0,
    path: str | None = None,
    approval: Mapping[str, Any] | None = None,
) -> Event:
    """A phase starts an attempt (``items``: a foreach's item count; ``kept``: how many
    of them a resumed run keeps from before, not run again; ``path``: a sub-run's file;
    ``approval``: the decision that let it start: decision, who, at, comment)."""
    data: dict[str, Any] = {"agent": agent}
    if items is not None:
        data["items"] = items
    if kept:
        data["kept"] = kept
    if path is not None:
        data["path"] = path
    if approval:
        data["approval"] = dict(approval)
    return Event("phase_started", run_id, ts, phase, attempt, data)


def phase_stream(
    run_id: str, ts: float, phase: str, attempt: int | None, text: str, *, item: int | None = None
) -> Event:
    """A piece of an agent's streamed output (already masked by the stream masker)."""
    data: dict[str, Any] = {"text": text}
    if item is not None:
        data["item"] = item
    return Event("phase_stream", run_id, ts, phase, attempt, data)


_NO_ITEM_OUTPUT: Any = object()


def phase_progress(
    run_id: str,
    ts: float,
    phase: str,
    done: int,
    total: int,
    *,
    item: int | None = None,
    output: Any = _NO_ITEM_OUTPUT,
    spent: Mapping[str, Any] | None = None,
) -> Event:
    """foreach progress: ``done`` of ``total`` items ended. With ``item`` and ``output``,
    the item that completed and its output: the item's checkpoint (a resumed run does
    not run it again). ``spent``: the tokens and cost the phase's calls used so far (in
    every launch: what a resume counts when the run was killed before the phase ended)."""
    data: dict[str, Any] = {"progress": {"done": done, "total": total}}
    if item is not None and output is not _NO_ITEM_OUTPUT:
        data["item"] = item
        data["output"] = output
    if spent:
        data["spent"] = dict(spent)
    return Event("phase_stream", run_id, ts, phase, None, data)


def item_checkpoint(event: Event) -> tuple[int, Any] | None:
    """(index, output) of a foreach item that completed, from its progress event, or None."""
    data = event.data
    if event.event != "phase_stream" or "progress" not in data or "output" not in data:
        return None
    index = data.get("item")
    return (index, data["output"]) if isinstance(index, int) else None


def phase_turn(
    run_id: str,
    ts: float,
    phase: str,
    attempt: int,
    *,
    n: int,
    agent: str,
    next: str | None,
    item: int | None = None,
    spent: Mapping[str, Any] | None = None,
) -> Event:
    """A handoff turn ended: ``agent`` had turn ``n`` and handed off to ``next`` (None: done);
    ``spent`` as ``phase_progress``'s."""
    data: dict[str, Any] = {"turn": {"n": n, "agent": agent, "next": next}}
    if item is not None:
        data["item"] = item
    if spent:
        data["spent"] = dict(spent)
    return Event("phase_stream", run_id, ts, phase, attempt, data)


def compensation_started(run_id: str, ts: float, phase: str, *, cause: str = "failed") -> Event:
    """The saga's write-ahead marker: the compensation of ``phase`` is about to run.

    ``cause`` (the run's status, failed or cancelled) says why, so that a resume
    after a crash during compensation ends the run with the same status.
    """
    data = {"text": "compensating", "compensation": "started", "cause": cause}
    return Event("phase_stream", run_id, ts, phase, None, data)


def phase_retry(
    run_id: str,
    ts: float,
    phase: str,
    attempt: int,
    *,
    error: str,
    delay: float,
    item: int | None = None,
    bound: str | None = None,
    spent: Mapping[str, Any] | None = None,
) -> Event:
    """Attempt ``attempt`` failed; the next one starts after ``delay`` seconds.

    ``bound`` says why the wait is shorter than asked (``asked to wait 999999s;
    bounded by max_delay (1m)``); renderers show it in the retry line. ``spent`` as
    ``phase_progress``'s.
    """
    data: dict[str, Any] = {"error": error, "delay": delay, "next_attempt": attempt + 1}
    if item is not None:
        data["item"] = item
    if spent:
        data["spent"] = dict(spent)
    if bound:
        data["bound"] = bound
    return Event("phase_retry", run_id, ts, phase, attempt, data)


def phase_waiting(
    run_id: str,
    ts: float,
    phase: str,
    attempt: int | None = None,
    *,
    reason: str,
    details: Mapping[str, Any] | None = None,
) -> Event:
    """A phase waits for something outside the run (an approval); ``reason`` says what."""
    data: dict[str, Any] = {"status": PhaseState.WAITING.value, "reason": reason}
    if details:
        data.update(details)
    return Event("phase_waiting", run_id, ts, phase, attempt, data)


def phase_iteration(
    run_id: str,
    ts: float,
    phase: str,
    *,
    iteration: int,
    output: Any = None,
    details: Mapping[str, Any] | None = None,
) -> Event:
    """One iteration of a loop phase ended (``iteration`` counts from 1) with ``output``;
    ``details``: ``done``, ``agent``, ``spent`` (as ``phase_progress``'s)."""
    data: dict[str, Any] = {"iteration": iteration, "output": output}
    if details:
        data.update(details)
    return Event("phase_iteration", run_id, ts, phase, None, data)


def phase_completed(
    run_id: str,
    ts: float,
    phase: str,
    attempt: int | None,
    *,
    output: Any,
    duration: float | None,
    attempts: int,
    fallback_used: bool = False,
    cached: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Event:
    """A phase completed with ``output`` (``attempt`` None: served from the cache)."""
    data = {
        "status": "completed",  # PhaseState.COMPLETED (a literal: the hot path)
        "output": output,
        "duration": duration,
        "attempts": attempts,
        "fallback_used": fallback_used,
        "cached": cached,
        "metadata": dict(metadata or {}),
    }
    return Event("phase_completed", run_id, ts, phase, attempt, data)


_NO_OUTPUT: Any = object()


def phase_failed(
    run_id: str,
    ts: float,
    phase: str,
    attempt: int | None,
    *,
    error: str,
    duration: float | None,
    attempts: int,
    cancelled: bool = False,
    continue_on_error: bool | None = None,
    output: Any = _NO_OUTPUT,
    metadata: Mapping[str, Any] | None = None,
    approval: Mapping[str, Any] | None = None,
) -> Event:
    """A phase failed (or was cancelled: ``cancelled``); a foreach adds its ``output``;
    ``metadata``: the tokens and cost its calls used before the failure (when any);
    ``approval``: the refusal that failed it (rejected, or timed out), as phase_started's."""
    status = PhaseState.CANCELLED if cancelled else PhaseState.FAILED
    data: dict[str, Any] = {
        "status": status.value,
        "error": error,
        "duration": duration,
        "attempts": attempts,
    }
    if continue_on_error is not None:
        data["continue_on_error"] = continue_on_error
    if output is not _NO_OUTPUT:
        data["output"] = output
    if metadata:
        data["metadata"] = dict(metadata)
    if approval:
        data["approval"] = dict(approval)
    return Event("phase_failed", run_id, ts, phase, attempt, data)


def phase_skipped(run_id: str, ts: float, phase: str, reason: str) -> Event:
    """A phase did not run, and why."""
    data = {"status": PhaseState.SKIPPED.value, "reason": reason}
    return Event("phase_skipped", run_id, ts, phase, None, data)


def phase_compensated(run_id: str, ts: float, phase: str, *, error: str | None) -> Event:
    """The compensation of a phase ended (``error`` None: it worked)."""
    return Event(
        "phase_compensated", run_id, ts, phase, None, {"ok": error is None, "error": error}
    )


def breaker_opened(
    run_id: str,
    ts: float,
    phase: str,
    attempt: int | None,
    *,
    agent: str,
    failures: int,
    reset_after: float,
    error: str,
    item: int | None = None,
) -> Event:
    """The circuit breaker of ``agent`` opened: a call made for ``phase`` failed and made
    ``failures`` failures in a row. Calls of that agent fail at once for ``reset_after``
    seconds, then one trial call goes through. ``error``: the failure that opened it."""
    data: dict[str, Any] = {
        "agent": agent,
        "failures": failures,
        "reset_after": reset_after,
        "error": error,
    }
    if item is not None:
        data["item"] = item
    return Event("breaker_opened", run_id, ts, phase, attempt, data)


def workflow_ended(
    run_id: str,
    ts: float,
    status: str,
    *,
    outputs: Mapping[str, Any],
    duration: float | None,
    error: str | None,
    counts: Mapping[str, int],
    tokens: Mapping[str, int] | None = None,
    cost: float | None = None,
    cancelled_by: str | None = None,
) -> Event:
    """The run ended: workflow_completed, workflow_failed or workflow_cancelled by ``status``.

    ``cost`` (what the phases' calls cost) is left out when no agent reported one;
    ``cancelled_by`` says what cancelled it (``SIGINT``, ``SIGTERM``), when known.
    """
    kind = {"completed": "workflow_completed", "failed": "workflow_failed"}.get(
        status, "workflow_cancelled"
    )
    data: dict[str, Any] = {
        "status": status,
        "outputs": dict(outputs),
        "duration": duration,
        "error": error,
        "counts": dict(counts),
    }
    if tokens is not None:
        data["tokens"] = dict(tokens)
    if cost is not None:
        data["cost"] = round(cost, 10)
    if cancelled_by is not None:
        data["cancelled_by"] = cancelled_by
    return Event(kind, run_id, ts, None, None, data)


def format_cost(cost: float) -> str:
    """A ``cost`` of event data as people read it: ``$12.34``, ``$0.0123``, ``$0.000015``."""
    if cost >= 1:
        return f"${cost:,.2f}"
    return f"${cost:.4f}" if cost >= 0.01 or cost == 0 else f"${cost:.6f}"


# -- the one reading of events: what the store, the display and the logs agree on ------


def phase_state(event: Event) -> PhaseState | None:
    """The state ``event`` moves its phase to, or None when it does not change it."""
    kind = event.event
    if event.phase is None:
        return None
    if kind == "phase_started":
        return PhaseState.RUNNING
    if kind in ("phase_completed", "phase_failed", "phase_skipped", "phase_waiting"):
        status = event.data.get("status")
        if isinstance(status, str) and status in PHASE_STATES:
            return PhaseState(status)
        return PhaseState(
            {"phase_completed": "completed", "phase_failed": "failed"}.get(
                kind, kind.removeprefix("phase_")
            )
        )
    return None


def run_status(event: Event) -> str | None:
    """The final status of the run for a workflow_completed/failed/cancelled event, else None."""
    default = _RUN_END.get(event.event)
    if default is None:
        return None
    status = event.data.get("status")
    return str(status) if status else default


def note(event: Event) -> str | None:
    """What a phase-ending or waiting event says about it: the error or the reason."""
    key = "error" if event.event == "phase_failed" else "reason"
    value = event.data.get(key)
    return None if value is None else str(value)


#: Secrets shorter than this (spaces aside) are not masked: replacing every ``a`` or
#: every space would rewrite ordinary text, JSON keys included (``too_short``).
MIN_SECRET_LENGTH = 3


def too_short(secrets: Mapping[str, str]) -> list[str]:
    """The names of the secrets too short to mask safely (they are not masked)."""
    return sorted(n for n, v in secrets.items() if len(v.strip()) < MIN_SECRET_LENGTH)


class SecretMasker:
    """Replaces secret values, and their base64 and URL-encoded forms, with ``***``.

    Longest values first; values shorter than ``MIN_SECRET_LENGTH`` (spaces aside)
    are not masked (``too_short``). Streams that write a secret in pieces are
    handled by ``stream()``, which holds back only a tail that could begin a
    secret form, until the next piece or ``flush``. ``also``: another masker whose
    forms this one masks too (a sub-run's masks its parent run's secrets).
    """

    def __init__(self, secrets: Iterable[str] = (), *, also: SecretMasker | None = None) -> None:
        forms: set[str] = set(also._forms) if also is not None else set()
        for value in secrets:
            if len(value.strip()) < MIN_SECRET_LENGTH:
                continue
            forms.add(value)
            raw = value.encode()
            forms.add(base64.b64encode(raw).decode())
            forms.add(base64.urlsafe_b64encode(raw).decode())
            forms.add(base64.b64encode(raw).decode().rstrip("="))
            forms.add(urllib.parse.quote(value, safe=""))
            forms.add(urllib.parse.quote_plus(value))
            forms.add(json.dumps(value)[1:-1])  # as it appears inside JSON text
        self._forms: list[str] = sorted((f for f in forms if len(f) >= 1), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def mask_text(self, text: str) -> str:
        """The text with every secret form replaced."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def mask(self, value: Any) -> Any:
        """Mask strings anywhere inside mappings, lists, tuples and sets (keys included).

        Any other object (bytes, a custom class...) is written as ``str()`` by the
        JSON sinks, so it is replaced by its masked text when that text holds a secret.
        """
        if not self._forms:
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, Mapping):
            return {self.mask(k): self.mask(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.mask(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        text = str(value)
        masked = self.mask_text(text)
        return value if masked == text else masked

    def mask_event(self, event: Event) -> Event:
        """The event with its data masked (the same object when there is nothing to mask).

        The fields orch itself writes (``STRUCTURAL_FIELDS``: states, counts, phase
        ids, hashes...) are left alone, so that a short secret that happens to be
        part of ``skipped`` or of a phase id cannot corrupt the record; everything
        that carries user data (outputs, inputs, errors, streamed text, metadata,
        reasons) is masked, keys included.
        """
        if not self._forms or not event.data:
            return event
        data = {k: v if k in STRUCTURAL_FIELDS else self.mask(v) for k, v in event.data.items()}
        if event.event == "phase_completed" and (
            data.get("output") != event.data.get("output")
            or data.get("metadata") != event.data.get("metadata")
        ):
            # the stored output is not what later phases read: a resume runs it again
            data["secret_masked"] = True
        return Event(
            event.event, event.run_id, event.ts, event.phase, event.attempt, data, event.trace_id
        )

    def partial_tail(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some secret form (0 if none)."""
        best = 0
        for form in self._forms:
            # the end of text could be the first L characters of form (L < len(form))
            for size in range(min(len(form) - 1, len(text)), best, -1):
                if text.endswith(form[:size]):
                    best = size
                    break
        return best

    def stream(self) -> StreamMasker:
        """A masker for one stream of text pieces (secrets may span pieces)."""
        return StreamMasker(self)


class StreamMasker:
    """Masks a stream of text pieces: holds back a tail that might start a secret."""

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        self._pending = ""

    def feed(self, piece: str) -> str:
        """Masked text that is safe to emit now.

        Only a tail that could be the start of a secret form is held back (the
        longest suffix of the text that is a prefix of a form), so ordinary text
        flows as it comes however long the secrets are.
        """
        if not self._masker:
            return piece
        text = self._masker.mask_text(self._pending + piece)
        keep = self._masker.partial_tail(text)
        self._pending = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Whatever is held back, masked."""
        text, self._pending = self._masker.mask_text(self._pending), ""
        return text
