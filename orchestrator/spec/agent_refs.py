"""Agents in a workflow: the ``agents:`` section, agent names in phases, and their ``with:``.

A name is an instance under ``agents:`` or an installed agent type; each phase's
``with`` (merged over its agent's ``with``) is checked against the type's config
schema, then by the type's own ``check_static``. A type that cannot load is one
problem per file, at the first place that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    AgentConfigError,
    AgentError,
    AgentLoadError,
    Problem,
    SchemaViolation,
    UnknownReference,
    one_line,
)
from .context import Checker, as_int, duration, get, mapping, str_or_none, unknown
from .model import AgentChoice, AgentSpec, CircuitBreakerSpec, HandoffSpec, RateLimit
from .schema import check_agent_config
from .source import JsonPath
from .values import parse_rate_limit

__all__ = ["check_agent", "check_candidates", "handoff_spec", "named_agents"]


def named_agents(cx: Checker, raw: Any) -> dict[str, AgentSpec]:
    """The ``agents:`` section as AgentSpecs; each type is resolved once, problems recorded."""
    out: dict[str, AgentSpec] = {}
    if not isinstance(raw, Mapping):
        return out
    for name, spec in raw.items():
        path = ("agents", name)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
            cx.bad_agents.add(name)
            continue
        type_name = spec["type"]
        if cx.ok(path + ("type",)) and not _resolve_type(cx, type_name, path + ("type",)):
            cx.bad_agents.add(name)
        rate: RateLimit | None = None
        parsed = parse_rate_limit(spec.get("rate_limit", ""))
        if parsed is not None:
            count, per = parsed
            if count == 0 and cx.ok(path + ("rate_limit",)):
                cx.add(
                    SchemaViolation(
                        f"agents.{name}.rate_limit: a rate limit must allow at least 1 call",
                        location=cx.smap.value(path + ("rate_limit",)),
                    )
                )
            rate = RateLimit(max(count, 1), per)
        breaker: CircuitBreakerSpec | None = None
        cb = spec.get("circuit_breaker")
        if isinstance(cb, Mapping):
            failures = cb.get("failures", 5)
            reset = duration(
                cx,
                cb.get("reset_after"),
                path + ("circuit_breaker", "reset_after"),
                positive="the reset delay",
            )
            breaker = CircuitBreakerSpec(
                failures=as_int(failures, 5),
                reset_after=reset if reset is not None else 60.0,
            )
        with_ = mapping(spec.get("with"))
        mc = spec.get("max_concurrency")
        caps = spec.get("capabilities") if cx.ok(path + ("capabilities",)) else None
        caps = [c for c in caps if isinstance(c, str)] if isinstance(caps, list) else []
        out[name] = AgentSpec(
            name=name,
            type=type_name,
            with_=dict(with_),
            max_concurrency=as_int(mc, None),
            rate_limit=rate,
            circuit_breaker=breaker,
            description=str_or_none(spec.get("description")),
            capabilities=tuple(caps),
            location=cx.smap.key(path),
        )
    return out


def _resolve_type(cx: Checker, type_name: str, path: JsonPath) -> type[Any] | None:
    """The agent class of a type name, or None after reporting why it cannot be used."""
    try:
        return cx.registry.resolve(type_name)
    except AgentError as exc:
        if isinstance(exc, AgentLoadError):
            # an installed type that cannot load is one problem per file, at its first use
            if type_name in cx.unloadable:
                return None
            cx.unloadable.add(type_name)
        message, hint = exc.message, exc.hint
        if hint and hint.startswith("did you mean"):
            message, hint = f"{message}; {hint}", None
        cx.add(UnknownReference(message, location=cx.smap.value(path), hint=hint))
        return None


def check_agent(
    cx: Checker, name: str, with_: Mapping[str, Any], path: JsonPath, owner: str
) -> Mapping[str, Any]:
    """Resolve a phase's agent name and check its merged ``with``; the merged config."""
    where = path + ("agent",)
    if name in cx.agents or name in cx.bad_agents:
        if name in cx.bad_agents:
            return dict(with_)
        spec = cx.agents[name]
        type_name = spec.type
        base: Mapping[str, Any] = spec.with_
    elif name in cx.registry:
        type_name, base = name, {}
    else:
        choices = sorted(set(cx.agents) | set(cx.registry.names()))
        cx.add(
            unknown(
                cx,
                "agent",
                name,
                None,
                choices,
                cx.smap.value(where),
                hint="name an agent under agents: or an agent type (see 'orch agents')",
            )
        )
        return dict(with_)
    cls = _resolve_type(cx, type_name, where) if name not in cx.agents else _quiet(cx, type_name)
    merged = {**base, **with_}
    if cls is None:
        return merged

    def at(rel: JsonPath) -> JsonPath:
        if not rel:
            return path + ("with",) if "with" in get(cx.src.data, path) else where
        if rel[0] in with_:
            return path + ("with",) + rel
        return ("agents", name, "with") + rel

    def owner_of(rel: JsonPath) -> str:
        if rel and rel[0] not in with_ and name in cx.agents:
            return f"the with of agent '{name}' (agent type '{type_name}')"
        return f"{owner} (agent type '{type_name}')"

    result = check_agent_config(merged, cls.config_schema, cx.smap, at=at, owner=owner_of)
    cx.problems.extend(result.problems)
    if not result.problems:
        try:
            found = cls.check_static(merged, workflow_path=cx.src.path)
        except Exception as exc:  # a plugin's check must not crash validation
            found = []
            cx.add(
                AgentConfigError(
                    f"agent type '{type_name}' failed to check {owner}: {one_line(exc)}",
                    location=cx.smap.value(where),
                )
            )
        for cp in found:
            p = AgentConfigError(
                cp.message, location=cx.smap.value(at(tuple(cp.path))), hint=cp.hint
            ).to_problem()
            if cp.severity == "warning":
                p = Problem(p.location, p.message, p.hint, severity="warning", code=p.code)
            cx.problems.append(p)
    return merged


