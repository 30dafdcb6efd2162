"""A phase task run by the scheduler posts its end to the state store without waiting
(EventBus.post); the scheduler counts the phase as ended once the store has it. What a
user sees must not change: the sinks see every event after the store has it, in the
store's order, and a sink that fails stops the run as it did (a real SQLite file)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.engine import execute
from orchestrator.events import Event
from orchestrator.state.sqlite import open_store

from .conftest import make_plan


def _wide(n: int) -> Any:
    """n independent noop phases, then one that needs them all."""
    phases: list[dict[str, Any]] = [{"id": f"p{i}", "agent": "noop"} for i in range(n)]
    phases.append({"id": "last", "agent": "noop", "depends_on": [f"p{i}" for i in range(n)]})
    return make_plan(phases)


def test_sinks_see_each_event_after_the_store_has_it_in_the_stores_order(registry, tmp_path):
    store = open_store(tmp_path)
    shown: list[tuple[str, str | None, int]] = []

    def sink(event: Event) -> None:
        # read back through the store: the event is there before anyone is shown it
        stored = [(e.event, e.phase) for _, e in store.events(event.run_id)]
        shown.append((event.event, event.phase, stored.index((event.event, event.phase))))

    async def go() -> Any:
        try:
            return await execute(_wide(40), registry=registry, sinks=[store.submit, sink])
        finally:
            await store.aclose()

    result = asyncio.run(go())
    assert result.status == "completed"
    events = [e for _, e in store.events(result.run_id)]
    assert [(e.event, e.phase) for e in events] == [(k, p) for k, p, _ in shown]
    assert [i for _, _, i in shown] == list(range(len(events)))  # each one, in place
    kinds = [e.event for e in events]
    assert kinds.count("phase_completed") == 41 and kinds[-1] == "workflow_completed"
    # the last phase started after every one of its upstream phases' ends was stored
    at = {(e.event, e.phase): i for i, e in enumerate(events)}
    assert all(at["phase_completed", f"p{i}"] < at["phase_started", "last"] for i in range(40))
    store.close()


class Broken(Exception):
    pass


def test_a_sink_that_fails_on_a_phase_end_stops_the_run_with_its_error(registry, tmp_path):
    store = open_store(tmp_path)

    def sink(event: Event) -> None:
        if event.event == "phase_completed" and event.phase == "p3":
            raise Broken("the display broke on p3")

    async def go() -> Any:
        try:
            return await execute(_wide(8), registry=registry, sinks=[store.submit, sink])
        finally:
            await store.aclose()

    with pytest.raises(Broken, match="the display broke on p3"):
        asyncio.run(go())
    (run,) = store.list_runs()
    phases = {p.id: p.state for p in store.phases(run.id)}
    assert phases["p3"] == "completed"  # stored before the sink saw it
    assert phases["last"] != "completed"  # the run stopped: nothing built on it
    store.close()


CACHED_THEN_SLOW = """
name: lost
phases:
  - id: a
    agent: echo
    cache: true
    with: {text: hi}
  - id: b
    agent: shell
    with: {command: "sleep 0.2; echo late"}
"""


def test_a_store_that_refuses_a_posted_end_at_once_names_the_phase(registry, tmp_path):
    # A cache row nobody awaits fails to be written (a real SQLite failure, by a
    # trigger): the store refuses the next event at once, in submit. The posted end of
    # b must fail the run as an awaited one does: RecordFailed naming the phase.
    import sqlite3

    from orchestrator.engine import RunOptions
    from orchestrator.engine.cache import StoreCache
    from orchestrator.errors import RecordFailed
    from orchestrator.plan import compile_plan
    from orchestrator.spec import load_workflow

    (tmp_path / "wf.yaml").write_text(CACHED_THEN_SLOW)
    plan = compile_plan(load_workflow(str(tmp_path / "wf.yaml"), registry=registry))
    store = open_store(tmp_path / "state")
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON cache"
        " BEGIN SELECT RAISE(FAIL, 'disk full (simulated)'); END"
    )
    db.commit()
    db.close()
    shown: list[Event] = []

    async def go() -> Any:
        options = RunOptions(cache=StoreCache(store, plan.workflow))
        try:
            return await execute(
                plan, registry=registry, sinks=[store.submit, shown.append], options=options
            )
        finally:
            await store.aclose()

    with pytest.raises(RecordFailed, match="phase 'b': its phase_completed") as caught:
        asyncio.run(go())
    assert "disk full (simulated)" in str(caught.value)
    assert ("phase_completed", "b") not in [(e.event, e.phase) for e in shown]
    store.close()
