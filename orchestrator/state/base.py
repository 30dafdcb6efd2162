"""The state store's contract: the PhaseState enum, stored records, and the StateStore Protocol.

The engine and the CLI depend on this module only; ``state/sqlite.py`` is the
implementation (and the only sqlite3 import).
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import UsageError
from ..events import Event, PhaseState

__all__ = [
    "PAGE",
    "RUN_STATES",
    "CachedResult",
    "Decision",
    "Owner",
    "PhaseRecord",
    "PhaseState",
    "RunRecord",
    "StateStore",
    "check_run_id",
    "current_owner",
    "each_event",
    "new_run_id",
    "process_start_time",
]

#: Run states as shown by ``orch runs``; ``interrupted`` is a run recorded as
#: running whose owner process is gone (killed, crashed, machine rebooted).
RUN_STATES: tuple[str, ...] = ("running", "completed", "failed", "cancelled", "interrupted")
#: Events per read of the store while following a run or walking its events: a long
#: run's are never read at once.
PAGE = 1000

#: A run id: a plain token (it names files, such as a detached run's log and
#: `orch report`'s folder, and cells of `orch runs`): never '.', '..', a path or a space.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def new_run_id() -> str:
    """A fresh run id (12 hex digits): every run orch starts gets one of these."""
    return uuid.uuid4().hex[:12]


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is a plain token (a letter or digit, then up to 63 letters,
    digits, '.', '_' or '-'); else UsageError."""
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"{run_id!r} cannot be a run id: it must start with a letter or a digit, then"
            " up to 63 letters, digits, '.', '_' or '-'",
            hint="leave out --run-id (run_id=) and orch picks a new one",
        )
    return run_id


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that owns a run: its pid and its start time (None where unknown)."""

    pid: int
    start: str | None = None

    def alive(self) -> bool:
        """Whether this very process still runs: same pid and same start time, not a zombie."""
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, owned by someone else
        stat = _proc_stat(self.pid)
        if stat is None:
            return True  # no /proc: pid alone is all we know
        state, start = stat
        if state in ("Z", "X"):
            return False
        return self.start is None or start == self.start

    def __str__(self) -> str:
        return f"pid {self.pid}"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from /proc/<pid>/stat, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # field 3 (state) and field 22 (starttime)


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None where unknown."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def current_owner() -> Owner:
    """The Owner describing this process."""
    pid = os.getpid()
    return Owner(pid, process_start_time(pid))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored. ``status`` is already ``interrupted`` when the owner is gone."""

    id: str
    workflow: str
    path: str
    status: str
    started: float
    ended: float | None = None
    source_hash: str = ""
    owner: Owner | None = None
    resumes: int = 0
    error: str | None = None
    outputs: Any = None
    phase_ids: tuple[str, ...] = ()
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    trace_id: str | None = None  # the OpenTelemetry trace of its last start (tracing on)
    #: the workflow's text when it was not started from a file (its ``path`` is ``<memory>``)
    source: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None while running)."""
        return None if self.ended is None else max(0.0, self.ended - self.started)

    @property
    def finished(self) -> bool:
        """Whether the run reached a final state (completed, failed, cancelled)."""
        return self.status in ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    """One phase of a run as stored. ``completed_seq`` orders completions (saga order).

    ``compensated`` is None until its compensation ended (True ok, False failed);
    ``compensation_started`` is set once the saga began compensating it.
    """

    run_id: str
    id: str
    state: PhaseState
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    output: Any = None
    error: str | None = None
    cached: bool = False
    fallback_used: bool = False
    completed_seq: int | None = None
    compensated: bool | None = None
    compensation_error: str | None = None
    compensation_started: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds the phase ran (None when it has not ended)."""
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's decision on a phase waiting for approval (``orch approve``/``reject``)."""

    run_id: str
    phase: str
    approved: bool
    who: str
    at: float
    comment: str | None = None

    @property
    def verb(self) -> str:
        """approved or rejected."""
        return "approved" if self.approved else "rejected"

    @property
    def text(self) -> str:
        """``approved by alice: checked the canary``: what was decided, by whom, why."""
        why = f": {self.comment}" if self.comment else ""
        return f"{self.verb} by {self.who}{why}"


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A cached phase output and its metadata."""

    output: Any
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created: float = 0.0


class StateStore(Protocol):
    """What the engine and the CLI need from a state store.

    ``record`` is the event sink: it returns once the event is durable.
    Readers raise RunNotFound for an unknown run and StateCorrupted for a row
    that cannot be read (naming run, phase and row).
    """

    async def record(self, event: Event) -> None:
        """Store one event (and the derived run and phase rows) durably."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id (or unique id prefix)."""
        ...

    def claim(self, run_id: str, *, rerun: Iterable[str] = ()) -> RunRecord:
        """Make this process the owner of a stopped run (to resume it); ``rerun`` phases go
        back to pending. Raises RunLocked when a live process owns it."""
        ...

    def list_runs(self, limit: int | None = None) -> Sequence[RunRecord]:
        """Runs, newest first."""
        ...

    def phases(self, run_id: str) -> Sequence[PhaseRecord]:
        """The phases of a run, in plan order."""
        ...

    def events(
        self, run_id: str, *, phase: str | None = None, after: int = 0, limit: int | None = None
    ) -> Sequence[tuple[int, Event]]:
        """The run's events with their sequence numbers, oldest first (the first ``limit``)."""
        ...

    def cache_get(self, key: str, *, now: float) -> CachedResult | None:
        """The cached result for ``key`` if present and not expired at ``now``."""
        ...

    async def cache_put(
        self, key: str, output: Any, metadata: Mapping[str, Any], *, now: float, ttl: float | None
    ) -> None:
        """Remember ``output`` for ``key`` (durably) until ``now + ttl`` (forever when None)."""
        ...


class _Events(Protocol):
    def events(
        self, run_id: str, *, phase: str | None = None, after: int = 0, limit: int | None = None
    ) -> Sequence[tuple[int, Event]]: ...


def each_event(store: _Events, run_id: str, *, after: int = 0) -> Iterator[tuple[int, Event]]:
    """The run's stored events after ``after``, oldest first, read ``PAGE`` at a time (a
    long run's are never read at once)."""
    while True:
        batch = store.events(run_id, after=after, limit=PAGE)
        yield from batch
        if len(batch) < PAGE:
            return
        after = batch[-1][0]
