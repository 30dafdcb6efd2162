"""While runs go on, what existed before the first one started stays out of Python's
cyclic GC, and the last run to end gives it back (engine/heap.py)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any, ClassVar

from orchestrator.agents import Agent, AgentContext, AgentResult
from orchestrator.engine import execute

from .conftest import make_plan


class GateAgent(Agent):
    """Says it has started, then waits until the test opens the gate."""

    name = "gate"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    started: ClassVar[asyncio.Event]
    gate: ClassVar[asyncio.Event]

    async def run(self, input: Any, ctx: AgentContext) -> AgentResult:
        GateAgent.started.set()
        await GateAgent.gate.wait()
        return AgentResult(output="through")


def _run(registry: Any, look: Callable[[], Any] = gc.get_freeze_count) -> tuple[str, list[Any]]:
    """A two-phase run; what ``look`` (the freeze count, the GC thresholds) said at every
    event, as its sink saw it."""
    seen: list[Any] = []
    plan = make_plan(
        [{"id": "a", "agent": "noop"}, {"id": "b", "agent": "noop", "depends_on": ["a"]}]
    )
    sink = lambda event: seen.append(look())  # noqa: E731
    result = asyncio.run(execute(plan, registry=registry, sinks=[sink]))
    return result.status, seen


def test_a_run_freezes_what_existed_before_it_and_gives_it_back(registry):
    # Python 3.12 starts with a few hundred objects of its own frozen (not 0)
    before = gc.get_freeze_count()
    status, seen = _run(registry)
    assert status == "completed"
    assert len(seen) >= 5 and all(n > before + 1000 for n in seen)  # every event, start to end
    assert gc.get_freeze_count() <= before
    status, seen = _run(registry)  # the next run freezes again (3.12: the count is now 0)
    assert all(n > before + 1000 for n in seen)


def test_a_process_that_froze_objects_itself_is_left_alone(registry):
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        status, seen = _run(registry)
        assert status == "completed"
        assert set(seen) == {frozen}  # nothing more frozen by the run
        assert gc.get_freeze_count() == frozen  # nor given back when it ended
    finally:
        gc.unfreeze()


def test_a_process_without_gc_is_left_alone(registry):
    gc.disable()
    try:
        status, seen = _run(registry)
    finally:
        gc.enable()
    assert status == "completed"
    assert set(seen) == {0}


def test_the_freeze_lasts_until_the_last_of_overlapping_runs_ends(registry):
    registry.register(GateAgent)
    waiting = make_plan([{"id": "w", "agent": "gate"}])
    quick = make_plan([{"id": "q", "agent": "noop"}])

    async def main() -> tuple[int, int]:
        GateAgent.started, GateAgent.gate = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(execute(waiting, registry=registry))
        await GateAgent.started.wait()
        second = await execute(quick, registry=registry)  # starts after, ends before
        during = gc.get_freeze_count()
        GateAgent.gate.set()
        result = await first
        assert second.status == result.status == "completed"
        return during, gc.get_freeze_count()

    during, after = asyncio.run(main())
    assert during > 0  # the first run still goes on: still frozen
    assert after == 0


def test_a_run_collects_young_objects_less_often_and_gives_the_thresholds_back(registry):
    before = gc.get_threshold()
    status, seen = _run(registry, gc.get_threshold)
    assert status == "completed"
    assert len(seen) >= 5
    assert {t[0] for t in seen} == {max(before[0], 5_000)}  # every event, start to end
    assert {t[1:] for t in seen} == {before[1:]}  # the older generations as they were
    assert gc.get_threshold() == before


def test_a_process_that_set_its_own_thresholds_is_left_alone(registry):
    before = gc.get_threshold()
    gc.set_threshold(1_234, 7, 7)
    try:
        status, seen = _run(registry, gc.get_threshold)
        assert status == "completed"
        assert set(seen) == {(1_234, 7, 7)}
        assert gc.get_threshold() == (1_234, 7, 7)
    finally:
        gc.set_threshold(*before)
