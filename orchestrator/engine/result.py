"""The values a run hands back: RunOptions in, PhaseOutcome and RunResult out.

Also the phase cache seam, ``ResultCache``. (Where an agent call runs is the
executor seam of ``engine/executor.py``.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import enum
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from ..frozen import quick_init
from ..jsontext import NotJson, number_problem
from ..usage import Usage, add_tokens

if TYPE_CHECKING:
    from ..agents.base import AgentResult
    from ..events import SecretMasker
    from ..spec.model import Phase
    from .executor import CallMiddleware, Executor

__all__ = [
    "PLAIN",
    "ApprovalDesk",
    "CancelRequest",
    "PhaseOutcome",
    "ResultCache",
    "RunOptions",
    "SpendParent",
    "RunResult",
    "Slots",
    "Usage",
    "add_tokens",
    "json_data",
]

#: the exact types ``json_data`` keeps as they are, without looking inside
PLAIN = frozenset({str, int, float, bool, type(None)})


class ApprovalDesk(Protocol):
    """Where decisions are recorded (``SqliteStore`` is one)."""

    def decision(self, run_id: str, phase: str) -> Any:
        """The decision for this phase (``.approved``, ``.who``, ``.at``, ``.comment``) or None."""
        ...

    def waiting_since(self, run_id: str, phase: str) -> float | None:
        """When the phase's current wait began (its last stored phase_waiting's
        ``since``; its first phase_waiting for events without one), or None."""
        ...

    def reopen(self, run_id: str, phase: str) -> bool:
        """Whether the phase's last wait ended in a refusal (its last phase_failed, after
        its last phase_waiting, records the decision): then it is asked again, and the
        refused decision is dropped (its record stays in that event). False otherwise."""
        ...


class Slots:
    """The run's ``max_parallel`` slots as a phase sees them: a phase that waits for a
    person (an approval) gives its slot back while it waits (``release``) and takes one
    again before it goes on (``take``). The scheduler (runner.py) keeps the count; this
    one (no limit, or a phase run outside the scheduler: a handler) does nothing."""

    __slots__ = ()

    def release(self) -> None:
        """The calling phase task waits for a person: its slot is free meanwhile."""

    async def take(self) -> None:
        """The calling phase task goes on: it waits for a free slot (first in line)."""


class SpendParent(Protocol):
    """Where a sub-run's spending also counts: the agent call that started it
    (``context.SubRuns``), for the calling phase of the run above (``budget.Spend``)."""

    def spent(self, metadata: Mapping[str, Any]) -> None:
        """Count one call's reported usage (``tokens``, ``cost``) for the calling phase."""
        ...

    def check(self) -> None:
        """Raise BudgetExceeded when a budget of the runs above is used up."""
        ...


