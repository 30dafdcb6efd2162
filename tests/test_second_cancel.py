"""A second cancel (``RunHandle.cancel(force=True)``: what a second Ctrl-C and the
service's stop-now call) stops what runs now, and never cuts the run's own end: the
handle's ``wait()`` gives the cancelled run's result, never a CancelledError, and the
store holds the end (a real SQLite store, real shell processes)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orchestrator
from orchestrator.events import Event

#: what a second cancel records for a fallback workflow it stopped (as for a compensation)
INTERRUPTED = "cancelled: the run was stopped (a second cancel) while it ran"


async def _cancel_twice_on(
    workflow: Any, state: Path, first: tuple[str, str | None], second: tuple[str, str | None]
) -> orchestrator.RunResult:
    """Start ``workflow``; cancel it once at the event ``first`` (its kind and phase),
    again (forced) at the event ``second``; each from a sink, so in the run's own step
    right after the store has that event. Returns what the handle's ``wait()`` gives."""
    handle: list[Any] = []

    def sink(event: Event) -> None:
        if not handle:  # workflow_started: start has not returned yet
            return
        if (event.event, event.phase) == first:
            handle[0].cancel(signal.SIGINT)
        if (event.event, event.phase) == second:
            handle[0].cancel(signal.SIGINT, force=True)

    started = await orchestrator.start(workflow, state_dir=state, sinks=(sink,))
    handle.append(started)
    return await started.wait()


def test_a_second_cancel_while_the_run_records_its_end_does_not_cut_it(tmp_path):
    # the first cancel stops the sleeping phase; the second comes as workflow_cancelled
    # is stored: the agents and the store are still to be closed, and must be
    workflow = {
        "name": "late",
        "phases": [{"id": "long", "agent": "shell", "with": {"command": "sleep 30"}}],
    }
    state = tmp_path / "s"
    result = asyncio.run(
        _cancel_twice_on(workflow, state, ("phase_started", "long"), ("workflow_cancelled", None))
    )
    assert (result.status, result.phases["long"].status) == ("cancelled", "cancelled")
    found = orchestrator.status(result.run_id, state_dir=state)
    assert (found.status, found.cancelled_by) == ("cancelled", "SIGINT")


def test_a_second_cancel_during_the_fallback_workflow_stops_it_and_the_run_ends(tmp_path):
    (tmp_path / "plan-b.yaml").write_text(
        "name: plan-b\nphases:\n  - {id: slow, agent: shell, with: {command: sleep 30}}\n"
    )
    main = tmp_path / "main.yaml"
    main.write_text(
        "name: main\n"
        "error_handling: {fallback_workflow: plan-b.yaml}\n"
        "phases:\n  - {id: a, agent: shell, with: {command: exit 3}}\n"
    )
    state = tmp_path / "s"
    # both cancels come as the fallback workflow starts: the first is only noted (the run
    # already failed: nothing is left to cancel), the second stops the fallback's sub-run
    started = ("phase_started", "fallback_workflow")
    result = asyncio.run(_cancel_twice_on(str(main), state, started, started))
    assert result.status == "cancelled"
    fallback = result.phases["fallback_workflow"]
    assert (fallback.status, fallback.error) == ("failed", INTERRUPTED)
    assert orchestrator.status(result.run_id, state_dir=state).status == "cancelled"
