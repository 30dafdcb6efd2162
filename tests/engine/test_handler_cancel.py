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
    with store:  # the reads below open a connection again: closed here
        assert [e.data.get("error") for _, e in store.events("r1", phase="long")][-1] == "cancelled"
        kinds = [e.event for _, e in store.events("r1", phase="cleanup")]
        assert kinds == ["phase_started", f"phase_{end}"]
        assert [e.event for _, e in store.events("r1")][-1] == "workflow_cancelled"
        assert {p.id: p.state for p in store.phases("r1")}["cleanup"] == end


# what a second cancel records for the compensation it stopped, and for what it kept from
# starting (a compensation, a finally handler)
INTERRUPTED = "cancelled: the run was stopped (a second cancel) while it ran"
NOT_RUN = "not run: the run was stopped (a second cancel) before it started"


def test_a_second_cancel_of_the_runs_task_during_compensation_still_ends_the_run(
    registry, tmp_path
):
    # execute's caller cancels its task twice: during the phases, then while 'pay' is
    # compensated (its command runs). The run records where its saga stopped, ends
    # cancelled, then the task raises CancelledError (as execute promises)
    from orchestrator.spec.model import AgentCall

    began = tmp_path / "began"  # pay's compensation runs its command

    plan = make_plan(
        [
            {"id": "book", "agent": "echo", "with": {"text": "booked"},
             "compensate": AgentCall("echo", {"text": "unbook"})},
            {"id": "pay", "agent": "echo", "with": {"text": "paid"}, "depends_on": ["book"],
             "compensate": AgentCall("shell", {"command": f"touch {began}; sleep 30"})},
            {"id": "long", "agent": "probe", "with": {"seconds": 30}, "depends_on": ["pay"]},
        ],
        finally_=(make_phase({"id": "cleanup", "agent": "echo", "with": {"text": "x"}}),),
    )  # fmt: skip
    store = SqliteStore(tmp_path / "state")

    async def main() -> None:
        started = asyncio.Event()

        async def sink(event: Event) -> None:
            await store.submit(event)
            if event.event == "phase_started" and event.phase == "long":
                started.set()

        task = asyncio.create_task(execute(plan, registry=registry, sinks=[sink], run_id="r2"))
        await started.wait()
        task.cancel()  # the run is cancelled: its saga starts with 'pay'
        while not began.exists():
            await asyncio.sleep(0.02)
        task.cancel()  # again, while 'pay' is compensated
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.aclose()

    asyncio.run(main())
    with store:  # the reads below open a connection again: closed here
        events = [e for _, e in store.events("r2")]
        assert events[-1].event == "workflow_cancelled"
        compensated = {e.phase: e.data for e in events if e.event == "phase_compensated"}
        # 'book' was not started: pending (nothing recorded), `orch resume` runs it
        assert compensated == {"pay": {"ok": False, "error": INTERRUPTED}}
        assert f"compensation of 'book' {NOT_RUN}" in events[-1].data["error"]
        assert {p.id: p.compensated for p in store.phases("r2")}["book"] is None
        cleanup = [e for e in events if e.phase == "cleanup"]
        assert [(e.event, e.data.get("reason")) for e in cleanup] == [("phase_skipped", NOT_RUN)]
        assert {p.id: p.compensation_error for p in store.phases("r2")}["pay"] == INTERRUPTED
        assert store.get_run("r2").status == "cancelled"
