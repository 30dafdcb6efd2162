"""Who may touch a stopped run, with real `orch` processes and real signals.

- D8: of two `orch resume` of one run, the one refused stops nothing (it used to
  stop the winner's commands before finding out it had lost).
- A second Ctrl-C during compensation stops it: the run records where it stopped
  (the compensation it cut) and ends ``cancelled``; the compensations it kept from
  starting are pending: `orch resume` runs them, once. A third forces the exit; the
  resumed run finishes the compensation and is recorded ``cancelled``.
- A second Ctrl-C while the phases still run (one is slow to stop) kills them now and
  the compensations still run: nothing booked is left undone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import Processes, Spawned

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")

ORCH = [sys.executable, "-m", "orchestrator"]


def orch(*args: str, state: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORCH, *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def start(processes: Processes, *args: str, state: Path) -> Spawned:
    """`orch ARGS` in its own session, ended at teardown if still going."""
    return processes.start(
        [*ORCH, *args, "--state-dir", str(state)], env={**os.environ, "NO_COLOR": "1"}
    )


def wait_for_lines(path: Path, count: int, proc: Spawned) -> list[str]:
    """The lines of ``path`` once it has ``count`` (a bound on a hang: 30 s)."""
    for _ in range(600):
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        if proc.proc.poll() is not None:
            raise AssertionError(f"orch ended early ({proc.proc.returncode}): {proc.stderr}")
        time.sleep(0.05)
    raise AssertionError(f"{path} never had {count} lines")


def only_run(state: Path) -> str:
    listed = orch("runs", "--json", state=state)
    return str(json.loads(listed.stdout)[0]["id"])


def interrupted_run(tmp_path: Path, processes: Processes) -> tuple[str, Path, Path, Path]:
    """A run killed (-9) while its command waits for ``release``: (id, state, ledger, release).

    The command writes its pid to ``ledger`` when it starts, and is left running (until
    ``release`` exists, a resume stops it, or the test ends: the fixture stops it then).
    """
    ledger = tmp_path / "ledger"
    release = tmp_path / "release"
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: claim\nphases:\n  - id: work\n    agent: shell\n    with:\n"
        f"      command: \"echo $$ >> '{ledger}';"
        f" while [ ! -f '{release}' ]; do sleep 0.05; done\"\n"
    )
    state = tmp_path / "state"
    first = start(processes, "run", str(wf), state=state)
    wait_for_lines(ledger, 1, first)
    first.proc.kill()  # kill -9: its command is left running
    first.finish()
    run_id = only_run(state)
    processes.adopt(state, run_id)
    return run_id, state, ledger, release


def test_a_refused_resume_stops_nothing_of_the_winner(tmp_path, processes):
    run_id, state, ledger, release = interrupted_run(tmp_path, processes)
    winner = start(processes, "resume", run_id, state=state)
    lines = wait_for_lines(ledger, 2, winner)  # the winner's own command runs now
    winner_command = int(lines[1])
    loser = orch("resume", run_id, state=state)
    assert loser.returncode == 2, loser.stderr
    assert f"run '{run_id}' is still running in process {winner.pid}" in loser.stderr
    assert "stopped" not in loser.stderr and "Traceback" not in loser.stderr
    os.kill(winner_command, 0)  # still alive: the loser stopped nothing
    release.touch()
    code, _, err = winner.finish()
    assert code == 0, err
    assert "leftover process" in err  # the winner stopped the dead owner's command
    assert len(ledger.read_text().splitlines()) == 2  # the phase ran once per owner
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["status"] == "completed"


SAGA = """
name: saga
phases:
  - id: book
    agent: echo
    with: {{text: booked}}
    compensate:
      agent: shell
      with: {{command: "echo unbook >> '{ledger}'"}}
  - id: pay
    agent: echo
    depends_on: [book]
    with: {{text: paid}}
    compensate:
      agent: shell
      with:
        command: "{trap}echo refund >> '{ledger}'; while [ ! -f '{quick}' ]; do sleep 0.05; done"
        kill_grace: {grace}
  - id: wait
    agent: shell
    depends_on: [pay]
    with:
      command: "echo waiting >> '{ledger}'; sleep 60"
finally:
  - id: report
    agent: shell
    with: {{command: "echo report >> '{ledger}'"}}
