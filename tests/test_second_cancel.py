"""A second cancel (``RunHandle.cancel(force=True)``: what a second Ctrl-C and the
service's stop-now call) stops what runs now, and never cuts the run's own end: the
handle's ``wait()`` gives the cancelled run's result, never a CancelledError, and the
store holds the end (a real SQLite store, real shell processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orchestrator
from orchestrator.events import Event
from orchestrator.state.sqlite import open_store

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


#: what a second cancel records for what it kept from starting
NOT_RUN = "not run: the run was stopped (a second cancel) before it started"


def _fallback_run(tmp_path: Path) -> Path:
    """A workflow whose phase fails and whose fallback workflow's phase touches ``began``,
    then sleeps 30 s."""
    began = tmp_path / "began"
    (tmp_path / "plan-b.yaml").write_text(
        "name: plan-b\nphases:\n"
        f"  - {{id: slow, agent: shell, with: {{command: 'touch {began}; sleep 30'}}}}\n"
    )
    main = tmp_path / "main.yaml"
    main.write_text(
        "name: main\n"
        "error_handling: {fallback_workflow: plan-b.yaml}\n"
        "phases:\n  - {id: a, agent: shell, with: {command: exit 3}}\n"
    )
    return main


def test_a_second_cancel_during_the_fallback_workflow_stops_it_and_the_run_ends(tmp_path):
    main, state = _fallback_run(tmp_path), tmp_path / "s"

    async def go() -> orchestrator.RunResult:
        handle = await orchestrator.start(str(main), state_dir=state)
        while not (tmp_path / "began").exists():  # the fallback's command runs
            await asyncio.sleep(0.02)
        handle.cancel(signal.SIGINT)  # only noted: the run already failed
        handle.cancel(signal.SIGINT, force=True)  # stops the fallback's sub-run
        return await handle.wait()

    result = asyncio.run(go())
    assert result.status == "cancelled"
    fallback = result.phases["fallback_workflow"]
    assert (fallback.status, fallback.error) == ("failed", INTERRUPTED)
    assert orchestrator.status(result.run_id, state_dir=state).status == "cancelled"


def test_a_second_cancel_as_the_fallback_workflow_is_recorded_keeps_it_from_starting(tmp_path):
    # both cancels come in the step that records the fallback's start (a sink of it)
    main, state = _fallback_run(tmp_path), tmp_path / "s"
    started = ("phase_started", "fallback_workflow")
    result = asyncio.run(_cancel_twice_on(str(main), state, started, started))
    assert result.status == "cancelled"
    fallback = result.phases["fallback_workflow"]
    assert (fallback.status, fallback.error) == ("failed", NOT_RUN)
    assert not (tmp_path / "began").exists()


SAGA = """
name: saga
phases:
  - {id: a, agent: echo, with: {text: A}, compensate: {agent: shell, with: {command: UNDO}}}
  - {id: b, agent: shell, with: {command: exit 1}, depends_on: [a]}
"""


def _crashed_while_compensating(tmp_path: Path, undo: str = "sleep 30") -> tuple[str, Path]:
    """A run of SAGA (its compensation of 'a' runs ``undo``) whose process died (kill -9 at
    a store boundary) right after that compensation started (write-ahead marker stored):
    its id and state folder."""
    path = tmp_path / "saga.yaml"
    path.write_text(SAGA.replace("UNDO", undo))
    for k in range(1, 60):
        state = tmp_path / f"k{k}"
        env = {**os.environ, "ORCH_CRASH_AT": str(k)}
        command = [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            str(path),
            "--state-dir",
            str(state),
        ]
        code = subprocess.run(command, env=env, capture_output=True, timeout=120).returncode
        assert code == 137, f"the run ended before the compensation started (boundary {k})"
        with open_store(state) as store:
            runs = store.list_runs()
            if not runs:
                continue
            a = {p.id: p for p in store.phases(runs[0].id)}["a"]
            if a.compensation_started:
                assert a.compensated is None
                return runs[0].id, state
    raise AssertionError("no boundary fell inside the compensation")


def test_a_second_cancel_stops_a_resumed_compensation_and_leaves_it_pending(tmp_path):
    run_id, state = _crashed_while_compensating(tmp_path)

    async def main() -> orchestrator.RunResult:
        handle = await orchestrator.resume(run_id, state_dir=state)
        assert handle is not None
        async for event in handle.events():
            if event.event == "phase_stream" and event.data.get("compensation") == "started":
                handle.cancel(signal.SIGTERM)  # the compensation goes on
                handle.cancel(signal.SIGTERM, force=True)  # stopped now
                break
        return await handle.wait()

    result = asyncio.run(main())
    assert result.status == "cancelled"
    with open_store(state) as store:
        a = {p.id: p for p in store.phases(run_id)}["a"]
        assert (a.compensated, a.compensation_error) == (False, INTERRUPTED)
    found = orchestrator.status(run_id, state_dir=state)
    assert (found.status, found.cancelled_by) == ("cancelled", "SIGTERM")


def test_ctrl_c_twice_on_orch_resume_of_a_compensation_stops_it_and_exits_130(tmp_path):
    run_id, state = _crashed_while_compensating(tmp_path)
    command = [sys.executable, "-m", "orchestrator", "resume", run_id, "--state-dir", str(state)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        marker = '"compensation":"started"'

        def markers() -> int:
            with open_store(state) as store:
                return sum(
                    1
                    for _, e in store.events(run_id, phase="a")
                    if e.event == "phase_stream" and e.data.get("compensation") == "started"
                )

        while markers() < 2:  # the resume stored its own start of the compensation
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # the compensation goes on (it is the safety net)
        said = []
        assert proc.stderr is not None
        for line in proc.stderr:  # the first was taken (two at once may arrive as one)
            said.append(line)
            if line.startswith("Ctrl-C: cancelling the run"):
                break
        proc.send_signal(signal.SIGINT)  # stopped now
        out, rest = proc.communicate(timeout=60)
        err = "".join(said) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and marker not in out
    assert f"run {run_id} cancelled" in err
    with open_store(state) as store:
        a = {p.id: p for p in store.phases(run_id)}["a"]
        assert (a.compensated, a.compensation_error) == (False, INTERRUPTED)
        assert store.get_run(run_id).status == "cancelled"


def test_a_second_cancel_as_a_resumed_compensation_starts_leaves_it_to_the_next_resume(tmp_path):
    # the force comes while the resume records the compensation's start (its marker):
    # the compensation does not start, the run ends cancelled (no CancelledError), and
    # the next resume runs it, once
    ledger = tmp_path / "ledger"
    run_id, state = _crashed_while_compensating(tmp_path, f"echo undone >> {ledger}")

    async def resume(force: bool) -> orchestrator.RunResult:
        handle = await orchestrator.resume(run_id, state_dir=state)
        assert handle is not None
        if force:
            handle.cancel(signal.SIGINT, force=True)
        return await handle.wait()

    assert asyncio.run(resume(force=True)).status == "cancelled"
    assert not ledger.exists()
    assert orchestrator.status(run_id, state_dir=state).status == "cancelled"
    asyncio.run(resume(force=False))
    assert ledger.read_text() == "undone\n"
    with open_store(state) as store:
        assert {p.id: p for p in store.phases(run_id)}["a"].compensated is True
