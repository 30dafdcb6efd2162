"""compile_plan: a checked Workflow becomes an immutable, topologically ordered Plan.

Nodes are added in YAML order, so graphlib's order (and ours) is deterministic
and independent of PYTHONHASHSEED. The critical path weighs each phase by its
``estimated_duration`` (1 where absent).
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .errors import DependencyCycle, Location, UnknownReference, WorkflowInvalid
from .spec.model import Phase, Workflow

__all__ = ["Plan", "compile_plan", "find_cycle"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the engine runs: phases, their dependencies, an order, levels and the critical path.

    ``order`` is a topological order with YAML order as tie-break. ``levels``
    groups phases by their longest distance from a root. ``remaining[id]`` is the
    weight of the longest path from that phase to any sink, itself included; the
    scheduler starts phases with more remaining work first.
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

    def stages(self) -> tuple[tuple[str, ...], ...]:
        """Groups of phases that can run together once the previous groups are done."""
        return self.levels

    def weight(self, phase_id: str) -> float:
        """The phase's estimated duration in seconds, 1 where absent."""
        est = self.phases[phase_id].estimated_duration
        return float(est) if est is not None else 1.0


def find_cycle(phases: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, c, a]`` (each depends on the next), or None."""
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

    Precondition: the workflow came from ``load_workflow`` (which already reports
    unknown references and cycles); for hand-built workflows the same checks run
    here and raise WorkflowInvalid with UnknownReference or DependencyCycle problems.
    """
    phases = {p.id: p for p in workflow.phases}
    preds = {p.id: p.all_deps for p in workflow.phases}
    problems = []
    for p in workflow.phases:
        for dep in p.all_deps:
            if dep not in phases:
                where = p.location or Location(workflow.path)
                problems.append(
                    UnknownReference(
                        f"unknown phase '{dep}' in depends_on of '{p.id}'", location=where
                    ).to_problem()
                )
    if problems:
        raise WorkflowInvalid(problems)
    cycle = find_cycle(preds)
    if cycle is not None:
        where = phases[cycle[0]].location or Location(workflow.path)
        raise WorkflowInvalid([DependencyCycle(cycle, location=where).to_problem()])

    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for p in workflow.phases:
        sorter.add(p.id, *preds[p.id])
    sorter.prepare()
    yaml_index = {pid: i for i, pid in enumerate(phases)}
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=yaml_index.__getitem__)
        order.extend(ready)
        sorter.done(*ready)

    succs: dict[str, list[str]] = {pid: [] for pid in phases}
    for pid in order:
        for dep in preds[pid]:
            succs[dep].append(pid)

    depth: dict[str, int] = {}
    for pid in order:
        depth[pid] = 1 + max((depth[d] for d in preds[pid]), default=-1)
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for pid in order:
        levels[depth[pid]].append(pid)

    def weight(pid: str) -> float:
        est = phases[pid].estimated_duration
        return float(est) if est is not None else 1.0

    remaining: dict[str, float] = {}
    best_next: dict[str, str | None] = {}
    for pid in reversed(order):
        nxt = max(succs[pid], key=lambda s: (remaining[s], -yaml_index[s]), default=None)
        remaining[pid] = weight(pid) + (remaining[nxt] if nxt is not None else 0.0)
        best_next[pid] = nxt
    path: list[str] = []
    if order:
        node: str | None = max(order, key=lambda s: (remaining[s], -yaml_index[s]))
        while node is not None:
            path.append(node)
            node = best_next[node]

    implied = {p.id: p.implied_deps for p in workflow.phases if p.implied_deps}
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
    )