@quick_init
@dataclass(frozen=True, slots=True)
class PhaseOutcome:
    """How one phase ended. ``status`` is a phase state (completed, failed, skipped, cancelled).

    Templates read it as ``phases.<id>.output|status|error|attempts|duration``.
    ``started``/``ended`` come from the run's clock (None for a phase never started).
    """

    id: str
    status: str
    output: Any = None
    error: str | None = None
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    fallback_used: bool = False
    cached: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds between start and end, or None when the phase never started."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class RunResult:
    """The end of a run. ``status`` is completed, failed or cancelled.

    ``completion_order`` lists the phases that completed, in the order they did
    (compensation runs them in reverse).
    """

    run_id: str
    status: str
    phases: Mapping[str, PhaseOutcome]
    outputs: Mapping[str, Any]
    error: str | None
    started: float
    ended: float
    completion_order: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the run completed."""
        return self.status == "completed"


class CancelRequest(asyncio.Event):
    """The ``cancel`` event of a run that also records who asked (``by``, e.g. ``SIGTERM``);
    ``by`` is written into workflow_cancelled as ``cancelled_by``."""

    def __init__(self) -> None:
        super().__init__()
        self.by: str | None = None
        self.forced = False
        self._interruptible: asyncio.Task[Any] | None = None  # see ``interruptible``

    def request(self, by: str | None = None, *, force: bool = False) -> None:
        """Cancel the run; the first ``by`` given is kept. ``force``: stop now (a second
        Ctrl-C): running phases are killed (the saga then runs); while compensating,
        handlers not started are not run, compensations not started are left pending.
        Once the run only records its end, ``force`` changes nothing: it ends cancelled."""
        if self.by is None:
            self.by = by
        self.forced = self.forced or force
        self.set()
        if force and self._interruptible is not None:
            self._interruptible.cancel()  # what the run awaits there stops now

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """The part of a run a forced request interrupts: within it, ``request(force=True)``
        cancels the calling task (the run's), whose code there takes that cancel (the
        scheduler kills the phases; a compensation, a handler or the fallback workflow
        is recorded as stopped). Outside it (the run recording its end, closing its
        agents and its store) a forced request is only noted: nothing there is cut."""
        self._interruptible = asyncio.current_task()
        try:
            yield
        finally:
            self._interruptible = None


def interruptible(cancel: asyncio.Event | None) -> contextlib.AbstractContextManager[None]:
    """``cancel.interruptible()`` for a CancelRequest; for a plain event or none (nothing
    can force the run), a context that does nothing."""
    if isinstance(cancel, CancelRequest):
        return cancel.interruptible()
    return contextlib.nullcontext()


class ResultCache(Protocol):
    """Where the phase cache plugs in: looked up before the first attempt, stored after success.

    ``input`` is the phase's rendered input; ``agent_type`` the agent's type name.
    """

    async def get(
        self, phase: Phase, agent_type: str, input: Mapping[str, Any]
    ) -> AgentResult | None:
        """The cached result of an identical earlier call, or None."""
        ...

    async def put(
        self, phase: Phase, agent_type: str, input: Mapping[str, Any], result: AgentResult
    ) -> None:
        """Remember a successful call (never one whose result holds a secret of the run:
        the engine keeps those out, ``phase._holds_secret``)."""
        ...


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run: ``max_parallel`` overrides the workflow's; ``clock`` gives event times.

    ``clock`` returns seconds since the epoch (tests pass a fake one);
    ``monotonic`` measures timeouts, deadlines, rate limits and breakers.
    ``environ`` is what ``env.`` and ``secrets.`` read (a copy of ``os.environ``
    taken when the options are made); ``workdir`` is where a workflow built in
    memory resolves relative paths (the current folder when the options are
    made). ``executor`` runs each agent call (``engine/executor.py``; the local
    one by default); ``call_middleware`` wraps every agent call (``engine/call.py``).
    ``cache`` defaults to none. ``depth`` counts nested sub-runs; more than
    ``max_depth`` fails the calling phase. ``resumed_from`` (a run id) is
    recorded in workflow_started. ``trace_id`` (tracing on) is stamped on every event.
    ``budget_parent`` is set for a sub-run: what it spends counts for the calling
    phase of the run that started it, whose budgets it also obeys (``budget.py``);
    ``masker_above`` too: the masker of the run that started it, whose secrets (an
    input of the sub-run may hold one) the sub-run masks as well as its own.
    ``resume_attempts`` maps a phase to the
    attempt it was making when a crash stopped the run: resumed, it starts
    there, with the retries (and backoff) that were left. ``approvals`` is where
    decisions on phases with ``approval:`` are read (the state store).
    ``resume_iterations`` maps a ``repeat`` phase to its last checkpointed
    iteration (n, output, done): resumed, the loop goes on after it (or, done,
    completes with that output). ``resume_items``
    maps a ``foreach`` phase to its items completed before a crash (index ->
    output): resumed, only the other items run. ``resume_spent`` maps a phase to
    the tokens and cost its calls used in earlier launches of a resumed run (its
    last recorded spending, an end's metadata or a step's ``spent``, which sums every
    launch before it): the
    run's ``Spend`` starts from them and from the metadata of ``execute``'s ``prior``
    outcomes (``resume_spent`` wins for a phase it names; a caller passing only
    ``prior`` has its outcomes counted), so budgets and the phase's recorded usage
    cover every launch. ``replay``: agent
    calls are answered by a middleware (``--replay``), so secrets that are not set
    are not needed. ``key_epochs`` maps a
    phase that ended *failed* in an earlier launch to that launch's number: its
    idempotency keys end in ``~N``, so a server that deduplicates answers the new
    attempts instead of replaying the stored failure (an attempt cut by a crash
    keeps its key: its request may have been served). ``trigger`` tells what
    started the run (``orch serve``: schedule, webhook, after, api): templates read
    it as ``trigger.*`` and workflow_started records it.
    """

    max_parallel: int | None = None
    no_cache: bool = False
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    workdir: str = field(default_factory=os.getcwd)
    executor: Executor | None = None
    call_middleware: tuple[CallMiddleware, ...] = ()
    cache: ResultCache | None = None
    depth: int = 0
    max_depth: int = 8
    resumed_from: str | None = None
    resume_attempts: Mapping[str, int] = field(default_factory=dict)
    approvals: ApprovalDesk | None = None
    resume_iterations: Mapping[str, tuple[int, Any, bool]] = field(default_factory=dict)
    resume_items: Mapping[str, Mapping[int, Any]] = field(default_factory=dict)
    resume_spent: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    replay: bool = False
    key_epochs: Mapping[str, int] = field(default_factory=dict)
    trigger: Mapping[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    budget_parent: SpendParent | None = None
    masker_above: SecretMasker | None = None


def json_data(value: Any) -> Any:
    """``value`` as JSON data, the form the state store keeps and a resumed run reads.

    Phase outputs are JSON data: the engine converts every agent result once, so a
    later phase sees the same value in the run and after a resume. Tuples become
    lists; sets become sorted lists (in iteration order when not sortable); dates
    and times ISO 8601 strings; bytes their UTF-8 text, or base64 when not UTF-8;
    ``Decimal`` its exact text (``str``); an enum its value; mapping keys strings
    (as ``json.dumps`` writes them); anything else ``str(value)``. Plain values
    come back as they are. Raises NotJson (naming the value) for NaN, Infinity
    and integers of more than 4,300 digits, which JSON text cannot carry; never
    raises otherwise for a value whose ``str`` does not.
    """
    kind = type(value)
    if kind in PLAIN:
        if kind is float or kind is int:
            _check_number(value)
        return value
    if kind is dict or isinstance(value, Mapping):
        return {_json_key(k): json_data(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [json_data(v) for v in value]
    if isinstance(value, (set, frozenset)):
        try:
            members = sorted(value)
        except TypeError:
            members = list(value)
        return [json_data(v) for v in members]
    if isinstance(value, enum.Enum):
        return json_data(value.value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        plain = int(value) if isinstance(value, int) else float(value)
        _check_number(plain)
        return plain
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (list, tuple)):
        return [json_data(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _check_number(value: Any) -> None:
    problem = number_problem(value)
    if problem is not None:
        raise NotJson(f"holds {problem}")


def _json_key(key: Any) -> str:
    if type(key) is str:
        return key
    if key is None or isinstance(key, (bool, int, float)) and not isinstance(key, enum.Enum):
        _check_number(key)
        return json.dumps(key)  # None -> "null", True -> "true", 1.5 -> "1.5", as json writes
    converted = json_data(key)
    return converted if isinstance(converted, str) else str(converted)
