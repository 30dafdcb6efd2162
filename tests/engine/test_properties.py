"""Properties of the scheduler on random DAGs: dependencies respected, the bound kept, all run."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine import RunOptions, execute

from .conftest import Recorder, make_plan


@st.composite
def dags(draw):
    n = draw(st.integers(min_value=1, max_value=14))
    phases = []
    for i in range(n):
        deps = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3)) if i else set()
        phases.append(
            {
                "id": f"p{i}",
                "agent": "probe",
                "with": {"seconds": draw(st.sampled_from([0, 0, 0.001, 0.003])), "key": "k"},
                "depends_on": [f"p{d}" for d in sorted(deps)],
                "priority": draw(st.sampled_from(["critical", "medium", "low"])),
            }
        )
    limit = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=4)))
    return phases, limit


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dags())
def test_every_phase_runs_after_its_dependencies_and_within_the_bound(registry, dag):
    phases, limit = dag
    plan = make_plan(phases)
    rec = Recorder()
    result = asyncio.run(
        execute(plan, registry=registry, sinks=[rec], options=RunOptions(max_parallel=limit))
    )
    assert result.status == "completed"
    assert set(rec.started_order()) == {p["id"] for p in phases}
    for p in phases:
        started = rec.index("phase_started", p["id"])
        for dep in p["depends_on"]:
            assert rec.index("phase_completed", dep) < started
    running = peak = 0
    for e in rec.events:
        if e.event == "phase_started":
            running += 1
            peak = max(peak, running)
        elif e.event == "phase_completed":
            running -= 1
    if limit is not None:
        assert peak <= limit
    if limit == 1:  # each start is the best-ranked ready phase: priority, remaining path, YAML
        ids = [p["id"] for p in phases]

        def rank(pid):
            return (plan.phases[pid].priority_rank, -plan.remaining[pid], ids.index(pid))

        done: set[str] = set()
        started: set[str] = set()
        for e in rec.events:
            if e.event == "phase_completed":
                done.add(e.phase)
            elif e.event == "phase_started":
                ready = [
                    p["id"]
                    for p in phases
                    if p["id"] not in started and all(d in done for d in p["depends_on"])
                ]
                assert e.phase == min(ready, key=rank)
                started.add(e.phase)
