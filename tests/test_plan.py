"""compile_plan: order, levels, implied edges, critical path, checks and determinism."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import compile_plan
from orchestrator.errors import Location, WorkflowInvalid
from orchestrator.plan import find_cycle
from orchestrator.spec.model import Phase, Workflow


def _wf(*phases: Phase) -> Workflow:
    return Workflow(name="t", phases=tuple(phases), path="t.yaml")


def _p(pid: str, *deps: str, implied: tuple[str, ...] = (), est: float | None = None, line=0):
    return Phase(
        id=pid,
        agent="noop",
        depends_on=deps,
        implied_deps=implied,
        estimated_duration=est,
        location=Location("t.yaml", line, 5) if line else None,
    )


def test_a_file_listed_in_dependency_order_keeps_its_order():
    plan = compile_plan(_wf(_p("a"), _p("b", "a"), _p("c"), _p("d", "b", "c")))
    assert plan.order == ("a", "b", "c", "d")


def test_order_puts_dependencies_first_and_breaks_ties_by_yaml_order():
    plan = compile_plan(
        _wf(_p("report", "x", "y"), _p("y", "fetch"), _p("x", "fetch"), _p("fetch"))
    )
    assert plan.order == ("fetch", "y", "x", "report")


def test_levels_group_phases_by_longest_distance_from_a_root():
    plan = compile_plan(
        _wf(_p("a"), _p("b"), _p("c", "a"), _p("d", "a", "b"), _p("e", "c", "b"), _p("f"))
    )
    assert plan.levels == (("a", "b", "f"), ("c", "d"), ("e",))
    assert plan.stages() == plan.levels
    assert dict(plan.level_of) == {"a": 0, "b": 0, "f": 0, "c": 1, "d": 1, "e": 2}


def test_predecessors_and_successors_include_implied_edges_and_mark_them():
    plan = compile_plan(_wf(_p("a"), _p("b"), _p("c", "a", implied=("b",))))
    assert plan.predecessors["c"] == ("a", "b")
    assert plan.successors["a"] == ("c",)
    assert plan.successors["b"] == ("c",)
    assert dict(plan.implied) == {"c": ("b",)}
    assert plan.is_implied("c", "b")
    assert not plan.is_implied("c", "a")
    assert plan.levels == (("a", "b"), ("c",))


def test_a_dependency_listed_twice_counts_once():
    plan = compile_plan(_wf(_p("a"), _p("b", "a", "a")))
    assert plan.predecessors["b"] == ("a",)
    assert plan.successors["a"] == ("b",)
    assert plan.order == ("a", "b")


def test_critical_path_follows_estimated_durations():
    plan = compile_plan(
        _wf(
            _p("fetch", est=2),
            _p("quick", "fetch", est=1),
            _p("slow", "fetch", est=10),
            _p("report", "quick", "slow", est=3),
        )
    )
    assert plan.critical_path == ("fetch", "slow", "report")
    assert plan.critical_length == 15.0
    assert plan.remaining["quick"] == 4.0
    assert plan.remaining["fetch"] == 15.0
    assert plan.is_critical("slow") and not plan.is_critical("quick")


def test_without_estimates_every_phase_weighs_one_and_the_longest_chain_is_critical():
    plan = compile_plan(_wf(_p("a"), _p("b"), _p("c", "b"), _p("d", "c"), _p("e", "a")))
    assert plan.critical_path == ("b", "c", "d")
    assert plan.critical_length == 3.0
    assert plan.weight("a") == 1.0


def test_critical_path_ties_go_to_the_phase_listed_first():
    plan = compile_plan(_wf(_p("x"), _p("y"), _p("z", "x", "y")))
    assert plan.critical_path == ("x", "z")


def test_an_empty_workflow_gives_an_empty_plan():
    plan = compile_plan(_wf())
    assert plan.order == () and plan.levels == () and plan.critical_path == ()
    assert plan.critical_length == 0.0


def test_the_plan_cannot_be_changed():
    plan = compile_plan(_wf(_p("a"), _p("b", "a")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.order = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.predecessors["b"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.phases["c"] = plan.phases["a"]  # type: ignore[index]


def test_unknown_dependency_is_a_located_problem_with_a_suggestion():
    with pytest.raises(WorkflowInvalid) as info:
        compile_plan(_wf(_p("design"), _p("build", "desgin", line=7)))
    (problem,) = info.value.problems
    assert str(problem) == (
        "t.yaml:7:5: unknown phase 'desgin' in depends_on of 'build'; did you mean 'design'?"
    )
    assert problem.code == "unknown-reference"


def test_unknown_implied_reference_says_where_it_comes_from():
    with pytest.raises(WorkflowInvalid) as info:
        compile_plan(_wf(_p("a", implied=("zzz",))))
    assert [p.message for p in info.value.problems] == [
        "unknown phase 'zzz' in a 'phases.X' reference of 'a'"
    ]


def test_duplicate_ids_are_reported():
    with pytest.raises(WorkflowInvalid) as info:
        compile_plan(_wf(_p("a", line=3), _p("a", line=9)))
    (problem,) = info.value.problems
    assert problem.location == Location("t.yaml", 9, 5)
    assert problem.message == "duplicate phase id 'a'"
    assert problem.hint == "first defined at t.yaml:3:5"


def test_a_cycle_is_reported_as_a_path_at_its_first_phase():
    with pytest.raises(WorkflowInvalid) as info:
        compile_plan(_wf(_p("a", "c", line=2), _p("b", "a", line=4), _p("c", "b", line=6)))
    (problem,) = info.value.problems
    assert problem.code == "cycle"
    cycle = problem.message.removeprefix("cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]
    # each phase depends on the next one in the printed path
    deps = {"a": "c", "b": "a", "c": "b"}
    assert all(deps[x] == y for x, y in zip(cycle, cycle[1:], strict=False))
    assert problem.location.line in (2, 4, 6)


def test_a_cycle_through_an_implied_reference_is_found():
    with pytest.raises(WorkflowInvalid) as info:
        compile_plan(_wf(_p("a", implied=("b",)), _p("b", "a")))
    assert info.value.problems[0].message in ("cycle: a -> b -> a", "cycle: b -> a -> b")


def test_find_cycle_reports_a_self_dependency_and_ignores_unknown_ids():
    assert find_cycle({"a": ("a",)}) == ["a", "a"]
    assert find_cycle({"a": ("ghost",), "b": ("a",)}) is None


# -- properties over random DAGs ------------------------------------------------------------


@st.composite
def _dags(draw):
    n = draw(st.integers(min_value=0, max_value=25))
    ids = [f"p{i}" for i in range(n)]
    # edges only from lower to higher rank of a random permutation: always acyclic
    rank = draw(st.permutations(ids))
    phases = []
    for pid in ids:
        earlier = list(rank[: rank.index(pid)])
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=4)) if earlier else []
        est = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=9)))
        phases.append(_p(pid, *deps, est=est))
    return _wf(*phases)


@settings(max_examples=150, deadline=None)
@given(_dags())
def test_plans_of_random_dags_are_consistent(workflow):
    plan = compile_plan(workflow)
    pos = {pid: i for i, pid in enumerate(plan.order)}
    assert sorted(plan.order) == sorted(p.id for p in workflow.phases)
    for pid, deps in plan.predecessors.items():
        assert all(pos[d] < pos[pid] for d in deps)
        assert all(plan.level_of[d] < plan.level_of[pid] for d in deps)
        if deps:
            assert plan.level_of[pid] == 1 + max(plan.level_of[d] for d in deps)
    yaml = [p.id for p in workflow.phases]
    assert [pid for level in plan.levels for pid in level] == sorted(
        yaml, key=lambda p: (plan.level_of[p], yaml.index(p))
    )

    # the critical path is a real path, from a root to a sink, as heavy as any path
    path = plan.critical_path
    if path:
        assert not plan.predecessors[path[0]] and not plan.successors[path[-1]]
        assert all(a in plan.predecessors[b] for a, b in zip(path, path[1:], strict=False))
        assert plan.critical_length == sum(plan.weight(p) for p in path)

    best: dict[str, float] = {}
    for pid in reversed(plan.order):
        best[pid] = plan.weight(pid) + max((best[s] for s in plan.successors[pid]), default=0)
    assert plan.critical_length == max(best.values(), default=0.0)
    assert dict(plan.remaining) == best


_PRINT_PLAN = """
import json, random
from orchestrator import compile_plan
from orchestrator.spec.model import Phase, Workflow
rng = random.Random(7)
ids = [f"phase-{rng.getrandbits(40):x}" for _ in range(300)]
phases = []
for i, pid in enumerate(ids):
    deps = tuple(sorted(set(rng.sample(ids[:i], k=min(i, rng.randint(0, 3))))))
    implied = tuple(d for d in rng.sample(ids[:i], k=min(i, 1)) if d not in deps)
    phases.append(Phase(id=pid, agent="noop", depends_on=deps, implied_deps=implied))
plan = compile_plan(Workflow(name="w", phases=tuple(reversed(phases))))
print(json.dumps([plan.order, plan.levels, plan.critical_path, dict(plan.successors)]))
"""


def test_the_plan_is_the_same_under_different_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _PRINT_PLAN], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    order, levels, _, _ = json.loads(outputs.pop())
    assert len(order) == 300 and sum(len(level) for level in levels) == 300


def test_a_dependency_both_listed_and_referenced_is_explicit():
    plan = compile_plan(_wf(_p("a"), _p("b", "a", implied=("a",))))
    assert plan.predecessors["b"] == ("a",)
    assert not plan.is_implied("b", "a")
    assert dict(plan.implied) == {}
