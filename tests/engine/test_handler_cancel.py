"""A handler phase's end (completed or failed) stays as it was when the run's task is
cancelled again while that end is being stored (a real SQLite store, a real shell process)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.engine import execute
from orchestrator.events import Event
from orchestrator.state.sqlite import SqliteStore

from .conftest import make_phase, make_plan


@pytest.mark.parametrize(("command", "end"), [("echo", "completed"), ("exit 3", "failed")])
def test_a_second_cancel_while_a_finally_phases_end_is_stored_keeps_that_end(
    registry, tmp_path, command, end
):
    plan = make_plan(
        [{"id": "long", "agent": "probe", "with": {"seconds": 30}}],
        finally_=(make_phase({"id": "cleanup", "agent": "shell", "with": {"command": command}}),),
    )
    store = SqliteStore(tmp_path / "state")

    async def main() -> None:
        started = asyncio.Event()
        storing = asyncio.Event()  # cleanup's phase_completed (or _failed) is being stored
        release = asyncio.Event()

        async def gate(event: Event) -> None:  # the store, held up on cleanup's completion
            if event.event == "phase_started" and event.phase == "long":
                started.set()
            stored = store.submit(event)
            if event.event == f"phase_{end}" and event.phase == "cleanup":
                storing.set()
                await release.wait()
            await stored

        task = asyncio.create_task(execute(plan, registry=registry, sinks=[gate], run_id="r1"))
        await started.wait()
        task.cancel()  # Ctrl-C: the run is cancelled, its finally phase runs
        await storing.wait()
        task.cancel()  # a second cancel reaches the run's task during that delivery
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.aclose()

    asyncio.run(main())
    assert [e.data.get("error") for _, e in store.events("r1", phase="long")][-1] == "cancelled"
    kinds = [e.event for _, e in store.events("r1", phase="cleanup")]
    assert kinds == ["phase_started", f"phase_{end}"]
    assert [e.event for _, e in store.events("r1")][-1] == "workflow_cancelled"
    assert {p.id: p.state for p in store.phases("r1")}["cleanup"] == end