"""


# what a second Ctrl-C records for the compensation it stopped, and for a handler it kept
# from starting (a compensation it kept from starting is pending: nothing is recorded)
INTERRUPTED = "cancelled: the run was stopped (a second cancel) while it ran"
NOT_RUN = "not run: the run was stopped (a second cancel) before it started"


def compensating(
    tmp_path: Path, processes: Processes, *, trap: str, grace: int
) -> tuple[Spawned, Path, Path, Path]:
    """`orch run` of SAGA, Ctrl-C'd once while 'wait' runs, once 'pay' is compensated
    (its command waits for ``quick``): (the process, state, ledger, quick)."""
    ledger, quick = tmp_path / "ledger", tmp_path / "quick"
    wf = tmp_path / "wf.yaml"
    wf.write_text(SAGA.format(ledger=ledger, quick=quick, trap=trap, grace=grace))
    state = tmp_path / "state"
    proc = start(processes, "run", str(wf), state=state)
    wait_for_lines(ledger, 1, proc)  # 'wait' runs
    proc.proc.send_signal(signal.SIGINT)  # cancel: 'pay' is compensated (until `quick`)
    wait_for_lines(ledger, 2, proc)
    return proc, state, ledger, quick


def stored_events(state: Path, run_id: str) -> list[dict]:
    listed = orch("logs", run_id, "--json", state=state)
    assert listed.returncode in (0, 130), listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_a_second_ctrl_c_during_compensation_stops_it_and_records_the_run_cancelled(
    tmp_path, processes
):
    proc, state, ledger, _ = compensating(tmp_path, processes, trap="", grace=3)
    proc.proc.send_signal(signal.SIGINT)  # again, in the middle of compensating: stop now
    code, _, err = proc.finish()
    assert code == 130, err
    run_id = only_run(state)
    events = stored_events(state, run_id)
    ended = events[-1]
    assert ended["event"] == "workflow_cancelled", ended  # the stored run has its end
    assert "again: stopping now" in err and "forced exit" not in err
    assert "Traceback" not in err
    assert ended["data"]["cancelled_by"] == "SIGINT"
    compensated = {e["phase"]: e["data"] for e in events if e["event"] == "phase_compensated"}
    # 'pay': its command was stopped; 'book' was not started: pending, nothing recorded
    assert compensated == {"pay": {"ok": False, "error": INTERRUPTED}}
    report = next(e for e in events if e.get("phase") == "report")
    assert (report["event"], report["data"]["reason"]) == ("phase_skipped", NOT_RUN)
    assert f"compensation of 'pay' {INTERRUPTED}" in ended["data"]["error"]
    assert f"compensation of 'book' {NOT_RUN}" in ended["data"]["error"]
    assert ledger.read_text().splitlines() == ["waiting", "refund"]
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["status"] == "cancelled"
    phases = {p["id"]: p for p in status["phases"]}
    assert (phases["pay"]["compensated"], phases["pay"]["compensation_error"]) == (
        False,
        INTERRUPTED,
    )
    assert phases["book"]["compensated"] is None  # pending
    resumed = orch("resume", run_id, state=state)  # the pending compensation runs
    assert "1 phase left to compensate" in resumed.stderr, resumed.stderr
    assert f"run {run_id} cancelled" in resumed.stderr, resumed.stderr
    assert resumed.returncode == 130
    assert ledger.read_text().splitlines() == ["waiting", "refund", "unbook"]
    events = stored_events(state, run_id)
    compensated = {e["phase"]: e["data"] for e in events if e["event"] == "phase_compensated"}
    assert compensated["book"] == {"ok": True, "error": None}
    ends = [e["event"] for e in events if e["event"].startswith("workflow_")][1:]
    assert ends == ["workflow_cancelled", "workflow_cancelled"]  # the run's, the resume's
    again = orch("resume", run_id, state=state)  # nothing left: nothing runs, nothing recorded
    said = f"run {run_id} has no compensation left to run: nothing to resume"
    assert said in again.stderr, again.stderr
    assert f"run {run_id} cancelled" in again.stderr and again.returncode == 130
    assert ledger.read_text().splitlines() == ["waiting", "refund", "unbook"]
    assert stored_events(state, run_id) == events
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["status"] == "cancelled"


REPRO = """
name: saga
phases:
  - id: a
    agent: shell
    with: {{command: "echo booked >> '{ledger}'"}}
    compensate:
      agent: shell
      with: {{command: "echo undone >> '{ledger}'"}}
  - id: b
    agent: shell
    depends_on: [a]
    with: {{command: "trap '' TERM INT; echo slow >> '{ledger}'; sleep 60", kill_grace: 60}}
