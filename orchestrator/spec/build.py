"""Raw workflow mapping -> model.Workflow, with every semantic check, problems collected.

Runs after the schema check: values at paths the schema already refused are
skipped, so one mistake gives one problem. Checks: unique ids, unknown
``depends_on`` targets and agents (did you mean), self-dependencies, cycles,
templates (syntax, unknown phases, inputs and names), ``previous`` outside
sequential mode, ``item``/``index`` outside foreach, handoff agents, cron.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..agents.registry import AgentRegistry
from ..errors import (
    DependencyCycle,
    DuplicatePhase,
    Location,
    Problem,
    SchemaViolation,
    UnknownReference,
)
from ..plan import find_cycle
from .agent_refs import check_agent, check_candidates, handoff_spec, named_agents
from .context import (
    Checker,
    as_int,
    choice,
    duration,
    int_or_none,
    mapping,
    number_or_none,
    str_or_none,
    unknown,
)
from .model import (
    AgentCall,
    ApprovalSpec,
    Budget,
    CacheSpec,
    ErrorHandling,
    InputSpec,
    Phase,
    RepeatSpec,
    RetrySpec,
    Schedule,
    Trigger,
    Workflow,
)
from .schema import SchemaReport, describe, json_path
from .source import JsonPath, Source, SourceMap
from .subflows import check_workflow_ref
from .templates import check_template_text, check_templates, strings
from .values import MAX_TTL, check_cron, input_type_ok, parse_duration

__all__ = ["PhaseCheck", "build_workflow", "check_cron", "parse_duration", "phase_checks"]

_HANDLERS = (("on_success", "on_success"), ("on_failure", "on_failure"), ("finally", "finally_"))

#: A check run on every phase once it is built: (phase, merged ``with``, source
#: map, the phase's JSON path) -> problems (usually warnings). Agent-specific
#: static checks live on the agent type (``Agent.check_static``); checks that
#: need the whole workflow (e.g. "a phase output is spliced into a shell
#: string") are appended here.
PhaseCheck = Callable[[Phase, Mapping[str, Any], SourceMap, JsonPath], list[Problem]]


def phase_checks() -> list[PhaseCheck]:
    """The extra per-phase checks run by build_workflow (empty for now; the hook)."""
    return []


def build_workflow(
    src: Source, report: SchemaReport, registry: AgentRegistry
) -> tuple[Workflow | None, list[Problem]]:
    """Build the Workflow and run every semantic check.

    Precondition: ``src.data`` is a mapping and ``report`` holds its schema
    problems. Returns the workflow (None when something made it unbuildable)
    and the problems found here (errors and warnings); never raises for user input.
    """
    data: Mapping[str, Any] = src.data
    cx = Checker(src, report, registry, sequential=data.get("mode") == "sequential")
    cx.inputs = _inputs(cx, data.get("inputs"))
    cx.agents = named_agents(cx, data.get("agents"))
    defaults = mapping(data.get("defaults"))
    main_items = _items(data, "phases")
    main_ids = {p.get("id") for _, p in main_items if isinstance(p.get("id"), str)}
    phases = _phase_list(cx, main_items, defaults, main_ids, set(), handler=False)
    handlers: dict[str, tuple[Phase, ...]] = {}
    seen = {p.id for p in phases}
    for key, attr in _HANDLERS:
        items = _items(data, key)
        handler_phases = _phase_list(cx, items, defaults, main_ids, seen, handler=True)
        seen |= {p.id for p in handler_phases}
        handlers[attr] = handler_phases
    outputs = mapping(data.get("outputs"))
    check_templates(cx, outputs, ("outputs",), main_ids, None, foreach=False, sequential=False)
    for path, value in strings(data.get("agents"), ("agents",)):
        check_template_text(cx, value, path, main_ids, None, foreach=False, sequential=False)
    schedule = _schedule(cx, data.get("schedule"))
    triggers = _triggers(cx, data.get("triggers"))
    eh = mapping(data.get("error_handling"))
    _fallback_workflow(cx, eh.get("fallback_workflow"))
    # also when every phase sets its own timeout (then no phase reads this one)
    duration(cx, defaults.get("timeout"), ("defaults", "timeout"), positive="a timeout")
    workflow = Workflow(
        name=str(data.get("name", "")),
        phases=phases,
        path=src.path,
        version=1,
        description=str_or_none(data.get("description")),
        inputs=cx.inputs,
        agents=cx.agents,
        max_parallel=int_or_none(cx, data.get("max_parallel"), ("max_parallel",)),
        mode="sequential" if cx.sequential else "dag",
        timeout=duration(cx, data.get("timeout"), ("timeout",), positive="a timeout"),
        error_handling=ErrorHandling(
            continue_on_error=eh.get("continue_on_error") is True,
            fallback_workflow=str_or_none(eh.get("fallback_workflow")),
            max_total_retries=int_or_none(
                cx, eh.get("max_total_retries"), ("error_handling", "max_total_retries")
            ),
        ),
        budget=_budget(data.get("budget")),
        outputs=dict(outputs),
        on_success=handlers["on_success"],
        on_failure=handlers["on_failure"],
        finally_=handlers["finally_"],
        schedule=schedule,
        triggers=triggers,
        secret_names=frozenset(cx.secrets),
        env_names=frozenset(cx.env),
        source_hash=src.sha256,
        text=src.text if src.path.startswith("<") else "",
    )
    return workflow, cx.problems


# -- top-level sections -----------------------------------------------------------


def _items(data: Mapping[str, Any], key: str) -> list[tuple[JsonPath, Mapping[str, Any]]]:
    value = data.get(key)
    if not isinstance(value, list):
        return []
    return [((key, i), p) for i, p in enumerate(value) if isinstance(p, Mapping)]


def _inputs(cx: Checker, raw: Any) -> dict[str, InputSpec]:
    out: dict[str, InputSpec] = {}
    if not isinstance(raw, Mapping):
        return out
    for name, spec in raw.items():
        path = ("inputs", name)
        spec = spec if isinstance(spec, Mapping) else {}
        kwargs: dict[str, Any] = {}
        type_ = str(spec.get("type", "string")) if cx.ok(path + ("type",)) else "string"
        if "default" in spec:
            kwargs["default"] = spec["default"]
            if cx.ok(path + ("type",)) and cx.ok(path + ("default",)):
                _check_default(cx, path + ("default",), type_, spec["default"])
        out[name] = InputSpec(
            name=name,
            type=type_,
            required=spec.get("required") is True,
            description=str_or_none(spec.get("description")),
            location=cx.smap.key(path),
            **kwargs,
        )
    return out


_DEFAULT_HINTS = {
    "integer": "use a whole number such as 3",
    "number": "use a number such as 2.5",
    "boolean": "use true or false",
    "array": "write a list, e.g. default: [a, b] (or one '- item' per line)",
    "object": "write a mapping, e.g. default: {key: value}",
}


def _check_default(cx: Checker, path: JsonPath, type_: str, value: Any) -> None:
    """An input's default must be of its declared type (null: no default value)."""
    if value is None or input_type_ok(type_, value):
        return
    hint = _DEFAULT_HINTS.get(type_)
    if type_ == "string" and isinstance(value, (bool, int, float)):
        kind = "boolean" if isinstance(value, bool) else "number"
        hint = f"YAML 1.2 reads this as a {kind}; quote it to keep it as text"
    cx.add(
        SchemaViolation(
            f"{json_path(path)} must be {_article(type_)} {type_} (the input's type),"
            f" not {describe(value)}",
            location=cx.smap.value(path),
            hint=hint,
        )
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _fallback_workflow(cx: Checker, ref: Any) -> None:
    """A literal fallback workflow must exist, be valid and not recurse (spec.subflows)."""
    path: JsonPath = ("error_handling", "fallback_workflow")
    if not cx.ok(path):
        return
    for p in check_workflow_ref(ref, cx.src.path, label="fallback workflow"):
        cx.add(UnknownReference(p.message, location=cx.smap.value(path), hint=p.hint))


def _schedule(cx: Checker, raw: Any) -> tuple[Schedule, ...]:
    out: list[Schedule] = []
    if not isinstance(raw, list):
        return ()
    for i, item in enumerate(raw):
        path = ("schedule", i)
        if not isinstance(item, Mapping) or not cx.ok(path):
            continue
        cron, run_at = item.get("cron"), item.get("run_at")
        if (cron is None) == (run_at is None):
            cx.add(
                SchemaViolation(
                    f"schedule[{i}] needs exactly one of cron and run_at",
                    location=cx.smap.value(path),
                    hint="e.g. cron: '0 2 * * *', or run_at: '2026-12-31T12:00:00Z'",
                )
            )
            continue
        if isinstance(cron, str):
            _check_cron_entry(cx, i, cron)
        if isinstance(run_at, str):
            _check_run_at(cx, i, run_at)
        tz = item.get("timezone", "UTC")
        if isinstance(tz, str) and not _known_timezone(tz):
            cx.add(
                SchemaViolation(
                    f"schedule[{i}].timezone: unknown time zone '{tz}'",
                    location=cx.smap.value(path + ("timezone",)),
                    hint="use an IANA name such as 'UTC' or 'Europe/Paris'",
                )
            )
        inputs = mapping(item.get("inputs"))
        _check_schedule_inputs(cx, i, inputs)
        out.append(
            Schedule(
                cron=cron if isinstance(cron, str) else None,
                run_at=run_at if isinstance(run_at, str) else None,
                timezone=tz if isinstance(tz, str) else "UTC",
                inputs=dict(inputs),
                location=cx.smap.value(path),
                overlap=str(item.get("overlap", "skip")),
                catchup=item.get("catchup") is True,
            )
        )
    return tuple(out)


def _check_cron_entry(cx: Checker, i: int, cron: str) -> None:
    path = ("schedule", i, "cron")
    problem = check_cron(cron)
    if problem is None:  # the cron library that fires it must accept it too
        from ..schedule import cron_problem

        problem = cron_problem(cron)
    if problem and cx.ok(path):
        cx.add(
            SchemaViolation(
                f"schedule[{i}].cron: '{cron}' is not a valid cron expression: " + problem,
                location=cx.smap.value(path),
                hint="five fields: minute hour day-of-month month weekday, e.g. '0 2 * * *'",
            )
        )


def _check_run_at(cx: Checker, i: int, run_at: str) -> None:
    from ..schedule import parse_run_at

    try:
        parse_run_at(run_at)
    except ValueError as exc:
        cx.add(
            SchemaViolation(
                f"schedule[{i}].run_at: {exc}",
                location=cx.smap.value(("schedule", i, "run_at")),
                hint="write e.g. run_at: '2026-12-31T12:00:00Z'",
            )
        )


def _check_schedule_inputs(cx: Checker, i: int, inputs: Mapping[str, Any]) -> None:
    """A scheduled run's inputs pass the same check as ``--input`` (engine.inputs).

    A required input the entry does not give is a warning, not an error: the
    workflow still runs with ``orch run``, but each fire of the entry is refused.
    """
    from ..errors import UsageError
    from .inputs import resolve_inputs

    path: JsonPath = ("schedule", i, "inputs")
    missing = [
        n
        for n, spec in cx.inputs.items()
        if spec.required and not spec.has_default
        if n not in inputs
    ]
    for name in missing:
        cx.problems.append(
            Problem(
                cx.smap.value(("schedule", i)),
                f"schedule[{i}] gives no value for the required input '{name}':"
                " `orch serve` will refuse each of its fires",
                hint=f"add inputs: {{{name}: ...}} to the entry",
                severity="warning",
                code="schedule-inputs",
            )
        )
    given = {n: spec for n, spec in cx.inputs.items() if n not in missing}
    try:
        resolve_inputs(Workflow(name="", phases=(), inputs=given), inputs)
    except UsageError as exc:
        bad = next((k for k in inputs if f"'{k}'" in exc.message), None)
        at = cx.smap.value(path + (bad,)) if bad is not None else cx.smap.value(path)
        cx.add(SchemaViolation(f"schedule[{i}].inputs: {exc.headline}", location=at, hint=exc.hint))


def _triggers(cx: Checker, raw: Any) -> tuple[Trigger, ...]:
    out: list[Trigger] = []
    if not isinstance(raw, list):
        return ()
    for i, item in enumerate(raw):
        path = ("triggers", i)
        if not isinstance(item, Mapping) or not cx.ok(path):
            continue
        after = mapping(item.get("after"))
        if ("webhook" in item) == ("after" in item):
            cx.add(
                SchemaViolation(
                    f"triggers[{i}] needs exactly one of webhook and after",
                    location=cx.smap.value(path),
                    hint="e.g. - webhook: true, or - after: {workflow: nightly-import}",
                )
            )
            continue
        out.append(
            Trigger(
                webhook=item.get("webhook") is True,
                after=str(after["workflow"]) if "workflow" in after else None,
                status=str(after.get("status", "completed")),
                location=cx.smap.value(path),
            )
        )
    return tuple(out)


def _known_timezone(name: str) -> bool:
    import zoneinfo

    if name.upper() == "UTC":
        return True
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return not zoneinfo.available_timezones()  # no tz database: cannot tell
    return True


# -- phases -----------------------------------------------------------------------


def _phase_list(
    cx: Checker,
    items: list[tuple[JsonPath, Mapping[str, Any]]],
    defaults: Mapping[str, Any],
    main_ids: set[Any],
    taken: set[str],
    *,
    handler: bool,
) -> tuple[Phase, ...]:
    """Build one list of phases (the main list or a handler list) and check its graph."""
    first_at: dict[str, Location] = {}
    ids: list[str] = []
    for path, raw in items:
        pid = raw.get("id")
        if not isinstance(pid, str) or not cx.ok(path + ("id",)):
            if isinstance(pid, str):
                cx.bad_ids.add(pid)  # already reported: references to it are not
            continue
        where = cx.smap.value(path + ("id",))
        if pid in first_at or pid in taken:
            first = first_at.get(pid)
            at = f" (first at line {first.line})" if first else ""
            cx.add(
                DuplicatePhase(
                    f"duplicate phase id '{pid}'{at}",
                    location=where,
                    hint="every phase needs its own id",
                )
            )
            continue
        first_at[pid] = where
        ids.append(pid)
    known = set(ids)
    visible = known | {i for i in main_ids if isinstance(i, str)} if handler else known
    phases: list[Phase] = []
    dep_loc: dict[tuple[str, str], Location] = {}
    previous: str | None = None
    for path, raw in items:
        pid = raw.get("id")
        if (
            not isinstance(pid, str)
            or pid not in first_at
            or first_at[pid] != cx.smap.value(path + ("id",))
        ):
            continue
        seq_prev = previous if (cx.sequential and not handler) else None
        phase = _phase(cx, path, raw, defaults, known, visible, seq_prev, dep_loc)
        phases.append(phase)
        previous = pid
    cycle = find_cycle({p.id: p.all_deps for p in phases})
    if cycle is not None:
        where = dep_loc.get((cycle[0], cycle[1])) or next(
            (p.location for p in phases if p.id == cycle[0] and p.location), Location(cx.src.path)
        )
        error = DependencyCycle(cycle, location=where)
        implicit = _sequential_edges(cycle, phases, items)
        if implicit:
            edges = ", ".join(f"'{a} -> {b}'" for a, b in implicit)
            error.hint = (
                f"{edges} comes from mode: sequential: in sequential mode each phase"
                " depends on the one listed before it; remove the depends_on that points"
                " to a later phase, or list the phases in the order they run"
            )
        cx.add(error)
    return tuple(phases)


def _sequential_edges(
    cycle: list[str], phases: list[Phase], items: list[tuple[JsonPath, Mapping[str, Any]]]
) -> list[tuple[str, str]]:
    """The edges of ``cycle`` that only ``mode: sequential`` made (not written in depends_on)."""
    by_id = {p.id: p for p in phases}
    written: dict[str, set[Any]] = {}
    for _, raw in items:
        deps = raw.get("depends_on")
        if isinstance(raw.get("id"), str):
            names = [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
            written.setdefault(raw["id"], set()).update(names)
    out: list[tuple[str, str]] = []
    for a, b in zip(cycle, cycle[1:], strict=False):
        phase = by_id.get(a)
        if phase is not None and phase.previous == b and b not in written.get(a, set()):
            out.append((a, b))
    return out


def _phase(
    cx: Checker,
    path: JsonPath,
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    known: set[str],
    visible: set[str],
    previous: str | None,
    dep_loc: dict[tuple[str, str], Location],
) -> Phase:
    pid: str = raw["id"]
    location = cx.smap.value(path)

    def get(key: str) -> Any:
        if key in raw:
            return raw[key] if cx.ok(path + (key,)) else None
        return defaults.get(key) if cx.ok(("defaults", key)) else None

    depends: list[str] = []
    deps_raw = raw.get("depends_on")
    if isinstance(deps_raw, list) and cx.ok(path + ("depends_on",)):
        for j, dep in enumerate(deps_raw):
            if not isinstance(dep, str):
                continue
            where = cx.smap.value(path + ("depends_on", j))
            if dep == pid:
                cx.add(
                    UnknownReference(
                        f"phase '{pid}' depends on itself",
                        location=where,
                        hint="remove it from depends_on",
                    )
                )
            elif dep not in known and dep not in cx.bad_ids:
                cx.add(unknown(cx, "phase", dep, "depends_on", known, where))
            elif dep not in depends:
                depends.append(dep)
                dep_loc.setdefault((pid, dep), where)
    if previous is not None and previous not in depends:
        depends.append(previous)
        dep_loc.setdefault((pid, previous), location)

    foreach = raw.get("foreach") if cx.ok(path + ("foreach",)) else None
    in_foreach = "foreach" in raw
    sequential = previous is not None  # `previous` names the phase before this one
    implied: list[str] = []

    def refs(value: Any, sub: JsonPath, *, allow_item: bool = in_foreach) -> None:
        if sub == ("repeat", "until"):  # a condition, like when
            found = check_template_text(
                cx,
                value,
                path + sub,
                visible,
                pid,
                foreach=False,
                sequential=sequential,
                condition=True,
            )
        else:
            found = check_templates(
                cx, value, path + sub, visible, pid, foreach=allow_item, sequential=sequential
            )
        for dep, where in found:
            if dep in known and dep not in depends and dep not in implied:
                implied.append(dep)
                dep_loc.setdefault((pid, dep), where)

    agent_name = raw.get("agent") if cx.ok(path + ("agent",)) else None
    if not isinstance(agent_name, str):
        agent_name = None  # {one_of, select}: see check_candidates
    with_raw = mapping(raw.get("with"))
    repeat = _repeat(cx, raw.get("repeat"), path + ("repeat",))
    cx.extra_names = ("iteration",) if "repeat" in raw else ()
    if cx.ok(path + ("with",)):
        refs(with_raw, ("with",))
    capability, agent_choice, candidates = check_candidates(cx, raw, with_raw, path, pid)
    if agent_choice is not None and agent_choice.select:
        refs(agent_choice.select, ("agent", "select"))
    approval_raw = raw.get("approval")
    if isinstance(approval_raw, Mapping) and isinstance(approval_raw.get("message"), str):
        if cx.ok(path + ("approval", "message")):
            # one approval for the whole phase, asked before its items run
            cx.no_item = "a foreach phase asks for its approval once, before its items"
            refs(approval_raw["message"], ("approval", "message"), allow_item=False)
            cx.no_item = None
    if repeat is not None and repeat.until is not None:
        cx.extra_names = ("iteration", "output")
        refs(repeat.until, ("repeat", "until"))
    cx.extra_names = ()
    when = raw.get("when")
    if isinstance(when, bool):
        when = "true" if when else "false"
    if isinstance(when, str) and cx.ok(path + ("when",)):
        refs(when, ("when",))
    if isinstance(foreach, (str, list)):
        refs(foreach, ("foreach",), allow_item=False)
    cache = _cache(get("cache"))
    cache_raw = get("cache")
    if isinstance(cache_raw, Mapping) and "ttl" in cache_raw:
        cache_path = path + ("cache",) if "cache" in raw else ("defaults", "cache")
        duration(cx, cache_raw["ttl"], cache_path + ("ttl",), positive="a cache ttl", limit=MAX_TTL)
    if cache is not None and cache.key and "cache" in raw:
        refs(cache.key, ("cache", "key"))
    calls: dict[str, AgentCall | None] = {}
    for key in ("fallback", "compensate"):
        call = raw.get(key) if cx.ok(path + (key,)) else None
        calls[key] = None
        if isinstance(call, Mapping) and isinstance(call.get("agent"), str):
            cw = mapping(call.get("with"))
            refs(cw, (key, "with"))
            check_agent(cx, call["agent"], cw, path + (key,), f"the {key} of phase '{pid}'")
            calls[key] = AgentCall(call["agent"], dict(cw), cx.smap.value(path + (key,)))

    handoff = handoff_spec(cx, raw.get("handoff"), path + ("handoff",), pid)
    if agent_name is None and handoff is None and not {"agent", "handoff", "capability"} & set(raw):
        cx.add(
            SchemaViolation(
                f"phase '{pid}' needs an 'agent' (or a 'capability' or a 'handoff')",
                location=location,
                hint="add 'agent: <name>' with a name under agents: or an agent type",
            )
        )
    elif agent_name is not None and handoff is not None:
        cx.add(
            SchemaViolation(
                f"phase '{pid}' has both 'agent' and 'handoff'; use one of them",
                location=cx.smap.key(path + ("handoff",)),
            )
        )
    if handoff is not None and "cache" in raw:
        cx.problems.append(
            Problem(
                cx.smap.key(path + ("cache",)),
                f"phase '{pid}': cache does not apply to a handoff phase (each turn's input"
                " comes from the turn before); it is ignored",
                hint="remove cache from the phase",
                severity="warning",
                code="cache-ignored",
            )
        )
    for a, b in (("foreach", "repeat"), ("capability", "handoff")):
        if a in raw and b in raw:
            cx.add(
                SchemaViolation(
                    f"phase '{pid}' has both '{a}' and '{b}'; use one of them",
                    location=cx.smap.key(path + (b,)),
                    hint="a repeat loop can run a sub-workflow (agent: workflow) that has foreach"
                    if b == "repeat"
                    else None,
                )
            )
    merged: Mapping[str, Any] = {}
    if isinstance(agent_name, str) and handoff is None:
        merged = check_agent(cx, agent_name, with_raw, path, f"the with of phase '{pid}'")

    retries = _retries(cx, get("retries"), path if "retries" in raw else ("defaults",))
    timeout_path = path + ("timeout",) if "timeout" in raw else ("defaults", "timeout")
    phase = Phase(
        id=pid,
        agent=agent_name if isinstance(agent_name, str) and handoff is None else None,
        with_=dict(with_raw),
        name=str_or_none(raw.get("name")),
        description=str_or_none(raw.get("description")),
        depends_on=tuple(depends),
        implied_deps=tuple(implied),
        when=when if isinstance(when, str) and cx.ok(path + ("when",)) else None,
        trigger=choice(get("trigger"), "all_success"),
        timeout=duration(cx, get("timeout"), timeout_path, positive="a timeout"),
        retries=retries,
        continue_on_error=get("continue_on_error") is True,
        fallback=calls["fallback"],
        compensate=calls["compensate"],
        cache=cache,
        foreach=foreach,
        max_parallel=int_or_none(cx, raw.get("max_parallel"), path + ("max_parallel",)),
        handoff=handoff,
        priority=choice(get("priority"), "medium"),
        estimated_duration=number_or_none(raw.get("estimated_duration")),
        resources=_resources(cx, raw.get("resources"), path + ("resources",)),
        previous=previous,
        budget=_budget(raw.get("budget")),
        capability=capability,
        choice=agent_choice,
        candidates=candidates if handoff is None else (),
        approval=_approval(cx, raw.get("approval"), path + ("approval",)),
        repeat=repeat,
        location=location,
        locations=_locations(cx, raw, with_raw, path),
    )
    for check in phase_checks():
        cx.problems.extend(check(phase, merged, cx.smap, path))
    return phase


def _budget(raw: Any) -> Budget | None:
    """``budget: {tokens, cost}`` (the schema checked the types); None when absent or empty."""
    if not isinstance(raw, Mapping):
        return None
    tokens, cost = raw.get("tokens"), raw.get("cost")
    budget = Budget(
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
        cost=float(cost)
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and abs(cost) <= 1e300
        else None,  # (float() of a bigger int raises OverflowError)
    )
    return budget if budget.tokens is not None or budget.cost is not None else None


def _approval(cx: Checker, raw: Any, path: JsonPath) -> ApprovalSpec | None:
    if not isinstance(raw, Mapping) or not cx.ok(path):
        return None
    timeout = duration(cx, raw.get("timeout"), path + ("timeout",), positive="an approval timeout")
    return ApprovalSpec(
        message=str_or_none(raw.get("message")),
        timeout=timeout,
        on_timeout=choice(raw.get("on_timeout"), "reject"),
    )


def _repeat(cx: Checker, raw: Any, path: JsonPath) -> RepeatSpec | None:
    """``repeat: {until, max}``; ``until`` is a condition over ``output`` and ``iteration``."""
    if not isinstance(raw, Mapping) or not cx.ok(path):
        return None
    until = raw.get("until")
    if isinstance(until, bool):
        until = "true" if until else "false"
    ok = isinstance(until, str) and cx.ok(path + ("until",))
    on_max = choice(raw.get("on_max"), "complete")
    if on_max == "fail" and "until" not in raw and cx.ok(path + ("on_max",)):
        cx.add(
            SchemaViolation(
                f"{json_path(path)}.on_max: fail needs an until: without one the loop"
                " always runs max times",
                location=cx.smap.value(path + ("on_max",)),
                hint="add until: EXPR (true ends the loop), or drop on_max",
            )
        )
    return RepeatSpec(
        max=max(as_int(raw.get("max"), 1), 1), until=until if ok else None, on_max=on_max
    )


def _locations(
    cx: Checker, raw: Mapping[str, Any], with_: Mapping[str, Any], path: JsonPath
) -> dict[str, Location]:
    """Where a phase's ``when``, ``foreach``, each ``with`` key, ``approval.message`` and
    ``repeat.until`` are written (a template failing at run time is reported there)."""
    found = {key: cx.smap.value(path + (key,)) for key in ("when", "foreach") if key in raw}
    for key, sub in (("approval", "message"), ("repeat", "until")):
        if isinstance(raw.get(key), Mapping) and sub in raw[key]:
            found[f"{key}.{sub}"] = cx.smap.value(path + (key, sub))
    if "with" in raw:
        found.update({f"with.{k}": cx.smap.value(path + ("with", k)) for k in with_})
    return found


def _retries(cx: Checker, raw: Any, path: JsonPath) -> RetrySpec:
    if isinstance(raw, bool) or raw is None:
        return RetrySpec()
    if isinstance(raw, (int, float)):
        return RetrySpec(attempts=max(as_int(raw, 0), 0))
    if not isinstance(raw, Mapping):
        return RetrySpec()
    base = RetrySpec()
    rpath = path + ("retries",)
    delay = duration(cx, raw.get("delay"), rpath + ("delay",))
    max_delay = duration(cx, raw.get("max_delay"), rpath + ("max_delay",))
    jitter = duration(cx, raw.get("jitter"), rpath + ("jitter",))
    spec = RetrySpec(
        attempts=as_int(raw.get("attempts"), base.attempts),
        backoff=choice(raw.get("backoff"), base.backoff),
        delay=delay if delay is not None else base.delay,
        max_delay=max_delay if max_delay is not None else max(base.max_delay, delay or 0.0),
        jitter=jitter if jitter is not None else base.jitter,
        on=tuple(raw["on"]) if isinstance(raw.get("on"), list) and raw["on"] else base.on,
    )
    if spec.max_delay < spec.delay and "max_delay" in raw and cx.ok(rpath):
        cx.add(
            SchemaViolation(
                f"{json_path(rpath)}.max_delay ({spec.max_delay:g}s) is shorter than"
                f" the delay ({spec.delay:g}s)",
                location=cx.smap.value(rpath + ("max_delay",)),
            )
        )
    return spec


def _resources(cx: Checker, raw: Any, path: JsonPath) -> dict[str, float]:
    """``resources`` as {name: amount}; an infinite amount (YAML ``.inf``) is a problem."""
    if not isinstance(raw, Mapping) or not cx.ok(path):
        return {}
    found: dict[str, float] = {}
    for name, amount in raw.items():
        if not cx.ok(path + (name,)):
            continue
        if number_or_none(amount) is None:
            cx.add(
                SchemaViolation(
                    f"{json_path(path)}.{name} must be a finite number above 0, not {amount!r}",
                    location=cx.smap.value(path + (name,)),
                    hint="write how much of the resource one call uses, e.g. GPU: 1",
                )
            )
            continue
        found[str(name)] = float(amount)
    return found


def _cache(raw: Any) -> CacheSpec | None:
    if raw is True:
        return CacheSpec()
    if isinstance(raw, Mapping):
        key = raw.get("key")
        ttl = raw.get("ttl")
        try:
            seconds = parse_duration(ttl, limit=MAX_TTL) if ttl is not None else None
        except ValueError:
            seconds = None
        return CacheSpec(key=key if isinstance(key, str) else None, ttl=seconds)
    return None
