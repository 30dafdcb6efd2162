"""The workflow as frozen values: what the user wrote, checked, with defaults applied.

``spec.build`` produces these from the raw YAML mapping; everything downstream
(plan, engine, render) reads only these types. Durations are seconds (float).
Mappings taken from YAML (``with_``, ``outputs``...) are plain dicts and lists
that nothing may mutate: the engine renders copies.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..errors import Location

__all__ = [
    "PRIORITIES",
    "TRIGGERS",
    "AgentCall",
    "AgentChoice",
    "AgentSpec",
    "ApprovalSpec",
    "CacheSpec",
    "CircuitBreakerSpec",
    "ErrorHandling",
    "HandoffSpec",
    "InputSpec",
    "Phase",
    "RateLimit",
    "RepeatSpec",
    "RetrySpec",
    "Schedule",
    "Trigger",
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
class AgentChoice:
    """``agent: {one_of, select}``: the agent is chosen at run time by a template."""

    one_of: tuple[str, ...]
    select: str


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """A person decides (``orch approve``/``orch reject``) before the phase runs.

    ``timeout`` in seconds (None: no limit); ``on_timeout`` is what a timeout decides.
    """

    message: str | None = None
    timeout: float | None = None
    on_timeout: str = "reject"  # reject | approve


@dataclass(frozen=True, slots=True)
class RepeatSpec:
    """Run a phase again until ``until`` (a condition over ``output`` and ``iteration``)
    is true, at most ``max`` times; ``on_max``: what the phase does when ``until`` was
    still false after ``max`` iterations (complete with the last output, or fail)."""

    max: int
    until: str | None = None
    on_max: str = "complete"  # complete | fail


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
    capabilities: tuple[str, ...] = ()
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
class Budget:
    """A spending limit (``budget:``): most tokens and/or most cost; None: no limit."""

    tokens: int | None = None
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """One ``schedule:`` entry, fired by ``orch serve``: ``cron`` (five fields or a macro)
    in ``timezone``, or the one-shot ``run_at`` (ISO 8601 with an offset).

    ``overlap``: skip | queue | allow | cancel_previous, when a run of the workflow is
    still active; ``catchup``: after downtime, False fires at most the latest missed time.
    """

    cron: str | None = None
    timezone: str = "UTC"
    inputs: Mapping[str, Any] = field(default_factory=dict)
    location: Location | None = None
    run_at: str | None = None
    overlap: str = "skip"
    catchup: bool = False


@dataclass(frozen=True, slots=True)
class Trigger:
    """One ``triggers:`` entry: ``webhook`` opens POST /api/workflows/NAME/runs; ``after``
    starts the workflow when a run of ``after`` ends with ``status`` (or any end: ``any``)."""

    webhook: bool = False
    after: str | None = None
    status: str = "completed"
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Phase:
    """One node of the workflow, with defaults already applied.

    ``depends_on`` holds what the user wrote (plus the previous phase in
    sequential mode); ``implied_deps`` holds phases referenced as ``phases.X``
    in templates and not already in ``depends_on``. ``agent`` is None for
    handoff phases and for phases whose agent is chosen at run time: by
    ``capability`` (``candidates`` are the agents listing it) or by ``choice``
    (``agent: {one_of, select}``). ``previous`` is the phase listed before this one in
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
    resources: Mapping[str, float] = field(default_factory=dict)  # Dask worker resources
    previous: str | None = None
    budget: Budget | None = None
    capability: str | None = None
    choice: AgentChoice | None = None
    candidates: tuple[str, ...] = ()  # the agents a capability or a choice may pick
    approval: ApprovalSpec | None = None
    repeat: RepeatSpec | None = None
    location: Location | None = None
    #: where ``when``, ``foreach`` and each ``with.KEY`` are written (a failing template
    #: is reported there, not at the phase's first line)
    locations: Mapping[str, Location] = field(default_factory=dict)

    @property
    def all_deps(self) -> tuple[str, ...]:
        """Explicit then implied dependencies, without repeats."""
        return self.depends_on + tuple(d for d in self.implied_deps if d not in self.depends_on)

    @property
    def agent_names(self) -> tuple[str, ...]:
        """Every agent the phase may call: its own (or the candidates of a capability or a
        select), its fallback's, compensation's, handoff's."""
        names = [self.agent] if self.agent else list(self.candidates)
        names += [call.agent for call in (self.fallback, self.compensate) if call is not None]
        names += self.handoff.agents if self.handoff else ()
        return tuple(names)

    @property
    def agent_label(self) -> str:
        """The phase's agent for people: its name, the handoff's first agent, or how it is
        chosen at run time (``capability X``, ``one of a, b``)."""
        if self.agent:
            return self.agent
        if self.handoff is not None:
            return self.handoff.start
        if self.capability is not None:
            return f"capability {self.capability}"
        if self.choice is not None:
            return "one of " + ", ".join(self.choice.one_of)
        return ""

    @property
    def priority_rank(self) -> int:
        """0 for critical ... 4 for background."""
        return PRIORITIES.index(self.priority)

    @property
    def fingerprint(self) -> str:
        """A stable hash of the phase definition (for resume: which phases changed)."""
        return _fingerprint(self, exclude=("location", "locations"))


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
    budget: Budget | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    on_success: tuple[Phase, ...] = ()
    on_failure: tuple[Phase, ...] = ()
    finally_: tuple[Phase, ...] = ()
    schedule: tuple[Schedule, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    secret_names: frozenset[str] = frozenset()
    #: the environment variables templates name (``env.NAME``): all that ``env`` holds
    env_names: frozenset[str] = frozenset()
    source_hash: str = ""
    #: the text it was built from when it is not a file (YAML text; a mapping's indented
    #: JSON): its runs record it, so that ``orch resume`` can go on with them
    text: str = ""

    def call_input(self, agent: str | None, with_: Mapping[str, Any]) -> Mapping[str, Any]:
        """The ``with:`` of one call: the call's ``with_`` merged (shallow) over the named
        agent's own ``with`` (a bare agent type has none). The one place this merge is done.
        """
        spec = self.agents.get(agent) if agent else None
        return {**spec.with_, **with_} if spec is not None and spec.with_ else with_

    def fingerprints(self) -> dict[str, str]:
        """Per phase id, a hash of the phase and of the named agents it calls.

        Resume compares these with the stored ones: editing a phase, or the
        ``agents:`` entry it (or its fallback or compensation) uses, changes it.
        """
        agent_prints: dict[str, str] = {}

        def agent_print(name: str | None) -> str:
            if name is None or name not in self.agents:
                return ""
            if name not in agent_prints:
                agent_prints[name] = _fingerprint(self.agents[name], exclude=("location",))
            return agent_prints[name]

        out: dict[str, str] = {}
        for p in self.phases:
            extra = "".join(agent_print(a) for a in p.agent_names)
            own = p.fingerprint
            out[p.id] = own if not extra else _fingerprint((own, extra))
        return out

    def agent_types(self) -> list[str]:
        """The agent types the workflow uses (handlers included), sorted: a name under
        ``agents:`` counts as its type, a bare type as itself."""
        types = set()
        for p in (*self.phases, *self.on_success, *self.on_failure, *self.finally_):
            for name in p.agent_names:
                spec = self.agents.get(name)
                types.add(spec.type if spec is not None else name)
        return sorted(types)

    def phase(self, phase_id: str) -> Phase:
        """The phase with this id; raises KeyError when there is none."""
        for p in self.phases:
            if p.id == phase_id:
                return p
        raise KeyError(phase_id)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _fingerprint(obj: Any, *, exclude: tuple[str, ...] = ()) -> str:
    # sha256 of the repr of a canonical form: exact for scalars, mapping keys sorted,
    # ``exclude`` dropped at every level, and fields still at their default left out (so a
    # field added later with a default does not change earlier fingerprints). Cheap on
    # purpose: every run fingerprints every phase.
    import hashlib  # not at import: `orch validate` never needs it

    return hashlib.sha256(repr(_canonical(obj, exclude)).encode()).hexdigest()[:16]


class _Layout:
    """The fields of one dataclass minus some names: a getter of their values (one tuple
    per call), their names and defaults, in field order."""

    __slots__ = ("get", "names", "defaults")

    def __init__(self, cls: type, exclude: tuple[str, ...]) -> None:
        names: list[str] = []
        defaults: list[Any] = []
        for f in fields(cls):
            if f.name in exclude:
                continue
            names.append(f.name)
            if f.default is not MISSING:
                defaults.append(f.default)
            elif f.default_factory is not MISSING:
                defaults.append(f.default_factory())
            else:
                defaults.append(_NO_DEFAULT)
        self.names = tuple(names)
        self.defaults = tuple(defaults)
        if len(names) > 1:
            self.get: Any = operator.attrgetter(*names)
        else:  # attrgetter of one name gives the value itself, not a tuple
            self.get = lambda obj: tuple(getattr(obj, n) for n in names)


_LAYOUTS: dict[tuple[type, tuple[str, ...]], _Layout] = {}
_NO_DEFAULT = object()


def _canonical(value: Any, exclude: tuple[str, ...]) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if hasattr(kind, "__dataclass_fields__"):
        layout = _LAYOUTS.get((kind, exclude))
        if layout is None:
            layout = _LAYOUTS[(kind, exclude)] = _Layout(kind, exclude)
        out = []
        for name, default, v in zip(layout.names, layout.defaults, layout.get(value), strict=True):
            if v is default or (type(v) is type(default) and v == default):
                continue
            out.append((name, v if type(v) in _SCALARS else _canonical(v, exclude)))
        return (kind.__name__, tuple(out))
    if isinstance(value, Mapping):
        items = [(str(k), _canonical(v, exclude)) for k, v in value.items()]
        items.sort(key=lambda kv: kv[0])
        return ("{}", tuple(items))
    if isinstance(value, (list, tuple)):
        return tuple(v if type(v) in _SCALARS else _canonical(v, exclude) for v in value)
    return repr(value)