"""


def test_a_second_ctrl_c_while_a_phase_is_slow_to_stop_kills_it_and_still_compensates(
    tmp_path, processes
):
    # 'b' ignores SIGTERM and its kill_grace is 60 s: the first Ctrl-C alone would wait
    # for it; the second kills it now, and 'a' is still undone (its compensation runs)
    ledger = tmp_path / "ledger"
    wf = tmp_path / "wf.yaml"
    wf.write_text(REPRO.format(ledger=ledger))
    state = tmp_path / "state"
    proc = start(processes, "run", str(wf), state=state)
    wait_for_lines(ledger, 2, proc)  # 'a' booked, 'b' runs
    proc.proc.send_signal(signal.SIGINT)
    for _ in range(600):  # once the first is taken (two at once may arrive as one)
        if "cancelling the run" in proc.stderr:
            break
        time.sleep(0.05)
    proc.proc.send_signal(signal.SIGINT)  # again: 'b' is still being stopped
    code, _, err = proc.finish()
    assert code == 130, err
    assert "again: stopping now" in err and "forced exit" not in err, err
    assert "Traceback" not in err
    assert ledger.read_text().splitlines() == ["booked", "slow", "undone"]
    run_id = only_run(state)
    events = stored_events(state, run_id)
    assert events[-1]["event"] == "workflow_cancelled"
    assert events[-1]["data"]["cancelled_by"] == "SIGINT"
    compensated = [(e["phase"], e["data"]) for e in events if e["event"] == "phase_compensated"]
    assert compensated == [("a", {"ok": True, "error": None})]
    b = [e for e in events if e.get("phase") == "b" and e["event"] != "phase_stream"]
    assert b[-1]["event"] == "phase_failed", b  # 'b' was cancelled (killed)
    resumed = orch("resume", run_id, state=state)  # nothing is undone twice
    assert ledger.read_text().splitlines() == ["booked", "slow", "undone"], resumed.stderr


def test_a_third_ctrl_c_forces_the_exit_and_resume_finishes_the_compensation(tmp_path, processes):
    # the compensation's command ignores SIGTERM: stopping it waits kill_grace (60 s), so
    # the run is still compensating when the third Ctrl-C forces the exit
    proc, state, ledger, quick = compensating(tmp_path, processes, trap="trap '' TERM; ", grace=60)
    proc.proc.send_signal(signal.SIGINT)  # again: stop now (its command ignores SIGTERM)
    for _ in range(600):  # once the second is taken (two at once may arrive as one)
        if "again: stopping now" in proc.stderr:
            break
        time.sleep(0.05)
    proc.proc.send_signal(signal.SIGINT)  # a third time: forced exit
    code, _, err = proc.finish()
    run_id = only_run(state)
    processes.adopt(state, run_id)  # the forced exit left the compensation's command
    assert code == 130, err
    assert "forced exit" in err and "Traceback" not in err
    quick.touch()
    resumed = orch("resume", run_id, state=state)
    assert "resuming the compensation" in resumed.stderr
    assert f"run {run_id} cancelled" in resumed.stderr, resumed.stderr
    assert resumed.returncode == 130
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["status"] == "cancelled"
    assert ledger.read_text().splitlines() == ["waiting", "refund", "refund", "unbook"]


def test_a_cancel_that_read_interrupted_does_not_end_a_run_a_resume_claimed(tmp_path, processes):
    # `orch cancel` reads the run as interrupted, then a resume claims it before the
    # cancel writes: the write checks again, in its transaction, and is refused.
    from orchestrator.errors import RunLocked
    from orchestrator.events import Event
    from orchestrator.state.sqlite import open_store

    run_id, state, ledger, release = interrupted_run(tmp_path, processes)
    store = open_store(state)
    try:
        assert store.get_run(run_id).status == "interrupted"  # what cancel read
        resumer = start(processes, "resume", run_id, state=state)
        wait_for_lines(ledger, 2, resumer)  # the resume owns the run now
        cancelled = Event("workflow_cancelled", run_id, time.time(), data={"status": "cancelled"})
        with pytest.raises(RunLocked, match="is no longer interrupted"):
            store.end_interrupted(cancelled)
        assert store.get_run(run_id).status == "running"
        release.touch()
        code, _, err = resumer.finish()
        assert code == 0, err
        assert store.get_run(run_id).status == "completed"
        with pytest.raises(RunLocked):  # an ended run is not ended again either
            store.end_interrupted(cancelled)
    finally:
        store.close()


def test_a_cancel_asked_of_a_dead_owner_does_not_cancel_the_resume(tmp_path, processes):
    run_id, state, ledger, release = interrupted_run(tmp_path, processes)
    from orchestrator.state.sqlite import open_store

    store = open_store(state)
    try:  # `orch cancel` recorded its request just as the owner died, before it looked
        store.request_cancel(run_id, now=time.time())
        assert store.cancel_requested(run_id)
        resumed = start(processes, "resume", run_id, state=state)
        wait_for_lines(ledger, 2, resumed)  # claimed: the resume's own command runs
        assert not store.cancel_requested(run_id)  # the claim cleared the request
        release.touch()
        code, _, err = resumed.finish()
    finally:
        store.close()
    assert code == 0, err
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["status"] == "completed"
