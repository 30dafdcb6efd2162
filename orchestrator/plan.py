"""compile_plan: a checked Workflow becomes an immutable, topologically ordered Plan.

Nodes are added to graphlib in YAML order and ties are broken by YAML order, so
the plan is the same for every PYTHONHASHSEED. The critical path weighs each
phase by its ``estimated_duration`` (1 where absent).
"""

from __future__ import annotations

import difflib
import graphlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import (
    DependencyCycle,
    DuplicatePhase,
    Location,
    Problem,
    UnknownReference,
    WorkflowInvalid,
)
from .spec.model import Phase, Workflow

__all__ = ["Plan", "compile_plan", "find_cycle"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the engine runs: phases, their dependencies, an order, levels and the critical path.

    ``order`` is a topological order that keeps YAML order wherever the
    dependencies allow (a file already listed in dependency order keeps its
    order). ``predecessors[id]`` lists explicit then implied dependencies;
    ``implied[id]`` the implied ones only (``phases.X`` references not in
    ``depends_on``), present only for phases that have some. ``levels`` groups
    phases by their longest distance from a root (level 0: no dependencies).
    ``remaining[id]`` is the weight of the heaviest path from that phase to a
    sink, itself included; the scheduler starts phases with more remaining work
    first. ``critical_path`` is the heaviest path of the whole graph and
    ``critical_length`` its weight in seconds.
    """

    workflow: Workflow
    phases: Mapping[str, Phase]
    predecessors: Mapping[str, tuple[str, ...]]
    successors: Mapping[str, tuple[str, ...]]
    implied: Mapping[str, tuple[str, ...]]
    order: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]
    critical_length: float
    remaining: Mapping[str, float]
    level_of: Mapping[str, int]
    # what the plan works out on first use (fingerprints), kept for the plan's later runs
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def fingerprints(self) -> Mapping[str, str]:
        """``Workflow.fingerprints()``, worked out once per plan: every run of a plan
        records them (workflow_started) and resume compares them with the stored ones."""
        found: Mapping[str, str] | None = self._memo.get("fingerprints")
        if found is None:
            found = self._memo["fingerprints"] = MappingProxyType(self.workflow.fingerprints())
        return found

    def downstream(self, roots: Iterable[str]) -> list[str]:
        """``roots`` and every phase that depends on them, directly or not, in plan order.

        Ids that are not phases of the plan are ignored.
        """
        seen = {r for r in roots if r in self.phases}
        for pid in self.order:
            if any(dep in seen for dep in self.predecessors[pid]):
                seen.add(pid)
        return [pid for pid in self.order if pid in seen]

    def stages(self) -> tuple[tuple[str, ...], ...]:
        """Groups of phases that can run together once the previous groups are done."""
        return self.levels

    def weight(self, phase_id: str) -> float:
        """The phase's estimated duration in seconds, 1 where absent. KeyError if unknown."""
        return _weight(self.phases[phase_id])

    def is_implied(self, phase_id: str, dependency: str) -> bool:
        """Whether ``phase_id`` depends on ``dependency`` only through a ``phases.X`` reference."""
        return dependency in self.implied.get(phase_id, ())

    def is_critical(self, phase_id: str) -> bool:
        """Whether the phase lies on the critical path."""
        return phase_id in self.critical_path


def find_cycle(phases: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, c, a]`` (each depends on the next), or None.

    ``phases`` maps each id to the ids it depends on; ids that are not keys are
    ignored (report them as unknown references first). A self-dependency is the
    cycle ``[a, a]``. Only one cycle is reported when there are several.
    """
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for pid, deps in phases.items():
        sorter.add(pid, *[d for d in deps if d in phases])
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib gives [x, ..., x] with each node a predecessor of the next one;
        # we print "a -> b" as "a depends on b", so reverse it.
        return list(reversed(exc.args[1]))
    return None


def compile_plan(workflow: Workflow) -> Plan:
    """Compile a Workflow into a Plan.

    Precondition: none beyond a well-typed Workflow. ``load_workflow`` already
    reports duplicate ids, unknown references and cycles with their locations;
    for hand-built workflows the same checks run here. Raises WorkflowInvalid
    with DuplicatePhase, UnknownReference or DependencyCycle problems.
    """
    _check(workflow)
    phases = {p.id: p for p in workflow.phases}
    # dict.fromkeys: a dependency listed twice counts once (graphlib would count it twice).
    preds = {p.id: tuple(dict.fromkeys(p.all_deps)) for p in workflow.phases}
    index = {pid: i for i, pid in enumerate(phases)}

    order = _ordered(workflow, preds, index)
    succs: dict[str, list[str]] = {pid: [] for pid in phases}
    for pid in order:
        for dep in preds[pid]:
            succs[dep].append(pid)

    level_of: dict[str, int] = {}
    for pid in order:
        level_of[pid] = 1 + max((level_of[d] for d in preds[pid]), default=-1)
    levels: list[list[str]] = [[] for _ in range(max(level_of.values(), default=-1) + 1)]
    for pid in order:
        levels[level_of[pid]].append(pid)
    for level in levels:
        level.sort(key=index.__getitem__)

    def heaviest(candidates: list[str]) -> str | None:
        # Most remaining work; on a tie, the phase listed first in the file.
        return max(candidates, key=lambda s: (remaining[s], -index[s]), default=None)

    remaining: dict[str, float] = {}
    best_next: dict[str, str | None] = {}
    for pid in reversed(order):
        nxt = heaviest(succs[pid])
        remaining[pid] = _weight(phases[pid]) + (remaining[nxt] if nxt is not None else 0.0)
        best_next[pid] = nxt
    path: list[str] = []
    node = heaviest([pid for pid in order if not preds[pid]])
    while node is not None:
        path.append(node)
        node = best_next[node]

    # An edge is implied only when depends_on does not list it as well.
    implied = {
        p.id: deps
        for p in workflow.phases
        if (deps := tuple(d for d in dict.fromkeys(p.implied_deps) if d not in p.depends_on))
    }
    return Plan(
        workflow=workflow,
        phases=MappingProxyType(phases),
        predecessors=MappingProxyType(preds),
        successors=MappingProxyType({k: tuple(v) for k, v in succs.items()}),
        implied=MappingProxyType(implied),
        order=tuple(order),
        levels=tuple(tuple(level) for level in levels),
        critical_path=tuple(path),
        critical_length=remaining[path[0]] if path else 0.0,
        remaining=MappingProxyType(remaining),
        level_of=MappingProxyType(level_of),
    )


def _weight(phase: Phase) -> float:
    est = phase.estimated_duration
    return float(est) if est is not None else 1.0


def _ordered(
    workflow: Workflow, preds: Mapping[str, tuple[str, ...]], index: Mapping[str, int]
) -> list[str]:
    """graphlib's topological order, taking the ready phase listed first in the file each time.

    Raises WorkflowInvalid with a DependencyCycle problem when there is a cycle.
    """
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for pid, deps in preds.items():
        sorter.add(pid, *deps)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))  # as in find_cycle: each depends on the next
        where = workflow.phase(cycle[0]).location or Location(workflow.path)
        raise WorkflowInvalid([DependencyCycle(cycle, location=where).to_problem()]) from None
    ready = [(index[pid], pid) for pid in sorter.get_ready()]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, pid = heapq.heappop(ready)
        order.append(pid)
        sorter.done(pid)
        for nxt in sorter.get_ready():
            heapq.heappush(ready, (index[nxt], nxt))
    return order


def _check(workflow: Workflow) -> None:
    """Raise WorkflowInvalid for duplicate ids and unknown dependencies (cycles: _ordered)."""
    problems: list[Problem] = []
    seen: dict[str, Phase] = {}
    for p in workflow.phases:
        if p.id in seen:
            first = seen[p.id].location
            problems.append(
                DuplicatePhase(
                    f"duplicate phase id '{p.id}'",
                    location=p.location or Location(workflow.path),
                    hint=f"first defined at {first}" if first else "rename one of them",
                ).to_problem()
            )
        else:
            seen[p.id] = p
    for p in workflow.phases:
        for dep in dict.fromkeys(p.all_deps):
            if dep in seen:
                continue
            close = difflib.get_close_matches(dep, list(seen), n=1)
            kind = "depends_on" if dep in p.depends_on else "a 'phases.X' reference"
            message = f"unknown phase '{dep}' in {kind} of '{p.id}'"
            if close:
                message += f"; did you mean '{close[0]}'?"
            problems.append(
                UnknownReference(
                    message,
                    location=p.location or Location(workflow.path),
                    suggestion=close[0] if close else None,
                ).to_problem()
            )
    if problems:
        raise WorkflowInvalid(problems)
