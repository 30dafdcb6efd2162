"""Events: the only output of a run (contract section 5), and the masking of secrets.

Every event is one JSON object with ``event``, ``run_id``, ``ts`` and, where it
applies, ``phase``, ``attempt`` and ``data``. The same objects reach the Python
API, ``--events jsonl``, the live display and the state store. Secrets are
masked here, in ``SecretMasker``, before any sink sees an event.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "EVENT_TYPES",
    "PHASE_STATES",
    "Event",
    "EventSink",
    "SecretMasker",
]

EventType = Literal[
    "workflow_started",
    "phase_started",
    "phase_stream",
    "phase_retry",
    "phase_completed",
    "phase_failed",
    "phase_skipped",
    "phase_compensated",
    "workflow_completed",
    "workflow_failed",
    "workflow_cancelled",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
PHASE_STATES: tuple[str, ...] = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
    "cancelled",
)
MASK = "***"
#: ``data`` fields whose values orch writes itself (never user data): not masked.
STRUCTURAL_FIELDS = frozenset(
    {
        "status",
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
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a run. ``ts`` is seconds since the epoch (float)."""

    event: str
    run_id: str
    ts: float
    phase: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The contract's JSON shape; keys that do not apply are left out."""
        out: dict[str, Any] = {"event": self.event, "run_id": self.run_id, "ts": self.ts}
        if self.phase is not None:
            out["phase"] = self.phase
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.data:
            out["data"] = self.data
        return out

    def to_json(self) -> str:
        """One line of ``--events jsonl``."""
        return json.dumps(self.as_dict(), ensure_ascii=False, default=str, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        """Inverse of as_dict; raises KeyError or TypeError on a malformed record."""
        return cls(
            event=str(raw["event"]),
            run_id=str(raw["run_id"]),
            ts=float(raw["ts"]),
            phase=raw.get("phase"),
            attempt=raw.get("attempt"),
            data=dict(raw.get("data") or {}),
        )


#: A sink receives every event, already masked. It may be sync or async; an
#: async sink is awaited before the engine goes on (the durable store relies on it).
EventSink = Callable[[Event], "Awaitable[None] | None"]


class SecretMasker:
    """Replaces secret values, and their base64 and URL-encoded forms, with ``***``.

    Longest values first; empty strings are never secrets. Streams that write a
    secret in pieces are handled by ``mask_stream``, which holds back a tail as
    long as the longest form until the next piece or ``flush``.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in secrets:
            if not value:
                continue
            forms.add(value)
            raw = value.encode()
            forms.add(base64.b64encode(raw).decode())
            forms.add(base64.urlsafe_b64encode(raw).decode())
            forms.add(base64.b64encode(raw).decode().rstrip("="))
            forms.add(urllib.parse.quote(value, safe=""))
            forms.add(urllib.parse.quote_plus(value))
            forms.add(json.dumps(value)[1:-1])  # as it appears inside JSON text
        self._forms = sorted((f for f in forms if len(f) >= 1), key=len, reverse=True)
        self._longest = max((len(f) for f in self._forms), default=0)

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
        return Event(event.event, event.run_id, event.ts, event.phase, event.attempt, data)

    def stream(self) -> StreamMasker:
        """A masker for one stream of text pieces (secrets may span pieces)."""
        return StreamMasker(self)


class StreamMasker:
    """Masks a stream of text pieces: holds back a tail that might start a secret."""

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        self._pending = ""

    def feed(self, piece: str) -> str:
        """Masked text that is safe to emit now."""
        if not self._masker:
            return piece
        text = self._masker.mask_text(self._pending + piece)
        keep = self._masker._longest - 1
        if keep <= 0 or len(text) <= keep:
            self._pending = text
            return ""
        self._pending = text[-keep:]
        return text[:-keep]

    def flush(self) -> str:
        """Whatever is held back, masked."""
        text, self._pending = self._masker.mask_text(self._pending), ""
        return text