def _quiet(cx: Checker, type_name: str) -> type[Any] | None:
    # A named agent's type was already resolved (and any failure reported) in named_agents.
    try:
        return cx.registry.resolve(type_name)
    except AgentError:
        return None


def handoff_spec(cx: Checker, raw: Any, path: JsonPath, pid: str) -> HandoffSpec | None:
    """A phase's ``handoff`` as a HandoffSpec; unknown agents and a bad ``start`` are recorded."""
    if not isinstance(raw, Mapping) or not cx.ok(path):
        return None
    listed = raw.get("agents")
    listed = listed if isinstance(listed, list) else []  # the schema reports other values
    agents = [a for a in listed if isinstance(a, str)]
    for j, name in enumerate(listed):
        if isinstance(name, str) and name not in cx.agents and name not in cx.registry:
            if name not in cx.bad_agents:
                choices = sorted(set(cx.agents) | set(cx.registry.names()))
                cx.add(
                    unknown(
                        cx, "agent", name, "handoff", choices, cx.smap.value(path + ("agents", j))
                    )
                )
    start = raw.get("start", agents[0] if agents else "")
    if isinstance(start, str) and agents and start not in agents and cx.ok(path + ("start",)):
        cx.add(
            UnknownReference(
                f"handoff start '{start}' of phase '{pid}' is not among its agents "
                + ", ".join(f"'{a}'" for a in agents),
                location=cx.smap.value(path + ("start",)),
            )
        )
    turns = raw.get("max_turns", 10)
    return HandoffSpec(tuple(agents), str(start), as_int(turns, 10))


def check_candidates(
    cx: Checker, raw: Mapping[str, Any], with_: Mapping[str, Any], path: JsonPath, pid: str
) -> tuple[str | None, AgentChoice | None, tuple[str, ...]]:
    """A phase whose agent is chosen at run time: ``capability: X`` or
    ``agent: {one_of, select}``. Returns (capability, choice, candidates); every
    candidate's merged ``with`` is checked, unknown names and a capability that no
    agent lists are recorded. The ``select`` template is checked by the caller."""
    owner = f"the with of phase '{pid}'"
    capability = raw.get("capability")
    if isinstance(capability, str) and cx.ok(path + ("capability",)):
        found = tuple(n for n, a in cx.agents.items() if capability in a.capabilities)
        if not found:
            known = sorted({c for a in cx.agents.values() for c in a.capabilities})
            cx.add(
                unknown(
                    cx,
                    "capability",
                    capability,
                    None,
                    known,
                    cx.smap.value(path + ("capability",)),
                    hint=f"no agent under agents: lists it; add 'capabilities: [{capability}]'"
                    " to the agents that can do it",
                )
            )
        elif "agent" in raw:
            cx.add(
                SchemaViolation(
                    f"phase '{pid}' has both 'agent' and 'capability'; use one of them",
                    location=cx.smap.key(path + ("capability",)),
                )
            )
        for name in found:
            check_agent(cx, name, with_, path, f"{owner} for agent '{name}'")
        return capability, None, found
    choice = raw.get("agent")
    if not isinstance(choice, Mapping) or not cx.ok(path + ("agent",)):
        return None, None, ()
    one_of = choice.get("one_of")
    if not isinstance(one_of, list) or not cx.ok(path + ("agent", "one_of")):
        one_of = []  # the schema said what is wrong; select is still checked
    listed = [a for a in one_of if isinstance(a, str)]
    names: list[str] = []
    for j, name in enumerate(one_of):
        if not isinstance(name, str):
            continue
        if name not in cx.agents and name not in cx.registry and name not in cx.bad_agents:
            where = cx.smap.value(path + ("agent", "one_of", j))
            choices = sorted(set(cx.agents) | set(cx.registry.names()))
            cx.add(unknown(cx, "agent", name, "one_of", choices, where))
            continue
        names.append(name)
        check_agent(cx, name, with_, path, f"{owner} for agent '{name}'")
    select = choice.get("select")
    return None, AgentChoice(tuple(listed), select if isinstance(select, str) else ""), tuple(names)
