"""The workflow as frozen values: what the user wrote, checked, with defaults applied.

``spec.build`` produces these from the raw YAML mapping; everything downstream
(plan, engine, render) reads only these types. Durations are seconds (float).
Mappings taken from YAML (``with_``, ``outputs``...) are plain dicts and lists
that nothing may mutate: the engine renders copies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import Location

__all__ = [
    "PRIORITIES",
    "TRIGGERS",
    "AgentCall",
    "AgentSpec",
    "CacheSpec",
    "CircuitBreakerSpec",
    "ErrorHandling",
    "HandoffSpec",
    "InputSpec",
    "Phase",
    "RateLimit",
    "RetrySpec",
    "Schedule",
    "Workflow",
]

#: Priority names, most urgent first; the index is the rank (lower runs first).
PRIORITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "background")
#: Trigger rules: what the upstream outcomes must be for a phase to run.
TRIGGERS: tuple[str, ...] = ("all_success", "all_done", "none_failed", "one_success")
#: Sentinel for "no default given" on inputs.
NO_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class RetrySpec:
    """How a phase retries. ``attempts`` counts retries after the first try (0: none)."""

    attempts: int = 0
    backoff: str = "exponential"  # exponential | linear | fixed
    delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.0  # up to this many seconds added at random to each wait
    on: tuple[str, ...] = ("error", "timeout")


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """Reuse an earlier identical call's output. ``key`` is a template; ``ttl`` seconds."""

    key: str | None = None
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class AgentCall:
    """An agent and its input, as used by ``fallback`` and ``compensate``."""

    agent: str
    with_: Mapping[str, Any] = field(default_factory=dict)
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class HandoffSpec:
    """Agents that pass control by naming the next one; ``start`` runs first."""

    agents: tuple[str, ...]
    start: str
    max_turns: int = 10


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``count`` calls per ``per`` seconds (``10/s`` -> 10, 1.0)."""

    count: int
    per: float

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.count / self.per


@dataclass(frozen=True, slots=True)
class CircuitBreakerSpec:
    """Open after ``failures`` consecutive failures; half-open after ``reset_after`` seconds."""

    failures: int = 5
    reset_after: float = 60.0


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """A named agent instance under ``agents:``."""

    name: str
    type: str
    with_: Mapping[str, Any] = field(default_factory=dict)
    max_concurrency: int | None = None
    rate_limit: RateLimit | None = None
    circuit_breaker: CircuitBreakerSpec | None = None
    description: str | None = None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A typed run parameter. ``type`` is a JSON Schema type name."""

    name: str
    type: str = "string"  # string | integer | number | boolean | array | object
    required: bool = False
    default: Any = NO_DEFAULT
    description: str | None = None
    location: Location | None = None

    @property
    def has_default(self) -> bool:
        """Whether the workflow gives a default value."""
        return self.default is not NO_DEFAULT


@dataclass(frozen=True, slots=True)
class ErrorHandling:
    """Run-wide failure policy."""

    continue_on_error: bool = False
    fallback_workflow: str | None = None
    max_total_retries: int | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule for ``orch schedule``; ``cron`` has five fields."""

    cron: str
    timezone: str = "UTC"
    inputs: Mapping[str, Any] = field(default_factory=dict)
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Phase:
    """One node of the workflow, with defaults already applied.

    ``depends_on`` holds what the user wrote (plus the previous phase in
    sequential mode); ``implied_deps`` holds phases referenced as ``phases.X``
    in templates and not already in ``depends_on``. ``agent`` is None only for
    handoff phases. ``previous`` is the phase listed before this one in
    sequential mode (``previous.output``).
    """

    id: str
    agent: str | None
    with_: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    depends_on: tuple[str, ...] = ()
    implied_deps: tuple[str, ...] = ()
    when: str | None = None
    trigger: str = "all_success"
    timeout: float | None = None
    retries: RetrySpec = field(default_factory=RetrySpec)
    continue_on_error: bool = False
    fallback: AgentCall | None = None
    compensate: AgentCall | None = None
    cache: CacheSpec | None = None
    foreach: Any = None  # a list, or a template string that gives one
    max_parallel: int | None = None  # bound on concurrent foreach items
    handoff: HandoffSpec | None = None
    priority: str = "medium"
    estimated_duration: float | None = None
    previous: str | None = None
    location: Location | None = None

    @property
    def all_deps(self) -> tuple[str, ...]:
        """Explicit then implied dependencies, without repeats."""
        return self.depends_on + tuple(d for d in self.implied_deps if d not in self.depends_on)

    @property
    def priority_rank(self) -> int:
        """0 for critical ... 4 for background."""
        return PRIORITIES.index(self.priority)

    @property
    def fingerprint(self) -> str:
        """A stable hash of the phase definition (for resume: which phases changed)."""
        return _fingerprint(self, exclude=("location",))


@dataclass(frozen=True, slots=True)
class Workflow:
    """A whole workflow file, checked. ``source_hash`` is sha256 of the file's bytes."""

    name: str
    phases: tuple[Phase, ...]
    path: str = "<memory>"
    version: int = 1
    description: str | None = None
    inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    agents: Mapping[str, AgentSpec] = field(default_factory=dict)
    max_parallel: int | None = None
    mode: str = "dag"  # dag | sequential
    timeout: float | None = None
    error_handling: ErrorHandling = field(default_factory=ErrorHandling)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    on_success: tuple[Phase, ...] = ()
    on_failure: tuple[Phase, ...] = ()
    finally_: tuple[Phase, ...] = ()
    schedule: tuple[Schedule, ...] = ()
    secret_names: frozenset[str] = frozenset()
    source_hash: str = ""

    def phase(self, phase_id: str) -> Phase:
        """The phase with this id; raises KeyError when there is none."""
        for p in self.phases:
            if p.id == phase_id:
                return p
        raise KeyError(phase_id)


def _fingerprint(obj: Any, *, exclude: tuple[str, ...] = ()) -> str:
    def plain(value: Any) -> Any:
        if hasattr(value, "__dataclass_fields__"):
            return {
                k: plain(getattr(value, k)) for k in value.__dataclass_fields__ if k not in exclude
            }
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Location):
            return None
        return value

    def default(value: Any) -> Any:
        # json calls this only for what it cannot encode itself: the same shapes as plain()
        if hasattr(value, "__dataclass_fields__"):
            return {k: getattr(value, k) for k in value.__dataclass_fields__ if k not in exclude}
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        return repr(value)

    try:  # fast: the C encoder walks the value (the engine fingerprints every phase per run)
        text = json.dumps(obj, sort_keys=True, default=default)
    except (TypeError, ValueError):  # keys json cannot sort or encode: the slow, general path
        text = json.dumps(plain(obj), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
