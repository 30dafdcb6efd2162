"""Helpers for engine tests: workflows built from plain dicts, a recording sink, test agents."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from orchestrator.agents import Agent, AgentContext, AgentFailure, AgentRegistry, AgentResult
from orchestrator.engine import RunOptions, execute
from orchestrator.events import Event
from orchestrator.expr import references, template_references
from orchestrator.plan import compile_plan
from orchestrator.spec.model import (
    AgentCall,
    AgentSpec,
    CircuitBreakerSpec,
    ErrorHandling,
    HandoffSpec,
    InputSpec,
    Phase,
    RateLimit,
    RetrySpec,
    Workflow,
)


def _refs(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, str):
        for chain in template_references(value):
            if len(chain) > 1 and chain[0] == "phases":
                found.add(chain[1])
    elif isinstance(value, dict):
        for v in value.values():
            found |= _refs(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found |= _refs(v)
    return found


def make_phase(spec: dict[str, Any]) -> Phase:
    spec = dict(spec)
    kw: dict[str, Any] = {}
    kw["with_"] = spec.pop("with", {})
    if "depends_on" in spec:
        kw["depends_on"] = tuple(spec.pop("depends_on"))
    if "retries" in spec:
        r = spec.pop("retries")
        kw["retries"] = RetrySpec(attempts=r) if isinstance(r, int) else RetrySpec(**r)
    if "fallback" in spec:
        f = spec.pop("fallback")
        kw["fallback"] = AgentCall(f["agent"], f.get("with", {}))
    if "handoff" in spec:
        h = spec.pop("handoff")
        kw["handoff"] = HandoffSpec(tuple(h["agents"]), h["start"], h.get("max_turns", 10))
        spec.setdefault("agent", None)
    kw.update(spec)
    refs = _refs(kw["with_"]) | _refs(kw.get("foreach"))
    if kw.get("when"):
        refs |= {c[1] for c in references(kw["when"]) if len(c) > 1 and c[0] == "phases"}
    deps = kw.get("depends_on", ())
    kw["implied_deps"] = tuple(sorted(r for r in refs if r not in deps))
    return Phase(**kw)


def make_workflow(phases: list[dict[str, Any]], **kw: Any) -> Workflow:
    agents = {}
    for name, a in (kw.pop("agents", None) or {}).items():
        a = dict(a)
        if "rate_limit" in a:
            a["rate_limit"] = RateLimit(*a["rate_limit"])
        if "circuit_breaker" in a:
            a["circuit_breaker"] = CircuitBreakerSpec(*a["circuit_breaker"])
        a["with_"] = a.pop("with", {})
        agents[name] = AgentSpec(name=name, **a)
    inputs = {
        name: InputSpec(name=name, **spec) for name, spec in (kw.pop("inputs", None) or {}).items()
    }
    if "error_handling" in kw:
        kw["error_handling"] = ErrorHandling(**kw["error_handling"])
    built = []
    previous = None
    for p in phases:
        p = dict(p)
        if kw.get("mode") == "sequential" and previous is not None:
            p.setdefault("depends_on", [previous])
            p["previous"] = previous
        previous = p["id"]
        built.append(make_phase(p))
    kw.setdefault("name", "test")
    return Workflow(phases=tuple(built), agents=agents, inputs=inputs, **kw)


def make_plan(phases: list[dict[str, Any]], **kw: Any):
    return compile_plan(make_workflow(phases, **kw))


class Recorder:
    """A sync sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self, phase: str | None = None) -> list[str]:
        return [e.event for e in self.events if phase is None or e.phase == phase]

    def index(self, kind: str, phase: str | None = None) -> int:
        for i, e in enumerate(self.events):
            if e.event == kind and (phase is None or e.phase == phase):
                return i
        raise AssertionError(f"no {kind} for {phase}: {self.kinds()}")

    def of(self, kind: str, phase: str | None = None) -> list[Event]:
        return [e for e in self.events if e.event == kind and (phase is None or e.phase == phase)]

    def one(self, kind: str, phase: str | None = None) -> Event:
        found = self.of(kind, phase)
        assert len(found) == 1, (kind, phase, self.kinds())
        return found[0]

    def started_order(self) -> list[str]:
        return [e.phase for e in self.events if e.event == "phase_started"]  # type: ignore[misc]


class Probe:
    """Counts how many calls are in flight at once, per key."""

    now: ClassVar[dict[str, int]] = {}
    peak: ClassVar[dict[str, int]] = {}
    calls: ClassVar[list[tuple[str, Any]]] = []
    times: ClassVar[list[float]] = []
    cancelled: ClassVar[list[str]] = []

    @classmethod
    def reset(cls) -> None:
        cls.now.clear()
        cls.peak.clear()
        cls.calls.clear()
        cls.times.clear()
        cls.cancelled.clear()


class ProbeAgent(Agent):
    """Sleeps ``seconds`` (default 0.01), counted in flight under ``key``; returns ``output``."""

    name = "probe"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx: AgentContext):
        key = input.get("key", "default")
        Probe.calls.append((ctx.phase_id, input.get("output", ctx.item_index)))
        Probe.times.append(time.monotonic())
        Probe.now[key] = Probe.now.get(key, 0) + 1
        Probe.peak[key] = max(Probe.peak.get(key, 0), Probe.now[key])
        try:
            await asyncio.sleep(float(input.get("seconds", 0.01)))
        except asyncio.CancelledError:
            Probe.cancelled.append(ctx.phase_id)
            raise
        finally:
            Probe.now[key] -= 1
        if input.get("fail"):
            raise AgentFailure(str(input["fail"]), transient=bool(input.get("transient", True)))
        return AgentResult(output=input.get("output"), metadata=dict(input.get("metadata", {})))


class RouterAgent(Agent):
    """For handoff tests: hands off to ``routes[instance_name]`` and outputs what it saw."""

    name = "router"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx: AgentContext):
        routes = input.get("routes", {})
        seen = input.get("handoff")
        return AgentResult(
            output={"agent": ctx.agent_name, "saw": seen}, handoff=routes.get(ctx.agent_name)
        )


class FlakyAgent(Agent):
    """Fails ``times`` attempts with ``retry_after``, then succeeds."""

    name = "flaky"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx: AgentContext):
        if ctx.attempt <= int(input.get("times", 1)):
            raise AgentFailure("busy", retry_after=input.get("retry_after"))
        return {"attempt": ctx.attempt}


class BrokenAgent(Agent):
    """Raises a plain Python exception (a bug in a plugin)."""

    name = "broken"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx: AgentContext):
        raise ValueError("plugin bug")


class StreamAgent(Agent):
    """Streams its ``pieces`` through ctx.stream and returns them joined."""

    name = "streamer"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx: AgentContext):
        for piece in input["pieces"]:
            await ctx.stream(piece)
        return "".join(input["pieces"])


@pytest.fixture
def registry() -> AgentRegistry:
    reg = AgentRegistry.from_entry_points()
    for cls in (ProbeAgent, RouterAgent, FlakyAgent, BrokenAgent, StreamAgent):
        reg.register(cls)
    Probe.reset()
    return reg


@pytest.fixture
def go(registry):
    """go(plan, **execute kwargs) -> (RunResult, Recorder): runs the plan in a fresh loop."""

    def run_it(plan, *, options: RunOptions | None = None, **kw):
        rec = Recorder()
        result = asyncio.run(execute(plan, registry=registry, options=options, sinks=[rec], **kw))
        return result, rec

    return run_it
